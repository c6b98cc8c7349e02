"""Config validation with one-line errors: the file, the key path and the fix."""

from __future__ import annotations

from typing import Any

import yaml

from fmextract.errors import InputError


def _key_path(error: Any) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def check_config(config: dict, schema_path: str, *, source: str = "config") -> None:
    """Validate `config` against the JSON schema; raise InputError naming the first bad key and the fix."""
    import jsonschema

    with open(schema_path) as fh:
        schema = yaml.safe_load(fh)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(list(e.absolute_path)), str(e.message)))
    if not errors:
        return
    err = jsonschema.exceptions.best_match(errors)
    where = _key_path(err)
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed)) if isinstance(err.instance, dict) else []
        hint = f"allowed keys here: {', '.join(allowed)}" if allowed else "see config/schema.yaml"
        raise InputError(f"{source}: unknown key {', '.join(map(repr, extra))} under '{where}' (a typo?); {hint}")
    if err.validator == "required":
        raise InputError(f"{source}: {err.message} under '{where}'; add it (see config/schema.yaml)")
    raise InputError(f"{source}: key '{where}': {err.message}; fix the value (see config/schema.yaml)")
