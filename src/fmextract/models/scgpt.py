"""scGPT's model in plain torch: scGPT's own checkpoint layout, binning, tokenisation, embeddings, demo pretraining;
`ScGPT` implements the model contract (`fmextract.models.base.FoundationModel`, config `model.kind: scgpt`).

Written from scGPT's source (bowang-lab/scGPT, `scgpt/model/model.py`, `preprocess.py`, `data_collator.py`,
`tasks/cell_emb.py`, `utils/util.py`) without depending on the `scgpt` package. Parameter names equal those of
scGPT's `TransformerModel` with the standard (non-flash) PyTorch transformer, so a `best_model.pt` state_dict loads
unchanged; flash-attn-era keys (`self_attn.Wqkv.*`, `self_attn._impl.*`) are renamed on load as scGPT's
`load_pretrained` does. Conventions: `padding_mask` is True at padding (PyTorch), `<cls>` comes first with value
`pad_value`, expression values are scGPT bins (0 = zero expression, 1..n_bins-1 = per-cell quantile bins).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fmextract import cache
from fmextract.chunks import CHUNK_ROWS, is_on_disk, row_blocks
from fmextract.download import sha256_file
from fmextract.errors import InputError
from fmextract.io import atomic_path
from fmextract.logs import progress as progress_log
from fmextract.models.base import FORWARD_DEFINITIONS, PRECISIONS, AttentionSums, FoundationModel

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<pad>", "<cls>", "<eoc>")
STRICT_PREFIXES = ("encoder.", "value_encoder.", "transformer_encoder.")
#: the checkpoint folder, as scGPT ships it (read as plain literals by fmextract.models.layout: keep them literal)
CHECKPOINT_FILES = ("args.json", "vocab.json", "best_model.pt")
VOCABULARY_FILE = "vocab.json"
ARGS_FILE, VOCAB_FILE, MODEL_FILE = CHECKPOINT_FILES
# flash-attn-era parameter names -> standard nn.MultiheadAttention names (scGPT's own load_pretrained rules)
FLASH_RENAMES = (
    ("self_attn._impl.Wqkv.", "self_attn.in_proj_"),
    ("self_attn.Wqkv.", "self_attn.in_proj_"),
    ("self_attn._impl.out_proj.", "self_attn.out_proj."),
)
CAPTURES = FORWARD_DEFINITIONS


def cell_seeds(cell_ids: Sequence[str], seed: int) -> np.ndarray:
    """One seed per cell (two uint32 words of blake2b(seed, cell id)): its random draws then depend on it alone.

    Stable across runs, machines and Python versions (no `hash()` randomisation); the config `seed` enters the hash.
    """
    out = np.empty((len(cell_ids), 2), dtype=np.uint32)
    for i, cell in enumerate(cell_ids):
        digest = hashlib.blake2b(f"{int(seed)}\x1f{cell}".encode(), digest_size=8).digest()
        out[i] = np.frombuffer(digest, dtype="<u4")
    return out


# ----------------------------------------------------------------------------------------------------------- modules
class GeneEncoder(nn.Module):
    """Gene-token embedding followed by LayerNorm (scGPT `GeneEncoder`)."""

    def __init__(self, ntoken: int, d_model: int, padding_idx: int | None):
        super().__init__()
        self.embedding = nn.Embedding(ntoken, d_model, padding_idx=padding_idx)
        self.enc_norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        """Embed token ids [B, T] -> [B, T, d]."""
        return self.enc_norm(self.embedding(x))


class ContinuousValueEncoder(nn.Module):
    """Scalar value -> d-vector by a 1-d_model-d_model MLP with LayerNorm, values clamped at max_value (scGPT)."""

    def __init__(self, d_model: int, dropout: float = 0.1, max_value: float = 512):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        self.linear1 = nn.Linear(1, d_model)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.max_value = max_value

    def forward(self, x: Tensor) -> Tensor:
        """Encode values [B, T] -> [B, T, d]."""
        x = torch.clamp(x.unsqueeze(-1), max=self.max_value)
        return self.dropout(self.norm(self.linear2(self.activation(self.linear1(x)))))


class ExprDecoder(nn.Module):
    """Per-token expression head (scGPT `ExprDecoder`, no explicit zero probability, no batch labels)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(d_model, d_model), nn.LeakyReLU(), nn.Linear(d_model, d_model), nn.LeakyReLU(),
            nn.Linear(d_model, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Hidden states [B, T, d] -> predicted values [B, T]."""
        return self.fc(x).squeeze(-1)


@dataclass
class LayerPass:
    """Result of `ScGPT.encode_layers`: hidden[0] is the embedding, hidden[l+1] layer l's output; attention per layer."""

    hidden: list[Tensor]
    attention: list[Tensor] | None


class ScGPT(FoundationModel):
    """scGPT `TransformerModel` (continuous value style, post-norm, standard attention) for inference and MLM.

    Attributes set by `load_scgpt` / `build_demo_model`: `vocab` (token -> id), `config` (args.json dict) and
    `checkpoint_sha256` (of best_model.pt, None for a model never saved or loaded). The contract's methods are at
    the end of the class; each calls this module's functions, which are what scGPT itself does.
    """

    kind = "scgpt"
    gene_keys = "symbol"

    def __init__(
        self, ntoken: int, d_model: int, nhead: int, d_hid: int, nlayers: int, *, pad_id: int, dropout: float = 0.2,
        vocab: dict[str, int] | None = None, config: dict | None = None,
    ):
        super().__init__()
        if d_model % nhead:
            raise InputError(f"embsize {d_model} is not divisible by nheads {nhead}; fix args.json")
        self.d_model, self.nhead, self.nlayers = d_model, nhead, nlayers
        self.encoder = GeneEncoder(ntoken, d_model, padding_idx=pad_id)
        self.value_encoder = ContinuousValueEncoder(d_model, dropout)
        layer = nn.TransformerEncoderLayer(d_model, nhead, d_hid, dropout, batch_first=True, norm_first=False)
        # no nested tensors: padded positions keep their (unused) values, so forward == encode_layers everywhere
        self.transformer_encoder = nn.TransformerEncoder(layer, nlayers, enable_nested_tensor=False)
        self.decoder = ExprDecoder(d_model)
        self.encoder.embedding.weight.data.uniform_(-0.1, 0.1)  # scGPT's init_weights (pad row included)
        self.vocab: dict[str, int] = dict(vocab or {})
        self.config: dict = dict(config or {})
        self.checkpoint_sha256: str | None = None

    @property
    def pad_value(self) -> float:
        """Value of `<cls>` and padding positions (scGPT whole-human: -2)."""
        return float(self.config.get("pad_value", -2))

    @property
    def n_bins(self) -> int:
        """Number of expression bins including the zero bin (scGPT: 51)."""
        return int(self.config.get("n_bins", 51))

    def embed(self, gene_ids: Tensor, values: Tensor) -> Tensor:
        """Input to the first layer: gene embedding + value embedding (scGPT `_encode` before the transformer)."""
        return self.encoder(gene_ids) + self.value_encoder(values)

    def encode(self, gene_ids: Tensor, values: Tensor, padding_mask: Tensor) -> Tensor:
        """Last-layer hidden states [B, T, d] (scGPT `_encode`)."""
        return self.transformer_encoder(self.embed(gene_ids, values), src_key_padding_mask=padding_mask)

    def forward(self, gene_ids: Tensor, values: Tensor, padding_mask: Tensor) -> dict[str, Tensor]:
        """scGPT forward without optional objectives: masked-value predictions and the `<cls>` cell embedding."""
        h = self.encode(gene_ids, values, padding_mask)
        return {"mlm_output": self.decoder(h), "cell_emb": h[:, 0, :]}

    def iter_layers(
        self, gene_ids: Tensor, values: Tensor, padding_mask: Tensor, *, capture: str | None = None
    ) -> Iterator[tuple[int, Tensor, Tensor | None]]:
        """Yield (layer, output hidden states, attention [B, H, T, T] or None) layer by layer, attention explicit.

        `attention_prob`: softmax(q kᵀ / sqrt(d_head)) with padded keys masked (probability 0);
        `qk_raw`: the pre-softmax q kᵀ / sqrt(d_head), padded keys left unmasked (the caller has the mask).
        Only one layer's attention is alive at a time, so callers can stream over many cells.
        """
        if capture is not None and capture not in CAPTURES:
            raise InputError(f"capture={capture!r} is not one of {CAPTURES}; fix the call")
        x = self.embed(gene_ids, values)
        for index, layer in enumerate(self.transformer_encoder.layers):
            x, att = _layer_forward(layer, x, padding_mask, self.nhead, capture)
            yield index, x, att

    def encode_layers(
        self, gene_ids: Tensor, values: Tensor, padding_mask: Tensor, *, capture: str | None = None
    ) -> LayerPass:
        """All hidden states (embedding + every layer) and, if asked, every layer's attention (small inputs only)."""
        hidden, att = [self.embed(gene_ids, values)], []
        for _, x, a in self.iter_layers(gene_ids, values, padding_mask, capture=capture):
            hidden.append(x)
            att.append(a)
        return LayerPass(hidden=hidden, attention=att if capture else None)

    # ------------------------------------------------------------------------------------- the model contract
    @classmethod
    def load(cls, checkpoint_dir: str | os.PathLike, device: str | torch.device = "cpu") -> "ScGPT":
        """scGPT's checkpoint folder (`load_scgpt`)."""
        return load_scgpt(checkpoint_dir, device=device)

    @classmethod
    def vocabulary(cls, checkpoint_dir: str | os.PathLike) -> list[str]:
        """Gene symbols of vocab.json, special tokens excluded."""
        return [t for t in read_vocab(Path(checkpoint_dir) / VOCAB_FILE) if t not in SPECIAL_TOKENS]

    def save(self, checkpoint_dir: str | os.PathLike) -> None:
        """args.json (= `config`), vocab.json and best_model.pt (`save_scgpt`)."""
        save_scgpt(self, checkpoint_dir, vocab=self.vocab, args=self.config)

    @property
    def n_layers(self) -> int:
        """Number of transformer layers (args.json nlayers)."""
        return self.nlayers

    @property
    def n_heads(self) -> int:
        """Heads per layer (args.json nheads)."""
        return self.nhead

    @property
    def genes(self) -> list[str]:
        """Vocabulary gene symbols in vocabulary order (special tokens and the pad token excluded)."""
        pad = self.vocab.get(self.config.get("pad_token", "<pad>"))
        return [t for t, i in self.vocab.items() if t not in SPECIAL_TOKENS and i != pad]

    def token_ids(self, genes: Sequence[str], *, what: str = "genes") -> np.ndarray:
        """Vocabulary ids of `genes` (`gene_ids_for`)."""
        return gene_ids_for(self.vocab, genes, what=what)

    def attention_sums(
        self, counts: sp.csr_matrix, genes: Sequence[str], *, definition: str, seed: int, batch_size: int,
        progress: bool = True,
    ) -> AttentionSums:
        """Attention summed over cells tokenised as `<cls>` + all `genes` (zeros as bin 0), `<cls>` row/column dropped.

        Counts are binned as scGPT bins per cell over its non-zero genes, tie-break draws from RandomState(seed)
        row after row (so batch_size does not matter); every cell holds every gene, so `count` is the cell count.
        """
        gene_ids = self.token_ids(genes, what="panel genes")
        tie_rng = np.random.RandomState(seed)
        device = next(self.parameters()).device
        acc = torch.zeros(self.nlayers, self.nhead, len(genes), len(genes), dtype=torch.float64, device=device)
        self.eval()
        with torch.no_grad():
            for start in progress_log(range(0, counts.shape[0], batch_size), f"operators ({definition}, cell batches)",
                                      enabled=progress):
                binned = binning(counts[start : start + batch_size], self.n_bins, seed=tie_rng).toarray()
                g, v, m = tokenize_all_genes(binned, gene_ids, cls_id=self.vocab["<cls>"], pad_value=self.pad_value)
                for layer, _, att in self.iter_layers(g.to(device), v.to(device), m.to(device), capture=definition):
                    acc[layer] += att[:, :, 1:, 1:].sum(0, dtype=torch.float64)
        return AttentionSums(total=acc, count=counts.shape[0], meta={
            "n_bins": self.n_bins, "pad_value": self.pad_value, "tokens": "<cls> + all panel genes (zeros as bin 0)",
            "scale": "1/sqrt(d_head)"})

    def gene_embeddings(self, genes: Sequence[str]) -> Tensor:
        """The encoder's output on the gene tokens (embedding + LayerNorm; no expression value), float64 [G, d]."""
        ids = torch.as_tensor(self.token_ids(genes, what="panel genes"))
        with torch.no_grad():
            return self.encoder(ids.to(next(self.parameters()).device)).double()

    def attention_projections(self, layer: int) -> dict[str, Tensor]:
        """Views of layer `layer`'s fused in-projection (q, k, v row blocks) and its out-projection."""
        attn, d = self.transformer_encoder.layers[layer].self_attn, self.d_model
        w, b = attn.in_proj_weight, attn.in_proj_bias
        return {"q_weight": w[:d], "k_weight": w[d : 2 * d], "v_weight": w[2 * d :], "q_bias": b[:d],
                "k_bias": b[d : 2 * d], "o_weight": attn.out_proj.weight}

    @property
    def token_embedding(self) -> Tensor:
        """The gene-token embedding matrix (before the encoder's LayerNorm)."""
        return self.encoder.embedding.weight

    def embed_to_cache(
        self, panel, path: str | os.PathLike, *, seed: int, batch_size: int = 64, precision: str = "fp32",
        attrs: dict | None = None, progress: bool = True,
    ) -> None:
        """The paper's frozen-scGPT cache: avg-pooled, L2-normalised embeddings (module function `embed_to_cache`)."""
        embed_to_cache(self, panel, path, seed=seed, batch_size=batch_size, precision=precision, attrs=attrs,
                       progress=progress)

    def untrained_copy(self, *, seed: int) -> "ScGPT":
        """Fresh weights, same architecture (module function `untrained_copy`)."""
        return untrained_copy(self, seed=seed)

    @classmethod
    def pretrain_demo(
        cls, counts, genes: Sequence[str], *, settings: Mapping, device: torch.device, progress: bool = True,
    ) -> tuple["ScGPT", list[tuple[int, float]]]:
        """`build_demo_model` over `genes`, then `pretrain` (scGPT's masked-value objective) with model.pretrain."""
        model, _, _ = build_demo_model(genes, d_model=settings["d_model"], nhead=settings["nhead"],
                                       d_hid=settings["d_hid"], nlayers=settings["nlayers"], seed=settings["seed"])
        curve = pretrain(model.to(device), counts, genes, steps=settings["steps"], batch_size=settings["batch_size"],
                         lr=settings["lr"], warmup=settings["warmup"], mask_ratio=settings["mask_ratio"],
                         seed=settings["seed"], progress=progress)
        return model.cpu(), curve


def _layer_forward(
    layer: nn.TransformerEncoderLayer, x: Tensor, padding_mask: Tensor | None, nhead: int, capture: str | None
) -> tuple[Tensor, Tensor | None]:
    """One post-norm encoder layer computed from its weights (same maths as nn.TransformerEncoderLayer)."""
    attn = layer.self_attn
    B, T, E = x.shape
    dh = E // nhead
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).split(E, dim=-1)
    q, k, v = (t.reshape(B, T, nhead, dh).transpose(1, 2) for t in (q, k, v))  # [B, H, T, dh]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(dh)
    masked = scores if padding_mask is None else scores.masked_fill(padding_mask[:, None, None, :], float("-inf"))
    prob = torch.softmax(masked, dim=-1)
    ctx = F.dropout(prob, p=attn.dropout, training=layer.training) @ v
    a = attn.out_proj(ctx.transpose(1, 2).reshape(B, T, E))
    x = layer.norm1(x + layer.dropout1(a))
    x = layer.norm2(x + layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(x))))))
    captured = prob if capture == "attention_prob" else scores if capture == "qk_raw" else None
    return x, captured


