"""Geneformer in its Hugging Face layout, without any download: a tiny randomly initialised BertForMaskedLM saved with
transformers' save_pretrained beside token and gene-median dictionaries over simulated genes (Ensembl-shaped ids).
Checked: tokenisation against hand-ranked orders, one head's operator recomputed with plain torch from the saved
weights, the layer loop against transformers' own forward, the cell embedding, bad input, and the planted head found
first by the head screen."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from fmextract import data
from fmextract.errors import InputError
from fmextract.models import geneformer as gf
from fmextract.operators import context_cells, export_operators, weights_operators
from fmextract.planted import planted_copy
from fmextract.simulate import simulate_panel
from fmextract.stages import load_marker_programs, load_stage_graph, ruler_distances, stage_info

torch.set_num_threads(1)
LAYER, HEAD = 1, 2
D, H, NL = 32, 4, 3


def _hf_checkpoint(directory, tokens, medians, *, input_size, seed=0):
    """transformers' BertForMaskedLM, randomly initialised and saved with save_pretrained, plus the two pickles."""
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=max(tokens.values()) + 1, hidden_size=D, num_hidden_layers=NL, num_attention_heads=H,
                        intermediate_size=64, max_position_embeddings=input_size, pad_token_id=tokens["<pad>"],
                        attn_implementation="eager")
    torch.manual_seed(seed)
    model = BertForMaskedLM(config).eval()
    model.save_pretrained(directory)
    for name, obj in (("token_dictionary_gc104M.pkl", tokens), ("gene_median_dictionary_gc104M.pkl", medians)):
        with open(directory / name, "wb") as fh:
            pickle.dump(obj, fh)
    return model


@pytest.fixture(scope="module")
def world(root, stage_table, tmp_path_factory):
    """A simulated reference (var: symbols, `ensembl_id` column), dictionaries over it, a saved tiny checkpoint."""
    res = root / "resources"
    edges = load_stage_graph(res / "stage_graph.tsv", list(stage_info(stage_table).index))
    programs = load_marker_programs(res / "marker_programs.tsv")
    background = (res / "background_genes.txt").read_text().split()
    panel = simulate_panel(stage_table, edges, programs, background, donors=[f"D{i}" for i in range(4)],
                           tissues=["bone_marrow", "blood"], stages=None, cells_per_donor=250, n_genes=None, seed=5)
    panel.var["ensembl_id"] = gf.demo_ensembl_ids(panel.var_names)
    ids = list(panel.var["ensembl_id"])
    tokens, medians = gf.build_dictionaries(ids, panel.layers["counts"])
    directory = tmp_path_factory.mktemp("geneformer")
    hf = _hf_checkpoint(directory, tokens, medians, input_size=len(ids) + 2)
    model = gf.load_geneformer(directory)
    symbol_to_id = dict(zip(panel.var_names, ids))
    id_programs = {p: [symbol_to_id[g] for g in genes if g in symbol_to_id] for p, genes in programs.items()}
    return dict(panel=panel, ids=ids, tokens=tokens, medians=medians, dir=directory, hf=hf, model=model,
                programs=id_programs)


# ------------------------------------------------------------------------------------------------------ tokenisation
def test_rank_value_order_matches_a_hand_ranked_cell():
    counts = sp.csr_matrix(np.array([[4.0, 0.0, 2.0, 1.0, 3.0], [0.0, 1.0, 0.0, 0.0, 0.0]]))
    medians = np.array([2.0, 1.0, 0.5, 0.25, 3.0])
    # cell 0, library 10: 4/10*1e4/2 = 2000, 2/10*1e4/0.5 = 4000, 1/10*1e4/0.25 = 4000, 3/10*1e4/3 = 1000
    # -> genes 2 and 3 tie at 4000 (column order kept), then 0, then 4; gene 1 is not expressed
    order = gf.rank_value_order(counts, medians)
    assert order[0].tolist() == [2, 3, 0, 4] and order[1].tolist() == [1]
    assert gf.rank_value_order(counts, medians, limit=2)[0].tolist() == [2, 3]
    # the library size is the cell's total over all its genes, not the panel's: a given n_counts is used as is
    assert gf.rank_value_order(counts, medians, n_counts=[1.0, 1.0])[0].tolist() == [2, 3, 0, 4]
    mixed = sp.csr_matrix(counts, dtype=np.float32)  # as anndata reads it back: int32 indices, int64 indptr
    mixed.indptr = mixed.indptr.astype(np.int64)
    assert [o.tolist() for o in gf.rank_value_order(mixed, medians)] == [[2, 3, 0, 4], [1]]


