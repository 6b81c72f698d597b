"""Pruning scorers: one pure function per algorithm, in one registry.

A scorer maps (model, batches) to a dense score tensor per prunable parameter
name; higher means keep. Scorers never modify the model they are given: the
loop hands them either the model itself or the scoring copy their `prepare`
made (SynFlow's float64 |w| copy), and restores modes and buffers afterwards.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from trainables.registry import Registry

Batches = Sequence[Tuple[torch.Tensor, torch.Tensor]]
Scores = Dict[str, torch.Tensor]

GRASP_TEMPERATURE = 200.0


@dataclass(frozen=True)
class ScoreInputs:
    names: Tuple[str, ...]           # prunable parameter names, forward order
    input_shape: Tuple[int, ...]
    generator: Optional[torch.Generator] = None  # CPU generator, for `random`


@dataclass(frozen=True)
class Scorer:
    name: str
    score: Callable[[nn.Module, Batches, ScoreInputs], Scores]
    needs_data: bool
    passes_per_example: int  # forward/backward passes per example per round (0: no network pass)
    prepare: Optional[Callable[[nn.Module, set], nn.Module]] = None  # (model, scored names) -> scoring copy, once per prune


SCORERS: Registry[Scorer] = Registry("scorer")


def scorer(name: str, needs_data: bool, passes_per_example: int, prepare=None):
    def add(fn):
        SCORERS.register(name)(Scorer(name, fn, needs_data, passes_per_example, prepare))
        return fn
    return add


def _params(model: nn.Module, names: Sequence[str]) -> List[torch.Tensor]:
    named = dict(model.named_parameters())
    return [named[n] for n in names]


def _summed_loss_grads(model: nn.Module, batches: Batches, params: List[torch.Tensor],
                       temperature: float = 1.0, create_graph: bool = False) -> List[torch.Tensor]:
    total = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        loss = F.cross_entropy(model(x) / temperature, y)
        grads = torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True)
        total = [t + (g if g is not None else 0) for t, g in zip(total, grads)]
    return total


@scorer("random", needs_data=False, passes_per_example=0)
def random_scores(model: nn.Module, batches: Batches, inputs: ScoreInputs) -> Scores:
    gen = inputs.generator
    return {
        n: torch.rand(p.shape, generator=gen, dtype=torch.float64).to(p.device)
        for n, p in zip(inputs.names, _params(model, inputs.names))
    }


@scorer("magnitude", needs_data=False, passes_per_example=0)
def magnitude_scores(model: nn.Module, batches: Batches, inputs: ScoreInputs) -> Scores:
    return {n: p.detach().abs() for n, p in zip(inputs.names, _params(model, inputs.names))}


@scorer("snip", needs_data=True, passes_per_example=1)
def snip_scores(model: nn.Module, batches: Batches, inputs: ScoreInputs) -> Scores:
    """|dL/dw * w| (connection sensitivity), summed over the scoring batches."""
    params = _params(model, inputs.names)
    grads = _summed_loss_grads(model, batches, params)
    return {n: (g * p.detach()).abs() for n, p, g in zip(inputs.names, params, grads)}


@scorer("grasp", needs_data=True, passes_per_example=2)
def grasp_scores(model: nn.Module, batches: Batches, inputs: ScoreInputs) -> Scores:
    """(H g) * w, the keep-score of GraSP.

    GraSP's own score is S = -(H g) * w and it removes the weights with the
    highest S (they preserve gradient flow least). Scorers here return
    keep-scores (the highest survive), so this returns -S = (H g) * w.
    """
    params = _params(model, inputs.names)
    stopped = [g.detach() for g in _summed_loss_grads(model, batches, params, GRASP_TEMPERATURE)]
    hessian_grad = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        loss = F.cross_entropy(model(x) / GRASP_TEMPERATURE, y)
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        dot = sum((g * s).sum() for g, s in zip(grads, stopped) if g is not None)
        hvp = torch.autograd.grad(dot, params, allow_unused=True)
        hessian_grad = [h + (v if v is not None else 0) for h, v in zip(hessian_grad, hvp)]
    return {n: h * p.detach() for n, p, h in zip(inputs.names, params, hessian_grad)}


@torch.no_grad()
def linearized_float64_copy(model: nn.Module, scored: Optional[set] = None) -> nn.Module:
    """SynFlow's scoring network: a float64 copy with |w| everywhere (weights and buffers).

    Deep nets (vgg19_bn, resnet110, resnet50) overflow float32 here; float64
    keeps every score finite, and working on a copy leaves the real model's
    weights, signs, buffers and dtype exactly as they were.
    """
    linear = copy.deepcopy(model).to(torch.float64)
    for t in linear.state_dict().values():
        if t.is_floating_point():
            t.abs_()
    if scored is not None:
        for name, p in linear.named_parameters():
            p.requires_grad_(name in scored)
    return linear


def _synflow_prepare(model: nn.Module, scored: set) -> nn.Module:
    return linearized_float64_copy(model, scored)


@scorer("synflow", needs_data=False, passes_per_example=1, prepare=_synflow_prepare)
def synflow_scores(model: nn.Module, batches: Batches, inputs: ScoreInputs) -> Scores:
    """|dR/dw * w| with R the summed output of the |w| network on an all-ones input. Needs no data."""
    params = _params(model, inputs.names)
    dtype = params[0].dtype
    ones = torch.ones((1, *inputs.input_shape), dtype=dtype, device=params[0].device)
    with torch.backends.cudnn.flags(allow_tf32=False), _no_tf32_matmul():
        total = model(ones).sum()
        if not torch.isfinite(total):
            raise FloatingPointError(f"SynFlow's R overflowed ({total.item()}) even in {dtype}")
        grads = torch.autograd.grad(total, params, allow_unused=True)
    return {
        n: g.mul_(p.detach()).abs_() if g is not None else torch.zeros_like(p)
        for n, p, g in zip(inputs.names, params, grads)
    }


class _no_tf32_matmul:
    """TF32 would round SynFlow's products to 10 mantissa bits on Ampere+ GPUs."""

    def __enter__(self):
        self._saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32 = self._saved
