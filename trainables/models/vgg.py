"""CIFAR-style VGG-11/13/16/19, with and without batch norm.

The form is the SynFlow paper's (ganguli-lab/Synaptic-Flow, Models/lottery_vgg.py,
the "lottery" VGG its CIFAR sweeps used): 3x3 convolutions with biases, optional
batch norm, ReLU, 2x2 max-pools after each stage but the last, then one 512 ->
classes linear layer. That code average-pools the 2x2 map a 32x32 input leaves;
here the pool is global (`nn.AdaptiveAvgPool2d(1)`), which is the same on 32x32
and lets 64x64 (Tiny ImageNet) or 8x8 inputs through.

A max-pool whose input is already 1 pixel high or wide is replaced by
`nn.Identity`, so small inputs (8x8 digits reach 1x1 after three pools) still
work with the same parameter names.

Initialization follows lottery_vgg.py: `kaiming_normal_` with its defaults
(fan_in, gain sqrt(2)) for every conv and linear weight, zero biases, batch-norm
weight 1 and bias 0.
"""
from __future__ import annotations

from functools import partial
from typing import Dict, List, Sequence, Tuple, Union

import torch
from torch import nn

from trainables.models.common import MODELS, halve_or_skip, image_shape

POOL = "M"

VGG_PLANS: Dict[int, List[Union[int, str]]] = {
    11: [64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512],
    13: [64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512],
    16: [64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512],
    19: [
        64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL,
        512, 512, 512, 512, POOL, 512, 512, 512, 512,
    ],
}


class VGG(nn.Module):
    def __init__(self, features: nn.Sequential, feature_channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(feature_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


def _features(
    plan: Sequence[Union[int, str]], input_shape: Tuple[int, int, int], batch_norm: bool
) -> Tuple[nn.Sequential, int]:
    channels, height, width = input_shape
    layers: List[nn.Module] = []
    for step in plan:
        if step == POOL:
            pool, height, width = halve_or_skip(height, width)
            layers.append(pool)
            continue
        layers.append(nn.Conv2d(channels, step, kernel_size=3, padding=1, bias=True))
        if batch_norm:
            layers.append(nn.BatchNorm2d(step))
        layers.append(nn.ReLU())
        channels = step
    return nn.Sequential(*layers), channels


def _init_lottery(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def vgg(
    input_shape: Tuple[int, ...], num_classes: int, *, depth: int, batch_norm: bool, name: str
) -> VGG:
    shape = image_shape(name, input_shape)
    features, channels = _features(VGG_PLANS[depth], shape, batch_norm)
    model = VGG(features, channels, num_classes)
    _init_lottery(model)
    return model


def _register_all() -> None:
    for depth in VGG_PLANS:
        for batch_norm, suffix in ((True, "_bn"), (False, "")):
            name = f"vgg{depth}{suffix}"
            MODELS.register(name)(partial(vgg, depth=depth, batch_norm=batch_norm, name=name))


_register_all()
