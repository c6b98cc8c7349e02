"""dpt: scanpy diffusion pseudotime, donor-local: each test donor's cells alone (PCA -> neighbors -> diffmap -> dpt).

Root (no test labels): fit a PCA on the training cells, take the centroid of the training cells at the smallest
`depth` (stem/progenitor stage); in each test donor the root is the cell nearest to it
(`fmextract.baselines.donor_local_pseudotime`). Small donors: neighbours, PCs and diffusion components shrink to
fit the donor; below `min_cells` (params, default 5) the pseudotime is the distance to the progenitor centroid.
Cells disconnected from the root (infinite DPT) get the donor's largest finite pseudotime.
Params: n_pcs (20), n_neighbors (15), n_diffmap (15), n_dcs (10), min_cells (5); scanpy's defaults but n_pcs.
"""

import scanpy as sc

from fmextract.baselines import donor_local_pseudotime


def pseudotime(train, test, params):
    """Diffusion pseudotime of every test cell, computed within its donor from the label-free root."""
    seed = params["seed"]

    def fit_donor(cells, root):
        n = cells.n_obs
        n_pcs = max(1, min(params.get("n_pcs", 20), n - 1, cells.n_vars - 1))
        n_diffmap = max(3, min(params.get("n_diffmap", 15), n - 2))
        sc.pp.pca(cells, n_comps=n_pcs, random_state=seed)
        n_neighbors = max(2, min(params.get("n_neighbors", 15), n - 1))
        sc.pp.neighbors(cells, n_neighbors=n_neighbors, n_pcs=n_pcs, random_state=seed)
        sc.tl.diffmap(cells, n_comps=n_diffmap, random_state=seed)
        cells.uns["iroot"] = root
        sc.tl.dpt(cells, n_dcs=min(params.get("n_dcs", 10), n_diffmap))
        return cells.obs["dpt_pseudotime"].to_numpy(dtype=float)

    return donor_local_pseudotime(train, test, fit_donor, min_cells=params.get("min_cells", 5), seed=seed)
