"""ImageNet models, taken from `torchvision.models` untrained (`weights=None`).

Registered as `imagenet_vgg16`, `imagenet_vgg19` and `imagenet_resnet50`
because `vgg16`/`vgg19` name the CIFAR forms. torchvision's own initialization
is kept. Two changes, both to stock layers:

- an input with other than 3 channels gets a first conv of that many input
  channels, initialized as torchvision initializes that conv;
- torchvision's in-place ReLUs are made out-of-place, so backward hooks and the
  double backward of GraSP's Hessian-gradient product see every activation.

torchvision's VGG max-pools five times without padding, so it needs at least
32x32 inputs; its ResNet-50 runs on any size.
"""
from __future__ import annotations

from typing import Tuple

import torchvision
from torch import nn

from trainables.models.common import MODELS, image_shape

IMAGENET_VGG_MIN_SIZE = 32


def _fan_out_conv_like(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    replacement = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=conv.bias is not None,
    )
    nn.init.kaiming_normal_(replacement.weight, mode="fan_out", nonlinearity="relu")
    if replacement.bias is not None:
        nn.init.zeros_(replacement.bias)
    return replacement


def _out_of_place_relus(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return model


def _imagenet_vgg(vgg: torchvision.models.VGG, in_channels: int) -> nn.Module:
    if in_channels != 3:
        vgg.features[0] = _fan_out_conv_like(vgg.features[0], in_channels)
    return _out_of_place_relus(vgg)


@MODELS.register("imagenet_vgg16")
def imagenet_vgg16(input_shape: Tuple[int, ...], num_classes: int) -> nn.Module:
    channels, _, _ = image_shape("imagenet_vgg16", input_shape, IMAGENET_VGG_MIN_SIZE)
    return _imagenet_vgg(torchvision.models.vgg16(weights=None, num_classes=num_classes), channels)


@MODELS.register("imagenet_vgg19")
def imagenet_vgg19(input_shape: Tuple[int, ...], num_classes: int) -> nn.Module:
    channels, _, _ = image_shape("imagenet_vgg19", input_shape, IMAGENET_VGG_MIN_SIZE)
    return _imagenet_vgg(torchvision.models.vgg19(weights=None, num_classes=num_classes), channels)


@MODELS.register("imagenet_resnet50")
def imagenet_resnet50(input_shape: Tuple[int, ...], num_classes: int) -> nn.Module:
    channels, _, _ = image_shape("imagenet_resnet50", input_shape)
    resnet = torchvision.models.resnet50(weights=None, num_classes=num_classes)
    if channels != 3:
        resnet.conv1 = _fan_out_conv_like(resnet.conv1, channels)
    return _out_of_place_relus(resnet)
