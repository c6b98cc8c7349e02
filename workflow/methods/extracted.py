"""extracted: the frozen latent of the paper's method (attention feature map -> frozen adaptor), read per split.

The operator map and the adaptor are fitted once on reference donors and stay frozen, so every cell's latent is
computed once for the whole panel (rule frozen_latent: map and adaptor folded into one G x d matrix,
`fmextract.latent`) and a split only reads its cells' rows. Declare the cache and the adaptor it folds in the config
entry: `inputs: {latent: results/latent/<feature>_<mode>.h5, adaptor: results/adaptor/<feature>_<mode>.npz}`.
"""

from fmextract import cache
from fmextract.adaptor import Adaptor
from fmextract.errors import InputError

READS_EXPRESSION = False  # the cached latent is all it needs


def _input(params, key: str, example: str) -> str:
    path = params["inputs"].get(key)
    if path is None:
        raise InputError(f"an extracted method needs inputs: {{{key}: {example}}} in its config entry; add it")
    return path


def embed(train, test, params):
    """z of the split's training and test cells, read from the frozen-latent cache by obs name."""
    path = _input(params, "latent", "results/latent/<feature>_<mode>.h5")
    return cache.read_rows(path, train.obs_names), cache.read_rows(path, test.obs_names)


def fitted_once(params):
    """The adaptor's trainable parameters (fitted once on reference donors, before the splits)."""
    return {"adaptor": Adaptor.load(_input(params, "adaptor", "results/adaptor/<feature>_<mode>.npz")).n_parameters}
