"""Path-kernel scorers from PX's repository: SynFlow-L2 and PX (Path eXclusion).

Why a module of their own: both score the network through its decomposition
into input-output paths, on copies their `prepare` builds once per prune and
prunes along with the model (SynFlow-L2: the squared-weight network; PX: the
squared-weight kernel network, the real network that supplies the data gates,
and the gated unit-weight network). The gate machinery that lets PX score
vision transformers and MLP-Mixers (GELU, LayerNorm and softmax attention read
from the real network and replayed as linear gates) lives here with it. The
scorers that differentiate the model itself (ProsPr, NTK-SAP) are in
`recent_scores.py`.
"""
from __future__ import annotations

import copy
import math
from typing import List, Tuple

import torch
from torch import nn

from trainables.pruning.recent_scores import BATCH_NORMS, WEIGHT_LAYERS, even_chunks, scoring_examples
from trainables.pruning.scores import (Batches, ScoreInputs, Scores, SumNormalized, SynflowNetwork, replace_children,
                                       scorer, synflow_scores, without_layernorm_statistics)

# PX (Iurada et al., CVPR 2024), iurada/px-ntk-pruning launch_scripts/cifar10.sh.
PX_BATCH = 128            # --batch_size (its 'batch_limit': 2 batches per round)

_RELUS = (nn.ReLU, nn.LeakyReLU)
_ACTIVATIONS = _RELUS + (nn.GELU,)
# Leaf modules through which the gated path decomposition holds: weights, norms, pooling, reshaping, activations,
# attention's softmax.
_PATH_LEAVES = WEIGHT_LAYERS + (BATCH_NORMS, nn.LayerNorm, nn.Softmax) + _ACTIVATIONS + (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.Flatten, nn.Identity, nn.Dropout)


# ---------------------------------------------------------------------------------------------------------------
# SynFlow-L2

class SquaredSynflowNetwork(SynflowNetwork):
    """SynFlow's float64 |w| scoring copy with every floating state entry squared (|w|^2 = w^2), as PX's
    `SynFlowL2.linearize` squares the whole state_dict; it keeps SynflowNetwork's float32 rescaling and
    whatever linearisation `linearized_float64_copy` gives each layer type."""

    def __init__(self, model: nn.Module, scored: set) -> None:
        super().__init__(model, scored)
        with torch.no_grad():
            for t in self.f64.state_dict().values():
                if t.is_floating_point():
                    t.square_()


@scorer("synflow_l2", needs_data=False, passes_per_example=1, prepare=SquaredSynflowNetwork)
def synflow_l2_scores(model: nn.Module, batches: Batches, inputs: ScoreInputs) -> Scores:
    """SynFlow-L2 (Gebhart et al. 2021, the baseline of PX): |dR/d(w^2)| * |w|, R = sum of the output of the
    network with squared weights (and squared buffers) on an all-ones input. Needs no data; 100 rounds.

    Source: github.com/iurada/px-ntk-pruning, lib/pruners.py `SynFlowL2.score`: a copy in eval mode, every
    state_dict entry squared (`param.pow_(2)`), R = sum(lin_model(ones)), score = |lp.grad * p| with lp the
    squared copy's weight and p the original; every pruner there runs 100 rounds (launch_scripts/cifar10.sh,
    'rounds': 100). An independent implementation (SynFlowL2.calc_score, "A Unified Paths Perspective for
    Pruning at Initialization") computes the same |grad * sqrt(w^2)|.

    Departures: float64, as this project's SynFlow (deep nets overflow float32), with SynflowNetwork's exact
    power-of-two rescaling once a round certifies the conservation law (sum over a layer of dR/d(w^2) * w^2 = R);
    the network is in the trial's prune_mode (eval by default, the published choice), as SynFlow is here.
    """
    net = model if isinstance(model, SquaredSynflowNetwork) else SquaredSynflowNetwork(model, set(inputs.names))
    flow = synflow_scores(net, batches, inputs)  # |dR/d(w^2) * w^2| (times the network's score scale)
    squared = dict(net.f64.named_parameters())
    out = {}
    for n, s in flow.items():
        root = squared[n].detach().sqrt()
        out[n] = torch.where(root > 0, s.double() / root.clamp_min(torch.finfo(root.dtype).tiny), 0.0)
    return out


# ---------------------------------------------------------------------------------------------------------------
# PX: the real network's gates, recorded and replayed

