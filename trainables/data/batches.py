"""Fast batches of a dataset for training and evaluation, and the per-process caches behind them.

The main path (`TensorBatches`) holds a whole dataset as one uint8 tensor on
the training device and shuffles, augments, converts and normalises every batch
there, with no DataLoader workers: a GPU trial never waits on Python image
code. ImageNet keeps a DataLoader over an ImageFolder tree with worker
processes (`FolderBatches`). Both yield (normalised float32 images, int64
labels) on the device, and an epoch of either is a pure function of (seed, epoch).

A trial calls `train_batches` / `test_batches`; a dataset is read once per
process and moved once per device (`device_tensors`), until `clear_cache`.

A trial on N workers passes `shard=(rank, N)`: `batch_size` stays the global
batch, and rank r gets positions r, r+N, ... of each global batch of the same
(seed, epoch) order (`shard_positions`), so the N ranks together see exactly
the one-worker batches, with the order padded to a multiple of N by wrapping to
its head (as torch's DistributedSampler does) so every rank runs equally many
steps.
"""
from __future__ import annotations

import math
import os
import threading
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torchvision

from common.checks import check_choice, integer_at_least
from trainables.data.augment import (STREAM_EPOCH, CropFlip, Normaliser, crop_flip, derive_seed, draw_crop_flip,
                                     epoch_generator, seeded_generator)
from trainables.data.info import DATASETS, SPLITS, Batch, DatasetInfo, Device, dataset_info, resolve_data_dir
from trainables.data.sources import load_tensors

if TYPE_CHECKING:
    from trainables.specs import DataSpec

DEFAULT_LOADER_WORKERS = 8
# The SynFlow code's ImageNet crop (RandomResizedCrop(224, scale=(0.2, 1.))),
# not torchvision's default (0.08, 1.0): the paper's recipe.
IMAGENET_CROP_SCALE = (0.2, 1.0)


def shard_positions(count: int, batch_size: int, drop_last: bool, shard: Tuple[int, int]) -> List[torch.Tensor]:
    """Rank `shard[0]` of `shard[1]`'s positions (into the epoch's order) in each global batch.

    The order is padded to a multiple of the world size by wrapping to its
    head (at most world - 1 examples seen twice an epoch), so every rank gets
    the same number of batches, none empty: an uneven count would hang DDP.
    """
    rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard rank must be in [0, {world}), got {rank}")
    if batch_size % world:
        raise ValueError(f"the global batch {batch_size} does not split evenly over {world} workers")
    padded = count + (-count) % world
    positions = torch.arange(padded) % count
    batches = padded // batch_size if drop_last else math.ceil(padded / batch_size)
    return [positions[b * batch_size:(b + 1) * batch_size][rank::world] for b in range(batches)]


