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

Transformers. Units are (token, channel) pairs. The class token and the
position embedding (any `nn.Parameter` a model's own module holds) are
inputs, always reached (unless pruned). LayerNorm becomes its elementwise
affine map (weight 1 or its mask, bias 0, no normalisation): it mixes a
token's features only through two per-token statistics, a gain shared by
every feature rather than a weighted connection, so like batch-norm it adds no
path beyond unit (t, c) -> (t, c); counting its statistics as edges would make
every feature of a token reach every other one after the first norm. GELU
maps 0 to 0 and positive to positive, so it stays as it is. Attention, per
head, with q, k, v the outputs of its query, key and value layers and o its
output before the output projection (biases create no path, so a logit
q_i . k_j only varies through units that are reached):

- v(j, c) -> o(i, c) for every pair of tokens i, j (same channel c);
- q(i, c') -> o(i, c) for every channel c' of the head, when some v(., c) and
  some k(., c') are reached (a key channel reached at no token adds the same
  logit to every token, which the softmax ignores);
- k(j, c') -> o(i, c) for every j and every c' of the head, when some v(., c)
  is reached and q(i, c') is reached.

(If no value unit of channel c is reached, o(i, c) is a constant whatever the
softmax does, so q and k reach nothing through it.) In the binary network
each `nn.Softmax` becomes `_ReachSoftmax`: forward all ones (o(i, c) is
reached iff some v(j, c) is), backward a logit (i, j) reaches the output iff
some weight of row i does (the softmax couples a row), so the products q k^T
and a v give exactly the edges above. Attention must use an `nn.Softmax`
module (the zoo's does); `nn.MultiheadAttention` is refused.
"""
from __future__ import annotations

import copy
from typing import Dict, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from trainables.pruning.masks import Masks
from trainables.pruning.params import PrunableParam, holds_embeddings
from trainables.pruning.scores import replace_children, without_layernorm_statistics

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class _ReachSoftmaxFunction(torch.autograd.Function):
    """Forward: every attention weight 1. Backward: 1 on a whole row where any weight of it reaches the output."""

    @staticmethod
    def forward(ctx, logits, dim):
        ctx.dim = dim
        return torch.ones_like(logits)

    @staticmethod
    def backward(ctx, grad):
        return (grad.sum(dim=ctx.dim, keepdim=True) > 0).to(grad.dtype).expand_as(grad), None


class _ReachSoftmax(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return _ReachSoftmaxFunction.apply(logits, self.dim)


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
    """A float32 copy of `model` whose conv/linear weights are their keep-masks and whose shifts are zero.

    Norms' weights and embeddings are their keep-masks too (all ones when not pruned).
    """
    if any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        raise ValueError("effective weights: nn.MultiheadAttention is not supported (its fused in-projection is no "
                         "nn.Linear); write attention with nn.Linear projections and an nn.Softmax module")
    net = copy.deepcopy(model).float().eval()
    mask_of = {name: masks.mask(name) for name in masks.names}
    for name, param in net.named_parameters():
        param.requires_grad_(False)
        module_name, _, leaf = name.rpartition(".")
        module = net.get_submodule(module_name)
        scaling = leaf == "weight" and isinstance(module, WEIGHT_LAYERS + (_BatchNorm, nn.LayerNorm))
        if scaling or holds_embeddings(module):  # embeddings are inputs: reached unless pruned
            param.copy_(mask_of[name] if name in mask_of else torch.ones_like(param))
        else:
            param.zero_()  # biases and shifts create no path
    without_layernorm_statistics(net)
    replace_children(net, nn.Softmax, lambda softmax: _ReachSoftmax(softmax.dim))
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
