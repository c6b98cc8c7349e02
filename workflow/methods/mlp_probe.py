"""mlp_probe: frozen scGPT avg-pool cell embeddings + a 3-layer MLP readout trained on the split's training donors.

The paper's foundation-model baseline. Embeddings: `fmextract.scgpt.embed_cells` (scGPT's embed_data input: `<cls>`
+ the cell's non-zero panel genes, raw counts binned per cell), pooled as the masked mean over gene tokens. The
readout is `fmextract.probe` (multi-task MLP, ~172k parameters at scGPT's 512-d), not the shared linear readouts.
"""

from pathlib import Path

from fmextract.probe import fit_mlp_probe
from fmextract.scgpt import embed_cells, load_scgpt


def classify(train, test, params):
    """Embed train and test cells with the frozen model, fit the MLP on train labels, predict every endpoint."""
    model = load_scgpt(Path(params["inputs"]["checkpoint"]).parent)
    kw = dict(pooling="avg", batch_size=params.get("embed_batch_size", 64), seed=params["seed"], progress=False)
    z_train = embed_cells(model, train, list(train.var_names), **kw)
    z_test = embed_cells(model, test, list(test.var_names), **kw)
    probe = fit_mlp_probe(z_train, train.obs, subtypes=params["subtypes"], seed=params["seed"],
                          hidden=params.get("hidden", (256, 128)), epochs=params.get("epochs", 30),
                          lr=params.get("lr", 1e-3), batch_size=params.get("batch_size", 256))
    return {**probe.predict(z_test, index=test.obs_names), "n_parameters": {"mlp": probe.n_parameters()}}
