"""Communication ruler: a bounded symmetric distance; signalling partners come out close; clear errors."""

import hashlib
import re

import numpy as np
import pandas as pd
import pytest

from fmextract.communication import communication_ruler, load_pairs, usable_pairs
from fmextract.errors import InputError

PAIRS = pd.DataFrame({"ligand": ["L1", "L2", "L3"], "receptor": ["R1", "R2", "R3"], "pathway": "p", "source": "test"})
GENES = ["L1", "R1", "L2", "R2", "L3", "R3", "X"]


def constructed(seed: int = 0, per_stage: int = 3) -> tuple[np.ndarray, pd.DataFrame]:
    """Anchors of five stages: sender (L1) -> receiver (R1), talker (L2) -> listener (R2), loner (only X); noisy."""
    on = {"sender": ["L1"], "receiver": ["R1"], "talker": ["L2"], "listener": ["R2"], "loner": ["X"]}
    rng = np.random.default_rng(seed)
    rows, meta = [], []
    for stage, genes in on.items():
        for _ in range(per_stage):
            x = rng.uniform(0.0, 0.05, size=len(GENES))
            x[[GENES.index(g) for g in genes]] += 2.0
            rows.append(x)
            meta.append(stage)
    return np.array(rows), pd.DataFrame({"stage": meta})


def test_ruler_is_a_bounded_symmetric_distance():
    rng = np.random.default_rng(1)
    profiles = rng.gamma(1.0, size=(40, len(GENES)))
    meta = pd.DataFrame({"stage": rng.choice(list("abcdefg"), size=40)})
    R = communication_ruler(profiles, meta, GENES, PAIRS, min_pairs=3)
    assert list(R.index) == list(R.columns) == sorted(meta["stage"].unique())
    D = R.to_numpy()
    np.testing.assert_array_equal(D, D.T)
    np.testing.assert_array_equal(np.diag(D), 0.0)
    assert D.min() >= 0.0 and D.max() <= 1.0


def test_signalling_partners_are_closer_than_unrelated_stages():
    profiles, meta = constructed()
    R = communication_ruler(profiles, meta, GENES, PAIRS, min_pairs=3)
    for a, b in (("sender", "receiver"), ("talker", "listener")):
        for other in ("talker", "listener", "loner"):
            if other not in (a, b):
                assert R.loc[a, b] < R.loc[a, other] and R.loc[a, b] < R.loc[b, other]


def test_too_few_pairs_is_an_input_error():
    profiles, meta = constructed()
    keep = [GENES.index(g) for g in ("L1", "R1", "L2", "X")]  # only the L1-R1 pair is complete
    with pytest.raises(InputError, match=r"pairs\.tsv: only 1 ligand-receptor pair.*larger gene panel"):
        communication_ruler(profiles[:, keep], meta, ["L1", "R1", "L2", "X"], PAIRS, min_pairs=2, source="pairs.tsv")


def test_deterministic_and_independent_of_anchor_order():
    profiles, meta = constructed(seed=3)
    first = communication_ruler(profiles, meta, GENES, PAIRS, min_pairs=3)
    pd.testing.assert_frame_equal(first, communication_ruler(profiles, meta, GENES, PAIRS, min_pairs=3))
    order = np.random.default_rng(0).permutation(len(meta))
    shuffled = communication_ruler(profiles[order], meta.iloc[order].reset_index(drop=True), GENES, PAIRS, min_pairs=3)
    pd.testing.assert_frame_equal(first, shuffled, atol=1e-12)


def test_shipped_pairs_are_liana_consensus_with_provenance(root):
    path = root / "resources" / "ligand_receptor_pairs.tsv"
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert "liana 1.10.0, resource 'consensus' (4,620 pairs" in header[0]
    assert sum(bool(re.search(r"sha256 [0-9a-f]{64}$", line)) for line in header) == 2  # the wheel and the CSV
    pairs = load_pairs(path)
    assert len(pairs) == 4620 and pairs["ligand"].str.contains("_").any() and pairs["receptor"].str.contains("_").any()
    universe = (root / "resources" / "background_genes.txt").read_text().split()
    universe += pd.read_csv(root / "resources" / "marker_programs.tsv", sep="\t", comment="#")["gene"].tolist()
    assert usable_pairs(pairs, universe)["interaction"].nunique() >= 5  # the demo's default min_pairs


def test_complex_needs_every_subunit_and_counts_as_its_weakest():
    pairs = pd.DataFrame({"ligand": ["L1", "L2", "L3"], "receptor": ["R1_R1B", "R2", "R3_R3B"]})
    used = usable_pairs(pairs, GENES + ["R1B"])  # R3B is not measured: L3 -> R3_R3B is left out
    assert used["interaction"].tolist() == ["L1|R1_R1B", "L1|R1_R1B", "L2|R2"]
    assert set(used["ligand"]) | set(used["receptor"]) == {"L1", "R1", "R1B", "L2", "R2"}
    genes = GENES + ["R1B"]
    profiles, meta = constructed()
    with_r1b = np.c_[profiles, np.zeros(len(meta))]  # R1B silent everywhere: the R1_R1B receptor is not expressed
    silent = communication_ruler(with_r1b, meta, genes, pairs, min_pairs=2)
    with_r1b[:, -1] = profiles[:, GENES.index("R1")]  # R1B follows R1: the receiver expresses the whole complex
    whole = communication_ruler(with_r1b, meta, genes, pairs, min_pairs=2)
    assert whole.loc["sender", "receiver"] < silent.loc["sender", "receiver"]
    assert whole.loc["sender", "receiver"] < whole.loc["sender", "loner"]


def test_derived_table_records_its_source(tmp_path):
    import sys
    import zipfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from ligand_receptor_pairs import MEMBER, derive

    csv = ('"","source","target","source_genesymbol","target_genesymbol","resource"\n'
           '"1","P1","P2","CD40LG","ITGA2B_ITGB3","consensus"\n"2","P3","P4","CXCL12","CXCR4","consensus"\n'
           '"3","P3","P4","CXCL12","CXCR4","consensus"\n"4","P5","P6","Cd40lg","Itgb3","mouseconsensus"\n')
    wheel = tmp_path / "liana-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(MEMBER, csv)
    table, header = derive(wheel)
    assert table[["ligand", "receptor"]].values.tolist() == [["CD40LG", "ITGA2B_ITGB3"], ["CXCL12", "CXCR4"]]
    assert "liana 9.9.9" in header[0] and "2 pairs, 1 with a complex" in header[0]
    assert hashlib.sha256(csv.encode()).hexdigest() in header[2]
    (tmp_path / "pairs.tsv").write_text(table.to_csv(sep="\t", index=False))
    assert len(load_pairs(tmp_path / "pairs.tsv")) == 2
