"""Rules pretrain_demo_model (masked-value pretraining of the small demo model), untrained_model (the same
architecture as the configured checkpoint, freshly initialised: the untrained-model control) and planted_model (that
untrained copy with one head planted on the marker programs: the positive control)."""

import logging
import os

import torch

from fmextract import logs
from fmextract.models.scgpt import save_scgpt

logs.to_file(snakemake.log[0])
log = logging.getLogger("model")
torch.set_num_threads(snakemake.threads)

if snakemake.rule == "planted_model":
    from fmextract.planted import planted_copy
    from fmextract.models.scgpt import load_scgpt
    from fmextract.stages import load_marker_programs

    cfg = snakemake.params.planted
    trained = load_scgpt(os.path.dirname(snakemake.input["best_model.pt"]))
    model, member = planted_copy(trained, load_marker_programs(snakemake.input.programs), layer=cfg["layer"],
                                 head=cfg["head"], seed=snakemake.params.seed, logit_gap=cfg["logit_gap"])
    log.info("planted copy of %s (sha256 %s): head L%dH%d reads %d genes of %d marker programs, kappa %.3f",
             snakemake.input["best_model.pt"], trained.checkpoint_sha256, cfg["layer"], cfg["head"], len(member),
             len(model.config["planted"]["programs"]), model.config["planted"]["kappa"])
    save_scgpt(model, os.path.dirname(snakemake.output["best_model.pt"]), vocab=model.vocab, args=model.config)

elif snakemake.rule == "untrained_model":
    from fmextract.models.scgpt import load_scgpt, untrained_copy

    trained = load_scgpt(os.path.dirname(snakemake.input["best_model.pt"]))
    model = untrained_copy(trained, seed=snakemake.params.seed)
    log.info("untrained copy of %s (sha256 %s): %d layers x %d heads, d_model %d, %d tokens, seed %d",
             snakemake.input["best_model.pt"], trained.checkpoint_sha256, model.nlayers, model.nhead, model.d_model,
             len(model.vocab), snakemake.params.seed)
    save_scgpt(model, os.path.dirname(snakemake.output["best_model.pt"]), vocab=model.vocab, args=model.config)

else:
    import anndata as ad
    import pandas as pd

    from fmextract.io import write_tsv
    from fmextract.models.scgpt import build_demo_model, pretrain, resolve_device

    cfg = snakemake.params.pretrain
    with open(snakemake.input.reference_donors) as fh:
        donors = [line.strip() for line in fh if line.strip()]
    panel = ad.read_h5ad(snakemake.input.h5ad)
    panel = panel[panel.obs["donor"].isin(donors)]
    genes = panel.var_names.tolist()
    model, vocab, args = build_demo_model(
        genes, d_model=cfg["d_model"], nhead=cfg["nhead"], d_hid=cfg["d_hid"], nlayers=cfg["nlayers"], seed=cfg["seed"]
    )
    device = resolve_device(snakemake.params.device)
    log.info("pretraining on %s", device)
    curve = pretrain(
        model.to(device), panel.layers["counts"], genes, steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
        warmup=cfg["warmup"], mask_ratio=cfg["mask_ratio"], seed=cfg["seed"],
    )
    log.info("pretrained on %d cells of %d reference donors; loss %.4f -> %.4f", panel.n_obs, len(donors),
             curve[0][1], curve[-1][1])
    save_scgpt(model.cpu(), os.path.dirname(snakemake.output["best_model.pt"]), vocab=vocab, args=args)
    write_tsv(pd.DataFrame(curve, columns=["step", "loss"]), snakemake.output.curve)