class GateTape:
    """The real network's data gates on a batch, in call order: recorded by hooks on it, replayed by a gated copy.

    relu: the 0/1 pattern u > 0 (the ratio ReLU(u)/u). gelu: GELU(u)/u = Phi(u) (its tanh form for
    approximate='tanh'), so that u * gate = GELU(u) exactly. layernorm: the per-token mean and 1/sqrt(var + eps)
    of its input. softmax: its output, the attention matrix. All but the ReLU pattern in float64.
    """

    def __init__(self) -> None:
        self.entries: List[Tuple[str, object]] = []

    def take(self, kind: str):
        if not self.entries:
            raise RuntimeError(f"px: the gated network called a {kind} the real network did not record")
        recorded, value = self.entries.pop(0)
        if recorded != kind:
            raise RuntimeError(f"px: the gated network called a {kind} where the real network recorded a {recorded}")
        return value

    def attach(self, network: nn.Module) -> List:
        """Recording hooks on every activation, LayerNorm and softmax of `network` (the handles)."""
        handles = []
        for module in network.modules():
            if isinstance(module, _RELUS):
                handles.append(module.register_forward_pre_hook(
                    lambda m, args: self.entries.append(("relu", args[0] > 0))))
            elif isinstance(module, nn.GELU):
                handles.append(module.register_forward_pre_hook(
                    lambda m, args: self.entries.append(("gelu", _gelu_ratio(args[0], m.approximate)))))
            elif isinstance(module, nn.LayerNorm):
                handles.append(module.register_forward_pre_hook(
                    lambda m, args: self.entries.append(("layernorm", _token_statistics(args[0], m)))))
            elif isinstance(module, nn.Softmax):
                handles.append(module.register_forward_hook(
                    lambda m, args, out: self.entries.append(("softmax", out.detach().to(torch.float64)))))
        return handles


@torch.no_grad()
def _gelu_ratio(u: torch.Tensor, approximate: str) -> torch.Tensor:
    u = u.detach().to(torch.float64)
    if approximate == "tanh":
        return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u.pow(3))))
    return 0.5 * (1.0 + torch.erf(u / math.sqrt(2.0)))


@torch.no_grad()
def _token_statistics(h: torch.Tensor, norm: nn.LayerNorm) -> Tuple[torch.Tensor, torch.Tensor]:
    h = h.detach().to(torch.float64)
    dims = tuple(range(-len(norm.normalized_shape), 0))
    return h.mean(dims, keepdim=True), (h.var(dims, correction=0, keepdim=True) + norm.eps).rsqrt()


class _Gate(nn.Module):
    """An activation turned linear: x times the real network's gate at this call, to the copy's `power`."""

    def __init__(self, tape: GateTape, kind: str, power: int) -> None:
        super().__init__()
        self.tape, self.kind, self.power = tape, kind, power

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.tape.take(self.kind)
        if self.kind == "relu":  # 0/1: every power of it is itself
            return x * gate.to(x.dtype)
        return x * gate.pow(self.power).to(x.dtype)


class _GatedLayerNorm(nn.Module):
    """A LayerNorm with the real network's per-token statistics held fixed: the affine map
    (x - mean) * rstd^power * weight + bias (without `- mean` when `shifts` is False). Holds the LayerNorm's own
    parameters, so their names are unchanged."""

    def __init__(self, norm: nn.LayerNorm, tape: GateTape, power: int, shifts: bool) -> None:
        super().__init__()
        self.weight, self.bias = norm.weight, norm.bias
        self.tape, self.power, self.shifts = tape, power, shifts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, rstd = self.tape.take("layernorm")
        x = (x - mean.to(x.dtype) if self.shifts else x) * rstd.pow(self.power).to(x.dtype)
        if self.weight is not None:
            x = x * self.weight
        return x + self.bias if self.bias is not None else x


class _FixedAttention(nn.Module):
    """A softmax replaced by the real network's output at this call (the attention matrix, to `power`): the
    logits are ignored, so the token mixing is a fixed linear map of the values."""

    def __init__(self, tape: GateTape, power: int) -> None:
        super().__init__()
        self.tape, self.power = tape, power

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        weights = self.tape.take("softmax")
        if weights.shape != logits.shape:
            raise RuntimeError(f"px: attention of shape {tuple(logits.shape)} replayed one of {tuple(weights.shape)}")
        return weights.pow(self.power).to(logits.dtype)


def gated_copy(model: nn.Module, tape: GateTape, power: int = 1, shifts: bool = True) -> nn.Module:
    """A float64 copy of `model` whose activations, LayerNorms and softmaxes replay `tape`'s gates.

    With the defaults, and the tape recorded on the model's own forward pass of x, the copy computes exactly the
    model's output on x: it is the model as a data-gated linear network (plus its constant terms), the path
    decomposition PX scores. PX's gated network takes power 2, no shifts, unit weights (`PathNetworks`).
    """
    gated = copy.deepcopy(model).to(torch.float64)
    replace_children(gated, _RELUS, lambda m: _Gate(tape, "relu", power))
    replace_children(gated, nn.GELU, lambda m: _Gate(tape, "gelu", power))
    replace_children(gated, nn.LayerNorm, lambda m: _GatedLayerNorm(m, tape, power, shifts))
    replace_children(gated, nn.Softmax, lambda m: _FixedAttention(tape, power))
    return gated