def test_cell_tokens_frame_v2_cells_and_truncate_to_the_input_size(world):
    model = world["model"]
    tokens = np.arange(10, 20)
    order = np.arange(10)[::-1]
    assert model.special_tokens and model.input_size == len(world["ids"]) + 2
    ids = gf.cell_tokens(model, order, tokens)
    assert ids[0] == world["tokens"]["<cls>"] and ids[-1] == world["tokens"]["<eos>"]
    assert ids[1:-1].tolist() == tokens[::-1].tolist()
    v1 = gf.Geneformer(model.bert, {k: v for k, v in world["tokens"].items() if k not in ("<cls>", "<eos>")},
                       world["medians"])
    v1.bert.config.max_position_embeddings, keep = 4, model.input_size
    try:
        assert gf.cell_tokens(v1, order, tokens).tolist() == [19, 18, 17, 16]
    finally:
        v1.bert.config.max_position_embeddings = keep


# ---------------------------------------------------------------------------------------------- forward & operators
def _manual_operator(directory, panel, ids, genes, cells, tokens, medians, layer, head):
    """One head's attention_prob operator from the saved safetensors with plain torch: no transformers, no fmextract.

    Cells are rank-value encoded over the panel genes (the counts the pipeline hands the model), by hand."""
    from safetensors.torch import load_file

    w = {k: v.double() for k, v in load_file(str(directory / "model.safetensors")).items()}
    dh = D // H

    def ln(x, name):
        return torch.nn.functional.layer_norm(x, (D,), w[f"{name}.weight"], w[f"{name}.bias"], eps=1e-12)

    def lin(x, name):
        return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    where = {g: i for i, g in enumerate(genes)}
    acc = torch.zeros(len(genes), len(genes), dtype=torch.float64)
    cols = [ids.index(g) for g in genes]
    X = panel.layers["counts"][cells][:, cols].toarray().astype(np.float64)
    for row in X:
        nz = np.flatnonzero(row)
        value = row[nz] / row.sum() * 10_000 / np.array([medians[genes[j]] for j in nz])
        ranked = [genes[j] for j in nz[np.argsort(-value, kind="stable")]]
        seq = ["<cls>", *ranked, "<eos>"]
        t = torch.tensor([tokens[g] for g in seq])
        x = w["bert.embeddings.word_embeddings.weight"][t] + w["bert.embeddings.position_embeddings.weight"][: len(t)]
        x = ln(x + w["bert.embeddings.token_type_embeddings.weight"][0], "bert.embeddings.LayerNorm")
        for l in range(layer + 1):
            p = f"bert.encoder.layer.{l}"
            q, k, v = (lin(x, f"{p}.attention.self.{n}").reshape(len(t), H, dh).transpose(0, 1) for n in ("query", "key", "value"))
            prob = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(dh), dim=-1)
            if l == layer:
                pos = [i for i, g in enumerate(seq) if g in where]
                rows = [where[seq[i]] for i in pos]
                acc[np.ix_(rows, rows)] += prob[head][np.ix_(pos, pos)]
                break
            a = ln(x + lin((prob @ v).transpose(0, 1).reshape(len(t), D), f"{p}.attention.output.dense"),
                   f"{p}.attention.output.LayerNorm")
            hidden = torch.nn.functional.gelu(lin(a, f"{p}.intermediate.dense"))
            x = ln(a + lin(hidden, f"{p}.output.dense"), f"{p}.output.LayerNorm")
    acc /= len(X)
    total = acc.sum(1, keepdim=True)
    return torch.where(total > 0, acc / total, acc).numpy()  # a gene expressed in no context cell keeps a zero row


