"""Sanity-check ablations of a pruned network (Frankle et al. 2021; Su et al. 2020).

Each asks whether a method's result depends on *which* weights it keeps, or
only on *how many* per layer:

- `shuffle`: the final mask permuted within each layer (seeded): same per-layer counts, new positions, and the
  kept positions hold the network's own initial weights.
- `layerwise_random`: a fresh uniformly random mask with exactly the method's per-layer counts. It has the same
  distribution as `shuffle` (a permuted mask is a uniformly random mask with the same count); it is drawn from
  its own seed stream, and is the baseline Su et al. call "random tickets".
- `reinit`: the same mask, weights re-drawn from the model's initializer with a different seed.
- `invert`: the lowest-scoring weights kept instead, at the same exact count (applied by the pruner in every
  round, see `prune_model(invert=True)`). For `random` it is another random mask, the same in distribution
  as `none`.

Ablations act on a pruned model in place and return the new per-layer stats.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Dict, Sequence

import torch
from torch import nn

from common.checks import check_choice
from trainables.pruning.masks import Masks
from trainables.pruning.params import PrunableParam

# Ablations that change the mask or the weights after pruning (invert changes the pruning itself).
AFTER_PRUNING = ("shuffle", "layerwise_random", "reinit")


def ablation_seed(seed: int, ablation: str) -> int:
    """A 32-bit seed of its own for each (trial seed, ablation): never the seed the network was built with."""
    digest = hashlib.sha256(f"{ablation}:{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _generator(seed: int, ablation: str) -> torch.Generator:
    return torch.Generator().manual_seed(ablation_seed(seed, ablation))


def shuffle_masks(masks: Masks, params: Sequence[PrunableParam], seed: int) -> None:
    """Permute each layer's mask: the kept position i moves to perm[i]."""
    gen = _generator(seed, "shuffle")
    for p in params:
        perm = torch.randperm(p.size, generator=gen).to(masks.alive[p.name].device)
        masks.set_alive(p.name, perm[masks.alive[p.name]].sort().values)


def layerwise_random_masks(masks: Masks, params: Sequence[PrunableParam], seed: int) -> None:
    """Each layer keeps as many weights as before, at uniformly random positions."""
    gen = _generator(seed, "layerwise_random")
    for p in params:
        keep = masks.remaining(p.name)
        chosen = torch.randperm(p.size, generator=gen)[:keep].to(masks.alive[p.name].device)
        masks.set_alive(p.name, chosen.sort().values)


@torch.no_grad()
def restore_parameters(model: nn.Module, values: Dict[str, torch.Tensor]) -> None:
    named = dict(model.named_parameters())
    for name, value in values.items():
        named[name].copy_(value)


def apply_ablation(ablation: str, model: nn.Module, masks: Masks, params: Sequence[PrunableParam], seed: int,
                   initial: Dict[str, torch.Tensor], reinitialized: Callable[[int], nn.Module]) -> None:
    """Ablate a pruned `model` in place: new masks or new weights, then masked again.

    `initial` holds the parameters before pruning (pruning zeroed the cut ones,
    and a shuffled mask keeps some of those); `reinitialized(seed)` builds the
    same architecture from another seed.
    """
    check_choice("ablation applied after pruning", ablation, AFTER_PRUNING)
    if ablation == "reinit":
        fresh = reinitialized(ablation_seed(seed, "reinit"))
        restore_parameters(model, {n: p.detach() for n, p in fresh.named_parameters()})
    else:
        (shuffle_masks if ablation == "shuffle" else layerwise_random_masks)(masks, params, seed)
        restore_parameters(model, initial)
    masks.apply()
