"""Single-cell foundation models behind one contract (`fmextract.models.base.FoundationModel`), chosen by config
`model.kind`: a kind is the module `fmextract.models.<kind>`, found by its name (no registry to edit).

Importing this package does not import torch: the workflow reads a kind's checkpoint file names (`checkpoint_files`)
while parsing the Snakefile, from the plain literals at the top of its module, without running the module.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import pkgutil
import re
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from fmextract.errors import InputError

if TYPE_CHECKING:
    from fmextract.models.base import FoundationModel

DEFAULT_KIND = "scgpt"
#: The module-level literals every model module declares (read without importing it).
LAYOUT_NAMES = ("CHECKPOINT_FILES", "VOCABULARY_FILE")
#: Ensembl gene ids (ENSG..., ENSMUSG..., versioned or not), as `gene_key_type` recognises them.
ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")


def model_kinds() -> tuple[str, ...]:
    """The model kinds there are: every module of this package except the contract itself."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base"))


#: The model kinds shipped.
MODEL_KINDS = model_kinds()


def _module_path(kind: str) -> Path:
    """The source file of model kind `kind` (found, not run), or a one-line InputError listing the kinds there are."""
    kinds = model_kinds()
    if kind not in kinds:
        raise InputError(f"model.kind={kind!r} is not a model kind ({', '.join(kinds)}); fix config model.kind, "
                         "or add src/fmextract/models/<kind>.py (docs/models.md: add a model)")
    return Path(importlib.util.find_spec(f"{__name__}.{kind}").origin)


def layout(kind: str) -> dict[str, object]:
    """A kind's CHECKPOINT_FILES (tuple of names) and VOCABULARY_FILE, read from its module's source, torch-free."""
    path = _module_path(kind)
    values = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in LAYOUT_NAMES:
                values[node.targets[0].id] = ast.literal_eval(node.value)
    missing = [n for n in LAYOUT_NAMES if n not in values]
    if missing:
        raise InputError(f"{path}: no module-level literal {', '.join(missing)}; a model module declares "
                         f"{' and '.join(LAYOUT_NAMES)} as plain literals (docs/models.md)")
    return {"CHECKPOINT_FILES": tuple(values["CHECKPOINT_FILES"]), "VOCABULARY_FILE": values["VOCABULARY_FILE"]}


def checkpoint_files(kind: str, directory: str) -> dict[str, str]:
    """{file name: path} of a kind's checkpoint folder `directory` (what the workflow's rules read and write)."""
    return {name: f"{directory}/{name}" for name in layout(kind)["CHECKPOINT_FILES"]}


def checkpoint_dir(kind: str, files: Mapping[str, str]) -> str:
    """The folder of a rule's checkpoint inputs or outputs (keyed by file name, as `checkpoint_files` makes them)."""
    return os.path.dirname(str(files[layout(kind)["CHECKPOINT_FILES"][0]]))


def model_class(kind: str) -> type["FoundationModel"]:
    """The `Model` class of kind `kind` (imports its module, hence torch)."""
    _module_path(kind)
    cls = getattr(importlib.import_module(f"fmextract.models.{kind}"), "Model", None)
    from fmextract.models.base import FoundationModel

    if not (isinstance(cls, type) and issubclass(cls, FoundationModel)):
        raise InputError(f"fmextract.models.{kind} has no class Model subclassing FoundationModel (docs/models.md)")
    return cls


def load_model(kind: str, checkpoint_dir: str | os.PathLike, device="cpu") -> "FoundationModel":
    """Load the checkpoint folder of model kind `kind` on `device` (a torch device or config model.device's name)."""
    from fmextract.models.base import resolve_device

    device = resolve_device(device) if isinstance(device, str) else device
    return model_class(kind).load(checkpoint_dir, device=device)


def gene_key_type(genes: Sequence[str]) -> str:
    """`ensembl` if most of `genes` are Ensembl gene ids, else `symbol` (what a vocabulary or a panel is keyed by)."""
    names = [str(g) for g in genes]
    if not names:
        return "symbol"
    return "ensembl" if sum(bool(ENSEMBL.match(g)) for g in names) > len(names) / 2 else "symbol"