def _check_path_network(model: nn.Module) -> None:
    activations = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            raise ValueError(f"px cannot gate {type(model).__name__}'s {name!r}: nn.MultiheadAttention hides its "
                             f"softmax; write attention with nn.Linear projections and an nn.Softmax module")
        if isinstance(module, _ACTIVATIONS):
            activations += 1
        elif not list(module.children()) and not isinstance(module, _PATH_LEAVES):
            raise ValueError(f"px scores networks of conv, linear, norm and pooling layers, ReLU/GELU and softmax "
                             f"attention; {type(model).__name__}'s module {name!r} is a {type(module).__name__}")
    if activations == 0:
        raise ValueError(f"px needs the activations as nn.ReLU/nn.GELU modules; {type(model).__name__} has none")


class PathNetworks(nn.Module):
    """PX's three networks, copied once per prune and pruned with the model.

    `network`: the model as it is, recording its gates on the data (`GateTape`). `kernel`: float64, every
    floating state entry squared, activations removed, each LayerNorm its affine map gamma^2 x + beta^2, each
    softmax x / sum x (`SumNormalized`), eval mode (PX's path-kernel estimator `pk_model`). `gates`: float64,
    every conv/linear/norm weight 1 on a kept connection (0 on a pruned one), every other parameter (biases,
    class token, position embedding) 0, batch norm without affine parameters normalising with the batch's
    statistics, each activation, LayerNorm and softmax replaying the network's gate squared (PX's `jvf_model`).
    """

    def __init__(self, model: nn.Module, scored: set) -> None:
        super().__init__()
        _check_path_network(model)
        self.tape = GateTape()
        self.network = copy.deepcopy(model)
        self.tape.attach(self.network)
        self.kernel = copy.deepcopy(model).to(torch.float64)
        with torch.no_grad():
            for t in self.kernel.state_dict().values():
                if t.is_floating_point():
                    t.square_()
        replace_children(self.kernel, _ACTIVATIONS, lambda m: nn.Identity())
        without_layernorm_statistics(self.kernel)
        replace_children(self.kernel, nn.Softmax, lambda softmax: SumNormalized(softmax.dim))
        for name, p in self.kernel.named_parameters():
            p.requires_grad_(name in scored)
        self.gates = copy.deepcopy(model).to(torch.float64)
        self._unit_weights(scored)
        self.gates = gated_copy(self.gates, self.tape, power=2, shifts=False)
        self._copies = [dict(net.named_parameters()) for net in (self.network, self.kernel, self.gates)]

    @torch.no_grad()
    def _unit_weights(self, scored: set) -> None:
        unit = set()
        for name, module in self.gates.named_modules():
            if isinstance(module, WEIGHT_LAYERS + (BATCH_NORMS, nn.LayerNorm)) and module.weight is not None:
                unit.add(f"{name}.weight" if name else "weight")
            if isinstance(module, BATCH_NORMS):
                module.track_running_stats = False
                module.running_mean = None
                module.running_var = None
        original = dict(self.network.named_parameters())
        for name, p in self.gates.named_parameters():
            p.requires_grad_(False)
            p.fill_(1.0 if name in unit else 0.0)
            if name in scored:
                p.mul_(original[name] != 0)

    @torch.no_grad()
    def remove(self, name: str, flat_indices: torch.Tensor) -> None:
        if flat_indices.numel():
            for params in self._copies:
                params[name].view(-1).index_fill_(0, flat_indices, 0)


