"""The model contract's registry: kinds found by module name, checkpoint layouts read without torch, the contract
round trip (pretrain_demo -> save -> vocabulary -> load -> copies), gene key types, and a third kind in one module."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import fmextract.models as models
from fmextract.errors import InputError
from fmextract.models import (
    MODEL_KINDS, checkpoint_dir, checkpoint_files, gene_key_type, layout, load_model, model_class, model_kinds,
)
from fmextract.models.base import FoundationModel

torch.set_num_threads(1)
GENES = [f"GENE{i}" for i in range(12)]
SETTINGS = {"d_model": 16, "nhead": 2, "d_hid": 16, "nlayers": 3, "steps": 3, "batch_size": 4, "lr": 1e-3,
            "warmup": 1, "mask_ratio": 0.4, "seed": 0}


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_every_kind_declares_its_layout_and_a_model_class(kind):
    files = layout(kind)["CHECKPOINT_FILES"]
    assert files and len(set(files)) == len(files) and layout(kind)["VOCABULARY_FILE"] in files
    cls = model_class(kind)
    assert issubclass(cls, FoundationModel) and cls.kind == kind and cls.gene_keys in ("symbol", "ensembl")
    assert checkpoint_files(kind, "ckpt") == {name: f"ckpt/{name}" for name in files}
    assert checkpoint_dir(kind, checkpoint_files(kind, "a/b")) == "a/b"


def test_the_registry_does_not_import_torch():
    """The Snakefile reads checkpoint layouts while parsing, where torch may be slow or absent."""
    code = "import sys, fmextract.models as m; m.checkpoint_files('scgpt', 'x'); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_unknown_kind_is_one_line_naming_the_kinds():
    with pytest.raises(InputError, match=r"model.kind='nope' is not a model kind \(.*scgpt.*\); fix config") as err:
        load_model("nope", "anywhere")
    assert "\n" not in str(err.value)


def test_contract_round_trip(tmp_path):
    """pretrain_demo -> save -> vocabulary (no weights) -> load: same weights, checksum, genes; copies record seed."""
    counts = np.random.default_rng(0).poisson(2.0, (20, len(GENES))).astype(np.float32)
    model, curve = model_class("scgpt").pretrain_demo(counts, GENES, settings=SETTINGS, device=torch.device("cpu"),
                                                      progress=False)
    assert [step for step, _ in curve] == [1, 2, 3] and all(np.isfinite(loss) for _, loss in curve)
    model.save(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == sorted(layout("scgpt")["CHECKPOINT_FILES"])
    assert model_class("scgpt").vocabulary(tmp_path / "ckpt") == GENES == model.genes
    loaded = load_model("scgpt", tmp_path / "ckpt", device="cpu")
    assert loaded.checkpoint_sha256 == model.checkpoint_sha256 and (loaded.n_layers, loaded.n_heads) == (3, 2)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert np.array_equal(loaded.token_ids(GENES[:3]), [0, 1, 2])
    with pytest.raises(InputError, match="1 of 2 panel genes are not in the model vocabulary"):
        loaded.token_ids(["GENE0", "NOPE"], what="panel genes")
    fresh = loaded.untrained_copy(seed=3)
    assert fresh.config["untrained"] and fresh.config["seed"] == 3 and fresh.genes == GENES
    assert not torch.equal(fresh.token_embedding, loaded.token_embedding)
    E = loaded.gene_embeddings(GENES)
    assert E.dtype == torch.float64 and E.shape == (len(GENES), loaded.d_model)
    proj = loaded.attention_projections(0)
    assert {k: tuple(v.shape) for k, v in proj.items()} == {"q_weight": (16, 16), "k_weight": (16, 16), "v_weight": (
        16, 16), "q_bias": (16,), "k_bias": (16,), "o_weight": (16, 16)}
    with torch.no_grad():  # the projections are live views: writing one changes the model
        proj["q_bias"][0] = 7.0
    assert loaded.transformer_encoder.layers[0].self_attn.in_proj_bias[0].item() == 7.0


def test_gene_key_type():
    assert gene_key_type(["ENSG00000141510", "ENSG00000012048.21", "TP53"]) == "ensembl"
    assert gene_key_type(["TP53", "BRCA1", "ENSMUSG00000059552"]) == "symbol"
    assert gene_key_type(["ENSMUSG00000059552"]) == "ensembl" and gene_key_type([]) == "symbol"


THIRD = '''"""toy: a third model kind in one module (here scGPT's architecture under another name)."""

from fmextract.models.scgpt import ScGPT

CHECKPOINT_FILES = ("args.json", "vocab.json", "best_model.pt")
VOCABULARY_FILE = "vocab.json"


class Model(ScGPT):
    kind = "toy"
'''


def test_a_third_kind_is_one_module(tmp_path, monkeypatch):
    """docs/models.md "Add a model": a module named for the kind, with its two literals and `Model`; nothing else."""
    (tmp_path / "toy.py").write_text(THIRD)
    monkeypatch.setattr(models, "__path__", [*models.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "fmextract.models.toy", raising=False)
    assert "toy" in model_kinds()
    assert checkpoint_files("toy", "d") == {"args.json": "d/args.json", "vocab.json": "d/vocab.json",
                                            "best_model.pt": "d/best_model.pt"}
    assert model_class("toy").kind == "toy"
    (tmp_path / "bad.py").write_text("from fmextract.models.scgpt import ScGPT as Model\n")
    with pytest.raises(InputError, match="no module-level literal CHECKPOINT_FILES, VOCABULARY_FILE"):
        layout("bad")
