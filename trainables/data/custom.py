"""A researcher's own dataset, registered with one decorator: the public plugin API.

    from trainables.data import dataset

    @dataset("my_data", input_shape=(3, 32, 32), num_classes=10,
             mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), augment="crop_flip", crop_padding=4)
    def my_data(split, root):
        ...  # read files under `root` (the trial's --data-dir)
        return images, labels  # uint8 (N, C, H, W) and int64 (N,), on the CPU

It is then held on the training device and batched, augmented and normalised
like the built-in tensor datasets (see `trainables.data.batches`).
"""
from __future__ import annotations

import pathlib
from typing import Callable, Sequence, Tuple

import torch

from trainables.data.info import DATASETS, Batch, DatasetInfo
from trainables.data.sources import DatasetSource

Loader = Callable[[str, pathlib.Path], Tuple[torch.Tensor, torch.Tensor]]


class FunctionSource(DatasetSource):
    """A tensor dataset read by a plain function of (split, data root)."""

    def __init__(self, info: DatasetInfo, loader: Loader) -> None:
        super().__init__(info)
        self.loader = loader

    def load(self, split, root, download, info, size) -> Batch:
        images, labels = self.loader(split, root)
        images, labels = torch.as_tensor(images), torch.as_tensor(labels)
        expected = tuple(info.input_shape)
        if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"dataset {info.name!r}: the loader must return uint8 images of shape (N, "
                             f"{', '.join(map(str, expected))}), got {images.dtype} {tuple(images.shape)}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"dataset {info.name!r}: the loader must return one label per image, got "
                             f"{tuple(labels.shape)} labels for {len(images)} images")
        labels = labels.to(torch.int64)
        if len(labels) and not (0 <= int(labels.min()) and int(labels.max()) < info.num_classes):
            raise ValueError(f"dataset {info.name!r}: labels must lie in [0, {info.num_classes}), got "
                             f"{int(labels.min())}..{int(labels.max())}")
        return images.contiguous(), labels


def dataset(name: str, *, input_shape: Sequence[int], num_classes: int, mean: Sequence[float],
            std: Sequence[float], augment: str = "none", crop_padding: int = 0) -> Callable[[Loader], Loader]:
    """Register the decorated loader `(split, root) -> (uint8 images, int64 labels)` as dataset `name`."""
    info = DatasetInfo(name, tuple(int(s) for s in input_shape), int(num_classes), tuple(mean), tuple(std),
                       augment, True, int(crop_padding))

    def add(loader: Loader) -> Loader:
        DATASETS.register(name)(FunctionSource(info, loader))
        return loader
    return add
