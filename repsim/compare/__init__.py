"""Which layer of one network corresponds to which layer of another.

RSA (rsatoolbox's measures on RDMs), CKA (linear, unbiased by default; RBF) and shape
metrics (Williams et al. 2021), every layer of every run against every other, on CPU or
GPU, with bootstrap intervals, a permutation null, the cross-validated best-matching
layer and an untrained baseline::

    from repsim import compare, runs

    nets = runs.discover("ckpt/")
    results = compare.analyse(nets, measure="cka", bootstrap=1000)
    results.similarity_cka.sel(run="dfa", run_="bp")     # (layer, layer_)

    python -m repsim.compare ckpt/ --measure cka,rsa:spearman --bootstrap 1000

:mod:`repsim.compare.measures` lists every measure with its range and invariances.
"""

from repsim.compare.analysis import COMMAND, analyse, main, similarity
from repsim.compare.inference import (
    best_match,
    bootstrap,
    bootstrap_diag_l2,
    interval,
    permutation_test,
    rule_of,
    seed_summary,
)
from repsim.compare.measures import (
    MEASURES,
    RSA_METHODS,
    Measure,
    cka,
    compare,
    measure,
    rsa,
    shape_distance,
)

__all__ = [
    "COMMAND",
    "MEASURES",
    "RSA_METHODS",
    "Measure",
    "analyse",
    "best_match",
    "bootstrap",
    "bootstrap_diag_l2",
    "cka",
    "compare",
    "interval",
    "main",
    "measure",
    "permutation_test",
    "rsa",
    "rule_of",
    "seed_summary",
    "shape_distance",
    "similarity",
]
