"""LET adaptor: learns the ruler from features, is deterministic, and the cell-trained variant classifies."""

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from fmextract.adaptor import Adaptor, balanced_sample, fit_adaptor

STAGES = ["a", "b", "c", "d", "e"]
#: a path graph a-b-c-d-e
RULER = pd.DataFrame([[abs(i - j) for j in range(5)] for i in range(5)], index=STAGES, columns=STAGES)


def toy(n_per=20, dim=30, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.cumsum(rng.normal(size=(5, dim)), axis=0)
    labels = np.repeat(STAGES, n_per)
    F = centres[np.repeat(np.arange(5), n_per)] + 0.3 * rng.normal(size=(5 * n_per, dim))
    return F.astype(np.float32), labels


def fit(F, labels, **kw):
    args = dict(d_latent=3, alpha=0.1, beta=1 / np.pi, epochs=60, lr=0.02, batch_size=64, seed=0)
    return fit_adaptor(F, labels, RULER, **{**args, **kw})


def pair_rho(Z, labels):
    zn = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    ang = np.arccos(np.clip(zn @ zn.T, -1, 1))
    idx = pd.Series(labels).map({s: i for i, s in enumerate(STAGES)}).to_numpy()
    iu = np.triu_indices(len(Z), 1)
    return spearmanr(ang[iu], RULER.to_numpy()[idx[iu[0]], idx[iu[1]]])[0]


def test_adaptor_learns_the_ruler_and_is_deterministic():
    F, labels = toy()
    a, b = fit(F, labels), fit(F, labels)
    np.testing.assert_array_equal(a.W, b.W)
    assert a.history[-1] < a.history[0]
    assert pair_rho(a.transform(F), labels) > 0.6


def test_adaptor_transform_is_linear_and_saves(tmp_path):
    F, labels = toy()
    a = fit(F, labels, epochs=5)
    np.testing.assert_allclose(a.transform(F[:3]), ((F[:3] - a.b) / a.scale) @ a.W.T, rtol=1e-5)
    a.save(str(tmp_path / "a.npz"))
    back = Adaptor.load(str(tmp_path / "a.npz"))
    np.testing.assert_array_equal(back.transform(F), a.transform(F))
    assert a.n_parameters == 3 * 30 + 30


def test_cell_trained_variant_runs_with_classification_term():
    F, labels = toy()
    a = fit(F, labels, gamma=1.0)
    assert a.W.shape == (3, 30) and np.isfinite(a.history).all()


def test_balanced_sample_caps_each_label():
    labels = pd.Series(["x"] * 50 + ["y"] * 5)
    pos = balanced_sample(labels, per_label=10, seed=0)
    assert (labels.iloc[pos] == "x").sum() == 10 and (labels.iloc[pos] == "y").sum() == 5
    np.testing.assert_array_equal(pos, balanced_sample(labels, per_label=10, seed=0))


def test_init_is_float32_and_matches_an_svd_of_the_scaled_features():
    """The start (top principal axes of the centred, scaled features) from the F x F Gram matrix in float32 equals
    numpy's float64 SVD up to sign; the float32 scaling equals the float64 one."""
    from fmextract.adaptor import _principal_axes, _scaled

    F, _ = toy(n_per=30, dim=40)
    Fs, b, scale = _scaled(F)
    ref = F.astype(np.float64) - F.astype(np.float64).mean(0)
    ref_scale = np.sqrt((ref**2).sum(1).mean())
    assert Fs.dtype == np.float32 and np.isclose(scale, ref_scale, rtol=1e-6)
    np.testing.assert_allclose(Fs, ref / ref_scale, atol=1e-5)
    axes = _principal_axes(Fs, 3)
    vt = np.linalg.svd(ref / ref_scale, full_matrices=False)[2][:3]
    np.testing.assert_allclose(np.abs((axes * vt).sum(1)), 1, atol=1e-4)  # same axes, signs fixed by our rule
    assert np.all(axes[np.arange(3), np.abs(axes).argmax(1)] > 0)
    padded = _principal_axes(Fs[:2], 3)  # fewer rows than latent dimensions: zero rows beyond them
    assert padded.shape == (3, 40) and not padded[2].any()
