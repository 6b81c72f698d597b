"""Gradient scorers published after SynFlow that differentiate the model itself: ProsPr and NTK-SAP.

Why a module of their own: both differentiate with respect to the keep-mask
through the real network, run with `torch.func.functional_call` on their own
parameter and buffer tensors (ProsPr through unrolled SGD steps, NTK-SAP
through a finite-difference NTK trace on fresh weights), so the model is never
touched and no scoring copy is built. The path-kernel scorers that score
copies built once per prune (SynFlow-L2, PX) are in `path_scores.py`, which
uses the shared helpers here (the scoring examples and their even chunks).

Each follows its authors' code (the repository, file and function are named in
its docstring, with every place this version departs from it). Like the
scorers in `scores.py` they return keep-scores (higher = keep).
"""
from __future__ import annotations

import copy
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from trainables.pruning.scores import Batches, ScoreInputs, Scores, scorer

# ProsPr (Alizadeh et al., ICLR 2022), the defaults of mil-ad/prospr cli.py.
PROSPR_STEPS = 3          # --inner-steps
PROSPR_LR = 0.1           # --inner-lr (SGD, --inner-momentum 0)
PROSPR_META_BATCH = 128   # --meta-batch-size

# NTK-SAP (Wang et al., ICLR 2023), YiteWang/NTK-SAP main.py defaults and scripts/run.sh.
NTKSAP_EPSILON = 0.01           # --ntksap_epsilon
NTKSAP_DRAWS = 5                # --ntksap_R 5 in scripts/run.sh (main.py's default is 1)
NTKSAP_EXAMPLES_PER_CLASS = 10  # --prune-dataset-ratio: 10 x classes noise examples per draw
NTKSAP_BATCH = 256              # --prune-batch-size

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
BATCH_NORMS = nn.modules.batchnorm._BatchNorm


# ---------------------------------------------------------------------------------------------------------------
# shared helpers

def _named_params(model: nn.Module, names: Sequence[str], method: str) -> Dict[str, torch.Tensor]:
    named = dict(model.named_parameters())
    missing = [n for n in names if n not in named]
    if missing:
        raise ValueError(f"{method} cannot score {type(model).__name__}: it has no parameter(s) {missing}")
    if not names:
        raise ValueError(f"{method} was given no parameters to score")
    return named


def _mask_leaves(named: Dict[str, torch.Tensor], inputs: ScoreInputs) -> Dict[str, torch.Tensor]:
    """The current keep-masks as float leaves that require grad (all ones when the pruner gave none)."""
    out = {}
    for n in inputs.names:
        p = named[n]
        m = inputs.masks.mask(n) if inputs.masks is not None else torch.ones_like(p, dtype=torch.bool)
        out[n] = m.to(device=p.device, dtype=p.dtype).requires_grad_()
    return out


def scoring_examples(batches: Batches, method: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Every scoring batch's images and labels, concatenated."""
    if not batches:
        raise ValueError(f"{method} needs scoring batches of (images, labels); none were given")
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def even_chunks(x: torch.Tensor, y: torch.Tensor, size: int) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive chunks of at most `size` examples, as even as possible (130 examples: 65 + 65, not 128 + 2)."""
    parts = max(1, math.ceil(x.shape[0] / size))
    return list(zip(torch.tensor_split(x, parts), torch.tensor_split(y, parts)))


class _Draws:
    """Normal draws from the trial's seeded CPU generator; on an accelerator, from a device generator seeded by it."""

    def __init__(self, generator: Optional[torch.Generator], device: torch.device, method: str) -> None:
        if generator is None:
            raise ValueError(f"{method} draws random tensors: it needs ScoreInputs.generator (the trial's seed)")
        self.device = device
        self.generator = generator
        if device.type != "cpu":
            seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
            self.generator = torch.Generator(device).manual_seed(seed)

    def normal(self, shape, dtype: torch.dtype) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=self.generator, device=self.device, dtype=dtype)


# ---------------------------------------------------------------------------------------------------------------
# ProsPr

