"""Pruning scorers: one pure function per algorithm, in one registry.

A scorer maps (model, batches) to a dense score tensor per prunable parameter
name; higher means keep. Scorers never modify the model they are given: the
loop hands them either the model itself or the scoring copy their `prepare`
made (SynFlow's float64 |w| copy), and restores modes and buffers afterwards.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from common.registry import Registry

if TYPE_CHECKING:
    from trainables.pruning.masks import Masks

Batches = Sequence[Tuple[torch.Tensor, torch.Tensor]]
Scores = Dict[str, torch.Tensor]

GRASP_TEMPERATURE = 200.0


@dataclass(frozen=True)
class ScoreInputs:
    """What a scorer gets besides the network and the batches.

    `masks` is the pruner's live `Masks` (read it, never change it): `masks.mask(name)`
    is the current boolean keep-mask, so a scorer can score the network as pruned so far.
    """

    names: Tuple[str, ...]           # prunable parameter names, forward order
    input_shape: Tuple[int, ...]
    generator: Optional[torch.Generator] = None  # CPU generator, for `random`
    masks: Optional["Masks"] = None


@dataclass(frozen=True)
class Scorer:
    name: str
    score: Callable[[nn.Module, Batches, ScoreInputs], Scores]
    needs_data: bool
    # forward/backward passes per example per round (0: no network pass); None: a data-free scorer that did not say,
    # whose passes the pruner counts as it runs (forward calls x their batch rows)
    passes_per_example: Optional[int]
    prepare: Optional[Callable[[nn.Module, set], nn.Module]] = None  # (model, scored names) -> scoring copy, once per prune
    revives: bool = False  # every round scores *all* weights and pruned ones may come back (FORCE)


SCORERS: Registry[Scorer] = Registry("scorer")


def scorer(name: str, needs_data: bool, passes_per_example: Optional[int], prepare=None, revives: bool = False):
    def add(fn):
        SCORERS.register(name)(Scorer(name, fn, needs_data, passes_per_example, prepare, revives))
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


@scorer("grasp_abs", needs_data=True, passes_per_example=2)
def grasp_abs_scores(model: nn.Module, batches: Batches, inputs: ScoreInputs) -> Scores:
    """|(H g) * w|: GraSP's score by magnitude (Lubana & Dick 2021), keeping the weights that change gradient
    flow most in either direction."""
    return {n: s.abs_() for n, s in grasp_scores(model, batches, inputs).items()}


@scorer("force", needs_data=True, passes_per_example=1, revives=True)
def force_scores(model: nn.Module, batches: Batches, inputs: ScoreInputs) -> Scores:
    """FORCE (de Jorge et al. 2020): |w * dL/dw'| at w' = w * mask, the network pruned so far.

    The gradient is taken at the pruned network but multiplied by the original
    weights, so a weight pruned in an earlier round still has a score and can
    come back. (Iterative SNIP, `snip` with iterations > 1, scores only the
    weights still alive.)
    """
    named = dict(model.named_parameters())
    weights = [named[n].detach() for n in inputs.names]
    masked = {n: (w * inputs.masks.mask(n).to(w.dtype)).requires_grad_() if inputs.masks is not None
              else w.clone().requires_grad_() for n, w in zip(inputs.names, weights)}
    total = [torch.zeros_like(w) for w in weights]
    for x, y in batches:
        loss = F.cross_entropy(torch.func.functional_call(model, masked, (x,)), y)
        grads = torch.autograd.grad(loss, list(masked.values()), allow_unused=True)
        total = [t + (g if g is not None else 0) for t, g in zip(total, grads)]
    return {n: (g * w).abs() for n, w, g in zip(inputs.names, weights, total)}


class UnnormalizedLayerNorm(nn.Module):
    """A LayerNorm's elementwise affine map alone, x * weight + bias, holding the LayerNorm's own parameters
    (so their names, and the masks on them, are unchanged)."""

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.weight = norm.weight
        self.bias = norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is not None:
            x = x * self.weight
        return x + self.bias if self.bias is not None else x


class SumNormalized(nn.Module):
    """Softmax without its exponential: x / sum(x) along `dim` for x >= 0, uniform where the sum is 0.

    Positive weights summing to 1, as softmax's are, but a rational function of
    the logits, so it never saturates: this is the normalised linear attention
    of Katharopoulos et al. 2020 ("Transformers are RNNs") with the identity
    feature map, which is positive on SynFlow's positive network.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = x.sum(dim=self.dim, keepdim=True)
        alive = total > 0
        normalized = x / torch.where(alive, total, torch.ones_like(total))
        return torch.where(alive, normalized, torch.full_like(x, 1.0 / x.shape[self.dim]))


