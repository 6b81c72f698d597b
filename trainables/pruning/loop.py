"""The pruning loop: score, cut to the budget's exact counts (`budgets.py`), repeat for `iterations` rounds."""
from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from common.checks import check_choice
from common.vocabulary import (DEFAULT_PRUNE_MODE, DEFAULT_SCHEDULE, DEFAULT_SCOPE, PRUNE_MODES, SCHEDULES,
                               SCOPES)
from trainables.pruning.budgets import CutPlan
from trainables.pruning.masks import Masks
from trainables.pruning.effective import effective_remaining
from trainables.pruning.metrics import LayerStat, collapsed, effective_total, layer_stats, macs, stats_as_rows
from trainables.pruning.params import PrunableParam, prunable_parameters
from trainables.pruning.scores import SCORERS, Batches, Scorer, ScoreInputs


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
    trained_examples: Optional[int] = None  # examples trained to reach these masks (IMP); None when pruned at init
    effective_remaining_params: Optional[int] = None  # kept conv/linear weights on an input-output path

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
            "trained_examples": self.trained_examples,
            "effective_remaining_params": self.effective_remaining_params,
            "layers": stats_as_rows(self.layers),
        }


@torch.no_grad()
def _zero(param: torch.Tensor, flat_indices: torch.Tensor) -> None:
    if flat_indices.numel():
        param.data.view(-1).index_fill_(0, flat_indices, 0)


def scoring_passes(scorer: Scorer, iterations: int, examples: int) -> Optional[int]:
    """Forward/backward passes a prune costs: the pruner reports it, the sweep's plan estimates it.

    A data-free scorer that runs the network (SynFlow) passes one all-ones input per round. None for a
    data-free plugin that did not say: the pruner counts its passes as it runs (`PassCounter`).
    """
    if scorer.passes_per_example is None:
        return None
    if scorer.passes_per_example and not scorer.needs_data:
        examples = 1
    return iterations * examples * scorer.passes_per_example


def check_settings(iterations: int, schedule: str, scope: str, mode: str) -> None:
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    check_choice("schedule", schedule, SCHEDULES)
    check_choice("scope", scope, SCOPES)
    check_choice("prune mode", mode, PRUNE_MODES)


def scoring_data(scorer: Scorer, batches: Optional[Callable[[], Batches]]) -> Batches:
    """The scorer's batches, fetched only if it needs data (so data-free scorers never touch a dataset)."""
    if not scorer.needs_data:
        return []
    data = batches() if batches is not None else []
    if not data:
        raise ValueError(f"{scorer.name} needs data to score, but no scoring batches were given")
    return data


def alive_scores(scores: Dict[str, torch.Tensor], params: Sequence[PrunableParam],
                 masks: Masks) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """The alive weights' scores in one buffer (gathered straight in: no concatenation copy) and per-layer views."""
    dtype = functools.reduce(torch.promote_types, (scores[p.name].dtype for p in params))
    candidates = torch.empty(masks.remaining(), dtype=dtype, device=scores[params[0].name].device)
    per_layer = list(torch.split(candidates, [masks.remaining(p.name) for p in params]))
    for p, out in zip(params, per_layer):
        torch.index_select(scores[p.name].reshape(-1).to(dtype), 0, masks.alive[p.name], out=out)
    return candidates, per_layer


@contextlib.contextmanager
def scoring_network(model: nn.Module, scorer: Scorer, params: Sequence[PrunableParam], mode: str):
    """The network the scorer scores (its own copy, such as SynFlow's |w|, else the model), in `mode`.

    The model's train/eval mode is restored afterwards, denormals are flushed
    meanwhile (float64 denormals are ~10x slower on CPUs and below 1e-308 change
    no ranking), and in train mode batch-norm running statistics are put back
    after every round, so scoring leaves no trace in the model but its masks.
    """
    working = scorer.prepare(model, set(p.name for p in params)) if scorer.prepare else model
    was_training = model.training
    saved_buffers = {n: b.clone() for n, b in working.named_buffers()} if mode == "train" else {}
    working.train(mode == "train")
    flushing = torch.set_flush_denormal(True)
    try:
        yield working, saved_buffers
    finally:
        model.train(was_training)
        if flushing:
            torch.set_flush_denormal(False)


