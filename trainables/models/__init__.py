"""The model zoo: one registry, name -> constructor(input_shape, num_classes).

Models are built from stock `torch.nn` layers only (masks are kept by the
pruning code), and `build_model` makes a model's initial weights a function of
(name, input_shape, num_classes, seed) alone, so a trial rebuilt on another
worker, or resumed, starts from the same network.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from common.checks import integer_at_least
from trainables.models import imagenet, resnet, small, transformers, vgg  # noqa: F401  (fill MODELS)
from trainables.models.common import MODELS, ModelConstructor

__all__ = ["MODELS", "ModelConstructor", "build_model", "model"]


def model(name: str):
    """Register a model constructor `(input_shape, num_classes) -> torch.nn.Module`: the public plugin API.

    Build it from stock `torch.nn` layers; `build_model` seeds its initialization.
    """
    return MODELS.register(name)


def build_model(name: str, input_shape: Sequence[int], num_classes: int, seed: int) -> nn.Module:
    """The model `name` at its seeded initialization: on CPU, float32, in train mode.

    It is built under a forked CPU RNG seeded with `seed` (only the CPU
    generator: the weights are drawn on CPU, and seeding the CUDA generators
    too, as `torch.manual_seed` does, would change the caller's GPU RNG), with
    float32 as the default dtype and CPU as the default device, so neither
    earlier RNG use nor the caller's defaults leak in, and the caller's RNG
    state is unchanged afterwards.
    """
    constructor = MODELS[name]
    num_classes = integer_at_least("num_classes", num_classes, 1)
    seed = integer_at_least("seed", seed, 0)
    shape = tuple(input_shape)
    default_dtype = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.default_generator.manual_seed(seed)
        torch.set_default_dtype(torch.float32)
        try:
            model = constructor(shape, num_classes)
        finally:
            torch.set_default_dtype(default_dtype)
    return model.float().train()
