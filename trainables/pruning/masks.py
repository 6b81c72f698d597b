"""Keep-masks beside a stock model, and the one thresholding function.

Masks are boolean tensors keyed by parameter name; the model's own layers stay
stock `torch.nn` modules and masked weights are zeroed in place. Selection
works on *alive* weights only (compact flat-index lists), so pruned weights
stay pruned across rounds and each round costs O(alive), not O(all).
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Sequence

import torch
from torch import nn


def keep_top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Boolean mask keeping exactly `keep` highest scores; ties go to the lower index.

    Never "about": all-equal or all-zero scores still keep exactly `keep`.
    """
    n = scores.numel()
    if not 0 <= keep <= n:
        raise ValueError(f"cannot keep {keep} of {n} scores")
    if torch.isnan(scores).any():
        raise ValueError("pruning scores contain NaN; the scorer is numerically broken for this model")
    if keep == n:
        return torch.ones(n, dtype=torch.bool, device=scores.device)
    if keep == 0:
        return torch.zeros(n, dtype=torch.bool, device=scores.device)
    threshold = kth_smallest(scores, n - keep + 1)
    kept = scores >= threshold
    surplus = int(torch.count_nonzero(kept)) - keep
    if surplus > 0:  # scores tied at the threshold: the highest indices among them go
        ties = (scores == threshold).nonzero().flatten()
        kept[ties[ties.numel() - surplus:]] = False
    return kept


BRACKET_MIN_SIZE = 1 << 20
BRACKET_SAMPLE = 1 << 16
BRACKET_MARGIN = 512


def kth_smallest(values: torch.Tensor, rank: int) -> torch.Tensor:
    """The exact rank-th smallest value (1-based), like `kthvalue`, but about 3x faster on large inputs.

    A strided sample brackets the answer, two counting passes confirm the
    bracket holds it, and `kthvalue` runs on the thin band inside. No
    randomness: the same input always takes the same path. If the bracket
    misses (a pathological distribution), it falls back to `kthvalue`.
    """
    n = values.numel()
    if n < BRACKET_MIN_SIZE:
        return values.kthvalue(rank).values
    sample = values[:: n // BRACKET_SAMPLE]
    m = sample.numel()
    position = rank / n * m
    lo = sample.kthvalue(max(1, int(position) - BRACKET_MARGIN)).values
    hi = sample.kthvalue(min(m, int(position) + BRACKET_MARGIN + 1)).values
    below = int(torch.count_nonzero(values < lo))
    above = int(torch.count_nonzero(values > hi))
    if below < rank <= n - above:
        band = values[(values >= lo) & (values <= hi)]
        return band.kthvalue(rank - below).values
    return values.kthvalue(rank).values


def apportion(total: int, sizes: Sequence[int]) -> List[int]:
    """Split `total` over layers in proportion to `sizes` (largest remainder), summing exactly to `total`."""
    whole = sum(sizes)
    if whole == 0:
        return [0] * len(sizes)
    quotas = [total * s / whole for s in sizes]
    shares = [math.floor(q) for q in quotas]
    left = total - sum(shares)
    by_remainder = sorted(range(len(sizes)), key=lambda i: (-(quotas[i] - shares[i]), i))
    for i in by_remainder[:left]:
        shares[i] += 1
    return shares


class Masks:
    """Boolean keep-masks for named parameters of one model, with alive-index lists."""

    def __init__(self, params: Mapping[str, nn.Parameter]) -> None:
        self.params: Dict[str, nn.Parameter] = dict(params)
        self.alive: Dict[str, torch.Tensor] = {
            name: torch.arange(p.numel(), device=p.device) for name, p in self.params.items()
        }
        self._float_masks: Dict[str, torch.Tensor] | None = None

    @property
    def names(self) -> List[str]:
        return list(self.params)

    def remaining(self, name: str | None = None) -> int:
        if name is not None:
            return int(self.alive[name].numel())
        return sum(int(a.numel()) for a in self.alive.values())

    def total(self) -> int:
        return sum(p.numel() for p in self.params.values())

    def mask(self, name: str) -> torch.Tensor:
        p = self.params[name]
        m = torch.zeros(p.numel(), dtype=torch.bool, device=p.device)
        m[self.alive[name]] = True
        return m.view_as(p)

    def keep_only(self, name: str, kept: torch.Tensor) -> torch.Tensor:
        """Restrict `name`'s alive set to the alive entries flagged in `kept`; returns the removed flat indices."""
        alive = self.alive[name]
        removed = alive[~kept]
        if removed.numel():
            self.alive[name] = alive[kept]
        self._float_masks = None
        return removed

    def set_alive(self, name: str, flat_indices: torch.Tensor) -> None:
        """Make exactly `flat_indices` (sorted, unique) the alive weights of `name`: FORCE's regrowth, ablations."""
        self.alive[name] = flat_indices.to(self.params[name].device)
        self._float_masks = None

    @torch.no_grad()
    def apply(self) -> None:
        """Zero every pruned weight in place, with one fused multiply over all masked parameters."""
        if self._float_masks is None:
            # Same dtype and memory format (e.g. channels_last) as the parameter, for the fused kernel's fast path.
            self._float_masks = {
                n: torch.zeros_like(p, memory_format=torch.preserve_format).copy_(self.mask(n))
                for n, p in self.params.items()
            }
        params = [p.data for p in self.params.values()]
        torch._foreach_mul_(params, [self._float_masks[n] for n in self.params])

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {name: self.mask(name).cpu() for name in self.params}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        if set(state) != set(self.params):
            missing = sorted(set(self.params) - set(state))
            extra = sorted(set(state) - set(self.params))
            raise ValueError(f"mask names do not match the model: missing {missing}, unexpected {extra}")
        for name, m in state.items():
            p = self.params[name]
            if tuple(m.shape) != tuple(p.shape):
                raise ValueError(f"mask {name!r} has shape {tuple(m.shape)}, parameter has {tuple(p.shape)}")
            self.alive[name] = m.to(p.device).flatten().nonzero().flatten()
        self._float_masks = None


def save_masks(masks: Masks, path) -> None:
    """{parameter name: boolean mask} in forward order, for `torch.load(path)` alone; OSError if unwritable."""
    with open(path, "wb") as f:
        torch.save(masks.state_dict(), f)


def load_masks(masks: Masks, path) -> None:
    masks.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