def prospect_scores(model: nn.Module, batches: Batches, inputs: ScoreInputs, steps: int = PROSPR_STEPS,
                    lr: float = PROSPR_LR, meta_batch: int = PROSPR_META_BATCH) -> Scores:
    """ProsPr's |dL(w_K)/dm|: the meta-gradient through `steps` SGD steps; `prospr_scores` is it at the defaults."""
    if steps < 0 or lr < 0 or meta_batch < 1:
        raise ValueError(f"prospr needs steps >= 0, lr >= 0 and meta_batch >= 1; got {steps}, {lr}, {meta_batch}")
    named = _named_params(model, inputs.names, "prospr")
    masks = _mask_leaves(named, inputs)
    buffers = dict(model.named_buffers())
    x, y = scoring_examples(batches, "prospr")
    total = {n: torch.zeros_like(named[n]) for n in inputs.names}
    was_training = model.training
    model.train()  # the inner steps are training steps: prospr.prune calls net.train()
    try:
        for xc, yc in even_chunks(x, y, meta_batch):
            # w_0 = w * m for masked weights; every other parameter (biases, batch norm) is trained too
            state = {n: p.detach() * masks[n] if n in masks else p.detach().requires_grad_() for n, p in named.items()}
            stats = {n: b.clone() for n, b in buffers.items()}  # train-mode batch norm updates these, not the model's
            for _ in range(steps):
                loss = F.cross_entropy(functional_call(model, {**state, **stats}, (xc,)), yc)
                grads = torch.autograd.grad(loss, list(state.values()), create_graph=True, allow_unused=True)
                state = {n: t if g is None else t - lr * g for (n, t), g in zip(state.items(), grads)}
            meta_loss = F.cross_entropy(functional_call(model, {**state, **stats}, (xc,)), yc)
            meta = torch.autograd.grad(meta_loss, [masks[n] for n in inputs.names], allow_unused=True)
            for n, g in zip(inputs.names, meta):
                if g is not None:
                    total[n] += g.detach().abs()
    finally:
        model.train(was_training)
    return total


@scorer("prospr", needs_data=True, passes_per_example=PROSPR_STEPS + 1)
def prospr_scores(model: nn.Module, batches: Batches, inputs: ScoreInputs) -> Scores:
    """ProsPr (Alizadeh et al., ICLR 2022): |dL(w_K)/dm| at m = current mask, w_0 = w * m, K = 3 SGD steps.

        w_{k+1} = w_k - lr * grad L(w_k; B)     (plain SGD, all parameters, k < K)
        score   = | d L(w_K; B) / d m |         (second order: the graph runs through every step)

    Source: github.com/mil-ad/prospr, prospr/prospr.py `prune` with `compute_meta_grads(method="full")`, and
    the defaults of cli.py: 3 inner steps (--inner-steps), lr 0.1 (--inner-lr), momentum 0, full meta-gradient
    (--meta-grads-mode full), the same batch B in every step and in the meta-loss (--new-data-in-inner False),
    a meta-batch of 128 (--meta-batch-size), batch norm in train mode (net.train()), one shot. The mask
    multiplies every prunable conv/linear weight (its `pruning_filter_factory`).

    Departures: the trial's scoring examples (10 x classes) are cut into meta-batches of at most 128 and the
    |meta-gradient| of each is summed, where the published code takes one batch of 128 from a shuffled loader
    (on CIFAR-10's 100 examples that is the same: one batch); summing keeps every example the trial drew in use
    and `prune_passes` exact (4 passes per example: 3 steps + the meta-loss). Batch norm is in train mode
    whatever the trial's prune_mode, as the published code does; its running statistics are copies, so the
    model's are untouched. With iterations > 1 each round starts from the network pruned so far (the published
    method is one shot; 1 is its default here).
    """
    return prospect_scores(model, batches, inputs, PROSPR_STEPS, PROSPR_LR, PROSPR_META_BATCH)


# ---------------------------------------------------------------------------------------------------------------
# NTK-SAP

