"""Geneformer behind the model contract (`model.kind: geneformer`): its Hugging Face layout, rank-value
tokenisation, the forward pass with attention mapped back to genes, its default cell embedding, the untrained copy
and a briefly pretrained demo model (the planted copy is `fmextract.planted`, through the contract).

Written from Geneformer's source (ctheodoris/Geneformer, `geneformer/tokenizer.py`, `emb_extractor.py`) without
depending on the `geneformer` package; the network is transformers' `BertForMaskedLM`. A checkpoint folder holds
`config.json` (a BertConfig), the weights (`model.safetensors` or `pytorch_model.bin`, read with safetensors or
`torch.load(weights_only=True)`, never from a hub), Geneformer's token dictionary (`token_dictionary*.pkl`: Ensembl id
-> token id, with `<pad>`, `<mask>` and, for the V2 (95M/104M) series, `<cls>`/`<eos>`) and its gene-median
dictionary (`gene_median_dictionary*.pkl`: Ensembl id -> median non-zero normalised expression). Gene keys are
Ensembl ids.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import pickle
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from fmextract import cache
from fmextract.chunks import CHUNK_ROWS, row_blocks
from fmextract.download import sha256_file
from fmextract.errors import InputError
from fmextract.io import atomic_path
from fmextract.logs import progress as progress_log
from fmextract.models.base import FORWARD_DEFINITIONS, PRECISIONS, AttentionSums, FoundationModel

log = logging.getLogger(__name__)

#: the checkpoint folder the workflow reads and writes (`fmextract.models.checkpoint_files`); `load_geneformer` also
#: reads pytorch_model.bin in place of model.safetensors, and release-suffixed dictionaries (e.g. _gc104M)
CHECKPOINT_FILES = ("config.json", "model.safetensors", "token_dictionary.pkl", "gene_median_dictionary.pkl")
VOCABULARY_FILE = "token_dictionary.pkl"
CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKEN_DICTIONARY, GENE_MEDIANS = "token_dictionary", "gene_median_dictionary"
PAD, MASK, CLS, EOS = "<pad>", "<mask>", "<cls>", "<eos>"
SPECIAL_TOKENS = (PAD, MASK, CLS, EOS)
#: library size every cell is scaled to before dividing by the gene medians (Geneformer's tokenizer: 10,000)
TARGET_SUM = 10_000
#: Geneformer's EmbExtractor emb_layer: -1 the second-to-last layer's output (its default), 0 the last layer's
EMB_LAYERS = (-1, 0)


class Geneformer(FoundationModel):
    """A Geneformer checkpoint: transformers' BertForMaskedLM plus its token and gene-median dictionaries.

    `config` is config.json as a dict (the BertConfig's fields, plus what fmextract records: `untrained`, `seed`,
    `planted`, and optionally `emb_layer`, the layer of the cell embedding: -1, Geneformer's default, or 0);
    `checkpoint_sha256` is the weights file's hash (None for a model never saved or loaded).
    """

    kind = "geneformer"
    gene_keys = "ensembl"

    def __init__(self, bert: nn.Module, token_dictionary: Mapping[str, int], gene_medians: Mapping[str, float],
                 config: dict | None = None):
        super().__init__()
        self.bert = bert
        self.token_dictionary = {str(k): int(v) for k, v in token_dictionary.items()}
        self.gene_medians = {str(k): float(v) for k, v in gene_medians.items()}
        self.config: dict = dict(config if config is not None else _config_dict(bert.config))
        self.checkpoint_sha256: str | None = None
        self.pad_id = self.token_dictionary[PAD]

    @property
    def n_layers(self) -> int:
        return int(self.bert.config.num_hidden_layers)

    @property
    def n_heads(self) -> int:
        return int(self.bert.config.num_attention_heads)

    @property
    def d_model(self) -> int:
        return int(self.bert.config.hidden_size)

    @property
    def input_size(self) -> int:
        """Tokens per cell the model takes (config max_position_embeddings: 2048 for V1, 4096 for V2)."""
        return int(self.bert.config.max_position_embeddings)

    @property
    def special_tokens(self) -> bool:
        """True when the dictionary has `<cls>` and `<eos>` (V2 series): they frame every cell's rank-value encoding."""
        return CLS in self.token_dictionary and EOS in self.token_dictionary

    @property
    def emb_layer(self) -> int:
        """The cell embedding's layer, Geneformer's EmbExtractor convention (config.json `emb_layer`, default -1)."""
        value = self.config.get("emb_layer", -1)
        if value not in EMB_LAYERS:
            raise InputError(f"config.json emb_layer={value!r} is not one of {EMB_LAYERS} (Geneformer: -1 the second-"
                             "to-last layer, 0 the last); fix the checkpoint's config.json")
        return int(value)

    # ------------------------------------------------------------------------------------- the model contract
    @classmethod
    def load(cls, checkpoint_dir: str | os.PathLike, device: str | torch.device = "cpu") -> "Geneformer":
        """The Hugging Face layout folder (`load_geneformer`)."""
        return load_geneformer(checkpoint_dir, device=device)

    @classmethod
    def vocabulary(cls, checkpoint_dir: str | os.PathLike) -> list[str]:
        """Ensembl ids of the token dictionary in token-id order, special tokens excluded."""
        tokens = read_dictionaries(checkpoint_dir)[0]
        return [g for g, _ in sorted(tokens.items(), key=lambda kv: kv[1]) if g not in SPECIAL_TOKENS]

    def save(self, checkpoint_dir: str | os.PathLike) -> None:
        """config.json (= `config`), model.safetensors and the two dictionaries (`save_geneformer`)."""
        save_geneformer(self, checkpoint_dir)

    @property
    def genes(self) -> list[str]:
        """Token-dictionary Ensembl ids in token-id order, special tokens excluded."""
        return [g for g, _ in sorted(self.token_dictionary.items(), key=lambda kv: kv[1]) if g not in SPECIAL_TOKENS]

    def token_ids(self, genes: Sequence[str], *, what: str = "genes") -> np.ndarray:
        """Token ids of `genes` (Ensembl ids); genes outside the token or gene-median dictionary -> InputError."""
        genes = [str(g) for g in genes]
        missing = [g for g in genes if g not in self.token_dictionary or g in SPECIAL_TOKENS]
        if missing:
            raise InputError(f"{len(missing)} of {len(genes)} {what} are not in the model vocabulary (first 10: "
                             f"{missing[:10]}); Geneformer keys genes by Ensembl id: build the panel from the "
                             "dataset's Ensembl ids (panels.*.gene_symbol_column names the var column holding them)")
        no_median = [g for g in genes if g not in self.gene_medians]
        if no_median:
            raise InputError(f"{len(no_median)} of {len(genes)} {what} have no gene median (first 10: "
                             f"{no_median[:10]}); use the gene_median_dictionary of the same Geneformer release")
        return np.array([self.token_dictionary[g] for g in genes], dtype=np.int64)

    def attention_sums(
        self, counts: sp.csr_matrix, genes: Sequence[str], *, definition: str, seed: int, batch_size: int,
        progress: bool = True,
    ) -> AttentionSums:
        """Attention summed over cells rank-value encoded over `genes`, mapped from sequence positions to genes.

        Each cell's expressed genes among `genes` are ranked as Geneformer ranks them (`rank_value_order`),
        truncated to the input size and framed by `<cls>`/`<eos>` (V2), so each cell orders its genes differently
        and holds only its expressed ones. Entry (i, j) of a cell is the attention from the position of gene i to
        that of gene j; a gene absent from the cell (not expressed, or truncated away) adds nothing to that cell's
        term, nor does attention to special tokens (a cell expressing no panel gene adds nothing at all). `count` is
        the number of cells, as for scGPT, so an absent gene counts as zero attention. No random draw (`seed`
        unused: ties keep gene order).
        """
        tokens = self.token_ids(genes, what="panel genes")
        medians = np.array([self.gene_medians[str(g)] for g in genes])
        device = next(self.parameters()).device
        G, first = len(genes), 1 if self.special_tokens else 0
        acc = torch.zeros(self.n_layers, self.n_heads, G, G, dtype=torch.float64, device=device)
        self.eval()
        with torch.no_grad():
            for start in progress_log(range(0, counts.shape[0], batch_size), f"Geneformer operators ({definition}, "
                                      "cell batches)", enabled=progress):
                orders = [o for o in rank_value_order(counts[start : start + batch_size], medians,
                                                      limit=_gene_slots(self)) if len(o)]
                if not orders:  # no cell of the batch expresses a panel gene: nothing to add
                    continue
                ids, mask = pad_batch([cell_tokens(self, o, tokens) for o in orders], self.pad_id)
                maps = [(torch.arange(first, first + len(o), device=device), torch.as_tensor(o, device=device))
                        for o in orders]
                for layer, _, att in self.iter_layers(ids.to(device), mask.to(device), capture=definition):
                    for b, (pos, g) in enumerate(maps):
                        acc[layer][:, g[:, None], g[None, :]] += att[b][:, pos[:, None], pos[None, :]].double()
        return AttentionSums(total=acc, count=counts.shape[0], meta={
            "model": "geneformer", "input_size": self.input_size, "scale": "1/sqrt(d_head)",
            "tokens": "Geneformer rank-value encoding of each cell's expressed panel genes"
                      + (", framed by <cls>/<eos>" if self.special_tokens else "")})

    def gene_embeddings(self, genes: Sequence[str]) -> Tensor:
        """Token embeddings + the token-type-0 embedding through the embedding LayerNorm, float64 [G, d].

        Position embeddings are left out: in Geneformer a gene's position is its rank in the cell, not part of the
        gene. (Every token of Geneformer's input has token type 0, so that embedding is part of every gene's input.)
        """
        ids = torch.as_tensor(self.token_ids(genes, what="panel genes"))
        emb = self.bert.bert.embeddings
        with torch.no_grad():
            x = emb.word_embeddings(ids.to(self.token_embedding.device)) + emb.token_type_embeddings.weight[0]
            return emb.LayerNorm(x).double()

    def attention_projections(self, layer: int) -> dict[str, Tensor]:
        """Views of BERT layer `layer`'s query, key, value and attention-output dense weights."""
        bert_layer = self.bert.bert.encoder.layer[layer]
        sa = bert_layer.attention.self
        return {"q_weight": sa.query.weight, "k_weight": sa.key.weight, "v_weight": sa.value.weight,
                "q_bias": sa.query.bias, "k_bias": sa.key.bias, "o_weight": bert_layer.attention.output.dense.weight}

    @property
    def token_embedding(self) -> Tensor:
        """BERT's word-embedding matrix (rows = token ids)."""
        return self.bert.bert.embeddings.word_embeddings.weight

    def embed_to_cache(
        self, panel, path: str | os.PathLike, *, seed: int, batch_size: int = 64, precision: str = "fp32",
        attrs: dict | None = None, progress: bool = True,
    ) -> None:
        """Geneformer's default cell embedding (`embed_cells`, layer `emb_layer`) of every panel cell into a cache file.

        The panel's var_names are its gene keys (Ensembl ids). No random draw: `seed` is recorded, not used.
        """
        meta = {"kind": "geneformer_embedding", "pooling": "mean of gene states", "emb_layer": self.emb_layer,
                "normalized": False, "seed": int(seed), "checkpoint_sha256": self.checkpoint_sha256,
                "precision": precision, **(attrs or {})}
        with cache.open_writer(path, panel.obs_names, self.d_model, attrs=meta) as out:
            embed_cells(self, panel, emb_layer=self.emb_layer, batch_size=batch_size, precision=precision, out=out,
                        progress=progress)

    def untrained_copy(self, *, seed: int) -> "Geneformer":
        """The same BertConfig and dictionaries with fresh seeded weights, as transformers initialises BERT."""
        config = {**{k: v for k, v in self.config.items() if k != "planted"}, "seed": seed, "untrained": True}
        return Geneformer(_fresh_bert(self.bert.config, seed), self.token_dictionary, self.gene_medians, config)

    @classmethod
    def pretrain_demo(
        cls, counts, genes: Sequence[str], *, settings: Mapping, device: torch.device, progress: bool = True,
    ) -> tuple["Geneformer", list[tuple[int, float]]]:
        """`build_dictionaries` and `build_geneformer` over `genes` (Ensembl ids), then `pretrain` (masked-gene MLM)."""
        tokens, medians = build_dictionaries(genes, counts)
        model = build_geneformer(tokens, medians, d_model=settings["d_model"], nhead=settings["nhead"],
                                 d_hid=settings["d_hid"], nlayers=settings["nlayers"], input_size=len(genes) + 2,
                                 seed=settings["seed"])
        curve = pretrain(model.to(device), counts, genes, steps=settings["steps"], batch_size=settings["batch_size"],
                         lr=settings["lr"], warmup=settings["warmup"], mask_ratio=settings["mask_ratio"],
                         seed=settings["seed"], progress=progress)
        return model.cpu().eval(), curve

    # ------------------------------------------------------------------------------------------- forward pass
    def embed_tokens(self, input_ids: Tensor) -> Tensor:
        """Input to the first layer: word + position + token-type-0 embeddings through the embedding LayerNorm."""
        return self.bert.bert.embeddings(input_ids=input_ids)

    def iter_layers(
        self, input_ids: Tensor, attention_mask: Tensor, *, capture: str | None = None
    ) -> Iterator[tuple[int, Tensor, Tensor | None]]:
        """Yield (layer, output hidden states, attention [B, H, T, T] or None) layer by layer, attention explicit.

        `attention_mask` is 1 at real tokens, as transformers takes it. `attention_prob`: softmax(q kᵀ /
        sqrt(d_head)) with padded keys at probability 0; `qk_raw`: the pre-softmax q kᵀ / sqrt(d_head), padded keys
        unmasked. Each layer is BERT's (post-norm) computed from its own submodules, so only one layer's attention
        is alive at a time.
        """
        if capture is not None and capture not in FORWARD_DEFINITIONS:
            raise InputError(f"capture={capture!r} is not one of {FORWARD_DEFINITIONS}; fix the call")
        keep = attention_mask.bool()
        x = self.embed_tokens(input_ids)
        for index, layer in enumerate(self.bert.bert.encoder.layer):
            x, att = _bert_layer(layer, x, keep, self.n_heads, capture)
            yield index, x, att

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor) -> list[Tensor]:
        """transformers' hidden_states: [embedding output, layer 0 output, ..., last layer output]."""
        states = [self.embed_tokens(input_ids)]
        for _, x, _ in self.iter_layers(input_ids, attention_mask):
            states.append(x)
        return states


