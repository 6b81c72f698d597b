"""The model registry and the input-shape checks every constructor shares.

A constructor takes `(input_shape, num_classes)` and returns an `nn.Module`
built only from stock `torch.nn` layers; masks live beside the model, in the
pruning code, so any model here can be pruned, saved and loaded as it is.
"""
from __future__ import annotations

import math
import operator
from typing import Callable, Sequence, Tuple

from torch import nn

from common.registry import Registry

ModelConstructor = Callable[[Tuple[int, ...], int], nn.Module]

MODELS: Registry[ModelConstructor] = Registry("model")


def _shape_error(model_name: str, input_shape: Sequence[int], needs: str) -> ValueError:
    return ValueError(f"model {model_name!r} needs {needs}; got input_shape {tuple(input_shape)!r}")


def positive_shape(model_name: str, input_shape: Sequence[int]) -> Tuple[int, ...]:
    """Any non-empty shape of positive integer sizes (what a flattening model needs).

    Integer-like sizes (numpy integers, 0-d tensors) come back as Python ints.
    """
    shape = tuple(input_shape)
    try:
        if any(isinstance(s, bool) for s in shape):
            raise TypeError("a bool is not a size")
        sizes = tuple(operator.index(s) for s in shape)
    except TypeError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise _shape_error(model_name, shape, "an input_shape of positive integer sizes")
    return sizes


def image_shape(model_name: str, input_shape: Sequence[int], min_size: int = 1) -> Tuple[int, int, int]:
    """(channels, height, width) with height and width at least `min_size`.

    `min_size` is the smallest map on which every layer of the model still
    produces a non-empty output.
    """
    shape = tuple(input_shape)
    needs = f"input_shape (channels, height, width) with height and width >= {min_size}"
    if len(shape) != 3:
        raise _shape_error(model_name, shape, needs)
    channels, height, width = positive_shape(model_name, shape)
    if height < min_size or width < min_size:
        raise _shape_error(model_name, shape, needs)
    return channels, height, width


def flat_size(input_shape: Sequence[int]) -> int:
    return int(math.prod(input_shape))


def halve_or_skip(height: int, width: int) -> Tuple[nn.Module, int, int]:
    """A 2x2 max-pool, or `nn.Identity` when the map is already 1 pixel thin.

    Skipping (instead of dropping) the pool keeps the module names, and so the
    state_dict keys, the same for every input size.
    """
    if min(height, width) < 2:
        return nn.Identity(), height, width
    return nn.MaxPool2d(kernel_size=2, stride=2), height // 2, width // 2