def replace_children(model: nn.Module, kind: type, replacement: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """`model`, changed in place: every submodule of type `kind` replaced by `replacement(it)`."""
    for module in list(model.modules()):
        for child_name, child in module.named_children():
            if isinstance(child, kind):
                setattr(module, child_name, replacement(child))
    return model


def without_layernorm_statistics(model: nn.Module) -> nn.Module:
    """`model` (changed in place) with every `nn.LayerNorm` replaced by its affine map, without normalisation."""
    return replace_children(model, nn.LayerNorm, UnnormalizedLayerNorm)


@torch.no_grad()
def linearized_float64_copy(model: nn.Module, scored: Optional[set] = None) -> nn.Module:
    """SynFlow's scoring network: a float64 copy with |w| everywhere (weights and buffers).

    Deep nets (vgg19_bn, resnet110, resnet50) overflow float32 here; float64
    keeps every score finite, and working on a copy leaves the real model's
    weights, signs, buffers and dtype exactly as they were.

    Each LayerNorm becomes its affine map |gamma| x + |beta|, without
    normalisation: the treatment SynFlow's own code gives batch-norm (an eval-mode
    affine map of |w| and |buffers|) and what zero-cost-proxy code does when it
    "dummifies" norms for SynFlow (Abdelfattah et al. 2021; Deeplite's
    `synflow(dummify_bns=True)`). A normalising LayerNorm subtracts the token
    mean, so the linearised network is no longer positive (scores cancel), and
    it makes R invariant to the scale of everything before it, so per-layer
    score sums no longer follow the conservation law that keeps SynFlow from
    collapsing layers (on an input constant across features, as a LayerNorm
    applied to the all-ones input sees, it even outputs exactly zero and every
    score upstream vanishes).

    Each `nn.Softmax` (attention's) becomes `SumNormalized`, x / sum(x). Without
    normalisation the |w| network's activations grow by about the width x
    |w| per layer, so from the second ViT block on the attention logits differ
    between tokens by thousands, softmax is one-hot to the last float64 bit and
    every query and key weight scores exactly 0 (measured on `vit` at 32x32):
    SynFlow would prune them first. The sum-normalised form keeps attention a
    convex mix of the values, positive and degree-0 homogeneous in the logits,
    and never saturates.
    """
    linear = copy.deepcopy(model).to(torch.float64)
    for t in linear.state_dict().values():
        if t.is_floating_point():
            t.abs_()
    without_layernorm_statistics(linear)
    replace_children(linear, nn.Softmax, lambda softmax: SumNormalized(softmax.dim))
    if scored is not None:
        for name, p in linear.named_parameters():
            p.requires_grad_(name in scored)
    return linear


CONSERVATION_TOLERANCE = 1e-6


class SynflowNetwork(nn.Module):
    """The |w| network SynFlow scores, in float64 until it is certified safe to rescale in float32.

    Rescaling is exact when every input-output path crosses every scored layer
    exactly once and nothing is added along the way (no biases, BN shifts or
    running means): then R is linear in each layer's weights, scaling a
    layer's output by a constant scales every score by the same constant, and
    the ranking cannot change. That structure is precisely what makes the
    per-layer score sums all equal R (the conservation law), so the first
    float64 round checks it. A certified network (VGG, MLP without biases)
    scores the remaining rounds in float32 with each scored layer's output
    rescaled by a power of two (no rounding) to stay near 1, so nothing
    overflows or underflows however deep it is or however few paths survive.
    Anything else (ResNets, biased layers, train-mode BN) stays in float64.
    """

    def __init__(self, model: nn.Module, scored: set) -> None:
        super().__init__()
        self.f64 = linearized_float64_copy(model, scored)
        self.f32: Optional[nn.Module] = None
        self.scored = scored
        self.certification_pending = True
        self.score_scale = 1.0  # scores returned are true scores / score_scale
        self._log2_scales: List[torch.Tensor] = []
        self._copies = [dict(self.f64.named_parameters())]

    @torch.no_grad()
    def remove(self, name: str, flat_indices: torch.Tensor) -> None:
        if flat_indices.numel():
            for params in self._copies:
                params[name].view(-1).index_fill_(0, flat_indices, 0)

    def certify(self, scores: Dict[str, torch.Tensor], layer_names: Sequence[str], total: float) -> None:
        self.certification_pending = False
        if self.training or set(layer_names) != set(self.scored) or not total > 0:
            return
        sums = torch.stack([scores[n].sum() for n in layer_names]).double()
        if bool(((sums - total).abs() <= CONSERVATION_TOLERANCE * total).all()):
            self.f32 = copy.deepcopy(self.f64).to(torch.float32)
            self._copies.append(dict(self.f32.named_parameters()))
            modules = dict(self.f32.named_modules())
            for name in layer_names:
                modules[name.rsplit(".", 1)[0] if "." in name else ""].register_forward_hook(self._rescale)

    def _rescale(self, module, inputs, output):
        with torch.no_grad():  # an all-zero output gets a huge but harmless scale: 0 stays 0
            log2_scale = -torch.round(torch.log2(output.detach().abs().amax().clamp_min(1e-30)))
        self._log2_scales.append(log2_scale)
        return output * torch.exp2(log2_scale)


def _synflow_pass(model: nn.Module, names: Sequence[str], input_shape) -> Tuple[torch.Tensor, Scores]:
    params = _params(model, names)
    ones = torch.ones((1, *input_shape), dtype=params[0].dtype, device=params[0].device)
    with torch.backends.cudnn.flags(allow_tf32=False), _no_tf32_matmul():
        total = model(ones).sum()
        grads = torch.autograd.grad(total, params, allow_unused=True)
    scores = {n: g.mul_(p.detach()).abs_() if g is not None else torch.zeros_like(p)
              for n, p, g in zip(names, params, grads)}
    return total.detach(), scores


@scorer("synflow", needs_data=False, passes_per_example=1, prepare=SynflowNetwork)
def synflow_scores(model: nn.Module, batches: Batches, inputs: ScoreInputs) -> Scores:
    """|dR/dw * w| with R the summed output of the |w| network on an all-ones input. Needs no data."""
    if isinstance(model, SynflowNetwork):
        net = model
        if net.f32 is not None:
            net._log2_scales.clear()
            total, scores = _synflow_pass(net.f32, inputs.names, inputs.input_shape)
            if bool(torch.isfinite(total)) and float(total) > 0:
                net.score_scale = float(2.0 ** -float(torch.stack(net._log2_scales).sum()))
                return scores
        net.score_scale = 1.0
        total, scores = _synflow_pass(net.f64, inputs.names, inputs.input_shape)
        if not torch.isfinite(total):
            raise FloatingPointError(f"SynFlow's R overflowed ({total.item()}) even in float64")
        if net.certification_pending:
            net.certify(scores, list(inputs.names), float(total))
        return scores
    total, scores = _synflow_pass(model, inputs.names, inputs.input_shape)
    if not torch.isfinite(total):
        raise FloatingPointError(f"SynFlow's R overflowed ({total.item()}) in {total.dtype}")
    return scores


class _no_tf32_matmul:
    """TF32 would round SynFlow's products to 10 mantissa bits on Ampere+ GPUs."""

    def __enter__(self):
        self._saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32 = self._saved