def all_scores(scores: Dict[str, torch.Tensor], params: Sequence[PrunableParam]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Every weight's score, pruned or not, in one buffer and per-layer views (for scorers that revive weights)."""
    dtype = functools.reduce(torch.promote_types, (scores[p.name].dtype for p in params))
    candidates = torch.cat([scores[p.name].reshape(-1).to(dtype) for p in params])
    return candidates, list(torch.split(candidates, [p.size for p in params]))


def checked_scores(scorer: Scorer, scores, params: Sequence[PrunableParam], model: nn.Module,
                   working: nn.Module, fingerprint_before: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The scorer's output, detached, after checking what a plugin could get wrong (one line naming it).

    A score with the wrong shape would rank the wrong weights, a score that
    still requires grad breaks the selection, and a scorer that changed the
    model would train a different network: all three are errors, not results.
    """
    if not isinstance(scores, dict):
        raise TypeError(f"scorer {scorer.name!r} returned {type(scores).__name__}; it must return a dict "
                        f"{{parameter name: score tensor}}")
    named = dict(model.named_parameters())
    out = {}
    for p in params:
        score = scores.get(p.name)
        if not isinstance(score, torch.Tensor):
            raise ValueError(f"scorer {scorer.name!r} returned no score tensor for parameter {p.name!r} "
                             f"(it must score every name in inputs.names)")
        shape = tuple(named[p.name].shape)
        if tuple(score.shape) != shape:
            raise ValueError(f"scorer {scorer.name!r}: the score for {p.name!r} has shape {tuple(score.shape)}, "
                             f"the parameter has {shape}")
        out[p.name] = score.detach()
    if fingerprint_before is not None and not torch.equal(fingerprint_before, _fingerprint(working, params)):
        raise ValueError(f"scorer {scorer.name!r} changed the model's weights; a scorer must leave the model as "
                         f"it found it (copy it first if the method needs to change weights)")
    return out


@torch.no_grad()
def _fingerprint(model: nn.Module, params: Sequence[PrunableParam]) -> torch.Tensor:
    """Sums of |w| and w^2 per prunable parameter: cheap, and any in-place change to the weights shows."""
    named = dict(model.named_parameters())
    return torch.stack([torch.stack([named[p.name].double().abs().sum(), named[p.name].double().square().sum()])
                        for p in params])


class PassCounter:
    """Counts the examples the scoring network is run on: the prune passes of a scorer that did not declare them.

    A forward pre-hook on the network's root module adds each call's batch rows
    (a pass through `torch.func.functional_call` runs the same hooks).
    """

    def __init__(self) -> None:
        self.passes = 0

    def __call__(self, module, args, kwargs=None):
        first = args[0] if args else None
        self.passes += int(first.shape[0]) if isinstance(first, torch.Tensor) and first.dim() > 0 else 1

    @contextlib.contextmanager
    def watching(self, network: nn.Module):
        handle = network.register_forward_pre_hook(self)
        try:
            yield self
        finally:
            handle.remove()


def run_rounds(model: nn.Module, scorer: Scorer, params: Sequence[PrunableParam], masks: Masks, plan: CutPlan,
               data: Batches, mode: str, seed: int, input_shape: Sequence[int], invert: bool = False,
               counter: Optional[PassCounter] = None) -> Dict[str, float]:
    """Score, cut, repeat; the last round's per-layer score sums (before its cut).

    `invert` keeps the lowest-scoring weights instead, at the same exact counts
    (every round: the sanity check of Frankle et al. 2021). A `counter` counts
    the examples the scoring network runs on.
    """
    with scoring_network(model, scorer, params, mode) as (working, saved_buffers):
        with (counter.watching(working) if counter is not None else contextlib.nullcontext()):
            return _rounds(model, working, saved_buffers, scorer, params, masks, plan, data, seed, input_shape,
                           invert)


def _rounds(model: nn.Module, working: nn.Module, saved_buffers: Dict[str, torch.Tensor], scorer: Scorer,
            params: Sequence[PrunableParam], masks: Masks, plan: CutPlan, data: Batches, seed: int,
            input_shape: Sequence[int], invert: bool) -> Dict[str, float]:
    named = dict(model.named_parameters())
    inputs = ScoreInputs(names=tuple(p.name for p in params), input_shape=tuple(input_shape),
                         generator=torch.Generator().manual_seed(seed), masks=masks)
    score_sums: Dict[str, float] = {}
    for k in range(1, plan.rounds + 1):
        before = _fingerprint(working, params) if working is model else None
        scores = checked_scores(scorer, scorer.score(working, data, inputs), params, model, working, before)
        if scorer.revives:
            candidates, per_layer = all_scores(scores, params)
        else:
            candidates, per_layer = alive_scores(scores, params, masks)
        if k == plan.rounds:
            scale = getattr(working, "score_scale", 1.0)  # a rescaled scorer's scores are true scores / scale
            score_sums = {p.name: float(s.sum(dtype=torch.float64)) * scale for p, s in zip(params, per_layer)}
        if invert:
            candidates.neg_()  # the per-layer views share its storage
        if scorer.revives:  # the whole mask is chosen afresh; the model is masked once, after the last round
            for p, keep_flags in zip(params, plan.keep_flags(k, candidates, per_layer, params, plan.prunable)):
                masks.set_alive(p.name, keep_flags.nonzero().flatten())
            continue
        for p, keep_flags in zip(params, plan.keep_flags(k, candidates, per_layer, params, masks.remaining())):
            removed = masks.keep_only(p.name, keep_flags)
            if working is model:
                _zero(named[p.name], removed)
            else:  # the model itself is masked once, after the last round
                working.remove(p.name, removed)
        if saved_buffers:
            with torch.no_grad():
                for n, b in working.named_buffers():
                    b.copy_(saved_buffers[n])
    return score_sums


def measure_layers(model: nn.Module, params: Sequence[PrunableParam], masks: Masks, score_sums: Dict[str, float],
                   input_shape: Sequence[int]) -> List[LayerStat]:
    """Per-layer counts of the masks as they are now, effective (on-path) counts included."""
    return layer_stats(params, masks, score_sums, effective_remaining(model, masks, params, input_shape))


def prune_model(
    model: nn.Module,
    scorer_name: str,
    compression: float,
    input_shape: Sequence[int],
    *,
    iterations: int = 1,
    schedule: str = DEFAULT_SCHEDULE,
    scope: str = DEFAULT_SCOPE,
    mode: str = DEFAULT_PRUNE_MODE,
    prune_bias: bool = False,
    prune_batchnorm: bool = False,
    prune_residual: bool = False,
    prune_layernorm: bool = False,
    prune_embedding: bool = False,
    batches: Optional[Callable[[], Batches]] = None,
    seed: int = 0,
    masks: Optional[Masks] = None,
    invert: bool = False,
) -> PruneResult:
    """Prune `model` in place to exactly round(prunable / compression) weights, ranked by the scorer `scorer_name`.

    `batches` is called only by scorers that need data, so SynFlow, magnitude
    and random never touch a dataset. Passing existing `masks` continues from
    them (already-pruned weights stay pruned), as IMP's levels do. `invert`
    keeps the lowest-scoring weights instead (the sanity-check ablation).
    """
    scorer = SCORERS[scorer_name]
    check_settings(iterations, schedule, scope, mode)
    params = prunable_parameters(model, input_shape, prune_bias, prune_batchnorm, prune_residual, prune_layernorm,
                                 prune_embedding)
    if masks is None:
        named = dict(model.named_parameters())
        masks = Masks({p.name: named[p.name] for p in params})
    plan = CutPlan.make(masks, params, compression, iterations, schedule, scope)
    data = scoring_data(scorer, batches)

    start = time.perf_counter()
    masks.apply()
    counter = PassCounter() if scorer.passes_per_example is None else None
    score_sums = run_rounds(model, scorer, params, masks, plan, data, mode, seed, input_shape, invert, counter)
    if next(model.parameters()).is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    masks.apply()

    stats = measure_layers(model, params, masks, score_sums, input_shape)
    return PruneResult(
        masks=masks,
        params=params,
        layers=stats,
        prunable_params=plan.prunable,
        prunable_layers=sum(1 for p in params if p.is_layer_weight),
        remaining_params=masks.remaining(),
        collapsed=collapsed(stats),
        effective_remaining_params=effective_total(stats),
        prune_passes=(counter.passes if counter is not None
                      else scoring_passes(scorer, iterations, sum(len(y) for _, y in data))),
        prune_seconds=seconds,
        dense_flops=macs(params),
        remaining_flops=macs(params, masks),
    )
