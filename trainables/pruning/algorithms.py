"""Algorithm names a trial can ask for: every scorer, plus `imp` (train, prune by magnitude, rewind)."""
from __future__ import annotations

from dataclasses import dataclass

from typing import Callable, Optional

from common.registry import Registry
from trainables.pruning import path_scores, recent_scores, scores
from trainables.pruning.scores import SCORERS

# Importing these fills SCORERS: the SynFlow paper's scorers, ProsPr and NTK-SAP, SynFlow-L2 and PX.
SCORER_MODULES = (scores, recent_scores, path_scores)


@dataclass(frozen=True)
class Algorithm:
    name: str
    scorer: str                  # the scorer each cut uses
    trains_between_cuts: bool    # imp: train before every cut and rewind after it


ALGORITHMS: Registry[Algorithm] = Registry("algorithm")


def _prunes_at_init(name: str) -> None:
    """The algorithm that prunes once, at initialization, with the scorer of the same name."""
    ALGORITHMS.register(name)(Algorithm(name, name, trains_between_cuts=False))


for _name in SCORERS.names():
    _prunes_at_init(_name)
ALGORITHMS.register("imp")(Algorithm("imp", "magnitude", trains_between_cuts=True))
# The unpruned network (compression 1 only, see TrialSpec.shared_dense): magnitude at 1x keeps every weight.
ALGORITHMS.register("dense")(Algorithm("dense", "magnitude", trains_between_cuts=False))


def scorer(name: str, *, needs_data: bool, passes_per_example: Optional[int] = None,
           revives: bool = False) -> Callable:
    """Register a pruning algorithm scored by the decorated function: the public, stable plugin API.

        from trainables.pruning import scorer

        @scorer("my_method", needs_data=True, passes_per_example=1)
        def my_method(model, batches, inputs):
            ...
            return {name: score_tensor for name in inputs.names}

    The function gets the network to score (at its seeded initialization, with
    the weights pruned so far zeroed), the scoring batches (a list of (images,
    labels) on the trial's device; empty when `needs_data` is False) and a
    `ScoreInputs` (`names`: the prunable parameters in forward order,
    `input_shape`, a seeded CPU `generator`, `masks`: the current keep-masks).
    It returns one tensor per name, shaped like that parameter; the highest
    scores are kept, cut to the exact count by the shared thresholding, globally
    or per layer, over `iterations` rounds. It must not modify the model.
    `passes_per_example` (forward+backward passes per scoring example per round)
    is what the trial's `prune_passes` reports and the plan's cost estimate
    uses; a data-free scorer may leave it out, and the pruner then counts the
    examples its network runs on. With `revives=True` every round ranks all
    weights, pruned ones included (as FORCE does).
    """
    if needs_data and passes_per_example is None:
        raise TypeError(f"scorer {name!r} needs data, so say how many forward+backward passes it makes per scoring "
                        f"example per round: @scorer({name!r}, needs_data=True, passes_per_example=1)")
    if passes_per_example is not None and (isinstance(passes_per_example, bool) or not isinstance(
            passes_per_example, int) or passes_per_example < 0):
        raise ValueError(f"scorer {name!r}: passes_per_example must be a whole number >= 0, got "
                         f"{passes_per_example!r}")

    def add(fn: Callable) -> Callable:
        scores.scorer(name, needs_data=needs_data, passes_per_example=passes_per_example, revives=revives)(fn)
        _prunes_at_init(name)
        return fn
    return add
