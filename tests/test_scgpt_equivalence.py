"""Our scGPT reimplementation against the official scGPT 0.2.4 code: forward, CLS embeddings, attention, binning.

The official wheel is fetched at test time with pip (`pip download scgpt==0.2.4 --no-deps`, sha256 pinned to PyPI's
published digest) into pytest's temp dir; only the files needed are imported, as an isolated `scgpt` package whose
`__init__` is never run (it needs torchtext), with the two modules that are not exercised (`tokenizer`, `utils`)
stubbed. Nothing of scGPT is stored in this repository. An official `TransformerModel` with random weights is saved
in scGPT's checkpoint layout (plain and flash-attn `Wqkv` keys) and loaded with `load_scgpt`; both models then see
the same tokens. Offline: set FMEXTRACT_SCGPT_WHEEL to a local copy of the wheel, otherwise these tests skip.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import subprocess
import sys
import types
import warnings
import zipfile
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from fmextract.models.scgpt import binning, embed_cells, load_scgpt

torch.set_num_threads(1)

WHEEL = "scgpt-0.2.4-py3-none-any.whl"
WHEEL_SHA256 = "aafa4ac8dcb5a3d7b81ab71f136baf324b7dc6d83109781340ba601fd236759f"  # https://pypi.org/simple/scgpt/
MEMBERS = (
    "scgpt/model/model.py", "scgpt/model/dsbn.py", "scgpt/model/grad_reverse.py", "scgpt/preprocess.py",
    "scgpt/data_collator.py", "scgpt/tasks/cell_emb.py",
)
D_MODEL, NHEAD, D_HID, NLAYERS, PAD_VALUE = 32, 4, 48, 2, -2.0
# 47 genes and the three special tokens at non-trailing ids, so nothing may assume where they sit
GENES = [f"G{i}" for i in range(47)]
TOKENS = GENES[:5] + ["<pad>"] + GENES[5:20] + ["<cls>"] + GENES[20:40] + ["<eoc>"] + GENES[40:]
VOCAB = {t: i for i, t in enumerate(TOKENS)}


# ------------------------------------------------------------------------------------------- the official code
def _download_wheel(directory: Path) -> Path:
    local = os.environ.get("FMEXTRACT_SCGPT_WHEEL")
    if local:
        return Path(local)
    cmd = [sys.executable, "-m", "pip", "download", "scgpt==0.2.4", "--no-deps", "--only-binary=:all:", "-d", str(directory)]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"cannot download scgpt==0.2.4 from PyPI ({type(err).__name__}); set FMEXTRACT_SCGPT_WHEEL to a local wheel")
    wheel = directory / WHEEL
    if run.returncode != 0 or not wheel.is_file():
        last = (run.stderr.strip().splitlines() or ["no output"])[-1][:200]
        pytest.skip(f"cannot download scgpt==0.2.4 from PyPI ({last}); set FMEXTRACT_SCGPT_WHEEL to a local wheel")
    return wheel


@pytest.fixture(scope="session")
def official(tmp_path_factory):
    """The official modules (model, preprocess, data_collator, tasks.cell_emb) imported from the downloaded wheel."""
    root = tmp_path_factory.mktemp("scgpt_0.2.4")
    wheel = _download_wheel(root)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert digest == WHEEL_SHA256, f"{wheel}: sha256 {digest} is not PyPI's scgpt 0.2.4 wheel"
    with zipfile.ZipFile(wheel) as zf:
        for member in MEMBERS:
            zf.extract(member, root)
    saved = {k: v for k, v in sys.modules.items() if k == "scgpt" or k.startswith("scgpt.")}
    for name in saved:
        del sys.modules[name]

    def package(name: str, path: Path | None = None, **attrs) -> types.ModuleType:
        module = types.ModuleType(name)
        if path is not None:
            module.__path__ = [str(path)]  # a package whose __init__ is never executed
        module.__dict__.update(attrs)
        sys.modules[name] = module
        return module

    try:
        top = package("scgpt", root / "scgpt", logger=logging.getLogger("scGPT"))
        model_pkg = package("scgpt.model", root / "scgpt" / "model")
        package("scgpt.tasks", root / "scgpt" / "tasks")
        package("scgpt.tokenizer", GeneVocab=None)  # only a type hint target in tasks/cell_emb.py
        package("scgpt.utils", load_pretrained=None)  # not used by get_batch_cell_embeddings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "flash_attn is not installed": the standard-attention branch is used
            model = importlib.import_module("scgpt.model.model")
        assert not model.flash_attn_available
        model_pkg.TransformerModel = model.TransformerModel
        top.model = model_pkg
        preprocess = importlib.import_module("scgpt.preprocess")
        collator = importlib.import_module("scgpt.data_collator")
        cell_emb = importlib.import_module("scgpt.tasks.cell_emb")
        yield types.SimpleNamespace(model=model, preprocess=preprocess, collator=collator, cell_emb=cell_emb)
    finally:
        for name in [k for k in sys.modules if k == "scgpt" or k.startswith("scgpt.")]:
            del sys.modules[name]
        sys.modules.update(saved)


def randomise(module: torch.nn.Module, seed: int) -> None:
    """Every parameter random (layers differ, LayerNorm gains and all biases non-trivial), seeded."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * noise)
            elif p.ndim == 2:
                p.copy_(noise / p.shape[1] ** 0.5)
            else:
                p.copy_(0.2 * noise)


