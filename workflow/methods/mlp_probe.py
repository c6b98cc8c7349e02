"""mlp_probe: frozen cell embeddings of the configured model + a 3-layer MLP readout trained on the split's training
donors (scGPT: avg-pool embeddings).

The paper's foundation-model baseline. The embeddings are computed ONCE per model and panel (rule embed_cells: the
model's `embed_to_cache`; scGPT: `fmextract.models.scgpt.embed_cells`, scGPT's embed_data input `<cls>` + the cell's
non-zero panel genes, raw counts binned per cell with draws seeded by the cell's obs name, pooled as the masked mean
over gene tokens) and each split reads
its cells' rows (`inputs: {embeddings: results/embeddings/<model>/benchmark.h5}`), as the paper did. The readout
is `fmextract.probe` (multi-task MLP, ~172k parameters at scGPT's 512-d), not the shared linear readouts.
"""

from fmextract import cache
from fmextract.errors import InputError
from fmextract.probe import fit_mlp_probe

READS_EXPRESSION = False  # the cached embeddings are all it needs: no split job loads the transformer


def classify(train, test, params):
    """Read train and test embeddings from the cache, fit the MLP on train labels, predict every endpoint."""
    path = params["inputs"].get("embeddings")
    if path is None:
        raise InputError("mlp_probe needs frozen embeddings: add inputs: {embeddings: "
                         "results/embeddings/trained/benchmark.h5} to its config entry")
    z_train, z_test = cache.read_rows(path, train.obs_names), cache.read_rows(path, test.obs_names)
    probe = fit_mlp_probe(z_train, train.obs, subtypes=params["subtypes"], seed=params["seed"],
                          hidden=params.get("hidden", (256, 128)), epochs=params.get("epochs", 30),
                          lr=params.get("lr", 1e-3), batch_size=params.get("batch_size", 256))
    return {**probe.predict(z_test, index=test.obs_names), "n_parameters": {"mlp": probe.n_parameters()}}
