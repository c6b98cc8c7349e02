"""Logging set-up for workflow scripts: everything (logging, warnings, tracebacks) goes to the rule's log file."""

from __future__ import annotations

import logging
import sys


def to_file(path: str) -> None:
    """Send stderr and the `logging` root logger (INFO) to `path`; tracebacks of a failing rule land there too."""
    stream = open(path, "w", buffering=1)
    sys.stderr = stream
    logging.basicConfig(
        stream=stream, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    logging.captureWarnings(True)
