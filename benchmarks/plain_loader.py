"""The plain-PyTorch data recipe the benchmarks compare this project's batches against.

Per-example torchvision transforms in DataLoader worker processes, normalised
float32 CPU batches (the caller moves them): the usual way, not used by trials.
Its shuffling draws from its own seeded stream, so a benchmark run is repeatable.
"""
from __future__ import annotations

import os
from typing import Any, List, Optional, Tuple, Union

import torch

from common.checks import integer_at_least
from trainables.data import DatasetInfo, dataset_info, image_folder, load_tensors
from trainables.data.augment import STREAM_PLAIN_LOADER, seeded_generator
from trainables.data.batches import FolderItems, imagenet_transform
from trainables.specs import DataSpec


class _TransformedTensors(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Any) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), int(self.labels[index])


def make_plain_loader(data_spec: DataSpec, data_dir: Optional[Union[str, os.PathLike]], batch_size: int,
                      train: bool, seed: int = 0, *, download: bool = True,
                      num_workers: int = 4) -> torch.utils.data.DataLoader:
    """The usual recipe over a dataset: its tensors through `plain_loader`, or ImageNet's folders."""
    info = dataset_info(data_spec)
    split = "train" if train else "test"
    if info.tensor_resident:
        images, labels = load_tensors(data_spec, split, data_dir, download)
        return plain_loader(images, labels, info, batch_size, train, seed, num_workers=num_workers)
    folder = FolderItems(image_folder(data_spec, split, data_dir), imagenet_transform(train, to_uint8=False))
    return _plain_data_loader(folder, batch_size, train, seed, num_workers)


def plain_loader(images: torch.Tensor, labels: torch.Tensor, info: DatasetInfo, batch_size: int, train: bool,
                 seed: int = 0, *, num_workers: int = 4, drop_last: bool = False,
                 persistent_workers: bool = False) -> torch.utils.data.DataLoader:
    """The usual recipe over given uint8 tensors, with `info`'s augmentation and normalisation."""
    from torchvision.transforms import v2

    steps: List[Any] = []
    if train and info.augment == "crop_flip":
        steps += [v2.RandomCrop(info.input_shape[1:], padding=info.crop_padding), v2.RandomHorizontalFlip()]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(info.mean, info.std)]
    dataset = _TransformedTensors(images, labels, v2.Compose(steps))
    return _plain_data_loader(dataset, batch_size, train, seed, num_workers, drop_last, persistent_workers)


def _plain_data_loader(dataset: torch.utils.data.Dataset, batch_size: int, train: bool, seed: int,
                       num_workers: int, drop_last: bool = False,
                       persistent_workers: bool = False) -> torch.utils.data.DataLoader:
    generator = seeded_generator(STREAM_PLAIN_LOADER, integer_at_least("seed", seed, 0))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=train, num_workers=num_workers,
                                       pin_memory=torch.cuda.is_available(), generator=generator,
                                       drop_last=drop_last, persistent_workers=persistent_workers and num_workers > 0)