def _config_dict(bert_config) -> dict:
    """A BertConfig as config.json's JSON-able dict (BertForMaskedLM architecture)."""
    config = json.loads(bert_config.to_json_string(use_diff=False))
    config.pop("_attn_implementation_autoset", None)
    return {**config, "architectures": ["BertForMaskedLM"]}


def _bert_layer(
    layer: nn.Module, x: Tensor, keep: Tensor, nhead: int, capture: str | None
) -> tuple[Tensor, Tensor | None]:
    """One BertLayer with the attention written out (same maths as transformers' eager attention)."""
    sa = layer.attention.self
    B, T, E = x.shape
    dh = E // nhead
    q, k, v = (lin(x).reshape(B, T, nhead, dh).transpose(1, 2) for lin in (sa.query, sa.key, sa.value))
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(dh)
    prob = torch.softmax(scores.masked_fill(~keep[:, None, None, :], float("-inf")), dim=-1)
    ctx = (sa.dropout(prob) @ v).transpose(1, 2).reshape(B, T, E)
    a = layer.attention.output(ctx, x)  # dense + dropout + LayerNorm(residual)
    out = layer.output(layer.intermediate(a), a)
    return out, prob if capture == "attention_prob" else scores if capture == "qk_raw" else None


# ------------------------------------------------------------------------------------------------------ tokenisation
def token_columns(
    keys: Sequence[str], model: Geneformer, *, source: str = "the data"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(columns of `keys` the model has a token for, their token ids, their gene medians).

    Genes outside the token dictionary are left out, as Geneformer's tokenizer leaves them out; a gene with a token
    but no median is an error of the dictionaries, and no gene in the dictionary an error of the gene keys.
    """
    keys = [str(k) for k in keys]
    cols = np.array([i for i, k in enumerate(keys) if k in model.token_dictionary and k not in SPECIAL_TOKENS],
                    dtype=np.int64)
    if len(cols) == 0:
        raise InputError(f"none of the {len(keys)} genes of {source} is in the Geneformer token dictionary "
                         f"(first keys: {keys[:3]}); Geneformer keys genes by Ensembl id: point the gene key column "
                         "at Ensembl ids (e.g. var_names of a CELLxGENE h5ad)")
    no_median = [keys[c] for c in cols if keys[c] not in model.gene_medians]
    if no_median:
        raise InputError(f"{len(no_median)} gene(s) of the token dictionary have no entry in the gene-median "
                         f"dictionary (first: {no_median[:3]}); use the gene_median_dictionary shipped with the "
                         "same Geneformer release as its token_dictionary")
    log.info("Geneformer tokens: %d/%d genes of %s are in the token dictionary", len(cols), len(keys), source)
    tokens = np.array([model.token_dictionary[keys[c]] for c in cols], dtype=np.int64)
    medians = np.array([model.gene_medians[keys[c]] for c in cols], dtype=np.float64)
    return cols, tokens, medians


def rank_value_order(counts, medians: np.ndarray, *, n_counts: np.ndarray | None = None,
                     target_sum: float = TARGET_SUM, limit: int | None = None) -> list[np.ndarray]:
    """Per cell, the column positions of its non-zero genes in Geneformer's rank order (highest first), truncated.

    As Geneformer's tokenizer: counts / n_counts * target_sum / gene median, non-zero genes sorted descending.
    `n_counts`: the cells' library sizes (default: the row sums of `counts`; Geneformer's tokenizer takes obs
    `n_counts` or the sum over all genes of the file). Ties keep column order (a stable sort; Geneformer's
    np.argsort leaves tied genes in an unspecified order). `limit`: the number of gene tokens kept.
    """
    m = sp.csr_matrix(counts, dtype=np.float64, copy=True)  # a copy: consistent index dtypes, input untouched
    m.sum_duplicates()
    m.sort_indices()
    m.eliminate_zeros()
    if m.nnz and m.data.min() < 0:
        raise InputError("rank-value encoding got negative expression values; pass raw counts (layers['counts'] or X)")
    if np.any(np.asarray(medians) <= 0):
        raise InputError("the gene-median dictionary has a median <= 0; restore the gene_median_dictionary file")
    lib = np.asarray(m.sum(axis=1)).ravel() if n_counts is None else np.asarray(n_counts, dtype=np.float64).ravel()
    out = []
    for i in range(m.shape[0]):
        lo, hi = m.indptr[i], m.indptr[i + 1]
        idx = m.indices[lo:hi]
        if hi == lo or lib[i] <= 0:
            out.append(np.zeros(0, dtype=np.int64))
            continue
        value = m.data[lo:hi] / lib[i] * target_sum / medians[idx]
        order = idx[np.argsort(-value, kind="stable")]
        out.append(order[:limit].astype(np.int64))
    return out


def cell_tokens(model: Geneformer, order: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """One cell's input ids: its ranked gene tokens truncated to the input size, framed by `<cls>`/`<eos>` (V2)."""
    if model.special_tokens:
        ids = tokens[order[: model.input_size - 2]]
        return np.r_[model.token_dictionary[CLS], ids, model.token_dictionary[EOS]].astype(np.int64)
    return tokens[order[: model.input_size]].astype(np.int64)


