"""HTML of the report: result tables as standalone pages (rule report_table) and results/report.html (rule report_html),
one self-contained file whose first screen answers the question: headline sentences, the method x endpoint grid,
the panel x gate verdict grid; then the figures (inlined) and links to every table.

Whatever columns a table has are rendered; numbers are right-aligned with 3 significant digits (p and q values
below 0.001 in scientific notation), integers with thousands separators, missing values as an em dash. Long-format
tables are shown as grids (`table_view`): summary as methods x endpoints, manifold_validation as panels x metrics,
paper_comparison with ours at the paper's decimals.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
from numbers import Integral, Real
from typing import Mapping, Sequence

import pandas as pd

STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 1.2em; color: #1f2933; }
h1 { font-size: 1.25em; margin: 0 0 0.3em 0; }
h2 { font-size: 1.05em; margin: 0.2em 0 0.4em 0; }
p.caption { max-width: 70em; margin: 0 0 1em 0; line-height: 1.4; }
p.source { color: #616e7c; font-size: 0.85em; margin: 0 0 0.8em 0; }
div.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #e4e7eb; vertical-align: top; }
th { position: sticky; top: 0; background: #f5f7fa; text-align: left; border-bottom: 2px solid #9aa5b1; }
td { max-width: 40em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafbfc; }
tr:hover td { background: #e8f0fe; }
td.pass, tr:nth-child(even) td.pass { background: #c7e9c0; }
td.fail, tr:nth-child(even) td.fail { background: #fcbba1; }
td.ahead, tr:nth-child(even) td.ahead { background: #fcbba1; }
td.behind, tr:nth-child(even) td.behind { background: #c7e9c0; }
div.grids table { font-size: 0.78em; }
div.grids th, div.grids td { padding: 0.12em 0.5em; }
div.grids h2 { margin-bottom: 0; }
div.grids p.source { margin: 0 0 0.3em 0; }
"""
#: a string that is a formatted number (right-aligned like one)
NUMBER = re.compile(r"[−+-]?[\d,]*\.?\d+(e[+-]?\d+)?%?")


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


