"""Rules pretrain_demo_model (the demo model, built and pretrained when no checkpoint is configured), untrained_model
(the configured checkpoint's architecture, freshly initialised: the untrained-model control) and planted_model (that
untrained copy with one head planted on the marker programs: the positive control), for any model kind."""

import logging

import torch

from fmextract import logs
from fmextract.models import checkpoint_dir, load_model

logs.start(snakemake)
log = logging.getLogger("model")
torch.set_num_threads(snakemake.threads)
kind = snakemake.params.kind

if snakemake.rule == "planted_model":
    from fmextract.planted import planted_copy
    from fmextract.stages import load_marker_programs

    cfg, source = snakemake.params.planted, checkpoint_dir(kind, snakemake.input)
    trained = load_model(kind, source)
    model, member = planted_copy(trained, load_marker_programs(snakemake.input.programs), layer=cfg["layer"],
                                 head=cfg["head"], seed=snakemake.params.seed, logit_gap=cfg["logit_gap"])
    log.info("planted copy of %s %s (sha256 %s): head L%dH%d reads %d genes of %d marker programs, kappa %.3f", kind,
             source, trained.checkpoint_sha256, cfg["layer"], cfg["head"], len(member),
             len(model.config["planted"]["programs"]), model.config["planted"]["kappa"])
    model.save(checkpoint_dir(kind, snakemake.output))

elif snakemake.rule == "untrained_model":
    source = checkpoint_dir(kind, snakemake.input)
    trained = load_model(kind, source)
    model = trained.untrained_copy(seed=snakemake.params.seed)
    log.info("untrained copy of %s %s (sha256 %s): %d layers x %d heads, d_model %d, %d genes, seed %d", kind, source,
             trained.checkpoint_sha256, model.n_layers, model.n_heads, model.d_model, len(model.genes),
             snakemake.params.seed)
    model.save(checkpoint_dir(kind, snakemake.output))

else:
    import anndata as ad
    import pandas as pd

    from fmextract.io import write_tsv
    from fmextract.models import model_class
    from fmextract.models.base import resolve_device

    with open(snakemake.input.reference_donors) as fh:
        donors = [line.strip() for line in fh if line.strip()]
    panel = ad.read_h5ad(snakemake.input.h5ad)
    panel = panel[panel.obs["donor"].isin(donors)]
    device = resolve_device(snakemake.params.device)
    log.info("pretraining a %s demo model on %s", kind, device)
    model, curve = model_class(kind).pretrain_demo(panel.layers["counts"], panel.var_names.tolist(),
                                                   settings=snakemake.params.pretrain, device=device)
    log.info("pretrained on %d cells of %d reference donors; loss %.4f -> %.4f", panel.n_obs, len(donors),
             curve[0][1], curve[-1][1])
    model.save(checkpoint_dir(kind, snakemake.output))
    write_tsv(pd.DataFrame(curve, columns=["step", "loss"]), snakemake.output.curve)