def pad_batch(rows: Sequence[np.ndarray], pad_id: int) -> tuple[Tensor, Tensor]:
    """(input_ids [B, T], attention_mask [B, T], 1 at real tokens), padded with `<pad>` to the longest cell."""
    T = max(len(r) for r in rows)
    ids = np.full((len(rows), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), T), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def _gene_keys(adata, gene_column: str | None) -> list[str]:
    """The AnnData's gene keys: var[gene_column] or var_names, as strings."""
    if gene_column is not None and gene_column not in adata.var.columns:
        have = ", ".join(map(str, adata.var.columns[:12]))
        raise InputError(f"AnnData var has no column {gene_column!r} (var has: {have}); set the gene key column to "
                         "the one holding Ensembl ids, or null for var_names")
    return [str(g) for g in (adata.var[gene_column] if gene_column else adata.var_names)]


# ------------------------------------------------------------------------------------------------------- embeddings
def embed_cells(
    model: Geneformer, adata, *, gene_column: str | None = None, counts_layer: str = "counts", emb_layer: int = -1,
    batch_size: int = 32, precision: str = "fp32", out=None, progress: bool = True, chunk_size: int = CHUNK_ROWS,
) -> np.ndarray:
    """Cell embeddings as Geneformer's EmbExtractor computes them by default: the mean of one layer's gene states.

    Layer: transformers' hidden_states[n_layers + emb_layer], emb_layer -1 (Geneformer's default: the second-to-last
    layer's output) or 0 (the last layer's). The mean runs over the cell's gene tokens only (`<cls>`, `<eos>` and
    padding excluded). Tokenisation has no random draw, so a cell's embedding depends on its counts alone, not on its
    batch. `precision` bf16/fp16 runs the forward pass under torch.autocast. Counts on disk are read `chunk_size`
    rows at a time; `out` (e.g. an h5py dataset) receives the rows.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}; "
                         "fix model.embedding_precision")
    if emb_layer not in EMB_LAYERS:
        raise InputError(f"emb_layer={emb_layer} is not one of {EMB_LAYERS} (Geneformer: -1 second-to-last layer, "
                         "0 last layer); fix the Geneformer embedding layer in the config")
    keys = _gene_keys(adata, gene_column)
    cols, tokens, medians = token_columns(keys, model, source="the cells to embed")
    X = adata.layers[counts_layer] if counts_layer in adata.layers else adata.X
    n = adata.n_obs
    if out is None:
        out = np.zeros((n, model.d_model), dtype=np.float32)
    which = model.n_layers + emb_layer
    first = 1 if model.special_tokens else 0
    device = next(model.parameters()).device
    dtype = PRECISIONS[precision]
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    model.eval()
    with torch.no_grad(), autocast:
        for c0, c1, block in progress_log(row_blocks(X, chunk_size=chunk_size), f"Geneformer embeddings ({n:,} cells)",
                                          total=-(-n // chunk_size), enabled=progress):
            block = sp.csr_matrix(block, dtype=np.float64)
            lib = np.asarray(block.sum(axis=1)).ravel()
            orders = rank_value_order(block[:, cols], medians, n_counts=lib, limit=_gene_slots(model))
            rows = [cell_tokens(model, o, tokens) for o in orders]
            _check_nonempty(rows, model, range(c0, c1))
            chunk = np.empty((c1 - c0, model.d_model), dtype=np.float32)
            for s in range(0, len(rows), batch_size):
                part = rows[s : s + batch_size]
                ids, mask = pad_batch(part, model.pad_id)
                h = model.hidden_states(ids.to(device), mask.to(device))[which]
                genes_only = mask.clone().to(device)
                genes_only[:, :first] = 0
                for i, r in enumerate(part):  # drop <eos> (the last real token) from the mean
                    if model.special_tokens:
                        genes_only[i, len(r) - 1] = 0
                w = genes_only.unsqueeze(-1).to(h.dtype)
                chunk[s : s + len(part)] = ((h * w).sum(1) / w.sum(1).clamp(min=1)).float().cpu().numpy()
            out[c0:c1] = chunk
    return out


# ------------------------------------------------------------------------------------------------------- checkpoints
def _find_one(directory: Path, stem: str) -> Path:
    """The one `<stem>*.pkl` of a checkpoint folder (Geneformer's releases suffix them, e.g. `_gc104M`)."""
    found = sorted(directory.glob(f"{stem}*.pkl"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(p.name for p in found)})"
        raise InputError(f"{directory}: {what} {stem}*.pkl file; copy exactly one {stem} pickle of the Geneformer "
                         "release (geneformer/ in its repository) into the checkpoint folder")
    return found[0]


def _read_dictionary(path: Path, kind: type) -> dict:
    """A Geneformer dictionary pickle (str -> kind), with one-line errors."""
    try:
        with open(path, "rb") as fh:
            obj = pickle.load(fh)
    except Exception as err:  # truncated file, not a pickle, a class we do not have...
        raise InputError(f"{path}: cannot read the dictionary ({type(err).__name__}); restore the pickle from the "
                         "Geneformer release") from None
    if not isinstance(obj, dict) or not obj:
        raise InputError(f"{path}: expected a non-empty dict (Ensembl id -> {kind.__name__}); restore the file")
    try:
        return {str(k): kind(v) for k, v in obj.items()}
    except (TypeError, ValueError):
        raise InputError(f"{path}: values must be {kind.__name__}s (Ensembl id -> {kind.__name__}); "
                         "restore the file") from None


def read_dictionaries(directory: str | os.PathLike) -> tuple[dict[str, int], dict[str, float]]:
    """(token dictionary, gene-median dictionary) of a Geneformer checkpoint folder, checked."""
    directory = Path(directory)
    tok_path = _find_one(directory, TOKEN_DICTIONARY)
    tokens = _read_dictionary(tok_path, int)
    for special in (PAD, MASK):
        if special not in tokens:
            raise InputError(f"{tok_path}: key {special!r} missing; Geneformer's token dictionary has <pad> and "
                             "<mask>: use the file of the release")
    if (CLS in tokens) != (EOS in tokens):
        raise InputError(f"{tok_path}: has only one of <cls>/<eos>; the V2 dictionary has both, V1 neither")
    if len(set(tokens.values())) != len(tokens):
        raise InputError(f"{tok_path}: token ids are not unique; restore the file")
    return tokens, _read_dictionary(_find_one(directory, GENE_MEDIANS), float)


def _read_weights(directory: Path) -> tuple[dict[str, Tensor], Path]:
    """The state dict from model.safetensors or pytorch_model.bin, one line per failure."""
    path = next((directory / f for f in WEIGHT_FILES if (directory / f).is_file()), None)
    if path is None:
        raise InputError(f"{directory}: no {' or '.join(WEIGHT_FILES)}; copy the Geneformer model's weights file "
                         "beside its config.json")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or corrupt file
        raise InputError(f"{path}: cannot read the weights ({type(err).__name__}); the file is truncated or corrupt, "
                         "download it again") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(f"{path}: expected a state dict (parameter name -> tensor); save model.state_dict()")
    return state, path


def load_geneformer(directory: str | os.PathLike, device: str | torch.device = "cpu") -> Geneformer:
    """Load a Geneformer checkpoint folder (config.json, weights, token and gene-median dictionaries), eval mode.

    Strict on the encoder (`bert.*`: missing, unexpected or mis-shaped keys -> InputError); the masked-LM head is
    loaded when present (it is not used for operators or embeddings); other heads are logged and ignored.
    """
    from transformers import BertConfig, BertForMaskedLM

    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise InputError(f"{config_path}: not found; a Geneformer checkpoint folder holds config.json, the weights and "
                         "its token_dictionary / gene_median_dictionary pickles")
    try:
        raw = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{config_path}: not valid JSON; restore the file") from None
    needed = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "max_position_embeddings")
    missing = [k for k in needed if k not in raw]
    if missing or raw.get("model_type", "bert") != "bert":
        raise InputError(f"{config_path}: not a BERT config (missing {missing} or model_type "
                         f"{raw.get('model_type')!r}); use the config.json of the Geneformer model")
    tokens, medians = read_dictionaries(directory)
    if max(tokens.values()) >= raw["vocab_size"]:
        raise InputError(f"{config_path}: vocab_size {raw['vocab_size']} is smaller than the token dictionary's "
                         f"largest id {max(tokens.values())}; the dictionary belongs to another Geneformer release")
    config = BertConfig.from_dict(raw)
    config._attn_implementation = "eager"
    bert = BertForMaskedLM(config)
    state, path = _read_weights(directory)
    state = {k if k.startswith(("bert.", "cls.")) else f"bert.{k}": v for k, v in state.items()}  # a bare BertModel
    own = bert.state_dict()
    core = [k for k in own if k.startswith("bert.")]
    lost = [k for k in core if k not in state]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in core
              if k in state and state[k].shape != own[k].shape]
    if lost or shapes:
        detail = f"missing {len(lost)} key(s) {lost[:4]}" if lost else f"wrong shape {shapes[:3]}"
        raise InputError(f"{path}: weights do not match config.json ({detail}); use the config.json shipped with them")
    load = {k: state[k] for k in core}
    head = [k for k in own if k.startswith("cls.")]
    if all(k in state and state[k].shape == own[k].shape for k in head):
        load.update({k: state[k] for k in head})
    ignored = sorted({k.split(".")[0] for k in state if k not in own and not k.endswith("position_ids")})
    if ignored:
        log.info("%s: ignoring weights not used here: %s", path, ", ".join(ignored))
    bert.load_state_dict(load, strict=False)
    model = Geneformer(bert, tokens, medians, raw)
    model.checkpoint_sha256 = sha256_file(path)
    return model.to(device).eval()


