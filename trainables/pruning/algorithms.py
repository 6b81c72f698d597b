"""Algorithm names a trial can ask for: every scorer, plus `imp` (train, prune by magnitude, rewind)."""
from __future__ import annotations

from dataclasses import dataclass

from trainables.pruning.scores import SCORERS
from common.registry import Registry


@dataclass(frozen=True)
class Algorithm:
    name: str
    scorer: str                  # the scorer each cut uses
    trains_between_cuts: bool    # imp: train before every cut and rewind after it


ALGORITHMS: Registry[Algorithm] = Registry("algorithm")
for _name in SCORERS.names():
    ALGORITHMS.register(_name)(Algorithm(_name, _name, trains_between_cuts=False))
ALGORITHMS.register("imp")(Algorithm("imp", "magnitude", trains_between_cuts=True))
