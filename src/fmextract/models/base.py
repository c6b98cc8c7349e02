"""The model contract: what the pipeline asks of a single-cell foundation model, whatever its architecture.

A model kind is one module `fmextract.models.<kind>` holding a `FoundationModel` subclass named `Model` and two
plain literals the workflow reads without importing torch: `CHECKPOINT_FILES` (the file names of its checkpoint
folder) and `VOCABULARY_FILE` (the one holding its gene vocabulary). Everything model-specific (checkpoint layout,
tokenisation, the forward pass, where the attention projections live) sits behind the methods below; averaging,
weights-only readings, context cells, controls and files are written once, over this interface
(`fmextract.operators`, `fmextract.planted`, the workflow scripts).
"""

from __future__ import annotations

import os
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from fmextract.errors import InputError

#: Forward-pass operator definitions every model provides: softmax probabilities, and the pre-softmax scores.
FORWARD_DEFINITIONS = ("attention_prob", "qk_raw")
#: What a vocabulary's gene keys are: HGNC-style symbols (scGPT) or Ensembl gene ids (Geneformer).
GENE_KEYS = ("symbol", "ensembl")
#: config model.embedding_precision -> the autocast dtype of the embedding forward pass (None: full float32)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device named by config model.device: `auto` is cuda when torch sees a GPU, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in DEVICES[1:]:
        raise InputError(f"model.device={name!r} is not one of {', '.join(DEVICES)}; fix config model.device")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("model.device=cuda but torch sees no CUDA device (torch.cuda.is_available() is False); "
                         "set model.device: auto (GPU when present) or cpu, or install a CUDA build of torch")
    return torch.device(name)


@dataclass
class AttentionSums:
    """Forward-pass attention of every head summed over context cells, in gene space (`FoundationModel.attention_sums`).

    `total[l, h, i, j]`: float64 on the model's device, the sum over cells of what query gene i's token gave key gene
    j's token (rows/columns in the asked gene order, special tokens dropped). `count`: how many cells each (i, j) sum
    holds: an int when every cell carries every gene (scGPT), else a [G, G] tensor (tokenisers that keep a cell's
    expressed or top-ranked genes only). `meta`: how the model tokenised (bins, special tokens, scale), for provenance.
    """

    total: Tensor
    count: int | Tensor
    meta: dict = field(default_factory=dict)


