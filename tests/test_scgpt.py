"""scGPT model: checkpoint layout and key variants, layer-by-layer pass, binning, embeddings, demo pretraining."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from fmextract.errors import InputError
from fmextract.models.base import resolve_device
from fmextract.models.scgpt import (
    ScGPT,
    binning,
    build_demo_model,
    cell_seeds,
    embed_cells,
    gene_ids_for,
    load_scgpt,
    pretrain,
    read_vocab,
    save_scgpt,
    tokenize_all_genes,
    untrained_copy,
)

torch.set_num_threads(1)
GENES = [f"GENE{i}" for i in range(12)]


def tiny(seed: int = 0, nlayers: int = 2, dropout: float = 0.0):
    """A tiny model over GENES, its vocab and args."""
    return build_demo_model(GENES, d_model=16, nhead=2, d_hid=24, nlayers=nlayers, seed=seed, dropout=dropout)


def program_counts(n: int = 60, seed: int = 0) -> np.ndarray:
    """Counts with two co-expression programs, so masked values are predictable from the others."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 2, n)
    rate = np.where(kind[:, None] == 0, np.r_[np.full(6, 8.0), np.full(6, 0.3)], np.r_[np.full(6, 0.3), np.full(6, 8.0)])
    return rng.poisson(rate * rng.uniform(0.5, 1.5, (n, 1))).astype(np.float32)


def tokens(model: ScGPT, counts: np.ndarray, pad_last: int = 0):
    """Tokenise all GENES of each cell; optionally mark the last `pad_last` positions of cell 0 as padding."""
    binned = binning(counts, 51, seed=0)
    g, v, m = tokenize_all_genes(binned, gene_ids_for(model.vocab, GENES), cls_id=model.vocab["<cls>"], pad_value=-2)
    if pad_last:
        g[0, -pad_last:] = model.vocab["<pad>"]
        v[0, -pad_last:] = -2
        m[0, -pad_last:] = True
    return g, v, m


def outputs(model: ScGPT, counts: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model.encode(*tokens(model, counts, pad_last=3))


# ------------------------------------------------------------------------------------------------------- checkpoints
def test_plain_flash_and_impl_checkpoints_load_to_identical_outputs(tmp_path):
    model, vocab, args = tiny()
    counts = program_counts(5)
    save_scgpt(model, tmp_path / "plain", vocab=vocab, args=args)
    save_scgpt(model, tmp_path / "flash", vocab=vocab, args=args, flash_keys=True)
    keys = torch.load(tmp_path / "flash" / "best_model.pt", weights_only=True).keys()
    assert "transformer_encoder.layers.0.self_attn.Wqkv.weight" in keys
    assert not any("in_proj" in k for k in keys)
    # the newer flash wrapper layout: self_attn._impl.Wqkv / self_attn._impl.out_proj
    (tmp_path / "impl").mkdir()
    flash = torch.load(tmp_path / "flash" / "best_model.pt", weights_only=True)
    state = {k.replace("self_attn.Wqkv.", "self_attn._impl.Wqkv.").replace("self_attn.out_proj.", "self_attn._impl.out_proj."):
             v for k, v in flash.items()}
    torch.save(state, tmp_path / "impl" / "best_model.pt")
    for name in ("args.json", "vocab.json"):
        (tmp_path / "impl" / name).write_text((tmp_path / "plain" / name).read_text())
    ref = outputs(model, counts)
    for name in ("plain", "flash", "impl"):
        loaded = load_scgpt(tmp_path / name)
        assert torch.equal(outputs(loaded, counts), ref), name
        assert loaded.vocab == vocab and loaded.config == args and not loaded.training
        assert len(loaded.checkpoint_sha256) == 64
    assert load_scgpt(tmp_path / "plain").checkpoint_sha256 != load_scgpt(tmp_path / "flash").checkpoint_sha256


def test_full_size_flash_keyed_checkpoint_loads(tmp_path):
    """whole-human's architecture (12 layers x 8 heads, d_model = d_hid = 512, ~60.7k tokens) saved with Wqkv keys."""
    genes = [f"ENSG{i:011d}" for i in range(60_694)]
    model, vocab, args = build_demo_model(genes, d_model=512, nhead=8, d_hid=512, nlayers=12, seed=1, dropout=0.2)
    save_scgpt(model, tmp_path, vocab=vocab, args=args, flash_keys=True)
    keys = torch.load(tmp_path / "best_model.pt", weights_only=True).keys()
    assert sum(k.endswith("self_attn.Wqkv.weight") for k in keys) == 12 and not any("in_proj" in k for k in keys)
    loaded = load_scgpt(tmp_path)
    assert (loaded.nlayers, loaded.nhead, loaded.d_model, len(loaded.vocab)) == (12, 8, 512, 60_697)
    assert loaded.transformer_encoder.layers[0].linear1.weight.shape == (512, 512)
    own = model.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in loaded.state_dict().items())
    g = torch.tensor([[vocab["<cls>"], 0, 17, 60_000, 123], [vocab["<cls>"], 5, 6, vocab["<pad>"], vocab["<pad>"]]])
    v = torch.tensor([[-2.0, 1, 50, 3, 0], [-2.0, 7, 7, -2, -2]])
    m = g == vocab["<pad>"]
    with torch.no_grad():
        assert torch.equal(loaded.encode(g, v, m), model.encode(g, v, m))


