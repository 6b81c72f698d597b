"""Residual networks for CIFAR-sized (and Tiny ImageNet) inputs.

Two families share one BasicBlock network, named as torchvision names its
ResNets (`conv1`, `bn1`, `layer1`..., `fc`, and each projection shortcut an
`nn.Sequential(conv1x1, bn)` under `downsample`, so the pruning code finds
residual projections by that name). Identity shortcuts have no parameters.

- `resnet20/32/44/56/110`: He et al.'s CIFAR ResNets, 3 stages of 16/32/64
  channels with (depth - 2) / 6 blocks each, as in the SynFlow code
  (Models/lottery_resnet.py). Shortcuts are option B: a strided 1x1 conv + BN
  projection where the shape changes (first block of stages 2 and 3), identity
  elsewhere. (SynFlow's identity shortcut carries a per-channel scale parameter
  fixed at 1; here it is a plain identity.) Init as there: `kaiming_normal_`
  defaults (fan_in, gain sqrt(2)) for conv and linear weights, zero linear bias,
  batch norm 1/0.
- `resnet18` / `wide_resnet18`: BasicBlock [2, 2, 2, 2] with widths 64..512
  (wide: 128..1024), with the CIFAR stem of the SynFlow code
  (Models/tinyimagenet_resnet.py): a 3x3 stride-1 conv and no max-pool, then a
  global average pool, so 32x32 and 64x64 inputs both work. Init as there:
  `kaiming_normal_(fan_out, relu)` for convs, batch norm 1/0, the linear layer
  at PyTorch's default. Note that SynFlow's `wide_resnet18` passes its doubled
  width only to the bottleneck block, so that code's wide_resnet18 is in fact
  resnet18; here the widths really are doubled.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, List, Sequence, Tuple

import torch
from torch import nn

from trainables.models.common import MODELS, image_shape

CIFAR_RESNET_DEPTHS = (20, 32, 44, 56, 110)


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + shortcut)


class ResNet(nn.Module):
    """Stem conv (3x3, stride 1), stages of BasicBlocks, global pool, linear.

    Stage i has `widths[i]` channels and `blocks_per_stage[i]` blocks; every
    stage after the first halves the map in its first block.
    """

    def __init__(
        self, in_channels: int, widths: Sequence[int], blocks_per_stage: Sequence[int], num_classes: int
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.stage_names: List[str] = []
        channels = widths[0]
        for index, (width, blocks) in enumerate(zip(widths, blocks_per_stage)):
            first_stride = 1 if index == 0 else 2
            stage = nn.Sequential(
                *(
                    BasicBlock(channels if b == 0 else width, width, first_stride if b == 0 else 1)
                    for b in range(blocks)
                )
            )
            channels = width
            name = f"layer{index + 1}"
            self.add_module(name, stage)
            self.stage_names.append(name)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for name in self.stage_names:
            x = self.get_submodule(name)(x)
        return self.fc(self.flatten(self.avgpool(x)))


def _init_batch_norm(module: nn.Module) -> None:
    if isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _init_lottery(model: nn.Module) -> None:
    """SynFlow's lottery_resnet.py: kaiming fan_in on conv and linear weights."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        _init_batch_norm(module)


def _init_fan_out(model: nn.Module) -> None:
    """SynFlow's tinyimagenet_resnet.py: kaiming fan_out on convs, linear left at default."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        _init_batch_norm(module)


def _build(
    name: str,
    input_shape: Tuple[int, ...],
    num_classes: int,
    widths: Sequence[int],
    blocks_per_stage: Sequence[int],
    initialize: Callable[[nn.Module], None],
) -> ResNet:
    channels, _, _ = image_shape(name, input_shape)
    model = ResNet(channels, widths, blocks_per_stage, num_classes)
    initialize(model)
    return model


def cifar_resnet(input_shape: Tuple[int, ...], num_classes: int, *, depth: int) -> ResNet:
    blocks = (depth - 2) // 6
    return _build(f"resnet{depth}", input_shape, num_classes, (16, 32, 64), (blocks,) * 3, _init_lottery)


@MODELS.register("resnet18")
def resnet18(input_shape: Tuple[int, ...], num_classes: int) -> ResNet:
    return _build("resnet18", input_shape, num_classes, (64, 128, 256, 512), (2, 2, 2, 2), _init_fan_out)


@MODELS.register("wide_resnet18")
def wide_resnet18(input_shape: Tuple[int, ...], num_classes: int) -> ResNet:
    return _build(
        "wide_resnet18", input_shape, num_classes, (128, 256, 512, 1024), (2, 2, 2, 2), _init_fan_out
    )


def _register_cifar_resnets() -> None:
    for depth in CIFAR_RESNET_DEPTHS:
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
        MODELS.register(f"resnet{depth}")(partial(cifar_resnet, depth=depth))


_register_cifar_resnets()
