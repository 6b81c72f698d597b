"""Layer budgets and schedules: how many weights each layer keeps after each round of a prune.

The count is always exact: round(prunable / compression) at the end, split
over layers by the budget (one global threshold, or per-layer shares), and
each round on the way follows the schedule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from common.checks import check_choice
from common.vocabulary import DEFAULT_SCHEDULE, DEFAULT_SCOPE, SCHEDULES
from trainables.pruning.masks import Masks, apportion, keep_top
from trainables.pruning.params import PrunableParam


def density_schedule(compression: float, iterations: int, schedule: str) -> List[float]:
    """Density after each round: exponential keeps rho^(-k/n), linear steps density evenly to 1/rho."""
    n = iterations
    if schedule == "exponential":
        return [compression ** (-k / n) for k in range(1, n + 1)]
    if schedule == "linear":
        return [1.0 - (1.0 - 1.0 / compression) * k / n for k in range(1, n + 1)]
    check_choice("schedule", schedule, SCHEDULES)
    raise AssertionError(f"schedule {schedule!r} has no density rule")


def target_count(prunable: int, compression: float) -> int:
    if compression < 1:
        raise ValueError(f"compression must be >= 1, got {compression}")
    if compression > prunable:
        raise ValueError(
            f"compression {compression:g} is above the number of prunable weights ({prunable}); "
            f"the largest meaningful compression keeps one weight"
        )
    return round(prunable / compression)


def layer_shares(keep: int, shapes: Sequence[Sequence[int]], budget: str) -> List[int]:
    """Per-layer counts that sum exactly to `keep` under a layer budget (`local`, `erk` or `er`).

    `local` keeps the same density in every layer: shares in proportion to size n_l.
    `erk` and `er` are the Erdos-Renyi budgets (Mocanu et al. 2018; RigL, Evci et al. 2020;
    Liu et al. 2022): layer l keeps density d_l = eps * r_l, with

        erk: r_l = (sum of the weight's dims) / (product of its dims)
             e.g. a conv (c_out, c_in, k_h, k_w): (c_out + c_in + k_h + k_w) / (c_out c_in k_h k_w)
        er:  r_l = (c_out + c_in) / (c_out c_in)   (the kernel ignored; a Linear is (out, in))

    and eps chosen so that sum_l d_l n_l = keep. A layer whose d_l would exceed 1 is
    kept dense and eps is solved again over the others (largest r_l first, as RigL's
    `get_sparsities` does), so no layer is asked for more than it has. A one-dimensional
    parameter (a bias, a norm's scale) has r_l = 1 and is kept dense first. The real
    quotas d_l n_l are then rounded by largest remainder, so the counts sum to `keep`.
    """
    sizes = [int(math.prod(s)) for s in shapes]
    if budget == "local":
        return apportion(keep, sizes)
    if budget not in ("erk", "er"):
        raise ValueError(f"layer budget {budget!r} has no per-layer rule; valid: local, erk, er")
    raw = [_erdos_renyi_ratio(s, kernel=budget == "erk") for s in shapes]
    dense: set = set()
    while True:
        sparse = [i for i in range(len(sizes)) if i not in dense]
        left = keep - sum(sizes[i] for i in dense)
        divisor = sum(raw[i] * sizes[i] for i in sparse)
        eps = left / divisor if divisor > 0 else 0.0
        over = [i for i in sparse if eps * raw[i] > 1.0]
        if not over:
            break
        top = max(raw[i] for i in over)
        dense.update(i for i in sparse if raw[i] == top)
    shares = [0] * len(sizes)
    for i in dense:
        shares[i] = sizes[i]
    for i, share in zip(sparse, apportion(left, [raw[i] * sizes[i] for i in sparse])):
        shares[i] = min(share, sizes[i])
    short = keep - sum(shares)  # a rounding that met a full layer's cap: give the rest to layers with room
    for i in sorted(sparse, key=lambda i: -raw[i]):
        if short <= 0:
            break
        extra = min(short, sizes[i] - shares[i])
        shares[i] += extra
        short -= extra
    return shares


def _erdos_renyi_ratio(shape: Sequence[int], kernel: bool) -> float:
    dims = [int(d) for d in shape]
    if len(dims) < 2:
        return 1.0
    if kernel:
        return sum(dims) / math.prod(dims)
    c_out, c_in = dims[0], int(math.prod(dims[1:2]))
    return (c_out + c_in) / (c_out * c_in)


@dataclass(frozen=True)
class CutPlan:
    """How many weights each round keeps: globally (one threshold), or per layer under a layer budget."""

    compression: float
    densities: List[float]          # density after each round
    prunable: int                   # weights under masks at the start
    final_keep: int                 # exactly round(prunable / compression)
    final_shares: Optional[List[int]]  # per-layer final counts (local, erk, er), else None
    schedule: str = DEFAULT_SCHEDULE
    budget: str = DEFAULT_SCOPE

    @classmethod
    def make(cls, masks: Masks, params: Sequence[PrunableParam], compression: float, iterations: int,
             schedule: str, scope: str) -> "CutPlan":
        prunable = masks.total()
        final_keep = target_count(prunable, compression)
        if final_keep > masks.remaining():
            raise ValueError(f"cannot keep {final_keep} weights: only {masks.remaining()} are still unpruned")
        shares = None
        if scope != "global":
            shares = layer_shares(final_keep, [tuple(masks.params[p.name].shape) for p in params], scope)
        return cls(compression, density_schedule(compression, iterations, schedule), prunable, final_keep, shares,
                   schedule, scope)

    @property
    def rounds(self) -> int:
        return len(self.densities)

    def layer_keep(self, round_: int, size: int, share: int) -> int:
        """A layer's count after round `round_`: its share at the last; before, the schedule's path to it.

        `local` follows the global density (every layer has the same); `erk` and `er` follow each layer's own
        final density with the same schedule, so a layer the budget keeps dense is never cut.
        """
        if round_ == self.rounds:
            return share
        if self.budget == "local":
            density = self.densities[round_ - 1]
        elif share == 0:
            density = 0.0
        else:
            density = density_schedule(size / share, self.rounds, self.schedule)[round_ - 1]
        return max(share, round(size * density))

    def keep_flags(self, round_: int, candidates: torch.Tensor, alive_scores: Sequence[torch.Tensor],
                   params: Sequence[PrunableParam], remaining: int) -> List[torch.Tensor]:
        """Per layer, which alive weights round `round_` (1-based) keeps."""
        last = round_ == self.rounds
        density = self.densities[round_ - 1]
        if self.final_shares is None:
            keep = self.final_keep if last else max(self.final_keep, round(self.prunable * density))
            kept_all = keep_top(candidates, min(keep, remaining))
            return list(torch.split(kept_all, [s.numel() for s in alive_scores]))
        return [keep_top(s, min(self.layer_keep(round_, p.size, share), s.numel()))
                for p, s, share in zip(params, alive_scores, self.final_shares)]
