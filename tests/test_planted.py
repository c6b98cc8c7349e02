"""The planted-head positive control: its construction in the weights, scGPT's layout, and the machinery finding it:
the head screen ranks it first under qk_weights and attention_prob, and its rank-r surrogate's leading factors are
enriched for the planted programs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fmextract import data
from fmextract.errors import InputError
from fmextract.interpret import factor_programs
from fmextract.planted import gene_programs, planted_copy
from fmextract.models.scgpt import build_demo_model, load_scgpt, save_scgpt, untrained_copy
from fmextract.simulate import simulate_panel
from fmextract.stages import load_marker_programs, load_stage_graph, ruler_distances, stage_info

torch.set_num_threads(1)
LAYER, HEAD = 1, 2


@pytest.fixture(scope="module")
def world(root, stage_table):
    """A small simulated reference panel (4 donors), a demo-architecture model over its genes, its planted copy."""
    res = root / "resources"
    stage_ids = list(stage_info(stage_table).index)
    edges = load_stage_graph(res / "stage_graph.tsv", stage_ids)
    programs = load_marker_programs(res / "marker_programs.tsv")
    background = (res / "background_genes.txt").read_text().split()
    panel = simulate_panel(stage_table, edges, programs, background, donors=[f"D{i}" for i in range(4)],
                           tissues=["bone_marrow", "blood"], stages=None, cells_per_donor=250, n_genes=None, seed=5)
    panel.obs = panel.obs.assign(donor=panel.obs["donor_id"].astype(str), stage=panel.obs["true_stage"].astype(str),
                                 branch=panel.obs["true_branch"].astype(str), depth=panel.obs["true_depth"])
    data.log_normalise(panel)
    genes = list(panel.var_names)
    model = build_demo_model(genes, d_model=32, nhead=4, d_hid=32, nlayers=3, seed=0)[0]
    planted, member = planted_copy(model, programs, layer=LAYER, head=HEAD, seed=0, logit_gap=4.0)
    ids = sorted(set(stage_table["stage"]))
    ruler = pd.DataFrame(ruler_distances(ids, edges), index=ids, columns=ids)
    return dict(panel=panel, genes=genes, model=model, planted=planted, member=member, programs=programs, ruler=ruler)


def test_only_the_planted_head_and_the_gene_embeddings_change(world):
    base = untrained_copy(world["model"], seed=0).state_dict()
    planted = world["planted"].state_dict()
    changed = {k for k in base if not torch.equal(base[k], planted[k])}
    attn = f"transformer_encoder.layers.{LAYER}.self_attn"
    assert changed == {"encoder.embedding.weight", f"{attn}.in_proj_weight"}  # (in_proj_bias starts at 0 and stays)
    assert not planted[f"{attn}.in_proj_bias"][: 2 * 32].any()
    w, d, dh = planted[f"transformer_encoder.layers.{LAYER}.self_attn.in_proj_weight"], 32, 8
    rows = slice(HEAD * dh, (HEAD + 1) * dh)
    assert torch.equal(w[:d][rows], w[d : 2 * d][rows])  # W_Q = W_K: both read the program subspace
    assert torch.equal(w[2 * d :], base[f"transformer_encoder.layers.{LAYER}.self_attn.in_proj_weight"][2 * d :])
    other = [h for h in range(4) if h != HEAD]
    for h in other:
        assert torch.equal(w[:d][h * dh : (h + 1) * dh], base[f"transformer_encoder.layers.{LAYER}.self_attn.in_proj_weight"][:d][h * dh : (h + 1) * dh])
    assert set(world["member"].values()) == set(world["planted"].config["planted"]["programs"])


def test_planted_checkpoint_round_trips_in_scgpt_layout(world, tmp_path):
    from fmextract.operators import qk_weights

    planted = world["planted"]
    save_scgpt(planted, tmp_path, vocab=planted.vocab, args=planted.config)
    back = load_scgpt(tmp_path)
    assert back.config["planted"]["layer"] == LAYER and "untrained" not in back.config
    a, b = qk_weights(planted, world["genes"][:30]), qk_weights(back, world["genes"][:30])
    np.testing.assert_allclose(a.operators, b.operators, atol=1e-6)
    assert b.checkpoint_sha256 == planted.checkpoint_sha256


def test_planted_head_attends_within_programs_in_the_weights(world):
    from fmextract.operators import qk_weights

    member, genes = world["member"], world["genes"]
    marked = [g for g in genes if g in member]
    A = qk_weights(world["planted"], marked).operators
    same = np.array([[member[a] == member[b] for b in marked] for a in marked])
    mass = lambda M: (M * same).sum(1).mean()
    assert mass(A[LAYER, HEAD]) > 0.5 and all(mass(A[l, h]) < 0.3 for l in range(3) for h in range(4) if (l, h) != (LAYER, HEAD))


@pytest.mark.parametrize("definition", ["qk_weights", "attention_prob"])
def test_head_screen_ranks_the_planted_head_first(world, definition):
    from fmextract.operators import export_operators, weights_operators
    from fmextract.screen import screen_heads

    panel, genes = world["panel"], world["genes"]
    if definition == "qk_weights":
        ops = weights_operators(world["planted"], genes, definition)
    else:
        ops = export_operators(world["planted"], panel, genes=genes, n_context=60, seed=0, progress=False)
    profiles, meta = data.anchors(panel, min_cells=5)
    kw = dict(d_latent=10, alpha=0.1, beta=1 / np.pi, epochs=40, lr=0.01, batch_size=256, seed=0)
    table = screen_heads(ops.operators, profiles, meta, world["ruler"], adaptor_kw=kw)
    assert table.iloc[0]["name"] == f"L{LAYER}H{HEAD}", table.head()


def test_rank_r_surrogate_factors_are_enriched_for_the_planted_programs(world):
    from fmextract.features import head_map, low_rank_map
    from fmextract.operators import weights_operators

    ops = weights_operators(world["planted"], world["genes"], "qk_weights")
    surrogate = low_rank_map(head_map(ops.operators, ops.genes, [(LAYER, HEAD)]), 32)
    table = factor_programs(surrogate, world["programs"], n_factors=6, n_top_genes=15)
    best = table.sort_values("q_value").groupby("factor").head(1)
    assert len(best) == 6 and (best["q_value"] < 0.05).all() and best["program"].nunique() >= 3


def test_bad_planted_configuration_is_an_input_error(world):
    with pytest.raises(InputError, match="not in the checkpoint"):
        planted_copy(world["model"], world["programs"], layer=3, head=0, seed=0, logit_gap=4.0)
    with pytest.raises(InputError, match="at least 2"):
        planted_copy(world["model"], {"only": world["programs"]["erythroid"]}, layer=0, head=0, seed=0, logit_gap=4.0)
    assert gene_programs({"CD3E": 0, "<cls>": 1}, {"t": ["CD3E", "NOPE"]}) == {"CD3E": "t"}