class FoundationModel(nn.Module, metaclass=ABCMeta):
    """A frozen transformer over gene tokens, seen through what the pipeline needs of it.

    Subclasses are torch modules (`.to`, `.eval`, `.parameters` work) with `n_layers`, `n_heads`, `d_model`, and
    these attributes set by `load` and the copies: `config` (a JSON-able dict, the checkpoint's own configuration; `save` writes it and `load` restores it,
    so the untrained and planted copies record their seed and planted head there) and `checkpoint_sha256` (of the
    weights file, None for a model never saved or loaded).
    """

    #: config `model.kind` naming this model (= its module name under fmextract.models)
    kind: ClassVar[str]
    #: what its vocabulary's gene keys are, one of GENE_KEYS
    gene_keys: ClassVar[str]
    config: dict
    checkpoint_sha256: str | None

    # ------------------------------------------------------------------------------------------------- checkpoint
    @classmethod
    @abstractmethod
    def load(cls, checkpoint_dir: str | os.PathLike, device: str | torch.device = "cpu") -> "FoundationModel":
        """The checkpoint folder's model on `device`, in eval mode; a missing or broken file -> one-line InputError."""

    @classmethod
    @abstractmethod
    def vocabulary(cls, checkpoint_dir: str | os.PathLike) -> list[str]:
        """The gene keys of a checkpoint folder's vocabulary (special tokens excluded), read without the weights."""

    @abstractmethod
    def save(self, checkpoint_dir: str | os.PathLike) -> None:
        """Write the checkpoint folder (the module's CHECKPOINT_FILES) atomically; sets `checkpoint_sha256`."""

    # ----------------------------------------------------------------------------------------------------- shape
    #: number of transformer layers, attention heads per layer, hidden width (d_head = d_model // n_heads):
    #: attributes or properties of the subclass
    n_layers: int
    n_heads: int
    d_model: int

    @property
    @abstractmethod
    def genes(self) -> list[str]:
        """The vocabulary's gene keys in token-id order, special tokens excluded."""

    @abstractmethod
    def token_ids(self, genes: Sequence[str], *, what: str = "genes") -> np.ndarray:
        """Token ids of `genes`; any gene outside the vocabulary -> InputError with the count and the first 10."""

    # -------------------------------------------------------------------------------------------- forward pass
    @abstractmethod
    def attention_sums(
        self, counts: sp.csr_matrix, genes: Sequence[str], *, definition: str, seed: int, batch_size: int,
        progress: bool = True,
    ) -> AttentionSums:
        """Every head's attention over the cells of `counts` (raw counts, cells x `genes`, float32 CSR), summed.

        Each cell is tokenised the model's own way (its binning or ranking, special tokens, truncation) from its
        counts over `genes`; `definition` is one of FORWARD_DEFINITIONS: `attention_prob` = the softmax with padding
        masked, `qk_raw` = q kᵀ scaled as the model scales it, before the softmax. Random draws (tie-breaks) come
        from `seed`, consumed cell after cell, so the result does not depend on `batch_size`. Token positions are
        mapped back to genes; `fmextract.operators.export_operators` divides by `count` (and renormalises rows).
        """

    # ------------------------------------------------------------------------------------- weights-only readings
    @abstractmethod
    def gene_embeddings(self, genes: Sequence[str]) -> Tensor:
        """E: the genes' token embeddings as the model's embedding layer emits them to layer 0, float64 [G, d_model].

        Only what depends on the gene's identity: value or position embeddings are left out (each model's docs say
        which parts it keeps). The weights-only operators and the planted control read heads through E.
        """

    @abstractmethod
    def attention_projections(self, layer: int) -> Mapping[str, Tensor]:
        """Layer `layer`'s attention projections, all heads, as LIVE views of its parameters (nn.Linear layout).

        Keys: `q_weight`, `k_weight`, `v_weight` (d_model x d_model, rows = heads' d_head blocks in head order),
        `q_bias`, `k_bias` (d_model) and `o_weight` (the output projection, d_model x d_model, columns = heads'
        blocks). Readers cast them; writing into them (under torch.no_grad) changes the model (the planted control).
        """

    @property
    @abstractmethod
    def token_embedding(self) -> Tensor:
        """The token-embedding matrix (a live parameter, [vocabulary size, d_model], rows indexed by `token_ids`)."""

    # ------------------------------------------------------------------------------------------- cell embedding
    @abstractmethod
    def embed_to_cache(
        self, panel, path: str | os.PathLike, *, seed: int, batch_size: int = 64, precision: str = "fp32",
        attrs: dict | None = None, progress: bool = True,
    ) -> None:
        """The frozen per-cell embedding of every cell of `panel` (raw counts in layers['counts'] or X, in memory or
        backed) streamed into a `fmextract.cache` file in panel order, as the model computes it by default.

        A cell's row depends on that cell alone (random draws seeded by `cell_seeds`-style per-cell seeds from
        `seed` and its obs name), so every split reads the same row. `precision` one of PRECISIONS.
        """

    # ------------------------------------------------------------------------------------------------- controls
    @abstractmethod
    def untrained_copy(self, *, seed: int) -> "FoundationModel":
        """The same architecture, vocabulary and configuration with fresh seeded random weights (the untrained
        control; `config` records the seed and `untrained: true`). Global RNGs are left untouched."""

    @classmethod
    @abstractmethod
    def pretrain_demo(
        cls, counts, genes: Sequence[str], *, settings: Mapping, device: torch.device, progress: bool = True,
    ) -> tuple["FoundationModel", list[tuple[int, float]]]:
        """A small model over `genes` built and pretrained on `counts` (raw, cells x genes) with config
        `model.pretrain` (`settings`): the demo's model when no checkpoint is configured; returns it (on cpu, eval
        mode) and its (step, loss) curve. A kind that cannot pretrain raises InputError asking for model.checkpoint."""