@pytest.fixture(scope="session")
def reference(official):
    """An official TransformerModel (whole-human-like options, tiny sizes), random weights, eval mode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = official.model.TransformerModel(
            len(VOCAB), D_MODEL, NHEAD, D_HID, NLAYERS, nlayers_cls=3, n_cls=1, vocab=VOCAB, dropout=0.2,
            pad_token="<pad>", pad_value=PAD_VALUE, do_mvc=True, do_dab=False, use_batch_labels=False,
            domain_spec_batchnorm=False, input_emb_style="continuous", n_input_bins=51, cell_emb_style="cls",
            explicit_zero_prob=False, use_fast_transformer=False, pre_norm=False,
        )
    randomise(model, seed=0)
    return model.eval()


@pytest.fixture(scope="session")
def checkpoints(reference, tmp_path_factory):
    """The official model's state_dict in scGPT's layout: `plain` (in_proj_*) and `flash` (Wqkv.*) keys."""
    args = {  # the keys of scGPT's whole-human args.json that matter, plus some it carries along
        "embsize": D_MODEL, "nheads": NHEAD, "d_hid": D_HID, "nlayers": NLAYERS, "n_layers_cls": 3, "dropout": 0.2,
        "pad_token": "<pad>", "pad_value": -2, "mask_value": -1, "n_bins": 51, "input_style": "binned",
        "input_emb_style": "continuous", "max_seq_len": 1200, "fast_transformer": True, "MVC": True,
        "USE_CLS": False, "USE_CCE": False, "mask_ratio": [0.25, 0.5, 0.75], "lr": 0.0001,
    }
    state = reference.state_dict()
    assert any(k.startswith("mvc_decoder.") for k in state) and any(k.startswith("cls_decoder.") for k in state)
    flash = {k.replace("self_attn.in_proj_weight", "self_attn.Wqkv.weight").replace("self_attn.in_proj_bias",
             "self_attn.Wqkv.bias"): v for k, v in state.items()}
    assert sum(".Wqkv." in k for k in flash) == 2 * NLAYERS and not any("in_proj" in k for k in flash)
    dirs = {}
    for name, sd in (("plain", state), ("flash", flash)):
        d = tmp_path_factory.mktemp(f"ckpt_{name}")
        torch.save({k: v.clone() for k, v in sd.items()}, d / "best_model.pt")
        (d / "args.json").write_text(json.dumps(args, indent=2))
        (d / "vocab.json").write_text(json.dumps(VOCAB))
        dirs[name] = d
    return dirs


def batch(seed: int = 0, n: int = 6, length: int = 30):
    """Tokens as scGPT builds them: `<cls>` (value pad_value) + distinct genes with bins 0..50, right padding.

    Cell 0 is unpadded; the others lose 1..n-1 trailing positions to `<pad>` / pad_value.
    """
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, length), dtype=np.int64)
    values = np.zeros((n, length), dtype=np.float32)
    mask = np.zeros((n, length), dtype=bool)
    for i in range(n):
        ids[i, 0], values[i, 0] = VOCAB["<cls>"], PAD_VALUE
        ids[i, 1:] = [VOCAB[g] for g in rng.choice(GENES, length - 1, replace=False)]
        values[i, 1:] = rng.integers(0, 51, length - 1)
        if i:
            pad = 3 * i
            ids[i, -pad:], values[i, -pad:], mask[i, -pad:] = VOCAB["<pad>"], PAD_VALUE, True
    return torch.from_numpy(ids), torch.from_numpy(values), torch.from_numpy(mask)


# ---------------------------------------------------------------------------------------------------- the model
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")  # torch's fast path in their encoder
@pytest.mark.parametrize("layout", ["plain", "flash"])
def test_hidden_states_and_outputs_equal_the_official_model(official, reference, checkpoints, layout):
    ours = load_scgpt(checkpoints[layout])
    assert not ours.training and ours.vocab == VOCAB
    g, v, m = batch()
    keep = ~m
    # autograd on: torch's standard encoder path on both sides, every position (padding included) comparable
    theirs = reference._encode(g, v, m).detach()
    mine = ours.encode(g, v, m).detach()
    assert torch.allclose(mine, theirs, atol=1e-5)
    with torch.no_grad():
        # inference: their encoder may take torch's nested-tensor fast path (padded outputs zeroed), ours does not
        theirs_ng = reference._encode(g, v, m)
        assert torch.allclose(ours.encode(g, v, m)[keep], theirs_ng[keep], atol=1e-5)
        assert torch.allclose(ours.encode_layers(g, v, m).hidden[-1], theirs, atol=1e-5)  # our layer-by-layer maths
        out_theirs, out_mine = reference(g, v, m), ours(g, v, m)
        assert torch.allclose(out_mine["cell_emb"], out_theirs["cell_emb"], atol=1e-5)
        assert torch.allclose(out_mine["mlm_output"][keep], out_theirs["mlm_output"][keep], atol=1e-5)
    cls = reference.encode_batch(g, v, m, batch_size=4, time_step=0)  # their batched <cls> embedding path
    assert torch.allclose(out_mine["cell_emb"], cls, atol=1e-5)
    assert cls.abs().max() > 0.1 and not torch.allclose(cls[0], cls[1], atol=1e-3)  # not a degenerate model


def test_a_changed_weight_is_detected(reference, checkpoints, tmp_path):
    """The comparison can fail: one perturbed attention weight in the checkpoint changes the hidden states."""
    d = checkpoints["flash"]
    for name in ("args.json", "vocab.json"):
        (tmp_path / name).write_text((d / name).read_text())
    state = torch.load(d / "best_model.pt", weights_only=True)
    state["transformer_encoder.layers.1.self_attn.Wqkv.weight"][5, 3] += 0.5
    torch.save(state, tmp_path / "best_model.pt")
    g, v, m = batch(1)
    with torch.no_grad():
        diff = (load_scgpt(tmp_path).encode(g, v, m) - reference._encode(g, v, m))[~m].abs().max()
    assert diff > 1e-3


def test_attention_equals_the_official_layers_attention(reference, checkpoints):
    """Our captured per-head attention (operator export) == torch's attention of the official model's own layers."""
    ours = load_scgpt(checkpoints["flash"])
    g, v, m = batch(2)
    inputs = []
    hooks = [layer.register_forward_pre_hook(lambda mod, args: inputs.append(args[0].detach()))
             for layer in reference.transformer_encoder.layers]
    try:
        reference._encode(g, v, m)  # autograd on: the per-layer path, so the hooks see each layer's input
    finally:
        for h in hooks:
            h.remove()
    assert len(inputs) == NLAYERS
    with torch.no_grad():
        run = ours.encode_layers(g, v, m, capture="attention_prob")
        for layer, x, mine in zip(reference.transformer_encoder.layers, inputs, run.attention):
            _, att = layer.self_attn(x, x, x, key_padding_mask=m, need_weights=True, average_attn_weights=False)
            assert mine.shape == (6, NHEAD, 30, 30)
            assert torch.allclose(mine, att, atol=1e-5)
        for x, h in zip(inputs, run.hidden[:-1]):
            assert torch.allclose(x, h, atol=1e-5)


def test_cls_embeddings_equal_get_batch_cell_embeddings(official, reference, checkpoints, monkeypatch):
    """embed_cells == scGPT's embed_data core (tasks.cell_emb.get_batch_cell_embeddings), binning draws included."""
    rng = np.random.default_rng(3)
    counts = (rng.poisson(1.5, (11, len(GENES))) * (rng.random((11, len(GENES))) < 0.5)).astype(np.float32)
    counts[:, 0] += 1  # no all-zero cell (scGPT's collator fails on an empty row); many ties -> random bins
    gene_ids = np.array([VOCAB[g] for g in GENES])
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(), raising=False)  # their DataLoader in-process: one RNG stream
    adata = ad.AnnData(X=sp.csr_matrix(counts))
    np.random.seed(7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cuda autocast on a CPU run, pin_memory without a GPU
        theirs = official.cell_emb.get_batch_cell_embeddings(
            adata, cell_embedding_mode="cls", model=reference, vocab=VOCAB, max_length=1200, batch_size=4,
            model_configs={"pad_value": -2, "pad_token": "<pad>", "embsize": D_MODEL}, gene_ids=gene_ids,
        )
    ours = load_scgpt(checkpoints["flash"])
    mine = embed_cells(ours, counts, GENES, batch_size=4, seed=7, progress=False)
    assert mine.shape == theirs.shape == (11, D_MODEL)
    assert np.allclose(mine, theirs, atol=1e-5)
    other = embed_cells(ours, counts, GENES, batch_size=4, seed=8, progress=False)
    assert not np.allclose(other, theirs, atol=1e-5)  # tie-break draws matter: the match above is not vacuous


# ------------------------------------------------------------------------------------------------------ binning
def binning_matrix(rng):
    X = (rng.poisson(2.0, (25, 60)) * (rng.random((25, 60)) < 0.6)).astype(np.float32)
    X[4] = 0  # an all-zero cell
    X[5] = rng.poisson(3.0, 60) + 1  # a cell without zeros (scGPT's other branch)
    X[6, :10] = 5.0  # a cell with only ten equal values
    X[6, 10:] = 0
    return X


@pytest.mark.parametrize("n_bins", [51, 11])
def test_binning_equals_official_binning(official, n_bins):
    rng = np.random.default_rng(n_bins)
    X = binning_matrix(rng)
    np.random.seed(11)
    theirs = np.stack([official.preprocess.binning(row.copy(), n_bins) for row in X])
    mine = binning(X, n_bins, seed=11)
    assert np.array_equal(mine, theirs)
    X64 = X.astype(np.float64) * 1.37  # non-integer values, float64
    np.random.seed(12)
    assert np.array_equal(binning(sp.csr_matrix(X64), n_bins, seed=12).toarray(),
                          np.stack([official.preprocess.binning(row.copy(), n_bins) for row in X64]))
    # scGPT's data collator bins a cell's non-zero values as a torch tensor
    np.random.seed(13)
    row = torch.from_numpy(X[0][X[0] > 0].copy())
    assert np.array_equal(binning(X[0][X[0] > 0], n_bins, seed=13), official.preprocess.binning(row, n_bins).numpy())


def test_binning_equals_the_official_preprocessor(official):
    rng = np.random.default_rng(5)
    X = binning_matrix(rng)
    adata = ad.AnnData(X=sp.csr_matrix(X))
    pre = official.preprocess.Preprocessor(use_key="X", normalize_total=False, log1p=False, binning=51,
                                           result_binned_key="X_binned")
    np.random.seed(21)
    pre(adata)
    assert np.array_equal(binning(sp.csr_matrix(X), 51, seed=21).toarray(), adata.layers["X_binned"])
    assert not np.array_equal(binning(X, 51, seed=22), adata.layers["X_binned"])  # ties make the seed visible