def save_geneformer(model: Geneformer, directory: str | os.PathLike) -> None:
    """Write the Hugging Face layout: config.json (= model.config), model.safetensors, the two dictionary pickles.

    Atomic per file; sets model.checkpoint_sha256 to the new weights file's hash.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / CONFIG_FILE) as tmp:
        Path(tmp).write_text(json.dumps(model.config, indent=2, sort_keys=True) + "\n")
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.bert.state_dict().items()}
    with atomic_path(directory / WEIGHT_FILES[0]) as tmp:
        save_file(state, tmp)
    for stem, obj in ((TOKEN_DICTIONARY, model.token_dictionary), (GENE_MEDIANS, model.gene_medians)):
        with atomic_path(directory / f"{stem}.pkl") as tmp:
            with open(tmp, "wb") as fh:
                pickle.dump(dict(obj), fh)
    model.checkpoint_sha256 = sha256_file(directory / WEIGHT_FILES[0])


# ---------------------------------------------------------------------------------- fresh, untrained, planted copies
def demo_ensembl_ids(symbols: Sequence[str]) -> list[str]:
    """Deterministic Ensembl-shaped ids for the simulator's gene symbols (`ENSG9` + 10 digits of blake2b(symbol)).

    The leading 9 keeps them apart from every real human gene id (ENSG00000...). For the demo only: real data
    carries its own Ensembl ids.
    """
    out = []
    for s in symbols:
        digest = int.from_bytes(hashlib.blake2b(str(s).encode(), digest_size=8).digest(), "little")
        out.append(f"ENSG9{digest % 10**10:010d}")
    if len(set(out)) != len(out):
        raise InputError("demo_ensembl_ids: two symbols map to one id; make the symbols unique")
    return out


def build_dictionaries(keys: Sequence[str], counts, *, special_tokens: bool = True,
                       target_sum: float = TARGET_SUM) -> tuple[dict[str, int], dict[str, float]]:
    """A token dictionary over `keys` (`<pad>` 0, `<mask>` 1, then `<cls>`/`<eos>` when special_tokens) and the
    gene-median dictionary from `counts` (cells x keys): each gene's median non-zero value of counts / library size
    * target_sum, as Geneformer's medians were computed over its corpus (a gene never expressed gets 1)."""
    keys = [str(k) for k in keys]
    if len(set(keys)) != len(keys):
        raise InputError("build_dictionaries: duplicate gene keys; make them unique")
    tokens = {PAD: 0, MASK: 1}
    if special_tokens:
        tokens.update({CLS: 2, EOS: 3})
    tokens.update({k: len(tokens) + i for i, k in enumerate(keys)})
    m = sp.csr_matrix(counts, dtype=np.float64)
    lib = np.asarray(m.sum(axis=1)).ravel()
    norm = sp.csc_matrix(sp.diags(np.where(lib > 0, target_sum / np.maximum(lib, 1e-300), 0.0)) @ m)
    medians = {}
    for j, k in enumerate(keys):
        col = norm.data[norm.indptr[j] : norm.indptr[j + 1]]
        col = col[col > 0]
        medians[k] = float(np.median(col)) if len(col) else 1.0
    return tokens, medians