def canonical_device(device: Device) -> torch.device:
    """`device` with its index filled in, so 'cuda' and 'cuda:0' share one cached copy."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


class TensorBatches:
    """(normalised float32 images, int64 labels) batches of a device-resident uint8 dataset.

    Train: a fresh permutation and crop/flip draw per epoch, all from
    `epoch_generator(seed, epoch)` drawn on the CPU, so the batches are a pure
    function of (seed, epoch) on any device. Test (`train=False`): dataset
    order, no augmentation. Iterating twice yields the same batches.
    """

    def __init__(self, images_u8: torch.Tensor, labels: torch.Tensor, info: DatasetInfo, batch_size: int,
                 device: Device, train: bool, seed: int, epoch: int = 0, drop_last: bool = False,
                 shard: Tuple[int, int] = (0, 1)) -> None:
        if images_u8.dtype != torch.uint8 or images_u8.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images_u8.dtype} {tuple(images_u8.shape)}")
        if labels.shape != (images_u8.shape[0],):
            raise ValueError(f"labels must have shape ({images_u8.shape[0]},), got {tuple(labels.shape)}")
        if not info.tensor_resident:
            raise ValueError(f"dataset {info.name!r} is not tensor-resident; use FolderBatches")
        self.device = canonical_device(device)
        self.images = images_u8.to(self.device)
        self.labels = labels.to(self.device)
        self.info = info
        self.batch_size = integer_at_least("batch_size", batch_size)
        self.train = train
        self.seed = integer_at_least("seed", seed, 0)
        self.epoch = integer_at_least("epoch", epoch, 0)
        self.drop_last = drop_last
        self.shard = shard
        if shard[1] > 1 and not train:
            raise ValueError("only the train split is sharded")
        self._normalise = Normaliser(info, self.device)

    def __len__(self) -> int:
        count = self.images.shape[0] + (-self.images.shape[0]) % self.shard[1]
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        if self.shard[1] > 1:
            yield from self._sharded()
            return
        count = self.images.shape[0]
        order: Optional[torch.Tensor] = None
        params: Optional[CropFlip] = None
        if self.train:
            generator = epoch_generator(self.seed, self.epoch)
            order = torch.randperm(count, generator=generator).to(self.device)
            if self.info.augment == "crop_flip":
                drawn = draw_crop_flip(count, self.info.crop_padding, generator)
                params = CropFlip(*(p.to(self.device) for p in drawn))
        for batch in range(len(self)):
            start, stop = batch * self.batch_size, min((batch + 1) * self.batch_size, count)
            if order is None:
                images, labels = self.images[start:stop], self.labels[start:stop]
            else:
                index = order[start:stop]
                images, labels = self.images[index], self.labels[index]
            if params is not None:
                images = crop_flip(images, self.info.crop_padding, CropFlip(*(p[start:stop] for p in params)))
            yield self._normalise(images), labels

    def _sharded(self) -> Iterator[Batch]:
        """This rank's part of each global batch of the epoch's (seed, epoch) order and crop/flip draw."""
        count = self.images.shape[0]
        generator = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(count, generator=generator).to(self.device)
        params: Optional[CropFlip] = None
        if self.info.augment == "crop_flip":
            params = CropFlip(*(p.to(self.device) for p in draw_crop_flip(count, self.info.crop_padding, generator)))
        for positions in shard_positions(count, self.batch_size, self.drop_last, self.shard):
            positions = positions.to(self.device)
            index = order[positions]
            images, labels = self.images[index], self.labels[index]
            if params is not None:
                images = crop_flip(images, self.info.crop_padding, CropFlip(*(p[positions] for p in params)))
            yield self._normalise(images), labels


def imagenet_transform(train: bool, to_uint8: bool = True) -> Any:
    """The ImageNet transforms: RandomResizedCrop(224, IMAGENET_CROP_SCALE) + flip, or Resize(256) + CenterCrop(224).

    With `to_uint8` the result is a uint8 tensor, normalised later on the
    device (a quarter of the host-to-device traffic of float32).
    """
    from torchvision import transforms

    size = DATASETS["imagenet"].info.input_shape[1]
    steps = ([transforms.RandomResizedCrop(size, scale=IMAGENET_CROP_SCALE), transforms.RandomHorizontalFlip()]
             if train else [transforms.Resize(256), transforms.CenterCrop(size)])
    if to_uint8:
        steps.append(transforms.PILToTensor())
    else:
        info = DATASETS["imagenet"].info
        steps += [transforms.ToTensor(), transforms.Normalize(info.mean, info.std)]
    return transforms.Compose(steps)


class FolderItems(torch.utils.data.Dataset):
    """An ImageFolder's (transformed image, label) items, optionally with per-item seeded randomness.

    With `seed_words`, item i's transform draws from the CPU RNG seeded by
    (seed_words, i) and the caller's RNG is restored afterwards: the augmentation
    of an epoch does not depend on the number of workers or their scheduling.
    """

    def __init__(self, folder: torchvision.datasets.ImageFolder, transform: Any,
                 seed_words: Optional[Tuple[int, ...]] = None, indices: Optional[Sequence[int]] = None) -> None:
        self.folder = folder
        self.transform = transform
        self.seed_words = seed_words
        self.indices = list(range(len(folder))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Tuple[torch.Tensor, int]:
        index = self.indices[position]
        path, label = self.folder.samples[index]
        image = self.folder.loader(path)
        if self.seed_words is None:
            return self.transform(image), label
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(derive_seed(*self.seed_words, index))
            return self.transform(image), label


class FolderBatches:
    """ImageNet batches through a DataLoader with worker processes, same (x, y) contract as TensorBatches.

    Train: the order is a permutation from `epoch_generator(seed, epoch)` and
    each image's crop/flip is seeded by (seed, epoch, image index), so an epoch
    is a pure function of (seed, epoch) whatever `num_workers` is. Workers send
    uint8 images; conversion and normalisation happen on the device.
    """

    def __init__(self, folder: torchvision.datasets.ImageFolder, info: DatasetInfo, batch_size: int, device: Device,
                 train: bool, seed: int, epoch: int = 0, drop_last: bool = False,
                 num_workers: int = DEFAULT_LOADER_WORKERS, shard: Tuple[int, int] = (0, 1)) -> None:
        self.folder = folder
        self.info = info
        self.batch_size = integer_at_least("batch_size", batch_size)
        self.device = canonical_device(device)
        self.train = train
        self.seed = integer_at_least("seed", seed, 0)
        self.epoch = integer_at_least("epoch", epoch, 0)
        self.drop_last = drop_last
        self.num_workers = integer_at_least("num_workers", num_workers, 0)
        self.shard = shard
        if shard[1] > 1 and not train:
            raise ValueError("only the train split is sharded")
        self._normalise = Normaliser(info, self.device)

    def __len__(self) -> int:
        count = len(self.folder) + (-len(self.folder)) % self.shard[1]
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        if self.train:
            generator = epoch_generator(self.seed, self.epoch)
            order: Optional[List[int]] = torch.randperm(len(self.folder), generator=generator).tolist()
            items = FolderItems(self.folder, imagenet_transform(True), (STREAM_EPOCH, self.seed, self.epoch))
        else:
            generator, order = seeded_generator(STREAM_EPOCH, 0, 0), None
            items = FolderItems(self.folder, imagenet_transform(False))
        if self.shard[1] > 1:
            assert order is not None
            batches = [[order[p] for p in positions.tolist()]
                       for positions in shard_positions(len(order), self.batch_size, self.drop_last, self.shard)]
            loader = torch.utils.data.DataLoader(
                items, batch_sampler=batches, num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                generator=generator)
        else:
            loader = torch.utils.data.DataLoader(
                items, batch_size=self.batch_size, sampler=order, num_workers=self.num_workers,
                pin_memory=self.device.type == "cuda", drop_last=self.drop_last,
                generator=generator,  # workers' base seed comes from here, not the trainer's global RNG
            )
        for images, labels in loader:
            images = images.to(self.device, non_blocking=True)
            yield self._normalise(images), labels.to(self.device, non_blocking=True)


_cache_lock = threading.Lock()
_host_tensors: Dict[tuple, Batch] = {}
_device_tensors: Dict[tuple, Batch] = {}
_image_folders: Dict[tuple, torchvision.datasets.ImageFolder] = {}


def clear_cache() -> None:
    """Forget every loaded dataset (host and device copies, ImageFolder scans).

    Ray reuses worker processes across trials; call this between trials of
    different datasets to give the memory back.
    """
    with _cache_lock:
        _host_tensors.clear()
        _device_tensors.clear()
        _image_folders.clear()


def _cache_key(data_spec: DataSpec, split: str, data_dir: Any, info: DatasetInfo) -> tuple:
    return (data_spec.name, split, str(resolve_data_dir(data_dir)), info.input_shape, info.num_classes,
            data_spec.size)


def device_tensors(data_spec: DataSpec, split: str, data_dir: Optional[Union[str, os.PathLike]], device: Device, *,
                   download: bool = True) -> Batch:
    """A split's uint8 images and labels on `device`: read once per process, moved once per device."""
    info = dataset_info(data_spec)
    key = _cache_key(data_spec, split, data_dir, info)
    device = canonical_device(device)
    with _cache_lock:
        on_device = _device_tensors.get(key + (str(device),))
        if on_device is None:
            host = _host_tensors.get(key)
            if host is None:
                host = load_tensors(data_spec, split, data_dir, download)
                _host_tensors[key] = host
            on_device = (host[0].to(device), host[1].to(device))
            _device_tensors[key + (str(device),)] = on_device
    return on_device