# ----------------------------------------------------------------------------------------------------------- binning
def binning(
    row_values: np.ndarray | sp.spmatrix, n_bins: int, *, seed: int | np.random.RandomState = 0,
    row_seeds: Sequence[np.ndarray] | None = None,
):
    """scGPT's per-cell value binning of one row or a cells x genes matrix (dense or sparse); zeros stay 0.

    For each cell: edges = np.quantile(non-zero values, linspace(0, 1, n_bins - 1)); a non-zero value gets
    bin ceil(u * (right - left) + left) with left/right = np.digitize(x, edges, right=False/True) and u ~ U(0, 1),
    so values tied with several equal edges are spread at random over those bins (scGPT's `_digitize`, side "both").
    Non-zero bins lie in [1, n_bins - 1]. The u draws come from np.random.RandomState(seed), consumed row after row
    in column order, i.e. exactly scGPT's Preprocessor binning after `np.random.seed(seed)`; with `row_seeds` (one
    per row, e.g. `cell_seeds`), row i draws from its own RandomState(row_seeds[i]) instead, so a cell's bins do not
    depend on the other rows. Returns int64 bins in the input's layout (1-d array, 2-d array, or CSR for sparse input).
    """
    if n_bins < 3:
        raise InputError(f"n_bins={n_bins} is too small: scGPT uses 51 (one zero bin + n_bins-1 quantile bins)")
    rng = seed if isinstance(seed, np.random.RandomState) else np.random.RandomState(seed)
    is_sparse, one_d = sp.issparse(row_values), (not sp.issparse(row_values) and np.ndim(row_values) == 1)
    m = sp.csr_matrix(np.atleast_2d(row_values) if not is_sparse else row_values, copy=True)
    m.sum_duplicates()
    m.sort_indices()
    m.eliminate_zeros()
    if m.nnz and m.data.min() < 0:
        raise InputError("binning got negative expression values; pass non-negative counts (layers['counts'] or X)")
    if row_seeds is not None and len(row_seeds) != m.shape[0]:
        raise InputError(f"binning: {len(row_seeds)} row seeds for {m.shape[0]} rows; pass one seed per cell")
    qs = np.linspace(0, 1, n_bins - 1)
    out = np.zeros(m.nnz, dtype=np.int64)
    for i in range(m.shape[0]):
        lo, hi = m.indptr[i], m.indptr[i + 1]
        if hi == lo:
            continue
        x = m.data[lo:hi]
        edges = np.quantile(x, qs)
        left, right = np.digitize(x, edges), np.digitize(x, edges, right=True)
        draws = (rng if row_seeds is None else np.random.RandomState(row_seeds[i])).rand(len(x))
        out[lo:hi] = np.ceil(draws * (right - left) + left).astype(np.int64)
    binned = sp.csr_matrix((out, m.indices, m.indptr), shape=m.shape)
    if is_sparse:
        return binned
    dense = binned.toarray()
    return dense[0] if one_d else dense


