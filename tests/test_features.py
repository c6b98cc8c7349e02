"""Feature maps over exported operators: layer blocks, pooled drift, weighted heads, save/load."""

import numpy as np
import pytest
import scipy.sparse as sp

from fmextract.features import FeatureMap, head_map, layer_blocks, low_rank_map, pooled_drift_map, sparse_map, without_factor


def random_ops(L=4, H=2, G=5, seed=0):
    rng = np.random.default_rng(seed)
    ops = rng.random((L, H, G, G)).astype(np.float32)
    return ops / ops.sum(axis=-1, keepdims=True)


def test_layer_blocks():
    assert layer_blocks(12) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert layer_blocks(4) == [[0, 1], [2], [3]]
    with pytest.raises(ValueError, match="at least 3 layers"):
        layer_blocks(2)


def test_pooled_drift_matches_definition():
    ops = random_ops()
    x = np.random.default_rng(1).random((3, 5)).astype(np.float32)
    fmap = pooled_drift_map(ops, list("abcde"))
    early, mid, late = ops[[0, 1]].mean(axis=(0, 1)), ops[2].mean(axis=0), ops[3].mean(axis=0)
    expected = np.hstack([x @ early - x @ mid, x @ mid - x @ late])
    np.testing.assert_allclose(fmap.transform(x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fmap.transform(sp.csr_matrix(x)), expected, rtol=1e-5, atol=1e-6)
    assert fmap.matrix.shape == (5, 10)


def test_head_map_weights():
    ops = random_ops()
    fmap = head_map(ops, list("abcde"), [(0, 1), (3, 0)], weights=[0.25, 0.75])
    np.testing.assert_allclose(fmap.matrix, 0.25 * ops[0, 1] + 0.75 * ops[3, 0], rtol=1e-6)


def test_save_load_roundtrip(tmp_path):
    fmap = pooled_drift_map(random_ops(), list("abcde"))
    fmap.save(str(tmp_path / "m.npz"))
    back = FeatureMap.load(str(tmp_path / "m.npz"))
    assert back.genes == fmap.genes and back.kind == "pooled_drift" and back.meta == fmap.meta
    np.testing.assert_array_equal(back.matrix, fmap.matrix)
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_low_rank_sparse_and_ablation(tmp_path):
    fmap = head_map(random_ops(G=8), list("abcdefgh"), [(0, 0)])
    x = np.random.default_rng(2).random((4, 8))
    full_rank = low_rank_map(fmap, 8)
    np.testing.assert_allclose(full_rank.transform(x), fmap.transform(x), rtol=1e-4, atol=1e-5)
    r2 = low_rank_map(fmap, 2)
    assert r2.left.shape == (8, 2) and r2.meta["rank"] == 2
    err2 = np.linalg.norm(r2.dense() - fmap.dense())
    assert err2 < np.linalg.norm(fmap.dense()) and err2 > np.linalg.norm(low_rank_map(fmap, 4).dense() - fmap.dense())
    sparse = sparse_map(fmap, 0.25)
    assert sparse.matrix.nnz == 16
    dropped = without_factor(r2, 0)
    np.testing.assert_allclose(dropped.dense(), r2.left[:, [1]] @ r2.right[[1]], rtol=1e-5)
    for m in (r2, sparse):
        m.save(str(tmp_path / f"{m.kind}.npz"))
        np.testing.assert_allclose(FeatureMap.load(str(tmp_path / f"{m.kind}.npz")).transform(x), m.transform(x), rtol=1e-6)
