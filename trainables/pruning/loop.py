"""The pruning schedule: score, cut to an exact count, repeat for `iterations` rounds."""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from trainables.pruning.masks import Masks, apportion, keep_top
from trainables.pruning.metrics import LayerStat, collapsed, layer_stats, macs, stats_as_rows
from trainables.pruning.params import PrunableParam, prunable_parameters
from trainables.pruning.scores import SCORERS, Batches, ScoreInputs


def density_schedule(compression: float, iterations: int, schedule: str) -> List[float]:
    """Density after each round: exponential keeps rho^(-k/n), linear steps density evenly to 1/rho."""
    n = iterations
    if schedule == "exponential":
        return [compression ** (-k / n) for k in range(1, n + 1)]
    if schedule == "linear":
        return [1.0 - (1.0 - 1.0 / compression) * k / n for k in range(1, n + 1)]
    raise ValueError(f"unknown schedule {schedule!r}; valid schedules: exponential, linear")


def target_count(prunable: int, compression: float) -> int:
    if compression < 1:
        raise ValueError(f"compression must be >= 1, got {compression}")
    if compression > prunable:
        raise ValueError(
            f"compression {compression:g} is above the number of prunable weights ({prunable}); "
            f"the largest meaningful compression keeps one weight"
        )
    return round(prunable / compression)


@dataclass
class PruneResult:
    masks: Masks
    params: List[PrunableParam]
    layers: List[LayerStat]
    prunable_params: int
    prunable_layers: int
    remaining_params: int
    collapsed: bool
    prune_passes: int
    prune_seconds: float
    dense_flops: int
    remaining_flops: int

    @property
    def density(self) -> float:
        return self.remaining_params / self.prunable_params

    def summary(self) -> Dict:
        """The JSON-able totals and per-layer rows (no tensors)."""
        return {
            "prunable_params": self.prunable_params,
            "prunable_layers": self.prunable_layers,
            "remaining_params": self.remaining_params,
            "density": self.density,
            "collapsed": self.collapsed,
            "prune_passes": self.prune_passes,
            "prune_seconds": self.prune_seconds,
            "dense_flops": self.dense_flops,
            "remaining_flops": self.remaining_flops,
            "layers": stats_as_rows(self.layers),
        }


@torch.no_grad()
def _zero(param: torch.Tensor, flat_indices: torch.Tensor) -> None:
    if flat_indices.numel():
        param.data.view(-1).index_fill_(0, flat_indices, 0)


def prune_model(
    model: nn.Module,
    algorithm: str,
    compression: float,
    input_shape: Sequence[int],
    *,
    iterations: int = 1,
    schedule: str = "exponential",
    scope: str = "global",
    mode: str = "eval",
    prune_bias: bool = False,
    prune_batchnorm: bool = False,
    prune_residual: bool = False,
    batches: Optional[Callable[[], Batches]] = None,
    seed: int = 0,
    masks: Optional[Masks] = None,
) -> PruneResult:
    """Prune `model` in place to exactly round(prunable / compression) weights.

    `batches` is called only by scorers that need data, so SynFlow, magnitude
    and random never touch a dataset. Passing existing `masks` continues from
    them (already-pruned weights stay pruned), as IMP's levels do.
    """
    scorer = SCORERS[algorithm]
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if scope not in ("global", "local"):
        raise ValueError(f"unknown scope {scope!r}; valid scopes: global, local")
    if mode not in ("eval", "train"):
        raise ValueError(f"unknown prune mode {mode!r}; valid prune modes: eval, train")
    params = prunable_parameters(model, input_shape, prune_bias, prune_batchnorm, prune_residual)
    named = dict(model.named_parameters())
    if masks is None:
        masks = Masks({p.name: named[p.name] for p in params})
    prunable = masks.total()
    final_keep = target_count(prunable, compression)
    if final_keep > masks.remaining():
        raise ValueError(f"cannot keep {final_keep} weights: only {masks.remaining()} are still unpruned")
    sizes = [p.size for p in params]
    final_shares = apportion(final_keep, sizes) if scope == "local" else None
    data = batches() if scorer.needs_data else []
    if scorer.needs_data and not data:
        raise ValueError(f"{algorithm} needs data to score, but no scoring batches were given")
    examples = 1 if scorer.passes_per_example and not scorer.needs_data else sum(len(y) for _, y in data)

    start = time.perf_counter()
    masks.apply()
    # A scorer's own scoring network (SynFlow's |w| copy), kept in step with every cut; else the model itself.
    working = scorer.prepare(model, set(p.name for p in params)) if scorer.prepare else model
    was_training = model.training
    saved_buffers = {n: b.clone() for n, b in working.named_buffers()} if mode == "train" else {}
    working.train(mode == "train")
    generator = torch.Generator().manual_seed(seed)
    inputs = ScoreInputs(names=tuple(p.name for p in params), input_shape=tuple(input_shape), generator=generator)
    score_sums: Dict[str, float] = {}
    # Denormal float64 arithmetic is ~10x slower on CPUs; values below 1e-308 do not change a ranking.
    flushing = torch.set_flush_denormal(True)
    try:
        for k, density in enumerate(density_schedule(compression, iterations, schedule), start=1):
            scores = scorer.score(working, data, inputs)
            dtype = functools.reduce(torch.promote_types, (scores[p.name].dtype for p in params))
            candidates = torch.empty(masks.remaining(), dtype=dtype, device=scores[params[0].name].device)
            alive_scores = torch.split(candidates, [masks.remaining(p.name) for p in params])
            for p, out in zip(params, alive_scores):  # gathered straight into one buffer: no concatenation copy
                torch.index_select(scores[p.name].reshape(-1).to(dtype), 0, masks.alive[p.name], out=out)
            if k == iterations:  # reported per layer: the last round's scores, before its cut
                scale = getattr(working, "score_scale", 1.0)  # a rescaled scorer's scores are true scores / scale
                score_sums = {p.name: float(s.sum(dtype=torch.float64)) * scale for p, s in zip(params, alive_scores)}
            if scope == "global":
                keep = final_keep if k == iterations else max(final_keep, round(prunable * density))
                keep = min(keep, masks.remaining())
                kept_all = keep_top(candidates, keep)
                kept = torch.split(kept_all, [s.numel() for s in alive_scores])
            else:
                kept = []
                for p, s, share in zip(params, alive_scores, final_shares):
                    layer_keep = share if k == iterations else max(share, round(p.size * density))
                    kept.append(keep_top(s, min(layer_keep, s.numel())))
            for p, keep_flags in zip(params, kept):
                removed = masks.keep_only(p.name, keep_flags)
                if working is model:
                    _zero(named[p.name], removed)
                else:  # the model itself is masked once, after the last round
                    working.remove(p.name, removed)
            if saved_buffers:
                with torch.no_grad():
                    for n, b in working.named_buffers():
                        b.copy_(saved_buffers[n])
    finally:
        model.train(was_training)
        if flushing:
            torch.set_flush_denormal(False)
    if next(model.parameters()).is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    masks.apply()

    stats = layer_stats(params, masks, score_sums)
    return PruneResult(
        masks=masks,
        params=params,
        layers=stats,
        prunable_params=prunable,
        prunable_layers=sum(1 for p in params if p.is_layer_weight),
        remaining_params=masks.remaining(),
        collapsed=collapsed(stats),
        prune_passes=iterations * examples * scorer.passes_per_example,
        prune_seconds=seconds,
        dense_flops=macs(params),
        remaining_flops=macs(params, masks),
    )
