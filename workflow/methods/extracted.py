"""extracted: the frozen latent of the paper's method (attention feature map -> frozen adaptor), read per split.

The operator map and the adaptor are fitted once on reference donors and stay frozen, so every cell's latent is
computed once for the whole panel (rule frozen_latent: map and adaptor folded into one G x d matrix,
`fmextract.latent`) and a split only reads its cells' rows. Declare the cache in the config entry:
`inputs: {latent: results/latent/<feature>_<mode>.h5}`.
"""

from fmextract import cache
from fmextract.errors import InputError

READS_EXPRESSION = False  # the cached latent is all it needs


def embed(train, test, params):
    """z of the split's training and test cells, read from the frozen-latent cache by obs name."""
    path = params["inputs"].get("latent")
    if path is None:
        raise InputError("an extracted method needs its frozen latent: add inputs: {latent: "
                         "results/latent/<feature>_<mode>.h5} to its config entry")
    return cache.read_rows(path, train.obs_names), cache.read_rows(path, test.obs_names)