def image_folder(data_spec: DataSpec, split: str, data_dir: Optional[Union[str, os.PathLike]] = None,
                 ) -> torchvision.datasets.ImageFolder:
    """The (cached) ImageFolder scan of a folder dataset's split."""
    check_choice("split", split, SPLITS)
    root = resolve_data_dir(data_dir)
    key = (data_spec.name, split, str(root))
    with _cache_lock:
        folder = _image_folders.get(key)
        if folder is None:
            folder = DATASETS[data_spec.name].image_folder(split, root)
            _image_folders[key] = folder
    return folder


def train_batches(data_spec: DataSpec, data_dir: Optional[Union[str, os.PathLike]], batch_size: int,
                  device: Device, seed: int, epoch: int, *, download: bool = True, drop_last: bool = False,
                  num_workers: int = DEFAULT_LOADER_WORKERS, shard: Tuple[int, int] = (0, 1),
                  ) -> Union[TensorBatches, FolderBatches]:
    """Epoch `epoch` of the train split: shuffled and augmented, a pure function of (seed, epoch); with `shard`
    (rank, world size) this rank's part of every global batch of `batch_size`.

    `num_workers` only matters for ImageNet (DataLoader workers).
    """
    info = dataset_info(data_spec)
    if not info.tensor_resident:
        return FolderBatches(image_folder(data_spec, "train", data_dir), info, batch_size, device, True, seed, epoch,
                             drop_last, num_workers, shard)
    images, labels = device_tensors(data_spec, "train", data_dir, device, download=download)
    return TensorBatches(images, labels, info, batch_size, device, True, seed, epoch, drop_last, shard)


def test_batches(data_spec: DataSpec, data_dir: Optional[Union[str, os.PathLike]], batch_size: int,
                 device: Device, *, download: bool = True,
                 num_workers: int = DEFAULT_LOADER_WORKERS) -> Union[TensorBatches, FolderBatches]:
    """The test split (Tiny-ImageNet's and ImageNet's val), in order, unaugmented, every example once."""
    info = dataset_info(data_spec)
    if not info.tensor_resident:
        return FolderBatches(image_folder(data_spec, "test", data_dir), info, batch_size, device, False, 0, 0,
                             False, num_workers)
    images, labels = device_tensors(data_spec, "test", data_dir, device, download=download)
    return TensorBatches(images, labels, info, batch_size, device, False, 0, 0, False)


test_batches.__test__ = False  # not a pytest test when imported into a test module