def test_save_is_reproducible_and_atomic(tmp_path):
    model, vocab, args = tiny()
    save_scgpt(model, tmp_path / "a", vocab=vocab, args=args)
    save_scgpt(model, tmp_path / "b", vocab=vocab, args=args)
    assert (tmp_path / "a" / "best_model.pt").read_bytes() == (tmp_path / "b" / "best_model.pt").read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["args.json", "best_model.pt", "vocab.json"]
    assert json.loads((tmp_path / "a" / "args.json").read_text())["nheads"] == 2


def test_missing_key_names_file_and_key(tmp_path):
    model, vocab, args = tiny()
    save_scgpt(model, tmp_path, vocab=vocab, args=args)
    state = torch.load(tmp_path / "best_model.pt", weights_only=True)
    del state["transformer_encoder.layers.1.linear1.weight"]
    torch.save(state, tmp_path / "best_model.pt")
    with pytest.raises(InputError, match=r"best_model\.pt.*missing.*transformer_encoder\.layers\.1\.linear1\.weight") as err:
        load_scgpt(tmp_path)
    assert "\n" not in str(err.value)


def test_wrong_shape_names_the_key(tmp_path):
    model, vocab, args = tiny()
    save_scgpt(model, tmp_path, vocab=vocab, args=args)
    bigger = dict(vocab, EXTRA=len(vocab))  # vocab.json no longer matches the embedding table
    (tmp_path / "vocab.json").write_text(json.dumps(bigger))
    with pytest.raises(InputError, match=r"best_model\.pt.*wrong shape.*encoder\.embedding\.weight"):
        load_scgpt(tmp_path)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "args.json").write_text(json.dumps(dict(args, nlayers=3)))  # one layer more than saved
    with pytest.raises(InputError, match=r"missing.*transformer_encoder\.layers\.2\."):
        load_scgpt(tmp_path)
    (tmp_path / "args.json").write_text(json.dumps(dict(args, nlayers=1)))
    with pytest.raises(InputError, match=r"unexpected.*transformer_encoder\.layers\.1\."):
        load_scgpt(tmp_path)


def test_truncated_or_missing_files_are_one_line_input_errors(tmp_path):
    model, vocab, args = tiny()
    save_scgpt(model, tmp_path, vocab=vocab, args=args)
    path = tmp_path / "best_model.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError, match=r"best_model\.pt.*truncated or corrupt") as err:
        load_scgpt(tmp_path)
    assert "\n" not in str(err.value)
    path.unlink()
    with pytest.raises(InputError, match=r"best_model\.pt.*not found"):
        load_scgpt(tmp_path)
    (tmp_path / "args.json").write_text(json.dumps({k: v for k, v in args.items() if k != "embsize"}))
    with pytest.raises(InputError, match=r"args\.json.*embsize"):
        load_scgpt(tmp_path)


