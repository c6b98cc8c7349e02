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


def test_long_tables_are_shown_as_grids():
    from fmextract.report import table_view

    summary = pd.DataFrame({"method": ["a", "a", "b", "b"], "endpoint": ["stage_macro_f1", "branch_macro_f1"] * 2,
                            "mean": [0.51234, 0.6, 0.7, 0.8], "sd": [0.01, np.nan, 0.02, 0.03], "n": 3})
    grid, _ = table_view("summary", summary)
    assert list(grid.columns) == ["method", "branch F1", "stage F1"] and len(grid) == 2
    assert grid.loc[0, "stage F1"] == "0.512 ± 0.010" and grid.loc[0, "branch F1"] == "0.600"
    validation = pd.DataFrame({"metric": ["trustworthiness", "all_gates", "trustworthiness", "all_gates"],
                               "panel": ["external", "external", "control_x", "control_x"],
                               "value": [0.9, 1.0, 0.4, 0.0], "threshold": [0.8, 1.0, 0.8, 1.0],
                               "passed": [True, True, False, False]})
    grid, classes = table_view("manifold_validation", validation)
    assert list(grid.columns) == ["panel", "trustworthiness", "all_gates"] and len(grid) == 2
    assert classes.loc[1, "trustworthiness"] == "fail" and classes.loc[0, "all_gates"] == "pass"
    page = table_html(grid, title="Manifold validation", caption="c", classes=classes)
    assert '<td class="num fail">0.4</td>' in page
    paper, _ = table_view("paper_comparison", pd.DataFrame({"paper": ["0.979"], "ours": [0.9985495985]}))
    assert paper["ours"].tolist() == ["0.999"]


def test_run_report_is_one_file_with_headline_grids_figures_and_links(tmp_path):
    from fmextract.report import run_report_html

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = tmp_path / "figures" / "b.png"
    fig.parent.mkdir()
    plt.figure(figsize=(1, 1))
    plt.savefig(fig)
    (tmp_path / "tables").mkdir()
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "stats.html").write_text("x")
    grid = pd.DataFrame({"method": ["pca"], "stage": [0.5]})
    marks = pd.DataFrame({"method": [""], "stage": ["behind"]})
    page = run_report_html(title="T", sentences=["`extracted` beats pca.", "Verdicts <ok>."], endpoint=(grid, marks),
                           verdicts=(grid, marks), reference="extracted", figures={"Benchmark": str(fig)},
                           tables={"stats": str(tmp_path / "tables" / "stats.tsv"),
                                   "summary": str(tmp_path / "tables" / "summary.tsv")}, folder=str(tmp_path))
    assert '<p class="caption" id="headline">extracted beats pca. Verdicts &lt;ok&gt;.</p>' in page
    assert page.count("<table>") == 2 and '<td class="num behind">0.5</td>' in page
    assert 'src="data:image/png;base64,' in page and "figures/b.png" not in page
    assert '<a href="tables/stats.tsv">stats</a> (<a href="report/stats.html">formatted</a>)' in page
    assert '<a href="tables/summary.tsv">summary</a></li>' in page
