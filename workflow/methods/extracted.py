"""extracted: pooled-drift attention features (frozen operator) -> frozen adaptor; the paper's method."""

from fmextract.adaptor import Adaptor
from fmextract.features import FeatureMap


def embed(train, test, params):
    """z = adaptor(x M): the operator map and adaptor were fitted once on reference donors and stay frozen."""
    fmap = FeatureMap.load(params["inputs"]["feature_map"])
    adaptor = Adaptor.load(params["inputs"]["adaptor"])
    latent = lambda a: fmap.transform(a[:, fmap.genes].X, then=adaptor.transform)
    return latent(train), latent(test)


def fitted_once(params):
    """The adaptor's trainable parameters (fitted once on reference donors, before the splits)."""
    return {"adaptor": Adaptor.load(params["inputs"]["adaptor"]).n_parameters}