def test_vocab_special_tokens_are_appended(tmp_path):
    model, vocab, args = tiny()
    genes_only = {g: i for g, i in vocab.items() if not g.startswith("<")}
    save_scgpt(model, tmp_path, vocab=genes_only, args=args)
    assert "<cls>" not in json.loads((tmp_path / "vocab.json").read_text())
    full = read_vocab(tmp_path / "vocab.json")
    assert [full[t] for t in ("<pad>", "<cls>", "<eoc>")] == [len(GENES), len(GENES) + 1, len(GENES) + 2]
    assert load_scgpt(tmp_path).vocab == full
    (tmp_path / "vocab.json").write_text(json.dumps({"A": 0, "B": 2}))
    with pytest.raises(InputError, match="consecutive"):
        read_vocab(tmp_path / "vocab.json")


def test_extra_heads_are_logged_not_fatal(tmp_path, caplog):
    model, vocab, args = tiny()
    save_scgpt(model, tmp_path, vocab=vocab, args=args, flash_keys=True)
    state = torch.load(tmp_path / "best_model.pt", weights_only=True)
    state["mvc_decoder.gene2query.weight"] = torch.zeros(16, 16)
    state["cls_decoder.out_layer.weight"] = torch.zeros(1, 16)
    state["decoder.fc.0.weight"] = torch.zeros(16, 32)  # a decoder of another shape (e.g. batch labels)
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "best_model.pt")  # DDP-style prefix
    with caplog.at_level("INFO"):
        loaded = load_scgpt(tmp_path)
    assert "mvc_decoder" in caplog.text and "cls_decoder" in caplog.text and "decoder" in caplog.text
    counts = program_counts(4)
    assert torch.equal(outputs(loaded, counts), outputs(model, counts))


# --------------------------------------------------------------------------------------------- layer-by-layer pass
def test_layer_by_layer_hidden_states_equal_the_model_forward():
    model, _, _ = tiny(nlayers=3)
    g, v, m = tokens(model, program_counts(4), pad_last=4)
    with torch.no_grad():
        final = model.encode(g, v, m)
        run = model.encode_layers(g, v, m, capture="attention_prob")
        x = model.embed(g, v)
        for layer, mine in zip(model.transformer_encoder.layers, run.hidden[1:]):
            x = layer(x, src_key_padding_mask=m)  # torch's own layer, one at a time
            assert torch.allclose(mine, x, atol=1e-5)
        assert len(run.hidden) == 4 and len(run.attention) == 3
        assert torch.allclose(run.hidden[-1], final, atol=1e-5)
        assert torch.allclose(model(g, v, m)["cell_emb"], final[:, 0], atol=0)


def test_captured_attention_matches_torch_attention_weights():
    model, _, _ = tiny()
    g, v, m = tokens(model, program_counts(3), pad_last=2)
    with torch.no_grad():
        probs = model.encode_layers(g, v, m, capture="attention_prob")
        raw = model.encode_layers(g, v, m, capture="qk_raw")
        for layer, h, p, q in zip(model.transformer_encoder.layers, probs.hidden, probs.attention, raw.attention):
            _, ref = layer.self_attn(h, h, h, key_padding_mask=m, need_weights=True, average_attn_weights=False)
            assert p.shape == (3, 2, len(GENES) + 1, len(GENES) + 1)
            assert torch.allclose(p, ref, atol=1e-6)
            assert torch.allclose(p.sum(-1), torch.ones(()), atol=1e-6)
            assert torch.all(p[0, :, :, -2:] == 0)  # padded keys get no attention
            assert torch.allclose(torch.softmax(q.masked_fill(m[:, None, None, :], -math.inf), -1), p, atol=1e-6)
    with pytest.raises(InputError, match="capture"):
        model.encode_layers(g, v, m, capture="weights")