def _cells(table: pd.DataFrame, classes: pd.DataFrame | None) -> list[str]:
    """Table rows as <tr> strings; `classes` (same shape, CSS class or "") colours cells."""
    rows = []
    for i, record in enumerate(table.astype(object).itertuples(index=False)):
        cells = []
        for j, value in enumerate(record):
            text, number = format_cell(value)
            number = number or bool(NUMBER.fullmatch(text))
            css = " ".join(filter(None, ["num" if number else "", classes.iat[i, j] if classes is not None else ""]))
            attr = f' class="{css}"' if css else ""
            cells.append(f"<td{attr}>{html.escape(text) if number else _breakable(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return rows


def grid_html(table: pd.DataFrame, classes: pd.DataFrame | None = None) -> str:
    """A <table> of every column of `table` (cells coloured by `classes`), or a note that it has no rows."""
    if not len(table):
        return "<p><em>No rows.</em></p>"
    head = "".join(f"<th>{_breakable(str(c))}</th>" for c in table.columns)
    return (f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(_cells(table, classes))
            + "\n</tbody>\n</table>")


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


def table_html(table: pd.DataFrame, *, title: str, caption: str, source: str = "",
               classes: pd.DataFrame | None = None) -> str:
    """A complete HTML page: title, caption, source file, and the table (or a note that it has no rows)."""
    src = f'<p class="source">{len(table):,} rows · {html.escape(source)}</p>' if source else ""
    return _page(title, f"<h1>{html.escape(title)}</h1>\n<p class=\"caption\">{html.escape(caption)}</p>\n{src}\n"
                        f'<div class="scroll">{grid_html(table, classes)}</div>')


def _pass_classes(passed: pd.DataFrame) -> pd.DataFrame:
    return passed.apply(lambda c: c.map(lambda x: "" if x is None else "pass" if x else "fail"))


def verdict_view(validation: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The panel x gate grid (gate values; pass green, fail red) with the verdict last, and its cell classes."""
    from fmextract.headline import verdict_grid

    values, passed = verdict_grid(validation)
    shown = values.astype(object).copy()
    if "all_gates" in shown.columns:
        shown["all_gates"] = ["pass" if p else "fail" for p in passed["all_gates"]]
        shown = shown.rename(columns={"all_gates": "verdict"})
    index = shown.index.to_frame(index=False)
    classes = pd.concat([pd.DataFrame("", index=range(len(index)), columns=index.columns),
                         _pass_classes(passed).reset_index(drop=True)], axis=1)
    return pd.concat([index, shown.reset_index(drop=True)], axis=1), classes


def endpoint_view(summary: pd.DataFrame, stats: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The method x endpoint grid of means (red: ahead of the reference, green: behind it, BH q < 0.05)."""
    from fmextract.headline import TITLES, endpoint_grid

    wide, marks = endpoint_grid(summary, stats)
    family = summary.drop_duplicates("method").set_index("method")["family"].reindex(wide.index)
    means = wide.apply(lambda c: c.map(lambda x: f"{x:.3f}" if math.isfinite(x) else "—"))  # one precision
    table = pd.concat([pd.DataFrame({"method": wide.index, "family": family.to_numpy()}),
                       means.rename(columns=TITLES).reset_index(drop=True)], axis=1)
    classes = pd.concat([pd.DataFrame("", index=range(len(wide)), columns=["method", "family"]),
                         marks.rename(columns=TITLES).reset_index(drop=True)], axis=1)
    return table, classes


def table_view(name: str, table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """How a results table is shown: summary and manifold_validation as grids (not long format), paper_comparison
    with ours at the paper's precision; any other table as it is."""
    from fmextract.headline import TITLES, at_paper_precision

    if name == "summary" and {"method", "endpoint", "mean", "sd"} <= set(table.columns):
        cell = [f"{m:.3f} ± {s:.3f}" if math.isfinite(s) else f"{m:.3f}" for m, s in zip(table["mean"], table["sd"])]
        wide = table.assign(cell=cell).pivot(index="method", columns="endpoint", values="cell")
        wide = wide[[e for e in TITLES if e in wide.columns] + [e for e in wide.columns if e not in TITLES]]
        return wide.rename(columns=TITLES).reset_index(), None
    if name == "manifold_validation" and {"metric", "panel", "value", "passed"} <= set(table.columns):
        index = ["panel", "adaptor"] if "adaptor" in table.columns else ["panel"]
        values = table.pivot_table(index=index, columns="metric", values="value", aggfunc="first", sort=False)
        passed = table.assign(passed=table["passed"].map(lambda x: None if pd.isna(x) else str(x).lower() in
                                                         ("true", "1", "1.0")))
        passed = passed.pivot_table(index=index, columns="metric", values="passed", aggfunc="first", sort=False,
                                    dropna=False).reindex(index=values.index, columns=values.columns)
        classes = _pass_classes(passed.astype(object).where(passed.notna(), None)).reset_index(drop=True)
        index_cols = values.index.to_frame(index=False)
        classes = pd.concat([pd.DataFrame("", index=range(len(index_cols)), columns=index_cols.columns), classes],
                            axis=1)
        return pd.concat([index_cols, values.reset_index(drop=True)], axis=1), classes
    if name == "paper_comparison" and {"paper", "ours"} <= set(table.columns):
        return at_paper_precision(table), None
    return table, None


def _image(path: str) -> str:
    with open(path, "rb") as fh:
        return "data:image/png;base64," + base64.b64encode(fh.read()).decode("ascii")


def run_report_html(*, title: str, sentences: Sequence[str], endpoint: tuple[pd.DataFrame, pd.DataFrame],
                    verdicts: tuple[pd.DataFrame, pd.DataFrame], reference: str, figures: Mapping[str, str],
                    tables: Mapping[str, str], folder: str) -> str:
    """results/report.html: headline, the two grids, every figure inlined (base64), links to every table.

    `figures`: caption -> PNG path; `tables`: name -> TSV path (linked relative to `folder`, where the page lies,
    with its formatted page under report/ when it exists).
    """
    headline = " ".join(html.escape(s).replace("`", "") for s in sentences)
    grids = (f'<div class="grids" style="display:flex; gap:2em; flex-wrap:wrap; align-items:flex-start">'
             f'<div><h2>Mean over splits, method × endpoint</h2><p class="source">red: ahead of {html.escape(reference)}'
             f", green: behind it (BH q &lt; 0.05)</p>{grid_html(*endpoint)}</div>"
             f'<div><h2>Manifold verdicts, panel × gate</h2><p class="source">green: pass, red: fail; the verdict '
             f"needs every gate</p>{grid_html(*verdicts)}</div></div>")
    figs = "\n".join(f'<h2>{html.escape(caption)}</h2>\n<img src="{_image(path)}" alt="{html.escape(caption)}" '
                      'style="max-width:100%">' for caption, path in figures.items())
    links = []
    for name, path in tables.items():
        rel = os.path.relpath(path, folder)
        page = os.path.join(os.path.dirname(os.path.dirname(path)), "report", f"{name}.html")
        extra = f' (<a href="{html.escape(os.path.relpath(page, folder))}">formatted</a>)' if os.path.exists(page) else ""
        links.append(f'<li><a href="{html.escape(rel)}">{html.escape(name)}</a>{extra}</li>')
    body = (f"<h1>{html.escape(title)}</h1>\n<p class=\"caption\" id=\"headline\">{headline}</p>\n{grids}\n{figs}\n"
            f"<h2>Tables</h2>\n<ul>\n" + "\n".join(links) + "\n</ul>")
    return _page(title, body)
