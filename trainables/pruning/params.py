"""Which parameters of a stock model are prunable, in forward order.

Conv and linear weights are prunable by default; biases, batch-norm affine
parameters and residual projections (modules under a `downsample` submodule,
as torchvision names them) are opt-in. Forward order and per-weight FLOPs come
from one traced forward pass, so they hold for any architecture.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Sequence, Tuple

import torch
from torch import nn

from common.vocabulary import WEIGHT_KINDS


@dataclass(frozen=True)
class PrunableParam:
    name: str          # parameter name, e.g. "features.0.weight"
    layer: str         # module name, e.g. "features.0"
    kind: str          # conv | linear | bias | batchnorm
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


def _trace_forward_order(model: nn.Module, input_shape: Sequence[int]) -> Dict[str, tuple]:
    """Module name -> (call position, output spatial size) from one eval-mode forward pass."""
    order: Dict[str, tuple] = {}

    def recorder(name: str) -> Callable:
        def hook(module, inputs, output):
            if name not in order:
                order[name] = (len(order), int(output[0, 0].numel()) if output.dim() > 2 else 1)
        return hook

    probe_forward(model, input_shape, [
        (module, recorder(name)) for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d))
    ])
    return order


def prunable_parameters(
    model: nn.Module,
    input_shape: Sequence[int],
    prune_bias: bool = False,
    prune_batchnorm: bool = False,
    prune_residual: bool = False,
) -> List[PrunableParam]:
    order = _trace_forward_order(model, input_shape)
    found = []
    for module_name, module in model.named_modules():
        if module_name not in order:
            continue
        if _is_residual_projection(module_name) and not prune_residual:
            continue
        position, spatial = order[module_name]
        is_norm = isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d))
        for pname, p in module.named_parameters(recurse=False):
            if p is None:
                continue
            if is_norm:
                if not prune_batchnorm:
                    continue
                kind = "batchnorm"
            elif pname == "bias":
                if not prune_bias:
                    continue
                kind = "bias"
            else:
                kind = "conv" if isinstance(module, nn.Conv2d) else "linear"
            full = f"{module_name}.{pname}" if module_name else pname
            found.append((position, 0 if pname == "weight" else 1, full, module_name, kind, p.numel(), spatial))
    found.sort()
    return [
        PrunableParam(name=full, layer=layer, kind=kind, layer_index=i, size=size, macs_per_weight=spatial)
        for i, (_, _, full, layer, kind, size, spatial) in enumerate(found)
    ]
