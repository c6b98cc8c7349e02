"""Operator export: shape, row sums, determinism, batch invariance, qk_raw vs softmax, inputs, save/load."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from fmextract.errors import InputError
from fmextract.operators import Operators, context_cells, export_operators, load_operators, save_operators
from fmextract.models.scgpt import binning, build_demo_model, gene_ids_for, tokenize_all_genes

torch.set_num_threads(1)
GENES = [f"GENE{i}" for i in range(10)]


@pytest.fixture(scope="module")
def model():
    return build_demo_model(GENES, d_model=16, nhead=2, d_hid=16, nlayers=3, seed=0)[0]


@pytest.fixture
def adata():
    """30 cells; the model's genes plus one it does not know, counts in layers['counts'] and log1p in X."""
    rng = np.random.default_rng(0)
    counts = rng.poisson(1.2, (30, 11)).astype(np.float32)
    counts[4] = 0  # an all-zero cell is still a valid context cell
    a = ad.AnnData(X=sp.csr_matrix(np.log1p(counts)), var=pd.DataFrame(index=GENES + ["OTHER"]))
    a.layers["counts"] = sp.csr_matrix(counts)
    return a


PANEL = GENES[::-1][:8]  # a panel in its own order, a subset of the vocabulary


def test_shape_rows_sum_to_one_and_provenance(model, adata):
    ops = export_operators(model, adata, genes=PANEL, n_context=12, seed=0, batch_size=5, progress=False)
    assert isinstance(ops, Operators)
    assert ops.operators.shape == (3, 2, 8, 8) and ops.operators.dtype == np.float32
    assert np.allclose(ops.operators.sum(-1), 1, atol=1e-5) and ops.operators.min() >= 0
    assert ops.genes == PANEL and ops.definition == "attention_prob" and ops.meta["n_context"] == 12
    assert ops.checkpoint_sha256 == model.checkpoint_sha256


def test_deterministic_batch_invariant_and_seeded(model, adata):
    kw = dict(genes=PANEL, n_context=12, progress=False)
    a = export_operators(model, adata, seed=0, batch_size=5, **kw).operators
    assert np.array_equal(a, export_operators(model, adata, seed=0, batch_size=5, **kw).operators)
    assert np.allclose(a, export_operators(model, adata, seed=0, batch_size=12, **kw).operators, atol=1e-6)
    assert not np.allclose(a, export_operators(model, adata, seed=1, batch_size=5, **kw).operators, atol=1e-6)


def test_export_from_the_presampled_context_cells_equals_export_from_the_panel(model, adata):
    """The rule reads only the sampled context cells' rows (context_cells) and exports from them alone."""
    kw = dict(genes=PANEL, seed=4, batch_size=5, progress=False)
    full = export_operators(model, adata, n_context=9, **kw)
    picked = context_cells(adata.n_obs, 9, 4)
    assert len(picked) == 9 and np.all(np.diff(picked) > 0)
    alone = export_operators(model, adata[picked].copy(), n_context=len(picked), **kw)
    np.testing.assert_array_equal(alone.operators, full.operators)


def test_counts_layer_is_used_and_x_is_the_fallback(model, adata):
    kw = dict(genes=PANEL, n_context=12, seed=0, progress=False)
    ref = export_operators(model, adata, **kw).operators
    plain = ad.AnnData(X=adata.layers["counts"].toarray(), var=adata.var.copy())  # counts in X, no layer
    assert np.allclose(export_operators(model, plain, **kw).operators, ref, atol=1e-6)


def test_single_cell_matches_a_direct_pass_and_qk_raw_softmax(model, adata):
    kw = dict(genes=PANEL, n_context=1, seed=3, progress=False)
    prob = export_operators(model, adata, definition="attention_prob", **kw)
    raw = export_operators(model, adata, definition="qk_raw", **kw)
    assert raw.definition == "qk_raw" and not np.allclose(raw.operators.sum(-1), 1)
    # softmax over the gene columns of one cell's raw scores == its renormalised attention without <cls>
    assert np.allclose(torch.softmax(torch.from_numpy(raw.operators), -1).numpy(), prob.operators, atol=1e-5)
    # and both equal a hand-made pass over that cell
    cell = np.sort(np.random.default_rng(3).choice(adata.n_obs, 1, replace=False))
    counts = adata[cell, PANEL].layers["counts"]
    g, v, m = tokenize_all_genes(binning(counts, 51, seed=3).toarray(), gene_ids_for(model.vocab, PANEL),
                                 cls_id=model.vocab["<cls>"], pad_value=-2)
    with torch.no_grad():
        att = model.encode_layers(g, v, m, capture="attention_prob").attention
    for layer, a in enumerate(att):
        sub = a[0, :, 1:, 1:]
        assert np.allclose((sub / sub.sum(-1, keepdim=True)).numpy(), prob.operators[layer], atol=1e-5)