def ntk_trace_estimate(model: nn.Module, weights: Dict[str, torch.Tensor], buffers: Dict[str, torch.Tensor],
                       masks: Dict[str, torch.Tensor], noise: torch.Tensor, perturbation: Dict[str, torch.Tensor],
                       epsilon: float) -> torch.Tensor:
    """sum_x ||f(w * m; x) - f((w + eps d) * m; x)||^2: eps^2 d^T Theta d to first order, whose mean over
    d ~ N(0, I) is eps^2 times the trace of the NTK Theta of the masked network on the inputs x."""
    clean = {n: w * masks[n] if n in masks else w for n, w in weights.items()}
    moved = {n: w + epsilon * perturbation[n] if n in perturbation else w for n, w in weights.items()}
    moved = {n: w * masks[n] if n in masks else w for n, w in moved.items()}
    out = functional_call(model, {**clean, **buffers}, (noise,))
    out_moved = functional_call(model, {**moved, **buffers}, (noise,))
    return (out - out_moved).flatten(1).norm(dim=1).pow(2).sum()


def _fresh_weights(model: nn.Module, draws: _Draws) -> Dict[str, torch.Tensor]:
    """NTK-SAP's `_initialize_weights` on fresh draws: kaiming_normal_ (fan_in, gain sqrt 2) for every conv and
    linear weight, batch/group norm weight 1 and bias 0; other parameters as they are."""
    state = {n: p.detach() for n, p in model.named_parameters()}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, WEIGHT_LAYERS):
            w = module.weight
            state[prefix + "weight"] = draws.normal(w.shape, w.dtype) * math.sqrt(2.0 / w[0].numel())
        elif isinstance(module, (BATCH_NORMS, nn.GroupNorm)) and module.weight is not None:
            state[prefix + "weight"] = torch.ones_like(module.weight)
            state[prefix + "bias"] = torch.zeros_like(module.bias)
    return state


def _statistics_hook(prefix: str, stats: Dict[str, torch.Tensor]):
    def hook(module, args, output):
        x = args[0]
        dims = [0] + list(range(2, x.dim()))
        stats.setdefault(prefix + "running_mean", x.mean(dims))
        stats.setdefault(prefix + "running_var", x.var(dims, correction=1))
        return F.batch_norm(x, None, None, module.weight, module.bias, True, 0.0, module.eps)
    return hook


