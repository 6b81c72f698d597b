"""Small models for small inputs (8x8 digits, 28x28 MNIST): quick to train on a CPU.

Every layer has a bias and PyTorch's default initialization, like the `fc` and
`conv` models of the SynFlow code (Models/mlp.py).
"""
from __future__ import annotations

from typing import Tuple

from torch import nn

from trainables.models.common import MODELS, flat_size, halve_or_skip, image_shape, positive_shape

MLP_HIDDEN_UNITS = 100
CONV_CHANNELS = (32, 64, 64)


@MODELS.register("mlp")
def mlp(input_shape: Tuple[int, ...], num_classes: int) -> nn.Sequential:
    """Flatten, two hidden Linear+ReLU layers of 100 units, a linear classifier."""
    inputs = flat_size(positive_shape("mlp", input_shape))
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(inputs, MLP_HIDDEN_UNITS),
        nn.ReLU(),
        nn.Linear(MLP_HIDDEN_UNITS, MLP_HIDDEN_UNITS),
        nn.ReLU(),
        nn.Linear(MLP_HIDDEN_UNITS, num_classes),
    )


@MODELS.register("conv")
def conv(input_shape: Tuple[int, ...], num_classes: int) -> nn.Sequential:
    """Three 3x3 conv+ReLU layers (32, 64, 64 channels) with a 2x2 max-pool after
    the first two, global average pool, linear classifier.

    As in the VGGs, a pool on a map already 1 pixel thin becomes `nn.Identity`.
    """
    channels, height, width = image_shape("conv", input_shape)
    first, second, third = CONV_CHANNELS
    pool1, height, width = halve_or_skip(height, width)
    pool2, height, width = halve_or_skip(height, width)
    return nn.Sequential(
        nn.Conv2d(channels, first, 3, padding=1),
        nn.ReLU(),
        pool1,
        nn.Conv2d(first, second, 3, padding=1),
        nn.ReLU(),
        pool2,
        nn.Conv2d(second, third, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(third, num_classes),
    )
