"""The method contract's split views: training and test cells of a split, or one clear line when there are none."""

import pandas as pd
import pytest

from conftest import toy_counts_panel
from fmextract.errors import InputError
from fmextract.methods import split_views


def panel():
    a = toy_counts_panel()
    a.obs["donor"] = a.obs["donor_id"].astype(str)
    return a


def table(test_donor: str) -> pd.DataFrame:
    rows = [("split000", d, "test" if d == test_donor else "train", "all_method") for d in ("D0", "D1", "D2", test_donor)]
    return pd.DataFrame(rows, columns=["split", "donor", "role", "block"]).drop_duplicates()


def test_split_views_hide_test_labels():
    train, test, truth = split_views(panel(), table("D3"), "split000", max_train_cells=1000, seed=0)
    assert set(test.obs["donor"]) == {"D3"} and list(test.obs.columns) == ["donor", "tissue"]
    assert "cell_type" in truth and set(train.obs["donor"]) == {"D0", "D1", "D2"}


def test_a_split_without_test_cells_is_one_line():
    with pytest.raises(InputError, match=r"split 'split000': 0 test cells \(its test donors \['D9'\] have no cells"):
        split_views(panel(), table("D9"), "split000", max_train_cells=1000, seed=0)