def _fresh_bert(config, seed: int) -> nn.Module:
    """A BertForMaskedLM of `config` initialised as transformers initialises it, seeded, global RNG untouched."""
    from transformers import BertForMaskedLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bert = BertForMaskedLM(config)
    return bert.eval()


def build_geneformer(
    token_dictionary: Mapping[str, int], gene_medians: Mapping[str, float], *, d_model: int, nhead: int, d_hid: int,
    nlayers: int, input_size: int, seed: int,
) -> Geneformer:
    """A fresh Geneformer-architecture model (BertForMaskedLM, Geneformer's BERT settings: GELU, post-norm, absolute
    positions, dropout 0.02) over `token_dictionary`, seeded."""
    from transformers import BertConfig

    if d_model % nhead:
        raise InputError(f"d_model {d_model} is not divisible by nhead {nhead}; fix the Geneformer demo sizes")
    config = BertConfig(
        vocab_size=max(token_dictionary.values()) + 1, hidden_size=d_model, num_hidden_layers=nlayers,
        num_attention_heads=nhead, intermediate_size=d_hid, hidden_act="gelu", max_position_embeddings=input_size,
        hidden_dropout_prob=0.02, attention_probs_dropout_prob=0.02, initializer_range=0.02, layer_norm_eps=1e-12,
        pad_token_id=token_dictionary[PAD], type_vocab_size=2,
    )
    config._attn_implementation = "eager"
    return Geneformer(_fresh_bert(config, seed), token_dictionary, gene_medians, {**_config_dict(config), "seed": seed})