# ------------------------------------------------------------------------------------------------------ tokenisation
def gene_ids_for(vocab: dict[str, int], genes: Sequence[str], *, what: str = "genes") -> np.ndarray:
    """Vocabulary ids of `genes`; any gene missing from the vocabulary -> InputError with the count and first 10."""
    missing = [g for g in genes if g not in vocab]
    if missing:
        raise InputError(
            f"{len(missing)} of {len(genes)} {what} are not in the model vocabulary (first 10: {missing[:10]}); "
            "intersect the gene panel with the vocabulary first"
        )
    return np.array([vocab[g] for g in genes], dtype=np.int64)


def tokenize_all_genes(binned: np.ndarray, gene_ids: np.ndarray, *, cls_id: int, pad_value: float):
    """`<cls>` (value pad_value) + every gene in a fixed order, zero-expression genes included (bin 0); no padding."""
    n = binned.shape[0]
    ids = np.concatenate([np.full((n, 1), cls_id, dtype=np.int64), np.broadcast_to(gene_ids, (n, len(gene_ids)))], 1)
    values = np.concatenate([np.full((n, 1), pad_value, dtype=np.float32), np.asarray(binned, dtype=np.float32)], 1)
    return torch.from_numpy(np.ascontiguousarray(ids)), torch.from_numpy(values), torch.zeros(ids.shape, dtype=torch.bool)


