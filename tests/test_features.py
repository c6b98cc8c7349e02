"""Feature maps over exported operators: layer blocks, pooled drift, weighted heads, save/load."""

import numpy as np
import pytest
import scipy.sparse as sp

from fmextract.features import (FeatureMap, factor_ids, hard_sparse_map, head_map, identity_map, keep_factors, layer_blocks,
                                low_rank_map, pooled_drift_map, without_factor)


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


def test_low_rank_and_ablation(tmp_path):
    fmap = head_map(random_ops(G=8), list("abcdefgh"), [(0, 0)])
    x = np.random.default_rng(2).random((4, 8))
    full_rank = low_rank_map(fmap, 8)
    np.testing.assert_allclose(full_rank.transform(x), fmap.transform(x), rtol=1e-4, atol=1e-5)
    r2 = low_rank_map(fmap, 2)
    assert r2.left.shape == (8, 2) and r2.meta["rank"] == 2 and r2.n_weights == 2 * 8 + 2 * 8
    err2 = np.linalg.norm(r2.dense() - fmap.dense())
    assert err2 < np.linalg.norm(fmap.dense()) and err2 > np.linalg.norm(low_rank_map(fmap, 4).dense() - fmap.dense())
    dropped = without_factor(r2, 0)
    np.testing.assert_allclose(dropped.dense(), r2.left[:, [1]] @ r2.right[[1]], rtol=1e-5)
    assert factor_ids(dropped) == [1]
    r2.save(str(tmp_path / "r2.npz"))
    np.testing.assert_allclose(FeatureMap.load(str(tmp_path / "r2.npz")).transform(x), r2.transform(x), rtol=1e-6)


def test_hard_sparse_keeps_top_factors_and_genes(tmp_path):
    """The paper's hard-sparse rung: the largest factors, each with its top read and top write genes only."""
    rng = np.random.default_rng(4)
    G = 30
    fmap = FeatureMap(genes=[f"g{i}" for i in range(G)], kind="heads", matrix=rng.normal(size=(G, G)).astype(np.float32))
    r8 = low_rank_map(fmap, 8)
    sparse = hard_sparse_map(r8, n_factors=3, n_genes=5)
    assert sparse.kind == "hard_sparse" and sparse.meta["factors"] == [0, 1, 2]  # SVD order: largest first
    assert sparse.n_factors == 3 and sparse.n_weights == 3 * 5 + 3 * 5  # 16 x (60 + 60) = 1,920 at paper scale
    assert (np.diff(sparse.left.tocsc().indptr) == 5).all() and (np.diff(sparse.right.indptr) == 5).all()
    col = np.asarray(r8.left[:, 1])
    kept = np.flatnonzero(sparse.left[:, [1]].toarray().ravel())
    assert set(kept) == set(np.argsort(-np.abs(col))[:5])  # the factor's top-5 read genes, values unchanged
    np.testing.assert_allclose(sparse.left[:, [1]].toarray().ravel()[kept], col[kept], rtol=1e-6)
    x = rng.random((4, G))
    np.testing.assert_allclose(sparse.transform(x), x @ sparse.dense(), rtol=1e-5, atol=1e-6)
    sparse.save(str(tmp_path / "s.npz"))
    back = FeatureMap.load(str(tmp_path / "s.npz"))
    assert back.meta["factors"] == [0, 1, 2] and back.n_weights == sparse.n_weights
    np.testing.assert_allclose(back.transform(x), sparse.transform(x), rtol=1e-6)
    only = keep_factors(back, [2])  # ablations name factors by their rank-r index
    assert factor_ids(only) == [2] and factor_ids(without_factor(back, 0)) == [1, 2]
    with pytest.raises(ValueError, match="factorised"):
        hard_sparse_map(fmap, n_factors=2, n_genes=3)


def test_identity_map_is_the_panel_expression(tmp_path):
    genes = list("abcd")
    fmap = identity_map(genes)
    x = sp.csr_matrix(np.arange(8, dtype=np.float32).reshape(2, 4))
    np.testing.assert_array_equal(fmap.transform(x), x.toarray())
    fmap.save(str(tmp_path / "raw.npz"))
    back = FeatureMap.load(str(tmp_path / "raw.npz"))
    assert back.kind == "identity" and back.genes == genes and back.n_weights == 4
    np.testing.assert_array_equal(back.transform(x), x.toarray())