# --------------------------------------------------------------------------------------------------------- binning
def reference_binning(row: np.ndarray, n_bins: int) -> np.ndarray:
    """The documented rule, one row, drawing from numpy's global RNG as scGPT does."""
    out = np.zeros(len(row), dtype=np.int64)
    nz = np.flatnonzero(row)
    if len(nz) == 0:
        return out
    edges = np.quantile(row[nz], np.linspace(0, 1, n_bins - 1))
    lo, hi = np.digitize(row[nz], edges), np.digitize(row[nz], edges, right=True)
    out[nz] = np.ceil(np.random.rand(len(nz)) * (hi - lo) + lo)
    return out


def test_binning_properties_and_scgpt_rng_semantics():
    rng = np.random.default_rng(1)
    X = (rng.poisson(2.0, (30, 40)) * (rng.random((30, 40)) < 0.6)).astype(np.float32)
    X[3] = 0  # an all-zero cell
    B = binning(X, 51, seed=7)
    assert B.dtype == np.int64 and B.shape == X.shape
    assert np.all((B == 0) == (X == 0))
    assert B[X > 0].min() >= 1 and B.max() <= 50
    for x, b in zip(X, B):  # monotone within a cell: a larger value never gets a smaller bin (ties spread)
        levels = np.unique(x[x > 0])
        for lower, upper in zip(levels[:-1], levels[1:]):
            assert b[x == lower].max() <= b[x == upper].min()
    np.random.seed(7)
    assert np.array_equal(B, np.stack([reference_binning(x, 51) for x in X]))  # == Preprocessor after np.random.seed(7)
    assert np.array_equal(binning(sp.csr_matrix(X), 51, seed=7).toarray(), B)
    assert np.array_equal(binning(X[0], 51, seed=7), B[0])
    assert np.array_equal(binning(X, 51, seed=7), B)


def test_binning_without_ties_is_quantile_digitize_and_ties_spread():
    x = np.r_[0.0, np.arange(1, 101, dtype=np.float64) ** 1.5, 0.0]
    b = binning(x, 11, seed=0)
    edges = np.quantile(x[x > 0], np.linspace(0, 1, 10))
    assert np.array_equal(b[x > 0], np.digitize(x[x > 0], edges)) and b[0] == 0 and b.max() == 10
    tied = binning(np.full(200, 3.0), 51, seed=0)  # all values tied: spread over 1..50
    assert tied.min() >= 1 and tied.max() <= 50 and len(np.unique(tied)) > 20
    with pytest.raises(InputError, match="negative"):
        binning(np.array([1.0, -1.0]), 51)


# ------------------------------------------------------------------------------------------------------- embeddings
def test_embed_cells_shape_determinism_and_batch_invariance():
    model, _, _ = tiny()
    counts = program_counts(9)
    names = GENES + ["NOT_IN_VOCAB"]
    data = np.c_[counts, np.ones(len(counts), dtype=np.float32)]
    a = embed_cells(model, data, names, batch_size=4, pooling="cls", progress=False)
    assert a.shape == (9, 16) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-6)
    assert np.array_equal(a, embed_cells(model, data, names, batch_size=4, pooling="cls", progress=False))
    assert np.allclose(a, embed_cells(model, sp.csr_matrix(data), names, batch_size=1, progress=False), atol=1e-5)
    avg = embed_cells(model, data, names, batch_size=4, pooling="avg", progress=False)
    assert avg.shape == a.shape and not np.allclose(avg, a)
    # cell 0 by hand: <cls> + its non-zero genes
    nz = np.flatnonzero(counts[0])
    g = torch.tensor([[model.vocab["<cls>"], *[model.vocab[GENES[j]] for j in nz]]])
    v = torch.tensor([[-2.0, *binning(counts[0], 51, seed=0)[nz]]])
    with torch.no_grad():
        h = model.encode(g, v, torch.zeros_like(g, dtype=torch.bool))[0, 0].numpy()
    assert np.allclose(a[0], h / np.linalg.norm(h), atol=1e-5)
    short = [embed_cells(model, data, names, batch_size=4, max_len=4, seed=s, progress=False) for s in (0, 0, 1)]
    assert np.array_equal(short[0], short[1]) and not np.allclose(short[0], short[2])
    with pytest.raises(InputError, match="pooling"):
        embed_cells(model, data, names, pooling="max")


