"""scvi: scVI latent space (scvi-tools SCVI, n_latent 10) of the raw panel counts, trained on the training donors.

`setup_anndata(layer="counts", batch_key=None)`: the test donors are unseen, and scVI cannot embed a batch it was
not trained on, so a donor batch key would block the query; donors are left as biological variation, as for
every other embedding. Test cells are embedded by the trained encoder (`get_latent_representation(test)`, the
posterior mean, no retraining): it reads only their counts, so no test label reaches the model.
Seeded (`scvi.settings.seed`), torch threads = params threads, all training cells used (`train_size=1.0`).
Params: n_latent (10); max_epochs (null or absent: scvi-tools' own heuristic, min(400, 400 x 20,000 / n_cells), i.e.
80 epochs at the paper's 100k training cells; the demo sets 20); accelerator ("auto": a GPU when lightning sees one,
else cpu; or "cpu", "gpu"); batch_size (128; when the training cells leave a last mini-batch of one cell, which
scVI's batch norm cannot train on, that batch is dropped).
"""

import logging

import anndata as ad
import numpy as np
import pandas as pd
import scvi
import torch


def embed(train, test, params):
    """Train SCVI on train cells' counts; embed train and test with its encoder (posterior means); count its weights."""
    for name in ("scvi", "lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(params["threads"])
    scvi.settings.num_threads = params["threads"]
    scvi.settings.dl_num_workers = 0
    scvi.settings.seed = params["seed"]
    counts_only = lambda a: ad.AnnData(
        X=None, obs=pd.DataFrame(index=a.obs_names), var=pd.DataFrame(index=a.var_names),
        layers={"counts": a.layers["counts"].copy()},
    )
    fit, query = counts_only(train), counts_only(test)
    scvi.model.SCVI.setup_anndata(fit, layer="counts", batch_key=None)
    model = scvi.model.SCVI(fit, n_latent=params.get("n_latent", 10))
    batch_size = params.get("batch_size", 128)
    # a last mini-batch of ONE cell breaks scVI's batch norm ("Expected more than 1 value per channel"): drop it then
    drop_last = fit.n_obs % batch_size == 1
    model.train(
        max_epochs=params.get("max_epochs"), accelerator=params.get("accelerator", "auto"), devices=1, train_size=1.0,
        batch_size=batch_size, datasplitter_kwargs={"drop_last": drop_last}, enable_progress_bar=False,
        enable_model_summary=False, logger=False, enable_checkpointing=False,
    )
    z_train = model.get_latent_representation(fit)
    n_network = sum(p.numel() for p in model.module.parameters() if p.requires_grad)
    return (np.asarray(z_train, dtype=np.float32), np.asarray(model.get_latent_representation(query), dtype=np.float32),
            {"scvi_network": int(n_network)})
