"""HTML tables of the report: every column rendered, numbers formatted and right-aligned, text escaped."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fmextract.report import format_cell, table_html


def test_table_html_renders_whatever_columns_exist():
    table = pd.DataFrame({"method": ["raw", "<pca>"], "family": ["paper", "controls"], "n": [12, 11],
                          "p_value": [0.0004882, 0.25], "median_diff": [0.123456, np.nan], "passed": [True, False]})
    page = table_html(table, title="Stats", caption="Wilcoxon & BH.", source="results/tables/stats.tsv")
    assert page.startswith("<!DOCTYPE html>") and "<caption" not in page and "Wilcoxon &amp; BH." in page
    for col in table.columns:
        assert f"<th>{col.replace('_', '_<wbr>')}</th>" in page
    assert "&lt;pca&gt;" in page and '<td class="num">4.88e-04</td>' in page and '<td class="num">0.123</td>' in page
    assert "<td>—</td>" in page and "<td>✓</td>" in page and "2 rows · results/tables/stats.tsv" in page


def test_empty_table_says_so():
    page = table_html(pd.DataFrame(columns=["method", "split"]), title="Failures", caption="none")
    assert "No rows." in page and "<table>" not in page


def test_number_formats():
    assert format_cell(1234567) == ("1,234,567", True)
    assert format_cell(3.0) == ("3", True)
    assert format_cell(0.5) == ("0.5", True)
    assert format_cell(0.0) == ("0", True)
    assert format_cell("x") == ("x", False)
