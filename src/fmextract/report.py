"""Result tables as standalone HTML pages for the Snakemake report (rule report_table): caption, then the table.

Whatever columns a table has are rendered; numbers are right-aligned with 3 significant digits (p and q values
below 0.001 in scientific notation), integers with thousands separators, missing values as an em dash.
"""

from __future__ import annotations

import html
import math
from numbers import Integral, Real

import pandas as pd

STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 1.2em; color: #1f2933; }
h1 { font-size: 1.25em; margin: 0 0 0.3em 0; }
p.caption { max-width: 70em; margin: 0 0 1em 0; line-height: 1.4; }
p.source { color: #616e7c; font-size: 0.85em; margin: 0 0 0.8em 0; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #e4e7eb; vertical-align: top; }
th { position: sticky; top: 0; background: #f5f7fa; text-align: left; border-bottom: 2px solid #9aa5b1; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafbfc; }
tr:hover td { background: #e8f0fe; }
"""


def format_cell(value: object) -> tuple[str, bool]:
    """(text, is_number) of one cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—", False
    if isinstance(value, bool):
        return ("✓" if value else "✗"), False
    if isinstance(value, Integral):
        return f"{value:,}", True
    if isinstance(value, Real):
        x = float(value)
        if math.isinf(x):
            return ("∞" if x > 0 else "−∞"), True
        if x.is_integer() and abs(x) < 1e15:
            return f"{int(x):,}", True
        if x != 0 and abs(x) < 1e-3:
            return f"{x:.2e}", True
        return f"{x:.3g}", True
    return str(value), False


def _breakable(text: str) -> str:
    """Escaped text that may wrap after underscores (long identifiers such as pseudotime_depth_abs_spearman)."""
    return html.escape(text).replace("_", "_<wbr>")


def table_html(table: pd.DataFrame, *, title: str, caption: str, source: str = "") -> str:
    """A complete HTML page: title, caption, source file, and the table (or a note that it has no rows)."""
    head = "".join(f"<th>{_breakable(str(c))}</th>" for c in table.columns)
    rows = []
    for record in table.astype(object).itertuples(index=False):
        cells = []
        for value in record:
            text, number = format_cell(value)
            cells.append(f'<td class="num">{html.escape(text)}</td>' if number else f"<td>{_breakable(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    body = (f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"
            if len(table) else "<p><em>No rows.</em></p>")
    src = f'<p class="source">{len(table):,} rows · {html.escape(source)}</p>' if source else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f'<p class="caption">{html.escape(caption)}</p>\n{src}\n{body}\n</body></html>\n')
