"""The values a trial's pruning settings and the store's columns take, and the defaults.

The descriptions (`trainables.specs`), the pruner (`trainables.pruning`) and the
analysis, which selects "the default settings" from the store without torch,
all import these, so they cannot disagree.
"""
from __future__ import annotations

from typing import Dict

SCHEDULES = ("exponential", "linear")
SCOPES = ("global", "local")
PRUNE_MODES = ("eval", "train")
PRECISIONS = ("auto", "fp32", "bf16")
# Sanity-check ablations of a pruned network (Frankle et al. 2021; Su et al. 2020): `none` is the method itself.
ABLATIONS = ("none", "shuffle", "reinit", "invert", "layerwise_random")

DEFAULT_SCHEDULE = "exponential"
DEFAULT_SCOPE = "global"
DEFAULT_PRUNE_MODE = "eval"
DEFAULT_ABLATION = "none"
# The settings figures select on, as {trials column: value}.
DEFAULT_PRUNE_SETTINGS: Dict[str, str] = {"prune_mode": DEFAULT_PRUNE_MODE, "scope": DEFAULT_SCOPE,
                                          "schedule": DEFAULT_SCHEDULE, "ablation": DEFAULT_ABLATION}

# Pruning iterations when a description leaves them out: SynFlow's paper default is 100 rounds, every other
# algorithm prunes in one shot.
# FORCE is iterative by definition (with one round it is SNIP), so it gets SynFlow's 100 too.
DEFAULT_ITERATIONS: Dict[str, int] = {"synflow": 100, "force": 100}


def default_iterations(algorithm: str) -> int:
    return DEFAULT_ITERATIONS.get(algorithm, 1)


# The `kind` of a layer whose weight is prunable (the others are bias, batchnorm, ...): paths and
# layer-collapse counts run through these alone.
WEIGHT_KINDS = ("conv", "linear")
