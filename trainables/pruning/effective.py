"""Effective remaining weights: the kept weights that lie on at least one input-to-output path.

At high compression many kept weights hang off dead units, so the network's
effective compression far exceeds the nominal one (Vysogorets & Kempe 2021,
"Connectivity Matters"). A weight from unit a to unit b is on a path when a is
reachable from some input and the output is reachable from b.

One forward and one backward pass over the *binary* mask network find both
sets: every conv/linear weight becomes its 0/1 keep-mask (1 where the layer is
not pruned), biases and batch-norm shifts become 0 (they create no path),
batch-norm becomes a positive rescaling, max-pooling becomes average pooling
(a window reaches its output if *any* of its inputs does; max-pooling's
backward would route to one tied input only). Each conv/linear output is
binarised forward ("reached") and its gradient binarised backward ("reaches
the output"), so nothing overflows or underflows however deep the network is,
unlike a path *count*. A weight's gradient is then positive exactly when some
position of its input is reached and some position of its output reaches the
output.
"""
from __future__ import annotations

import copy
from typing import Dict, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from trainables.pruning.masks import Masks
from trainables.pruning.params import PrunableParam

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class _Reached(torch.autograd.Function):
    """Forward: 1 where a unit is reached. Backward: 1 where a unit reaches the output."""

    @staticmethod
    def forward(ctx, x):
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return (grad > 0).to(grad.dtype)


def _binarise_output(module, inputs, output):
    return _Reached.apply(output)


def _as_any_pool(pool: nn.MaxPool2d) -> nn.Module:
    if pool.dilation not in (1, (1, 1)) or pool.return_indices:
        raise ValueError(f"effective weights: a dilated or index-returning max-pool ({pool}) is not supported")
    return nn.AvgPool2d(pool.kernel_size, pool.stride, pool.padding, ceil_mode=pool.ceil_mode)


@torch.no_grad()
def mask_network(model: nn.Module, masks: Masks) -> nn.Module:
    """A float32 copy of `model` whose conv/linear weights are their keep-masks and whose shifts are zero."""
    net = copy.deepcopy(model).float().eval()
    mask_of = {name: masks.mask(name) for name in masks.names}
    for name, param in net.named_parameters():
        param.requires_grad_(False)
        module_name, _, leaf = name.rpartition(".")
        module = net.get_submodule(module_name)
        if leaf == "weight" and isinstance(module, WEIGHT_LAYERS + (_BatchNorm,)):
            param.copy_(mask_of[name] if name in mask_of else torch.ones_like(param))
        else:
            param.zero_()  # biases and shifts create no path
    for module in net.modules():
        if isinstance(module, _BatchNorm):
            if module.running_mean is not None:
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
        for child_name, child in module.named_children():
            if isinstance(child, nn.MaxPool2d):
                setattr(module, child_name, _as_any_pool(child))
    return net


def effective_remaining(model: nn.Module, masks: Masks, params: Sequence[PrunableParam],
                        input_shape: Sequence[int]) -> Dict[str, int]:
    """Per prunable conv/linear weight: how many kept weights lie on an input-to-output path."""
    net = mask_network(model, masks)
    layers = {name: module for name, module in net.named_modules() if isinstance(module, WEIGHT_LAYERS)}
    handles = [m.register_forward_hook(_binarise_output) for m in layers.values()]
    weights = {p.name: net.get_parameter(p.name) for p in params if p.is_layer_weight}
    for w in weights.values():
        w.requires_grad_(True)
    device = next(net.parameters()).device
    try:
        with torch.enable_grad(), torch.backends.cudnn.flags(allow_tf32=False):
            out = net(torch.ones((1, *input_shape), device=device))
            grads = torch.autograd.grad(out.sum(), list(weights.values()), allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    counts = {}
    for (name, _), grad in zip(weights.items(), grads):
        on_path = grad > 0 if grad is not None else torch.zeros_like(weights[name], dtype=torch.bool)
        counts[name] = int((on_path & masks.mask(name)).sum())
    return counts
