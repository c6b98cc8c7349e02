"""Exceptions with one-line, actionable messages (what file, which key, how to fix)."""


class InputError(ValueError):
    """Bad user input: a missing column, a wrong type, a malformed file or config value."""