def pad_tokens(rows: list[tuple[np.ndarray, np.ndarray]], *, pad_id: int, pad_value: float):
    """Stack variable-length (ids, values) rows, padding to the longest with pad_id / pad_value (scGPT's collator)."""
    T = max(len(ids) for ids, _ in rows)
    ids = np.full((len(rows), T), pad_id, dtype=np.int64)
    values = np.full((len(rows), T), pad_value, dtype=np.float32)
    mask = np.ones((len(rows), T), dtype=bool)
    for i, (g, v) in enumerate(rows):
        ids[i, : len(g)], values[i, : len(v)], mask[i, : len(g)] = g, v, False
    return torch.from_numpy(ids), torch.from_numpy(values), torch.from_numpy(mask)


def counts_of(data, genes: Sequence[str] | None = None, *, layer: str = "counts"):
    """(cells x genes counts, gene names) from an AnnData (layers[layer] if present, else X) or a matrix + genes.

    In-memory counts come back as float32 CSR; counts still on disk (a panel opened with `chunks.open_backed`) are
    returned as they are, for the caller to read in row chunks.
    """
    if hasattr(data, "obs") and hasattr(data, "var"):
        X = data.layers[layer] if layer in data.layers else data.X
        names = list(map(str, data.var_names)) if genes is None else list(genes)
        if genes is not None and len(genes) != data.n_vars:
            raise InputError(f"AnnData has {data.n_vars} genes but {len(genes)} gene names were given; pass genes=None")
    else:
        X, names = data, list(genes) if genes is not None else None
        if names is None:
            raise InputError("a counts matrix needs its gene names: pass genes=[...] (one per column)")
    if not is_on_disk(X):
        X = sp.csr_matrix(X, dtype=np.float32)
    if X.shape[1] != len(names):
        raise InputError(f"counts matrix has {X.shape[1]} columns but {len(names)} gene names were given")
    return X, names