def test_a_cells_embedding_does_not_depend_on_its_batch_chunk_or_split():
    """With cell ids, binning tie-breaks and the gene-subset draw are seeded per cell: any subset, any order, any
    batch or chunk size gives each cell the same tokens (exactly) and the same embedding (up to float32 summation
    order: a batch's padded length changes BLAS blocking by ~1e-7). The cache then serves every split one stored row
    (tests/test_cache.py)."""
    model, _, _ = tiny()
    counts = program_counts(40)
    counts[::3, 6:] = 0  # cells of different lengths: batches are padded differently
    ids = [f"cell{i}" for i in range(40)]
    kw = dict(pooling="avg", progress=False, seed=3)
    for max_len in (None, 6):  # all non-zero genes, or a seeded random subset of 5 of them
        whole = embed_cells(model, counts, GENES, batch_size=8, max_len=max_len, cell_ids=ids, **kw)
        subset = np.random.default_rng(1).permutation(40)[:25]
        part = embed_cells(model, counts[subset], GENES, batch_size=3, chunk_size=7, max_len=max_len,
                           cell_ids=[ids[i] for i in subset], **kw)
        np.testing.assert_allclose(part, whole[subset], rtol=0, atol=1e-6)
        # without cell ids one stream is consumed cell after cell (scGPT's embed_data): the same cells differ
        stream = [embed_cells(model, c, GENES, batch_size=8, max_len=max_len, **kw) for c in (counts, counts[subset])]
        assert not np.allclose(stream[0][subset], stream[1], atol=1e-4)
    other_seed = embed_cells(model, counts, GENES, batch_size=8, max_len=6, cell_ids=ids, pooling="avg",
                             progress=False, seed=4)
    assert not np.allclose(other_seed, whole, atol=1e-4)  # the config seed enters every cell's draws
    bins = binning(sp.csr_matrix(counts), 51, row_seeds=cell_seeds(ids, 3))
    again = binning(sp.csr_matrix(counts[subset]), 51, row_seeds=cell_seeds([ids[i] for i in subset], 3))
    assert (bins[subset] != again).nnz == 0
    with pytest.raises(InputError, match="one id per cell"):
        embed_cells(model, counts, GENES, cell_ids=ids[:3], progress=False)


def test_cell_seeds_are_stable_and_distinct():
    seeds = cell_seeds(["AAAC-1", "AAAG-1", "AAAC-1"], 0)
    assert seeds.dtype == np.uint32 and seeds.shape == (3, 2)
    assert np.array_equal(seeds[0], seeds[2]) and not np.array_equal(seeds[0], seeds[1])
    assert not np.array_equal(cell_seeds(["AAAC-1"], 1)[0], seeds[0])
    assert cell_seeds(["AAAC-1"], 0).tolist() == seeds[:1].tolist()  # a fixed hash, not Python's salted hash()


@pytest.mark.parametrize("precision, bound", [("bf16", 0.05), ("fp16", 0.01)])
def test_reduced_precision_embeddings_stay_close_to_fp32(precision, bound):
    """bf16 / fp16 autocast of the forward pass (GPU throughput) against fp32, on CPU autocast."""
    model, _, _ = tiny()
    counts = program_counts(30)
    ids = [f"c{i}" for i in range(30)]
    full = embed_cells(model, counts, GENES, pooling="avg", cell_ids=ids, progress=False)
    low = embed_cells(model, counts, GENES, pooling="avg", cell_ids=ids, progress=False, precision=precision)
    assert low.dtype == np.float32 and not np.array_equal(low, full)  # the autocast really ran
    assert np.abs(low - full).max() < bound and (low * full).sum(1).min() > 0.999  # unit rows: cosine similarity
    with pytest.raises(InputError, match="precision"):
        embed_cells(model, counts, GENES, precision="int8", progress=False)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(InputError, match="model.device"):
        resolve_device("tpu")


