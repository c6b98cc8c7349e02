"""Rule pretrain_demo_model: masked-value pretraining of the small scGPT-architecture demo model."""

import logging
import os

import anndata as ad
import pandas as pd
import torch

from fmextract import logs
from fmextract.io import write_tsv
from fmextract.scgpt import build_demo_model, pretrain, save_scgpt

logs.to_file(snakemake.log[0])
log = logging.getLogger("model")
torch.set_num_threads(snakemake.threads)

cfg = snakemake.params.pretrain
with open(snakemake.input.reference_donors) as fh:
    donors = [line.strip() for line in fh if line.strip()]
panel = ad.read_h5ad(snakemake.input.h5ad)
panel = panel[panel.obs["donor"].isin(donors)]
genes = panel.var_names.tolist()
model, vocab, args = build_demo_model(
    genes, d_model=cfg["d_model"], nhead=cfg["nhead"], d_hid=cfg["d_hid"], nlayers=cfg["nlayers"], seed=cfg["seed"]
)
curve = pretrain(
    model, panel.layers["counts"], genes, steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
    warmup=cfg["warmup"], mask_ratio=cfg["mask_ratio"], seed=cfg["seed"],
)
log.info("pretrained on %d cells of %d reference donors; loss %.4f -> %.4f", panel.n_obs, len(donors), curve[0][1], curve[-1][1])
save_scgpt(model, os.path.dirname(snakemake.output["best_model.pt"]), vocab=vocab, args=args)
write_tsv(pd.DataFrame(curve, columns=["step", "loss"]), snakemake.output.curve)