def pretrain(
    model: Geneformer, counts, genes: Sequence[str], *, steps: int, batch_size: int, lr: float, warmup: int,
    mask_ratio: float, seed: int, progress: bool = True,
) -> list[tuple[int, float]]:
    """Geneformer's objective, briefly: masked gene prediction on rank-value encoded cells; the (step, loss) curve.

    Each step draws `batch_size` cells; in each, int(n_genes * mask_ratio) (at least 1) of its gene tokens are
    replaced by `<mask>` and predicted (cross-entropy over the vocabulary, transformers' BertForMaskedLM loss).
    Adam, linear warm-up over `warmup` steps then constant. Seeded; the global RNG is left untouched; eval mode after.
    """
    if not 0 < mask_ratio < 1:
        raise InputError(f"mask_ratio={mask_ratio} must lie in (0, 1); fix model.pretrain.mask_ratio")
    tokens = model.token_ids(genes, what="genes")
    medians = np.array([model.gene_medians[str(g)] for g in genes])
    cells = [cell_tokens(model, o, tokens) for o in rank_value_order(counts, medians, limit=_gene_slots(model))]
    first = 1 if model.special_tokens else 0
    usable = [i for i, c in enumerate(cells) if len(c) - 2 * first > 1]
    if not usable:
        raise InputError("pretrain: no cell has two expressed genes of the token dictionary; check the counts")
    rng = np.random.default_rng(seed)
    device = next(model.parameters()).device
    curve: list[tuple[int, float]] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / max(1, warmup)))
        model.train()
        for step in progress_log(range(steps), "Geneformer pretraining (steps)", enabled=progress):
            rows, labels = [], []
            for c in rng.choice(usable, size=batch_size, replace=batch_size > len(usable)):
                ids = cells[c].copy()
                genes_at = np.arange(first, len(ids) - first)
                hide = rng.choice(genes_at, size=max(1, int(len(genes_at) * mask_ratio)), replace=False)
                label = np.full(len(ids), -100, dtype=np.int64)
                label[hide], ids[hide] = ids[hide], model.token_dictionary[MASK]
                rows.append(ids)
                labels.append(label)
            ids, mask = pad_batch(rows, model.pad_id)
            target = torch.full(ids.shape, -100, dtype=torch.long)
            for i, label in enumerate(labels):
                target[i, : len(label)] = torch.from_numpy(label)
            loss = model.bert(input_ids=ids.to(device), attention_mask=mask.to(device), labels=target.to(device)).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            curve.append((step + 1, float(loss.item())))
    model.eval()
    return curve


def _gene_slots(model: Geneformer) -> int:
    """Gene tokens per cell: the input size, less `<cls>` and `<eos>` when the model has them."""
    return model.input_size - (2 if model.special_tokens else 0)


def _check_nonempty(rows: Sequence[np.ndarray], model: Geneformer, which) -> None:
    """A cell with no gene token (no counts on the dictionary's genes) cannot be encoded: one line naming it."""
    empty = [int(w) for w, r in zip(which, rows) if len(r) == (2 if model.special_tokens else 0)]
    if empty:
        raise InputError(f"{len(empty)} cell(s) (rows {empty[:5]}) have no counts on any gene of the Geneformer token "
                         "dictionary; filter empty cells (scanpy.pp.filter_cells(min_counts=1)) first")


#: this module's model kind (config `model.kind: geneformer`)
Model = Geneformer