def test_one_head_operator_recomputed_with_plain_torch(world):
    from fmextract.operators import context_cells

    panel, ids = world["panel"], world["ids"]
    genes = ids[::3]  # a panel of every third gene: attention to other genes and special tokens is dropped
    ops = export_operators(world["model"], panel, genes=genes, n_context=12, seed=3, batch_size=5,
                              gene_column="ensembl_id", progress=False)
    cells = context_cells(panel.n_obs, 12, 3)
    ref = _manual_operator(world["dir"], panel, ids, genes, cells, world["tokens"], world["medians"], LAYER, HEAD)
    np.testing.assert_allclose(ops.operators[LAYER, HEAD], ref, atol=1e-5)
    assert ops.operators.shape == (NL, H, len(genes), len(genes)) and ops.meta["n_context"] == 12


def test_layer_loop_equals_transformers_forward(world):
    model, hf = world["model"], world["hf"]
    orders = gf.rank_value_order(world["panel"].layers["counts"][:6], np.array([world["medians"][g] for g in world["ids"]]))
    tokens = np.array([world["tokens"][g] for g in world["ids"]])
    ids, mask = gf.pad_batch([gf.cell_tokens(model, o, tokens) for o in orders], model.pad_id)
    assert (mask == 0).any()  # cells of different lengths: padding is exercised
    with torch.no_grad():
        ref = hf.bert(input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
        ours = list(model.iter_layers(ids, mask, capture="attention_prob"))
    real = mask.bool()
    for layer, hidden, att in ours:
        torch.testing.assert_close(hidden[real], ref.hidden_states[layer + 1][real], atol=1e-5, rtol=1e-5)
        rows = att.transpose(1, 2)[real]  # [real query positions, H, T]
        torch.testing.assert_close(rows, ref.attentions[layer].transpose(1, 2)[real], atol=1e-6, rtol=1e-5)


def test_qk_raw_and_absent_genes(world):
    panel = world["panel"]
    genes = world["ids"][:40]
    raw = export_operators(world["model"], panel, genes=genes, n_context=8, definition="qk_raw", seed=0,
                              gene_column="ensembl_id", progress=False)
    prob = export_operators(world["model"], panel, genes=genes, n_context=8, seed=0, gene_column="ensembl_id",
                               progress=False)
    expressed = (panel.layers["counts"][context_cells(panel.n_obs, 8, 0)][:, :40].toarray() > 0).any(0)
    np.testing.assert_allclose(prob.operators.sum(-1)[..., expressed], 1.0, atol=1e-5)
    assert not prob.operators[..., ~expressed, :].any() and not raw.operators[..., ~expressed, :].any()
    assert (~expressed).any() and np.isfinite(raw.operators).all()
    # a context cell expressing no panel gene adds nothing: the sum over 10 cells equals the sum over the other 9
    sub = panel[:10].copy()
    counts = sub.layers["counts"].tolil()
    counts[0, :40] = 0
    sub.layers["counts"] = counts.tocsr()
    ten = export_operators(world["model"], sub, genes=genes, n_context=10, definition="qk_raw", seed=0,
                           gene_column="ensembl_id", progress=False)
    nine = export_operators(world["model"], sub[1:].copy(), genes=genes, n_context=9, definition="qk_raw", seed=0,
                            gene_column="ensembl_id", progress=False)
    np.testing.assert_allclose(ten.operators * 10, nine.operators * 9, atol=1e-4)


def test_weights_only_readings_leave_position_embeddings_out(world):
    model = world["model"]
    genes = world["ids"][:30]
    qk, ov = weights_operators(model, genes, "qk_weights"), weights_operators(model, genes, "ov_weights")
    assert qk.operators.shape == ov.operators.shape == (NL, H, 30, 30)
    np.testing.assert_allclose(qk.operators.sum(-1), 1.0, atol=1e-5)
    moved = gf.load_geneformer(world["dir"])
    with torch.no_grad():
        moved.bert.bert.embeddings.position_embeddings.weight.normal_()
    np.testing.assert_array_equal(weights_operators(moved, genes, "qk_weights").operators, qk.operators)
    w = {k: v.double() for k, v in model.bert.state_dict().items()}
    t = torch.tensor([world["tokens"][g] for g in genes])
    x = w["bert.embeddings.word_embeddings.weight"][t] + w["bert.embeddings.token_type_embeddings.weight"][0]
    E = torch.nn.functional.layer_norm(x, (D,), w["bert.embeddings.LayerNorm.weight"], w["bert.embeddings.LayerNorm.bias"],
                                       eps=1e-12)
    dh, p = D // H, "bert.encoder.layer.2.attention"
    q = E @ w[f"{p}.self.query.weight"][dh : 2 * dh].T + w[f"{p}.self.query.bias"][dh : 2 * dh]
    k = E @ w[f"{p}.self.key.weight"][dh : 2 * dh].T + w[f"{p}.self.key.bias"][dh : 2 * dh]
    np.testing.assert_allclose(qk.operators[2, 1], torch.softmax(q @ k.T / math.sqrt(dh), -1).numpy(), atol=1e-6)
    v = E @ w[f"{p}.self.value.weight"][dh : 2 * dh].T
    np.testing.assert_allclose(ov.operators[2, 1], (v @ w[f"{p}.output.dense.weight"][:, dh : 2 * dh].T @ E.T / D).numpy(),
                               atol=1e-6)


def test_cell_embedding_is_the_mean_gene_state_of_the_second_to_last_layer(world):
    model, hf, panel = world["model"], world["hf"], world["panel"]
    sub = panel[:7].copy()
    emb = gf.embed_cells(model, sub, gene_column="ensembl_id", batch_size=3, progress=False)
    alone = gf.embed_cells(model, sub[3:4].copy(), gene_column="ensembl_id", progress=False)
    np.testing.assert_allclose(alone[0], emb[3], atol=1e-5)  # independent of the batch it shares
    orders = gf.rank_value_order(sub.layers["counts"], np.array([world["medians"][g] for g in world["ids"]]))
    tokens = np.array([world["tokens"][g] for g in world["ids"]])
    for i in (0, 5):
        ids = torch.as_tensor(gf.cell_tokens(model, orders[i], tokens))[None]
        with torch.no_grad():
            states = hf.bert(input_ids=ids, output_hidden_states=True).hidden_states
        np.testing.assert_allclose(emb[i], states[NL - 1][0, 1:-1].mean(0).numpy(), atol=1e-5)
    last = gf.embed_cells(model, sub, gene_column="ensembl_id", emb_layer=0, progress=False)
    assert not np.allclose(last, emb)
    with pytest.raises(InputError, match="emb_layer"):
        gf.embed_cells(model, sub, gene_column="ensembl_id", emb_layer=-2)


# -------------------------------------------------------------------------------------------------------- bad input
def test_bad_checkpoint_folders_are_one_line_input_errors(world, tmp_path):
    import shutil

    def copy(name):
        d = tmp_path / name
        shutil.copytree(world["dir"], d)
        return d

    d = copy("no_medians")
    next(d.glob("gene_median_dictionary*.pkl")).unlink()
    with pytest.raises(InputError, match="gene_median_dictionary"):
        gf.load_geneformer(d)
    d = copy("truncated")
    weights = d / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(InputError, match="truncated or corrupt"):
        gf.load_geneformer(d)
    d = copy("no_pad")
    with open(next(d.glob("token_dictionary*.pkl")), "wb") as fh:
        pickle.dump({k: v for k, v in world["tokens"].items() if k != "<pad>"}, fh)
    with pytest.raises(InputError, match="'<pad>' missing"):
        gf.load_geneformer(d)
    d = copy("two_dicts")
    (d / "token_dictionary_extra.pkl").write_bytes(b"")
    with pytest.raises(InputError, match="2 .*token_dictionary"):
        gf.load_geneformer(d)
    with pytest.raises(InputError, match="1 of 1 panel genes are not in the model vocabulary"):
        export_operators(world["model"], world["panel"], genes=["ENSG00000000003"], n_context=2,
                            gene_column="ensembl_id", progress=False)
    with pytest.raises(InputError, match="Ensembl"):
        gf.embed_cells(world["model"], world["panel"][:2].copy(), progress=False)  # symbols, not Ensembl ids


def test_checkpoint_round_trip(world, tmp_path):
    model = world["model"]
    gf.save_geneformer(model, tmp_path)
    back = gf.load_geneformer(tmp_path)
    assert back.checkpoint_sha256 == model.checkpoint_sha256
    genes = world["ids"][:20]
    np.testing.assert_array_equal(weights_operators(back, genes, "qk_weights").operators,
                                  weights_operators(model, genes, "qk_weights").operators)
    assert gf.Geneformer.vocabulary(tmp_path) == model.genes and model.genes[0] == world["ids"][0]


# -------------------------------------------------------------------------------------------- untrained and planted
def test_untrained_copy_is_seeded_and_fresh(world):
    model = world["model"]
    a, b, c = (model.untrained_copy(seed=s) for s in (1, 1, 2))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    w = lambda m: m.bert.state_dict()[key]
    assert torch.equal(w(a), w(b)) and not torch.equal(w(a), w(c)) and not torch.equal(w(a), w(model))
    assert a.config["untrained"] and a.config["seed"] == 1
    assert a.token_dictionary == model.token_dictionary and a.bert.config.to_dict() == model.bert.config.to_dict()


def test_pretrain_demo_builds_and_trains_a_seeded_model(world):
    panel, ids = world["panel"], world["ids"]
    settings = dict(d_model=16, nhead=2, d_hid=32, nlayers=2, steps=30, batch_size=8, lr=3e-3, warmup=5,
                    mask_ratio=0.15, seed=0)
    counts = panel.layers["counts"][:200]
    a, curve = gf.Geneformer.pretrain_demo(counts, ids, settings=settings, device=torch.device("cpu"), progress=False)
    b, again = gf.Geneformer.pretrain_demo(counts, ids, settings=settings, device=torch.device("cpu"), progress=False)
    assert curve == again and len(curve) == 30 and a.genes == ids and a.input_size == len(ids) + 2
    assert np.mean([l for _, l in curve[-5:]]) < np.mean([l for _, l in curve[:5]])  # masked-gene loss goes down
    assert a.n_layers == 2 and a.d_model == 16 and not a.training


@pytest.fixture(scope="module")
def planted(world):
    return planted_copy(world["model"], world["programs"], layer=LAYER, head=HEAD, seed=0, logit_gap=4.0)


@pytest.mark.parametrize("definition", ["qk_weights", "attention_prob"])
def test_head_screen_ranks_the_planted_head_first(world, planted, definition, stage_table, root):
    from fmextract.screen import screen_heads

    model, member = planted
    panel, ids = world["panel"].copy(), world["ids"]
    if definition == "qk_weights":
        ops = weights_operators(model, ids, definition)
    else:
        ops = export_operators(model, panel, genes=ids, n_context=60, seed=0, gene_column="ensembl_id",
                                  progress=False)
    panel.obs = panel.obs.assign(donor=panel.obs["donor_id"].astype(str), stage=panel.obs["true_stage"].astype(str),
                                 branch=panel.obs["true_branch"].astype(str), depth=panel.obs["true_depth"])
    data.log_normalise(panel)
    profiles, meta = data.anchors(panel, min_cells=5)
    edges = load_stage_graph(root / "resources" / "stage_graph.tsv", list(stage_info(stage_table).index))
    stages = sorted(set(stage_table["stage"]))
    ruler = pd.DataFrame(ruler_distances(stages, edges), index=stages, columns=stages)
    kw = dict(d_latent=10, alpha=0.1, beta=1 / np.pi, epochs=40, lr=0.01, batch_size=256, seed=0)
    table = screen_heads(ops.operators, profiles, meta, ruler, adaptor_kw=kw)
    assert table.iloc[0]["name"] == f"L{LAYER}H{HEAD}", table.head()
    assert model.config["planted"]["layer"] == LAYER and len(member) > 10


def test_bad_planted_configuration_is_an_input_error(world):
    with pytest.raises(InputError, match="not in the checkpoint"):
        planted_copy(world["model"], world["programs"], layer=NL, head=0, seed=0, logit_gap=4.0)
    with pytest.raises(InputError, match="at least 2"):
        planted_copy(world["model"], {"symbols": ["CD34", "GATA1"]}, layer=0, head=0, seed=0, logit_gap=4.0)
