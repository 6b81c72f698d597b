"""What a prune did, per layer and per trial: density, collapse, score sums, FLOPs."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

from common.vocabulary import WEIGHT_KINDS
from trainables.pruning.masks import Masks
from trainables.pruning.params import PrunableParam


@dataclass(frozen=True)
class LayerStat:
    layer_index: int
    layer: str
    param: str
    kind: str
    size: int
    remaining: int
    density: float
    score_sum: float  # sum of the alive weights' scores in the last round, before its cut
    effective_remaining: Optional[int] = None  # kept weights on an input-output path (conv/linear weights only)


def layer_stats(params: Sequence[PrunableParam], masks: Masks, score_sums: Dict[str, float],
                effective: Optional[Dict[str, int]] = None) -> List[LayerStat]:
    stats = []
    effective = effective or {}
    for p in params:
        remaining = masks.remaining(p.name)
        stats.append(LayerStat(
            layer_index=p.layer_index, layer=p.layer, param=p.name, kind=p.kind, size=p.size,
            remaining=remaining, density=remaining / p.size, score_sum=float(score_sums.get(p.name, float("nan"))),
            effective_remaining=effective.get(p.name),
        ))
    return stats


def effective_total(stats: Sequence[LayerStat]) -> int:
    """Kept conv/linear weights on some input-output path: 0 for a collapsed network."""
    return sum(s.effective_remaining or 0 for s in stats if s.kind in WEIGHT_KINDS)


def collapsed(stats: Sequence[LayerStat]) -> bool:
    """A network has collapsed when some prunable conv/linear layer keeps no weight at all."""
    return any(s.remaining == 0 for s in stats if s.kind in WEIGHT_KINDS)


def macs(params: Sequence[PrunableParam], masks: Masks | None = None) -> int:
    """Multiply-adds per example of the prunable conv/linear weights (all, or only the unpruned ones)."""
    return sum(
        (p.size if masks is None else masks.remaining(p.name)) * p.macs_per_weight
        for p in params if p.kind in WEIGHT_KINDS
    )


def stats_as_rows(stats: Sequence[LayerStat]) -> List[dict]:
    return [asdict(s) for s in stats]