# ------------------------------------------------------------------------------------------------------ pretraining
def test_pretrain_reduces_loss_and_is_deterministic():
    counts = sp.csr_matrix(program_counts(80))
    state = torch.random.get_rng_state()
    runs = []
    for _ in range(2):
        model, _, _ = tiny(seed=3, dropout=0.1)
        curve = pretrain(model, counts, GENES, steps=100, batch_size=16, lr=1e-2, warmup=10, mask_ratio=0.4, seed=5,
                         genes_per_cell=None)
        runs.append((curve, [p.detach().clone() for p in model.parameters()]))
        assert not model.training
    (c1, p1), (c2, p2) = runs
    assert [s for s, _ in c1] == list(range(1, 101))
    assert c1 == c2  # bitwise the same loss trace
    assert all(torch.equal(a, b) for a, b in zip(p1, p2))
    first, last = np.mean([l for _, l in c1[:10]]), np.mean([l for _, l in c1[-10:]])
    assert last < 0.6 * first  # z-scored targets: ~1 for a gene-mean predictor, ~0.3 once programs are learnt
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    other, _, _ = tiny(seed=3, dropout=0.1)
    c3 = pretrain(other, counts, GENES, steps=5, batch_size=16, lr=1e-2, warmup=10, mask_ratio=0.4, seed=6,
                  genes_per_cell=8)
    assert [l for _, l in c3] != [l for _, l in c1[:5]]


def test_pretrain_rejects_genes_outside_the_vocabulary():
    model, _, _ = tiny()
    with pytest.raises(InputError, match=r"1 of 13 genes .*UNKNOWN"):
        pretrain(model, np.ones((4, 13)), GENES + ["UNKNOWN"], steps=1, batch_size=2, lr=1e-3, warmup=1,
                 mask_ratio=0.4, seed=0)


def test_build_demo_model_layers_start_different_and_seeded():
    a, vocab, args = tiny(seed=0, nlayers=3)
    b, _, _ = tiny(seed=0, nlayers=3)
    layers = a.transformer_encoder.layers
    assert not torch.equal(layers[0].linear1.weight, layers[1].linear1.weight)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert vocab["<pad>"] == len(GENES) and args["pad_value"] == -2 and args["n_bins"] == 51


def test_untrained_copy_keeps_architecture_and_vocab_with_fresh_seeded_weights(tmp_path):
    trained, vocab, args = tiny(seed=0, nlayers=3)
    with torch.no_grad():  # stand-in for training: weights the fresh init cannot reproduce
        trained.transformer_encoder.layers[1].self_attn.in_proj_weight.mul_(3.0)
    save_scgpt(trained, tmp_path / "trained", vocab=vocab, args=args)
    loaded = load_scgpt(tmp_path / "trained")
    a, b, c = untrained_copy(loaded, seed=5), untrained_copy(loaded, seed=5), untrained_copy(loaded, seed=6)
    assert a.vocab == loaded.vocab and a.config["untrained"] and a.config["seed"] == 5
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in loaded.state_dict().items()}
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    key = "transformer_encoder.layers.1.self_attn.in_proj_weight"
    assert not torch.equal(a.state_dict()[key], c.state_dict()[key])
    assert not torch.equal(a.state_dict()[key], loaded.state_dict()[key])
    save_scgpt(a, tmp_path / "untrained", vocab=a.vocab, args=a.config)  # scGPT layout, loads like any checkpoint
    again = load_scgpt(tmp_path / "untrained")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), again.state_dict().values()))
