"""Which parameters of a stock model are prunable, in forward order.

Conv and linear weights are prunable by default; biases, batch-norm and
layer-norm affine parameters, embeddings (the free `nn.Parameter`s a model's
own modules hold, such as a transformer's class token and position embedding)
and residual projections (modules under a `downsample` submodule, as
torchvision names them) are opt-in. Forward order and per-weight FLOPs come
from one traced forward pass, so they hold for any architecture.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Sequence, Tuple

import torch
from torch import nn

from common.vocabulary import WEIGHT_KINDS


@dataclass(frozen=True)
class PrunableParam:
    name: str          # parameter name, e.g. "features.0.weight"
    layer: str         # module name, e.g. "features.0"
    kind: str          # conv | linear | bias | batchnorm | layernorm | embedding
    layer_index: int   # forward order among prunable parameters
    size: int
    macs_per_weight: int  # multiply-adds per example one weight takes part in

    @property
    def is_layer_weight(self) -> bool:
        """Conv/linear weights: the layers whose emptiness means collapse."""
        return self.kind in WEIGHT_KINDS


def _is_residual_projection(module_name: str) -> bool:
    return "downsample" in module_name.split(".")


def probe_forward(model: nn.Module, input_shape: Sequence[int], hooks: Iterable[Tuple[nn.Module, Callable]]) -> None:
    """One eval-mode forward pass of a zero example with temporary forward hooks; the model's mode is restored."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    was_training = model.training
    param = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), dtype=param.dtype, device=param.device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


NORM_LAYERS = (nn.BatchNorm2d, nn.BatchNorm1d, nn.LayerNorm)
TRACED_LAYERS = (nn.Conv2d, nn.Linear) + NORM_LAYERS


def holds_embeddings(module: nn.Module) -> bool:
    """A module of the model's own (not a `torch.nn` layer) with `nn.Parameter`s of its own: class tokens,
    position embeddings."""
    return (not type(module).__module__.startswith("torch.nn")
            and any(True for _ in module.parameters(recurse=False)))


def positions_per_example(module: nn.Module, output: torch.Tensor) -> int:
    """How many positions one example's pass applies a weight at: a conv's output H*W, a linear's every dim of
    its output but the batch and the features (the tokens of a (batch, tokens, features) sequence)."""
    if isinstance(module, nn.Linear):
        return int(math.prod(output.shape[1:-1]))
    return int(output[0, 0].numel()) if output.dim() > 2 else 1


def _trace_forward_order(model: nn.Module, input_shape: Sequence[int]) -> Dict[str, tuple]:
    """Module name -> (call position, positions per example) from one eval-mode forward pass.

    A module holding embeddings is placed where its forward ends (after the
    layers inside it, such as a patch projection, as its embeddings are added
    to their output).
    """
    order: Dict[str, tuple] = {}

    def recorder(name: str) -> Callable:
        def hook(module, inputs, output):
            if name not in order:
                order[name] = (len(order), positions_per_example(module, output))
        return hook

    probe_forward(model, input_shape, [
        (module, recorder(name)) for name, module in model.named_modules()
        if isinstance(module, TRACED_LAYERS) or holds_embeddings(module)
    ])
    return order


def prunable_parameters(
    model: nn.Module,
    input_shape: Sequence[int],
    prune_bias: bool = False,
    prune_batchnorm: bool = False,
    prune_residual: bool = False,
    prune_layernorm: bool = False,
    prune_embedding: bool = False,
) -> List[PrunableParam]:
    order = _trace_forward_order(model, input_shape)
    found = []
    for module_name, module in model.named_modules():
        if module_name not in order:
            continue
        if _is_residual_projection(module_name) and not prune_residual:
            continue
        position, spatial = order[module_name]
        for rank, (pname, p) in enumerate(module.named_parameters(recurse=False)):
            if p is None:
                continue
            if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
                if not prune_batchnorm:
                    continue
                kind = "batchnorm"
            elif isinstance(module, nn.LayerNorm):
                if not prune_layernorm:
                    continue
                kind = "layernorm"
            elif not isinstance(module, (nn.Conv2d, nn.Linear)):
                if not prune_embedding:
                    continue
                kind = "embedding"
            elif pname == "bias":
                if not prune_bias:
                    continue
                kind = "bias"
            else:
                kind = "conv" if isinstance(module, nn.Conv2d) else "linear"
            full = f"{module_name}.{pname}" if module_name else pname
            found.append((position, 0 if pname == "weight" else 1 + rank, full, module_name, kind, p.numel(),
                          spatial))
    found.sort()
    return [
        PrunableParam(name=full, layer=layer, kind=kind, layer_index=i, size=size, macs_per_weight=spatial)
        for i, (_, _, full, layer, kind, size, spatial) in enumerate(found)
    ]
