"""The examples the data-driven scorers (SNIP, GraSP) see when they score a network at initialization.

Class-balanced, unaugmented train examples chosen by the trial's seed from a
random stream of their own, so the choice neither depends on nor disturbs the
training epochs' randomness.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, List, Optional, Union

import torch

from common.checks import integer_at_least
from trainables.data.augment import STREAM_SCORING, Normaliser, seeded_generator
from trainables.data.batches import (DEFAULT_LOADER_WORKERS, FolderItems, canonical_device, device_tensors,
                                     image_folder, imagenet_transform)
from trainables.data.info import Batch, Device, dataset_info

if TYPE_CHECKING:
    from trainables.specs import DataSpec


def class_balanced_indices(labels: torch.Tensor, num_classes: int, per_class: int,
                           generator: torch.Generator) -> torch.Tensor:
    """`per_class` random indices of each class (all of a class that has fewer), in a random order."""
    per_class = integer_at_least("examples_per_class", per_class)
    labels = labels.cpu()
    chosen = []
    for label in range(num_classes):
        members = torch.nonzero(labels == label).flatten()
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:per_class]])
    indices = torch.cat(chosen)
    return indices[torch.randperm(indices.numel(), generator=generator)]


def scoring_batches(data_spec: DataSpec, data_dir: Optional[Union[str, os.PathLike]], examples_per_class: int,
                    batch_size: int, device: Device, seed: int, *, download: bool = True,
                    num_workers: int = DEFAULT_LOADER_WORKERS) -> List[Batch]:
    """Class-balanced train examples, unaugmented, normalised, on `device`, cut into batches.

    `examples_per_class` examples of every class, chosen by `seed`, shuffled
    together and cut into batches of `batch_size`. A class with fewer train
    examples contributes all it has, so the total is
    examples_per_class * num_classes only when every class has enough.
    ImageNet examples get the test transform (Resize 256 + CenterCrop 224).
    """
    info = dataset_info(data_spec)
    batch_size = integer_at_least("batch_size", batch_size)
    generator = seeded_generator(STREAM_SCORING, integer_at_least("seed", seed, 0))
    device = canonical_device(device)
    normaliser = Normaliser(info, device)
    if not info.tensor_resident:
        folder = image_folder(data_spec, "train", data_dir)
        chosen = class_balanced_indices(torch.tensor(folder.targets), info.num_classes, examples_per_class, generator)
        loader = torch.utils.data.DataLoader(
            FolderItems(folder, imagenet_transform(False), indices=chosen.tolist()), batch_size=batch_size,
            num_workers=integer_at_least("num_workers", num_workers, 0), pin_memory=device.type == "cuda",
            generator=seeded_generator(STREAM_SCORING, seed, 1),  # leave the trainer's global RNG alone
        )
        return [(normaliser(x.to(device)), y.to(device)) for x, y in loader]
    images, labels = device_tensors(data_spec, "train", data_dir, device, download=download)
    chosen = class_balanced_indices(labels, info.num_classes, examples_per_class, generator).to(device)
    return [
        (normaliser(images[index]), labels[index])
        for index in (chosen[start:start + batch_size] for start in range(0, chosen.numel(), batch_size))
    ]
