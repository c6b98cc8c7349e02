"""palantir: Palantir pseudotime (palantir 1.4), donor-local: each test donor's cells alone.

Per donor: `palantir.utils.run_pca` (uncentred, all panel genes: `use_hvg=False`, the panel is already the HVG
selection) -> `run_diffusion_maps` -> `determine_multiscale_space` -> `palantir.core.run_palantir` with the early
cell from the label-free root rule (PCA fit on training cells; the test cell nearest the centroid of the training
cells at the smallest `depth`; `fmextract.baselines.donor_local_pseudotime`). Palantir itself moves the start to
the nearest diffusion-boundary cell, as it does for any user-given early cell. Terminal states are Palantir's own.
Speed: `num_waypoints` 300 (Palantir's default is 1,200), seeded, `n_jobs` = params threads.
Small donors: knn and component counts shrink to fit; below `min_cells` (default 10) the pseudotime is the
distance to the progenitor centroid. Params: n_pcs (20), n_dcs (10), knn (30), num_waypoints (300), min_cells (10).
"""

import contextlib
import io
import logging

import palantir

from fmextract.baselines import donor_local_pseudotime


def pseudotime(train, test, params):
    """Palantir pseudotime of every test cell, computed within its donor from the label-free root."""
    seed, log = params["seed"], logging.getLogger(__name__)

    def fit_donor(cells, root):
        n = cells.n_obs
        n_dcs = max(3, min(params.get("n_dcs", 10), n - 2))
        knn = max(3, min(params.get("knn", 30), n - 1))
        with contextlib.redirect_stdout(io.StringIO()) as chatter:
            palantir.utils.run_pca(
                cells, n_components=max(2, min(params.get("n_pcs", 20), n - 1, cells.n_vars - 1)), use_hvg=False
            )
            palantir.utils.run_diffusion_maps(cells, n_components=n_dcs, knn=knn, seed=seed)
            palantir.utils.determine_multiscale_space(cells)
            palantir.core.run_palantir(
                cells, cells.obs_names[root], knn=knn, num_waypoints=params.get("num_waypoints", 300),
                n_jobs=params["threads"], seed=seed,
            )
        log.debug(chatter.getvalue())
        return cells.obs["palantir_pseudotime"].to_numpy(dtype=float)

    return donor_local_pseudotime(train, test, fit_donor, min_cells=params.get("min_cells", 10), seed=seed)