@torch.no_grad()
def _noise_statistics(model: nn.Module, state: Dict[str, torch.Tensor], noise: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Batch-norm running statistics as NTK-SAP sets them: reset, momentum 1, one train-mode pass on this noise
    batch (mean and unbiased variance of each batch norm's input), then used in eval mode."""
    stats: Dict[str, torch.Tensor] = {}
    handles = [module.register_forward_hook(_statistics_hook(f"{name}." if name else "", stats))
               for name, module in model.named_modules()
               if isinstance(module, BATCH_NORMS) and module.track_running_stats]
    try:
        functional_call(model, state, (noise,))
    finally:
        for handle in handles:
            handle.remove()
    return stats


def _noise_rows(model: nn.Module, input_shape: Sequence[int], param: torch.Tensor) -> List[int]:
    """NTK-SAP's noise batches: 10 x classes examples in batches of 256 (classes read off a copy's output)."""
    probe = copy.deepcopy(model).eval()  # a copy: this probe is not a scoring pass
    with torch.no_grad():
        out = probe(torch.zeros((1, *input_shape), dtype=param.dtype, device=param.device))
    if out.dim() != 2:
        raise ValueError(f"ntk_sap scores classifiers with (batch, classes) outputs; "
                         f"{type(model).__name__} returns shape {tuple(out.shape)}")
    total = NTKSAP_EXAMPLES_PER_CLASS * out.shape[1]
    return [NTKSAP_BATCH] * (total // NTKSAP_BATCH) + ([total % NTKSAP_BATCH] if total % NTKSAP_BATCH else [])


def ntk_sap_saliency(model: nn.Module, inputs: ScoreInputs, draws: int = NTKSAP_DRAWS,
                     epsilon: float = NTKSAP_EPSILON) -> Scores:
    """NTK-SAP's |dJ/dm| * [m != 0] summed over `draws` rounds of fresh weights and noise batches."""
    if draws < 1 or not epsilon > 0:
        raise ValueError(f"ntk_sap needs draws >= 1 and epsilon > 0; got {draws}, {epsilon}")
    named = _named_params(model, inputs.names, "ntk_sap")
    ref = named[inputs.names[0]]
    masks = _mask_leaves(named, inputs)
    layer_weights = {f"{name}.weight" if name else "weight" for name, module in model.named_modules()
                     if isinstance(module, WEIGHT_LAYERS)}
    perturbed = [n for n in named if n in masks or n in layer_weights]  # NTK-SAP's masked parameters
    rows = _noise_rows(model, inputs.input_shape, ref)
    rng = _Draws(inputs.generator, ref.device, "ntk_sap")
    total = {n: torch.zeros_like(named[n]) for n in inputs.names}
    was_training = model.training
    model.eval()
    try:
        for _ in range(draws):
            for count in rows:
                weights = _fresh_weights(model, rng)
                noise = rng.normal((count, *inputs.input_shape), ref.dtype)
                clean = {n: w * masks[n].detach() if n in masks else w for n, w in weights.items()}
                buffers = _noise_statistics(model, clean, noise)
                perturbation = {n: rng.normal(weights[n].shape, weights[n].dtype) for n in perturbed}
                estimate = ntk_trace_estimate(model, weights, buffers, masks, noise, perturbation, epsilon)
                grads = torch.autograd.grad(estimate, [masks[n] for n in inputs.names], allow_unused=True)
                for n, g in zip(inputs.names, grads):
                    if g is not None:
                        total[n] += g
    finally:
        model.train(was_training)
    return {n: total[n].abs() * (masks[n].detach() != 0) for n in inputs.names}


@scorer("ntk_sap", needs_data=False, passes_per_example=None)
def ntk_sap_scores(model: nn.Module, batches: Batches, inputs: ScoreInputs) -> Scores:
    """NTK-SAP (Wang et al., ICLR 2023): the saliency of the NTK trace, averaged over weight draws. Data-free.

        J(m)  = sum_x || f(w * m; x) - f((w + eps d) * m; x) ||^2   ~ eps^2 tr Theta(m)   (finite difference)
        score = | sum_{r, batches} dJ/dm | * [m != 0]

    with, for every one of R = 5 draws and every noise batch: fresh weights w (kaiming normal, fan_in, for
    every conv and linear weight; batch norm 1/0), inputs x ~ N(0, 1) of the data's shape (10 x classes of
    them in batches of 256), d ~ N(0, 1) on every masked weight, eps = 0.01, batch norm running statistics
    recomputed on that noise batch (reset, momentum 1, one train-mode pass) and both outputs taken in eval mode.
    20 rounds (iterations) by default.

    Source: github.com/YiteWang/NTK-SAP, Pruners/pruners.py `NTKSAP.score` ("CLEAN version") with
    main.py's defaults (--ntksap_epsilon 0.01, --prune-batch-size 256, --prune-dataset-ratio 10) and
    scripts/run.sh (--ntksap_R 5, --prune-epochs 20, --prune-train-mode True); the model's
    `_initialize_weights` (Models/lottery_vgg.py, lottery_resnet.py) is the fresh draw.

    Departures: the fresh draw is NTK-SAP's kaiming fan_in for every model, so a model initialised otherwise
    (resnet18's fan_out, a ViT's truncated normal 0.02) is scored at NTK-SAP's draw, not its own; conv and
    linear weights outside the prunable set (residual projections by default here, which NTK-SAP masks) are
    drawn and perturbed as NTK-SAP does, but not scored. The trial's prune_mode does not apply: the method
    sets batch norm itself. The published code keeps the last draw in the model and its multishot experiment
    restores the initial weights afterwards; here the model is never touched. Passes are counted as they run
    (3 x noise rows per draw: the statistics pass and the two outputs).
    """
    return ntk_sap_saliency(model, inputs, NTKSAP_DRAWS, NTKSAP_EPSILON)
