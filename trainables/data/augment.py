"""Seeded randomness, crop/flip augmentation and normalisation, computed on the device.

All randomness of an epoch (order, crop offsets, flips) comes from a generator
seeded from (seed, epoch) and drawn on the CPU, so an epoch's batches are a pure
function of (seed, epoch), identical on every device and after a resume. The
augmentation is the paper's CIFAR / Tiny-ImageNet recipe (random crop with zero
padding + horizontal flip), done for a whole batch in one gather.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from common.checks import integer_at_least
from trainables.data.info import DatasetInfo, Device

# Independent random streams drawn from one trial seed: never reuse a number.
STREAM_EPOCH = 0            # an epoch's order and augmentation (and ImageNet's per-image transforms)
STREAM_SCORING = 1          # which train examples the data-driven scorers see
STREAM_PLAIN_LOADER = 2     # benchmarks/plain_loader.py's shuffling


def derive_seed(*words: int) -> int:
    """A 63-bit seed that mixes all `words` (non-negative ints); distinct tuples give unrelated streams."""
    state = np.random.SeedSequence([int(w) for w in words]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def seeded_generator(*words: int) -> torch.Generator:
    """A CPU generator seeded by `derive_seed(*words)`; the global RNG is left alone."""
    generator = torch.Generator()
    generator.manual_seed(derive_seed(*words))
    return generator


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator an epoch's order and augmentation are drawn from."""
    seed = integer_at_least("seed", seed, 0)
    return seeded_generator(STREAM_EPOCH, seed, integer_at_least("epoch", epoch, 0))


class CropFlip(NamedTuple):
    """Per-example augmentation draws: crop offsets into the padded image, and whether to flip."""

    top: torch.Tensor  # int64 in [0, 2 * padding]
    left: torch.Tensor  # int64 in [0, 2 * padding]
    flip: torch.Tensor  # bool, True with probability 0.5


def draw_crop_flip(count: int, padding: int, generator: torch.Generator) -> CropFlip:
    """`count` draws of torchvision's RandomCrop(size, padding) + RandomHorizontalFlip() parameters."""
    device = generator.device
    top = torch.randint(0, 2 * padding + 1, (count,), generator=generator, device=device)
    left = torch.randint(0, 2 * padding + 1, (count,), generator=generator, device=device)
    flip = torch.rand(count, generator=generator, device=device) < 0.5
    return CropFlip(top, left, flip)


def crop_flip(images: torch.Tensor, padding: int, params: CropFlip) -> torch.Tensor:
    """Crop each (zero-padded) image at its offset and mirror the flipped ones, in one gather.

    Same result as torchvision's crop(pad(x, padding, fill=0), top, left, H, W)
    followed by horizontal_flip where `flip`, for every example; any dtype, any device.
    """
    count, channels, height, width = images.shape
    device = images.device
    top, left, flip = (p.to(device) for p in params)
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    rows = top[:, None] + torch.arange(height, device=device)
    cols = left[:, None] + torch.arange(width, device=device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    return padded[
        torch.arange(count, device=device)[:, None, None, None],
        torch.arange(channels, device=device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


class Normaliser:
    """uint8 0..255 images -> float32 (x / 255 - mean) / std, on the images' device."""

    def __init__(self, info: DatasetInfo, device: Device) -> None:
        shape = (1, len(info.mean), 1, 1)
        self.offset = torch.tensor([255.0 * m for m in info.mean], device=device).view(shape)
        self.scale = torch.tensor([1.0 / (255.0 * s) for s in info.std], device=device).view(shape)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.to(torch.float32) - self.offset) * self.scale