@scorer("px", needs_data=True, passes_per_example=2, prepare=PathNetworks)
def px_scores(model: nn.Module, batches: Batches, inputs: ScoreInputs) -> Scores:
    """PX, Path eXclusion (Iurada, Ciccone, Tommasi, CVPR 2024): w^2 * sum_B (dR_B/d(w^2))^2. 100 rounds.

        z1_B  = gates(x^2)          (no grad) unit weights on kept connections, the real network's gates on x
        z2    = kernel(1)           squared weights and buffers, no activations, eval mode
        R_B   = sum_{x in B, k} z1[x, k] * z2[k]
        score = w^2 * sum_B (dR_B / d(w^2))^2

    Source: github.com/iurada/px-ntk-pruning, lib/pruners.py `PX.score` (its `pk_model`, `jvf_model` and
    `activation_model` built from the `*_no_act` models of lib/models), with launch_scripts/cifar10.sh:
    100 rounds, batches of 128 ('batch_limit': 2 of them per round), every network in eval mode (the
    `jvf_model`'s batch norm normalises with batch statistics: lib/layers.BatchNorm2d with
    track_running_stats False). The published code has ReLU CNNs only (VGG, ResNet, DeepLabV3+); it gates
    nothing but ReLU/LeakyReLU and has no GELU, LayerNorm or attention.

    Transformers (this project's extension; ReLU CNNs score exactly as before). Every nonlinearity is a linear
    gate read from the real network on x, so that f(x) is a data-gated linear network (`gated_copy` reproduces
    f(x) exactly) whose path p has value v_p(w) * a_p(x) * x_i. PX's z1 sums the squared Jacobian entries
    (a_p(x) x_i)^2 over the paths into each output: its x^2 input is that square, and its 0/1 ReLU pattern is
    its own square. So in `gates` each gate enters squared:
    - GELU: the gate is GELU(u)/u = Phi(u) at the real pre-activation u (ReLU's 0/1 is ReLU(u)/u too; GELU's
      derivative would not reproduce f(x)); `gates` multiplies by Phi(u)^2.
    - LayerNorm: the real network's per-token mean and 1/sigma held fixed (as PX's batch norm takes statistics
      from the data); the mean is then a constant shift and, like every bias, carries no path, so `gates`
      multiplies by 1/sigma^2 with gamma 1 (its own statistics on the unit-weight signal, whose features are
      near equal, would cancel it to 0). `kernel`: gamma^2 x + beta^2, no normalisation (SynFlow-L2's copy).
    - softmax attention: the real attention matrix A held fixed, so token mixing is a fixed linear map and the
      paths run through the value and output projections; `gates` mixes with A^2. `kernel`: x / sum x over
      the keys (`SumNormalized`, as SynFlow's copy), not a uniform 1/T: on the kernel's near-identical tokens
      both mix about uniformly, but with 1/T the query and key weights would get no gradient at all (every one
      scored 0, pruned first); x / sum x keeps them in the kernel as it does in SynFlow's.
    - class token and position embedding: 0 in `gates` (constants of no input, like biases); squared in
      `kernel`.

    Departures: every round uses all the trial's scoring examples (10 x classes), cut into batches of at most
    128, where the published code draws 2 fresh augmented training batches of 128 per round; the kernel and
    gated networks are float64 (deep nets without batch norm overflow float32 on unit weights); the real
    network's gates are read in the trial's prune_mode (eval by default, as published); pruned connections are
    0 in `gates` (the published `jvf_model` fills every weight with 1). Query and key weights are scored only
    through the kernel's x / sum x mixing (A is a data gate, not a path), so their scores are small. A
    nonlinearity applied as a function (F.relu, F.gelu, F.softmax) inside a module's forward cannot be seen:
    activations must be nn.ReLU / nn.LeakyReLU / nn.GELU modules and attention an nn.Softmax module (all
    built-in models here are); nn.MultiheadAttention and other nonlinear layers raise.
    """
    nets = model if isinstance(model, PathNetworks) else PathNetworks(model, set(inputs.names))
    x, _ = scoring_examples(batches, "px")
    kernel_params = dict(nets.kernel.named_parameters())
    missing = [n for n in inputs.names if n not in kernel_params]
    if missing:
        raise ValueError(f"px cannot score parameters {missing}: the network has none of that name")
    nets.kernel.eval()
    nets.gates.eval()  # its batch norms have no running statistics: they normalise with the batch's
    leaves = [kernel_params[n] for n in inputs.names]
    z2 = nets.kernel(torch.ones((1, *inputs.input_shape), dtype=torch.float64, device=x.device))
    total = [torch.zeros_like(p) for p in leaves]
    for xc, _ in even_chunks(x, x, PX_BATCH):
        with torch.no_grad():
            nets.tape.entries.clear()
            nets.network(xc)
            z1 = nets.gates(xc.to(torch.float64).pow(2))
            if nets.tape.entries:
                raise RuntimeError("px: the gated network called fewer gates than the real network recorded")
        flow = (z1.sum(0, keepdim=True) * z2).sum()
        grads = torch.autograd.grad(flow, leaves, retain_graph=True, allow_unused=True)
        total = [t + g.pow(2) if g is not None else t for t, g in zip(total, grads)]
    weights = dict(nets.network.named_parameters())
    return {n: t * weights[n].detach().to(torch.float64).pow(2) for n, t in zip(inputs.names, total)}
