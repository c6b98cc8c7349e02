"""Rules embed_cells and frozen_latent: per-cell caches computed once for a whole panel, read by every split."""

import logging
import time

from fmextract import logs
from fmextract.chunks import open_backed

logs.start(snakemake)
log = logging.getLogger("cache")
start = time.perf_counter()

if snakemake.rule == "embed_cells":
    import torch

    from fmextract.models import checkpoint_dir, load_model
    from fmextract.models.base import resolve_device

    torch.set_num_threads(snakemake.threads)
    cfg, kind = snakemake.params.model, snakemake.params.kind
    device = resolve_device(cfg["device"])
    source = checkpoint_dir(kind, snakemake.input)
    model = load_model(kind, source, device=device)
    with open_backed(snakemake.input.h5ad) as panel:  # counts read chunk by chunk, never the whole panel
        log.info("embedding %d cells x %d genes with %s %s (%d layers, d=%d) on %s, %s", panel.n_obs, panel.n_vars,
                 kind, source, model.n_layers, model.d_model, device, cfg["embedding_precision"])
        model.embed_to_cache(panel, snakemake.output[0], seed=snakemake.params.seed,
                             batch_size=cfg["embedding_batch_size"], precision=cfg["embedding_precision"],
                             attrs={"device": str(device), "panel": str(snakemake.input.h5ad)})
        n = panel.n_obs

elif snakemake.rule == "frozen_latent":
    from fmextract.adaptor import Adaptor
    from fmextract.features import FeatureMap
    from fmextract.latent import fold, write_latent_cache

    folded = fold(FeatureMap.load(snakemake.input.feature_map), Adaptor.load(snakemake.input.adaptor))
    attrs = {"kind": "frozen_latent", "feature_map": str(snakemake.input.feature_map),
             "adaptor": str(snakemake.input.adaptor), "panel": str(snakemake.input.h5ad),
             "folded": f"{len(folded.genes)} x {folded.d_latent} matrix + offset"}
    with open_backed(snakemake.input.h5ad) as panel:  # log1p panel expression, read chunk by chunk
        write_latent_cache(folded, panel, snakemake.output[0], attrs=attrs)
        n = panel.n_obs

seconds = time.perf_counter() - start
log.info("%s: %d cells in %.1f s (%.0f cells/s) -> %s", snakemake.rule, n, seconds, n / max(seconds, 1e-9),
         snakemake.output[0])