def test_bad_inputs_are_input_errors(model, adata):
    with pytest.raises(InputError, match=r"2 of 3 panel genes are not in the model vocabulary.*NOPE1.*NOPE2"):
        export_operators(model, adata, genes=["GENE1", "NOPE1", "NOPE2"], n_context=3, progress=False)
    with pytest.raises(InputError, match="definition"):
        export_operators(model, adata, genes=PANEL, n_context=3, definition="grad", progress=False)
    with pytest.raises(InputError, match=r"1 of 2 panel genes are not in the AnnData.*GENE9"):
        export_operators(model, adata[:, GENES[:5]], genes=["GENE1", "GENE9"], n_context=3, progress=False)


def test_save_load_roundtrip_and_corrupt_file(model, adata, tmp_path):
    ops = export_operators(model, adata, genes=PANEL, n_context=6, definition="qk_raw", progress=False)
    path = tmp_path / "ops.npz"
    save_operators(ops, path)
    back = load_operators(path)
    assert np.array_equal(back.operators, ops.operators)
    assert (back.genes, back.definition, back.checkpoint_sha256, back.meta) == (
        ops.genes, ops.definition, ops.checkpoint_sha256, ops.meta)
    assert [p.name for p in tmp_path.iterdir()] == ["ops.npz"]  # no temporary left behind
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(InputError, match=r"ops\.npz"):
        load_operators(path)
    with pytest.raises(InputError, match="not found"):
        load_operators(tmp_path / "missing.npz")


# ------------------------------------------------------------------------------------------------ weights-only
def _layer_norm(x, weight, bias, eps=1e-5):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * weight + bias


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    """The test model saved in scGPT's layout (flash-era keys) and loaded back, with its folder."""
    from fmextract.models.scgpt import load_scgpt, save_scgpt

    m, vocab, args = build_demo_model(GENES, d_model=16, nhead=2, d_hid=16, nlayers=3, seed=4)
    folder = tmp_path_factory.mktemp("ckpt")
    save_scgpt(m, folder, vocab=vocab, args=args, flash_keys=True)
    return load_scgpt(folder), folder


@pytest.mark.parametrize("definition", ["qk_weights", "ov_weights"])
def test_weights_only_head_recomputed_by_hand_from_the_checkpoint_tensors(saved_checkpoint, definition):
    """One head, by hand in numpy from best_model.pt's tensors (not our module), equals the exported operator."""
    from fmextract.operators import weights_operators

    model, folder = saved_checkpoint
    ops = weights_operators(model, PANEL, definition)
    assert ops.operators.shape == (3, 2, 8, 8) and ops.definition == definition
    state = {k: v.double().numpy() for k, v in torch.load(folder / "best_model.pt", weights_only=True).items()}
    vocab = {g: i for i, g in enumerate(GENES)}
    E = _layer_norm(state["encoder.embedding.weight"][[vocab[g] for g in PANEL]], state["encoder.enc_norm.weight"],
                    state["encoder.enc_norm.bias"])
    layer, head, d, dh = 1, 1, 16, 8
    w = state[f"transformer_encoder.layers.{layer}.self_attn.Wqkv.weight"]  # flash-era name, [3d, d]
    b = state[f"transformer_encoder.layers.{layer}.self_attn.Wqkv.bias"]
    cols = slice(head * dh, (head + 1) * dh)
    W_Q, W_K, W_V = (w[i * d : (i + 1) * d][cols].T for i in range(3))  # d x d_head
    b_Q, b_K = b[:d][cols], b[d : 2 * d][cols]
    if definition == "qk_weights":
        s = (E @ W_Q + b_Q) @ (E @ W_K + b_K).T / np.sqrt(dh)
        expected = np.exp(s - s.max(1, keepdims=True))
        expected /= expected.sum(1, keepdims=True)
        assert np.allclose(ops.operators.sum(-1), 1, atol=1e-5)
    else:
        W_O = state[f"transformer_encoder.layers.{layer}.self_attn.out_proj.weight"][:, cols].T  # d_head x d
        expected = (E @ W_V @ W_O) @ E.T / d
    np.testing.assert_allclose(ops.operators[layer, head], expected, atol=1e-5)
    assert not np.allclose(ops.operators[layer, 0], expected, atol=1e-3)  # another head differs


def test_weights_only_needs_no_data_and_records_the_checkpoint_hash(saved_checkpoint, tmp_path):
    from fmextract.operators import DEFINITIONS, qk_weights, weights_operators

    model, folder = saved_checkpoint
    assert set(DEFINITIONS) == {"attention_prob", "qk_raw", "qk_weights", "ov_weights"}
    ops = qk_weights(model, PANEL)
    assert len(ops.checkpoint_sha256) == 64 and ops.checkpoint_sha256 == model.checkpoint_sha256
    save_operators(ops, tmp_path / "qk.npz")
    back = load_operators(tmp_path / "qk.npz")
    assert back.checkpoint_sha256 == ops.checkpoint_sha256 and back.definition == "qk_weights"
    # a gene order permutation permutes the operator (genes are tokens, nothing else enters)
    order = PANEL[::-1]
    flipped = qk_weights(model, order).operators
    np.testing.assert_allclose(flipped, ops.operators[:, :, ::-1, ::-1], atol=1e-6)
    with pytest.raises(InputError, match="not in the model vocabulary"):
        qk_weights(model, ["GENE1", "NOPE"])
    with pytest.raises(InputError, match="weights-only"):
        weights_operators(model, PANEL, "attention_prob")