# ------------------------------------------------------------------------------------------------------- checkpoints
def _write_json(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=2)
            fh.write("\n")


def save_scgpt(model: ScGPT, directory: str | os.PathLike, *, vocab: dict, args: dict, flash_keys: bool = False) -> None:
    """Write scGPT's checkpoint layout: args.json, vocab.json (token -> id) and best_model.pt (state_dict), atomically.

    flash_keys=True renames `self_attn.in_proj_weight/bias` to `self_attn.Wqkv.weight/bias`, as flash-attn-era scGPT
    checkpoints (e.g. whole-human) are saved. The .pt bytes are reproducible (serialised in memory, then written).
    Sets model.checkpoint_sha256 to the new file's hash.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, value in model.state_dict().items():
        if flash_keys:
            key = key.replace("self_attn.in_proj_weight", "self_attn.Wqkv.weight")
            key = key.replace("self_attn.in_proj_bias", "self_attn.Wqkv.bias")
        state[key] = value.detach().cpu().contiguous()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    _write_json(dict(args), directory / ARGS_FILE)
    _write_json({t: int(i) for t, i in sorted(vocab.items(), key=lambda kv: kv[1])}, directory / VOCAB_FILE)
    with atomic_path(directory / MODEL_FILE) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(buffer.getvalue())
    model.checkpoint_sha256 = sha256_file(directory / MODEL_FILE)


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: {what} not found; a scGPT checkpoint directory holds args.json, vocab.json, best_model.pt")
    try:
        with open(path) as fh:
            obj = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err.msg if hasattr(err, 'msg') else err}); restore the file") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a JSON object ({what}); restore the file")
    return obj


def read_vocab(path: str | os.PathLike) -> dict[str, int]:
    """scGPT vocab.json (token -> consecutive ids), with `<pad>`, `<cls>`, `<eoc>` appended when missing (as scGPT)."""
    path = Path(path)
    vocab = _read_json(path, "vocab")
    ids = sorted(vocab.values())
    if not all(isinstance(i, int) for i in ids) or ids != list(range(len(ids))):
        raise InputError(f"{path}: token ids must be the consecutive integers 0..{len(ids) - 1}; restore the file")
    for token in SPECIAL_TOKENS:
        if token not in vocab:
            vocab[token] = len(vocab)
    return vocab


def _config_value(args: dict, path: Path, *names: str, default=None):
    for name in names:
        if name in args:
            return args[name]
    if default is not None:
        return default
    raise InputError(f"{path}: missing key {names[0]!r}; scGPT's args.json has embsize, nheads, d_hid, nlayers")


def _rename_flash(key: str) -> str:
    for old, new in FLASH_RENAMES:
        key = key.replace(old, new)
    return key


def load_scgpt(checkpoint_dir: str | os.PathLike, device: str | torch.device = "cpu") -> ScGPT:
    """Load a scGPT checkpoint directory (args.json, vocab.json, best_model.pt) into ScGPT, in eval mode.

    Strict on encoder / value_encoder / transformer_encoder (missing, unexpected or mis-shaped keys -> InputError);
    the expression decoder is loaded when it fits; other heads (mvc_decoder, cls_decoder, bn/dsbn, ...) are logged
    and ignored, as scGPT's embed_data ignores them.
    """
    directory = Path(checkpoint_dir)
    args_path, model_path = directory / ARGS_FILE, directory / MODEL_FILE
    args = _read_json(args_path, "model args")
    vocab = read_vocab(directory / VOCAB_FILE)
    style = args.get("input_emb_style", "continuous")
    if style != "continuous":
        raise InputError(f"{args_path}: input_emb_style={style!r} is not supported; only scGPT's 'continuous' style is")
    if args.get("pre_norm", False):
        raise InputError(f"{args_path}: pre_norm=true is not supported; scGPT's released models are post-norm")
    pad_token = args.get("pad_token", "<pad>")
    if pad_token not in vocab:
        vocab[pad_token] = len(vocab)
    d_model = int(_config_value(args, args_path, "embsize", "d_model"))
    model = ScGPT(
        len(vocab), d_model, int(_config_value(args, args_path, "nheads", "nhead")),
        int(_config_value(args, args_path, "d_hid")), int(_config_value(args, args_path, "nlayers")),
        pad_id=vocab[pad_token], dropout=float(args.get("dropout", 0.2)), vocab=vocab, config=args,
    )
    state = _read_state_dict(model_path, device)
    _load_state(model, state, model_path)
    model.checkpoint_sha256 = sha256_file(model_path)
    return model.to(device).eval()


def _read_state_dict(path: Path, device) -> dict[str, Tensor]:
    """torch.load(weights_only=True) with one-line errors; unwraps {'state_dict': ...} and a DDP 'module.' prefix."""
    if not path.is_file():
        raise InputError(f"{path}: checkpoint weights not found; copy best_model.pt into the checkpoint directory")
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, non-tensor objects...
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise InputError(
            f"{path}: cannot read the checkpoint ({type(err).__name__}: {reason}); the file is truncated or corrupt, "
            "download or regenerate it"
        ) from None
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise InputError(f"{path}: expected a state_dict (parameter name -> tensor); save model.state_dict()")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return {_rename_flash(k): v for k, v in obj.items()}


def _load_state(model: ScGPT, state: dict[str, Tensor], path: Path) -> None:
    """Copy weights: strict for the encoder stack, lenient (logged) for heads."""
    own = model.state_dict()
    core = [k for k in own if k.startswith(STRICT_PREFIXES)]
    missing = [k for k in core if k not in state]
    unexpected = [k for k in state if k.startswith(STRICT_PREFIXES) and k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in core
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s) {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s) {unexpected[:5]}")
        if shapes:
            parts.append(f"wrong shape (checkpoint vs args.json/vocab.json) {shapes[:3]}")
        raise InputError(f"{path}: weights do not match args.json/vocab.json: {'; '.join(parts)}; "
                         "use the args.json and vocab.json shipped with this best_model.pt")
    load = {k: state[k] for k in core}
    heads = [k for k in own if k.startswith("decoder.")]
    if all(k in state and state[k].shape == own[k].shape for k in heads):
        load.update({k: state[k] for k in heads})
    else:
        log.warning("%s: expression decoder absent or of another shape; it stays randomly initialised (not used "
                    "for embeddings or attention)", path)
    extra = sorted({k.split(".")[0] for k in state if k not in own})
    if extra:
        log.info("%s: ignoring heads not used here: %s", path, ", ".join(extra))
    model.load_state_dict(load, strict=False)


# ------------------------------------------------------------------------------------------------------- embeddings
def embed_cells(
    model: ScGPT, counts_matrix_or_adata, genes: Sequence[str] | None = None, *, batch_size: int = 64,
    pooling: str = "cls", max_len: int | None = None, seed: int = 0, normalize: bool = True, progress: bool = True,
    cell_ids: Sequence[str] | None = None, precision: str = "fp32", out=None, chunk_size: int = CHUNK_ROWS,
) -> np.ndarray:
    """Cell embeddings as scGPT's embed_data: tokens = `<cls>` + the cell's non-zero genes in the vocabulary.

    As scGPT's `get_batch_cell_embeddings`: genes outside the vocabulary are dropped (logged); values are raw
    counts binned per cell over its non-zero genes; a cell with more than max_len - 1 such genes keeps a seeded
    random subset (max_len counts `<cls>`; None -> args.json max_seq_len, else no cap); batches are padded.
    pooling "cls" takes the `<cls>` state (scGPT's choice); "avg" the masked mean over gene tokens (padding and
    `<cls>` excluded; scGPT's avg-pool would also average padding, which makes it depend on the batch). normalize:
    L2-normalise rows, as embed_data does.

    Random draws (binning tie-breaks, the gene subset): with `cell_ids` (e.g. obs_names) each cell draws from its
    own seed (`cell_seeds(cell_ids, seed)`), so its embedding does not depend on which other cells share its batch,
    chunk or split (the frozen-embedding cache relies on this); without, one stream from `seed` is consumed cell
    after cell, exactly as scGPT's embed_data does. `precision` "bf16"/"fp16" runs the forward pass under
    torch.autocast (GPU throughput; rows still returned as float32). Counts on disk (a panel from
    `chunks.open_backed`) are read `chunk_size` rows at a time; `out` (e.g. an h5py dataset) receives the rows
    instead of a new in-memory array.
    """
    if pooling not in ("cls", "avg"):
        raise InputError(f"pooling={pooling!r} is not 'cls' or 'avg'")
    if precision not in PRECISIONS:
        raise InputError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}; fix model.embedding_precision")
    X, names = counts_of(counts_matrix_or_adata, genes)
    keep = np.array([g in model.vocab for g in names], dtype=bool)
    log.info("embed_cells: %d/%d genes in the vocabulary of size %d", keep.sum(), len(names), len(model.vocab))
    if not keep.any():
        raise InputError("no gene of the data is in the model vocabulary; check the gene symbol column")
    n = X.shape[0]
    seeds = None
    if cell_ids is not None:
        if len(cell_ids) != n:
            raise InputError(f"embed_cells: {len(cell_ids)} cell ids for {n} cells; pass one id per cell (obs_names)")
        seeds = cell_seeds(cell_ids, seed)
    cols = np.flatnonzero(keep)
    ids = np.array([model.vocab[g] for g, k in zip(names, keep) if k], dtype=np.int64)
    max_len = max_len if max_len is not None else model.config.get("max_seq_len")
    cls_id, pad_id = model.vocab["<cls>"], model.vocab[model.config.get("pad_token", "<pad>")]
    tie_rng, subset_rng = np.random.RandomState(seed), np.random.default_rng(seed)  # the stream without cell_ids
    device = next(model.parameters()).device
    dtype = PRECISIONS[precision]
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    if out is None:
        out = np.zeros((n, model.d_model), dtype=np.float32)
    model.eval()
    n_chunks = -(-n // chunk_size)
    with torch.no_grad(), autocast:
        for c0, c1, block in progress_log(row_blocks(X, chunk_size=chunk_size), f"embedding {n:,} cells (chunks)",
                                          total=n_chunks, enabled=progress):
            block = sp.csr_matrix(block, dtype=np.float32)[:, cols]
            binned = binning(block, model.n_bins, seed=tie_rng, row_seeds=None if seeds is None else seeds[c0:c1])
            emb_chunk = np.empty((c1 - c0, model.d_model), dtype=np.float32)
            for start in range(0, c1 - c0, batch_size):
                rows = []
                for i in range(start, min(start + batch_size, c1 - c0)):
                    lo, hi = binned.indptr[i], binned.indptr[i + 1]
                    genes_i, vals = binned.indices[lo:hi], binned.data[lo:hi].astype(np.float32)
                    if max_len is not None and len(genes_i) > max_len - 1:
                        rng = subset_rng if seeds is None else np.random.default_rng(seeds[c0 + i])
                        pick = np.sort(rng.permutation(len(genes_i))[: max_len - 1])
                        genes_i, vals = genes_i[pick], vals[pick]
                    rows.append((np.r_[cls_id, ids[genes_i]], np.r_[np.float32(model.pad_value), vals]))
                g, v, m = (t.to(device) for t in pad_tokens(rows, pad_id=pad_id, pad_value=model.pad_value))
                h = model.encode(g, v, m)
                if pooling == "cls":
                    emb = h[:, 0, :]
                else:
                    tokens = ~m
                    tokens[:, 0] = False  # gene tokens only: the <cls> state is the other pooling
                    w = tokens.unsqueeze(-1).to(h.dtype)
                    emb = (h * w).sum(1) / w.sum(1).clamp(min=1)
                emb_chunk[start : start + len(rows)] = emb.float().cpu().numpy()
            if normalize:
                emb_chunk /= np.maximum(np.linalg.norm(emb_chunk, axis=1, keepdims=True), 1e-12)
            out[c0:c1] = emb_chunk
    return out


def embed_to_cache(
    model: ScGPT, panel, path: str | os.PathLike, *, seed: int, batch_size: int = 64, precision: str = "fp32",
    attrs: dict | None = None, progress: bool = True,
) -> None:
    """The frozen-embedding cache of a panel (counts in layers['counts'] or X, in memory or backed): every cell,
    avg-pooled (the paper's frozen-scGPT cache), draws seeded per cell by obs name, rows streamed into a
    `cache` file in the panel's order. Every split then reads the very same row of a cell."""
    meta = {"kind": "scgpt_embedding", "pooling": "avg", "normalized": True, "seed": int(seed),
            "checkpoint_sha256": model.checkpoint_sha256, "precision": precision, **(attrs or {})}
    with cache.open_writer(path, panel.obs_names, model.d_model, attrs=meta) as out:
        embed_cells(model, panel, pooling="avg", batch_size=batch_size, seed=seed, cell_ids=list(panel.obs_names),
                    precision=precision, out=out, progress=progress)


# -------------------------------------------------------------------------------------------------------- pretraining
def build_demo_model(
    genes: Sequence[str], *, d_model: int, nhead: int, d_hid: int, nlayers: int, seed: int, dropout: float = 0.0,
    n_bins: int = 51,
) -> tuple[ScGPT, dict[str, int], dict]:
    """A fresh scGPT-architecture model over `genes` (vocab = genes + `<pad>`, `<cls>`, `<eoc>`) and its args.json.

    Seeded without touching the global torch RNG. Unlike nn.TransformerEncoder's deep copies, every layer gets its
    own random initialisation, so the untrained control does not start with identical layers.
    """
    genes = list(genes)
    if len(set(genes)) != len(genes):
        raise InputError("build_demo_model: duplicate gene names; make var_names unique")
    vocab = {g: i for i, g in enumerate(genes)}
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    args = {
        "embsize": d_model, "nheads": nhead, "d_hid": d_hid, "nlayers": nlayers, "n_layers_cls": 3,
        "dropout": dropout, "pad_token": "<pad>", "pad_value": -2, "mask_value": -1, "n_bins": n_bins,
        "input_emb_style": "continuous", "max_seq_len": len(genes) + 1, "fast_transformer": False, "pre_norm": False,
        "seed": seed, "mlm_target": "per-gene z-scored bins (fmextract demo pretraining)",
    }
    model = _fresh_scgpt(vocab, d_model, nhead, d_hid, nlayers, dropout=dropout, config=args, seed=seed)
    return model, vocab, dict(args)


def _fresh_scgpt(
    vocab: dict[str, int], d_model: int, nhead: int, d_hid: int, nlayers: int, *, dropout: float, config: dict, seed: int
) -> ScGPT:
    """A randomly initialised ScGPT (eval mode), seeded without touching the global torch RNG, every layer its own init."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ScGPT(len(vocab), d_model, nhead, d_hid, nlayers, pad_id=vocab[config.get("pad_token", "<pad>")],
                      dropout=dropout, vocab=vocab, config=config)
        for layer in list(model.transformer_encoder.layers)[1:]:
            layer.self_attn._reset_parameters()
            for lin in (layer.self_attn.out_proj, layer.linear1, layer.linear2):
                lin.reset_parameters()
    return model.eval()


def untrained_copy(model: ScGPT, *, seed: int) -> ScGPT:
    """The same architecture, vocabulary and args with fresh random weights: the untrained-model control.

    Any pretrained attention structure is gone; what remains is what the architecture and the input encoding alone
    give an operator (docs/method.md, the embedded demo: every exported operator is measured against this control
    and raw expression).
    """
    layer = model.transformer_encoder.layers[0]
    config = {**model.config, "seed": seed, "untrained": True}
    return _fresh_scgpt(dict(model.vocab), model.d_model, model.nhead, layer.linear1.out_features, model.nlayers,
                        dropout=float(model.config.get("dropout", 0.2)), config=config, seed=seed)


def pretrain(
    model: ScGPT, counts, genes: Sequence[str], *, steps: int, batch_size: int, lr: float, warmup: int,
    mask_ratio: float, seed: int, genes_per_cell: int | None = 128, include_zero_genes: bool = True,
    weight_decay: float = 0.0, grad_clip: float = 1.0, min_lr_ratio: float = 0.1, progress: bool = True,
) -> list[tuple[int, float]]:
    """scGPT's masked-value objective, made well conditioned for a CPU demo; returns the (step, loss) curve.

    Each step draws `batch_size` cells; each cell shows a random subset of `genes_per_cell` genes (None: all; zero-
    expression genes included unless include_zero_genes=False) after `<cls>`; int(n_tokens * mask_ratio) of its
    gene values are replaced by mask_value (-1) and predicted. Inputs are scGPT bins (so the checkpoint is a
    regular scGPT one); targets are the bins z-scored per gene (mean / sd over the training cells), and the loss
    is the MSE on masked positions. Adam, linear warm-up over `warmup` steps then cosine decay to min_lr_ratio * lr,
    gradients clipped at grad_clip (scGPT: 1.0). Deterministic for a seed on CPU; the global RNG is left untouched.
    The model is left in eval mode.
    """
    X, names = counts_of(counts, genes)
    if not 0 < mask_ratio < 1:
        raise InputError(f"mask_ratio={mask_ratio} must lie in (0, 1)")
    ids = gene_ids_for(model.vocab, names)
    binned = binning(X, model.n_bins, seed=seed).toarray().astype(np.float32)
    mu = binned.mean(0)
    sd = binned.std(0)
    sd[sd < 1e-6] = 1.0
    n_cells, n_genes = binned.shape
    k = n_genes if genes_per_cell is None else min(int(genes_per_cell), n_genes)
    cls_id, pad_id = model.vocab["<cls>"], model.vocab[model.config.get("pad_token", "<pad>")]
    mask_value = float(model.config.get("mask_value", -1))
    rng = np.random.default_rng(seed)
    device = next(model.parameters()).device
    curve: list[tuple[int, float]] = []

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        model.train()
        for step in progress_log(range(steps), "pretraining (steps)", enabled=progress):
            cells = rng.choice(n_cells, size=batch_size, replace=batch_size > n_cells)
            rows, targets, masks = [], [], []
            for c in cells:
                pool = np.arange(n_genes) if include_zero_genes else np.flatnonzero(binned[c])
                cols = np.sort(rng.permutation(pool)[:k]) if len(pool) > k else pool
                vals = binned[c, cols]
                chosen = np.zeros(len(cols), dtype=bool)
                chosen[rng.permutation(len(cols))[: max(1, int(len(cols) * mask_ratio))]] = True
                rows.append((np.r_[cls_id, ids[cols]], np.r_[model.pad_value, np.where(chosen, mask_value, vals)]))
                targets.append(np.r_[0.0, (vals - mu[cols]) / sd[cols]])
                masks.append(np.r_[False, chosen])
            g, v, pad = (t.to(device) for t in pad_tokens(rows, pad_id=pad_id, pad_value=model.pad_value))
            T = g.shape[1]
            tgt = torch.zeros(len(rows), T, device=device)
            msk = torch.zeros(len(rows), T, dtype=torch.bool, device=device)
            for i, (t, m) in enumerate(zip(targets, masks)):
                tgt[i, : len(t)] = torch.from_numpy(t.astype(np.float32))
                msk[i, : len(m)] = torch.from_numpy(m)
            if not msk.any():  # only possible with include_zero_genes=False and all-zero cells
                continue
            pred = model(g, v, pad)["mlm_output"]
            loss = ((pred - tgt) ** 2)[msk].mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            sched.step()
            curve.append((step + 1, float(loss.item())))
    model.eval()
    return curve


#: this module's model kind (config `model.kind: scgpt`)
Model = ScGPT
