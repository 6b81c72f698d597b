"""Datasets for the sweep: what they look like without loading them, and fast batches of them.

Every dataset but ImageNet is small enough to hold whole as one uint8 tensor
(N, C, H, W) plus int64 labels. The main path (`TensorBatches`) moves that
tensor to the training device once and shuffles, augments (random crop with
zero padding + horizontal flip, the paper's CIFAR / Tiny-ImageNet recipe),
converts and normalises every batch on the device, with no DataLoader workers:
a GPU trial never waits on Python image code. ImageNet keeps a DataLoader over
an ImageFolder tree with worker processes (`FolderBatches`).

All randomness of an epoch (order, crop offsets, flips) comes from a generator
seeded from (seed, epoch) and drawn on the CPU, so an epoch's batches are a pure
function of (seed, epoch), identical on every device and after a resume.

`dataset_info` never touches the disk, so a prune-only trial of a data-free
algorithm (SynFlow, magnitude, random) needs no downloaded data.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import pathlib
import socket
import tarfile
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from filelock import FileLock

from trainables.registry import Registry

log = logging.getLogger(__name__)

DATA_DIR_ENV = "PRUNE_SWEEP_DATA"
DEFAULT_DATA_DIR = "data"
SPLITS = ("train", "test")
AUGMENTATIONS = ("crop_flip", "none", "imagenet")
# Per blocking socket operation, not per download: a refused or black-holed
# network fails in this long instead of hanging a trial forever.
DOWNLOAD_SOCKET_TIMEOUT_S = 60.0
DEFAULT_LOADER_WORKERS = 8
# The SynFlow code's ImageNet crop (RandomResizedCrop(224, scale=(0.2, 1.))),
# not torchvision's default (0.08, 1.0): the paper's recipe.
IMAGENET_CROP_SCALE = (0.2, 1.0)
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINY_IMAGENET_FOLDER = "tiny-imagenet-200"
_TINY_CACHE_FORMAT = 1
SYNTHETIC_TRAIN_SIZE = 512
_SYNTHETIC_SEED = 20200611  # fixed: synthetic data is the same in every process
# Independent random streams drawn from one trial seed.
_STREAM_EPOCH = 0
_STREAM_PRUNING = 1
_STREAM_PLAIN_LOADER = 2

Device = Union[str, torch.device]
Batch = Tuple[torch.Tensor, torch.Tensor]


class DatasetMissingError(FileNotFoundError):
    """A dataset is not on disk and could not be downloaded; the message says where and how to get it."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a trial need to know about a dataset, without loading it.

    `augment` is the training augmentation: "crop_flip" (random crop with
    `crop_padding` zero pixels each side + horizontal flip), "none", or
    "imagenet" (RandomResizedCrop + flip in DataLoader workers).
    `tensor_resident` is False only for ImageNet, which is read from disk.
    """

    name: str
    input_shape: Tuple[int, int, int]
    num_classes: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    augment: str
    tensor_resident: bool
    crop_padding: int

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augment {self.augment!r}; valid augments: {', '.join(AUGMENTATIONS)}")
        channels = self.input_shape[0]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(
                f"mean/std of {self.name!r} need {channels} values (one per channel), "
                f"got {len(self.mean)} and {len(self.std)}"
            )


def _check_choice(what: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; valid {what}s: {', '.join(map(str, choices))}")


def _check_int_at_least(what: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def resolve_data_dir(data_dir: Optional[Union[str, os.PathLike]] = None) -> pathlib.Path:
    """The data root: the option if given, else $PRUNE_SWEEP_DATA, else ./data; made absolute.

    Absolute, because Ray may run a trial in another working directory than the driver's.
    """
    if data_dir is not None and str(data_dir) != "":
        chosen = str(data_dir)
    elif os.environ.get(DATA_DIR_ENV):
        chosen = os.environ[DATA_DIR_ENV]
    else:
        chosen = DEFAULT_DATA_DIR
    return pathlib.Path(chosen).expanduser().absolute()


def _lock_path(root: pathlib.Path, name: str) -> pathlib.Path:
    return root / f".{name}.lock"


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


# What a failed download can raise: network errors are OSError (URLError,
# timeouts), torchvision wraps some in RuntimeError (including md5 mismatches),
# and a truncated archive fails to extract.
_DOWNLOAD_ERRORS = (OSError, RuntimeError, tarfile.TarError, zipfile.BadZipFile)


def _missing(name: str, directory: pathlib.Path, how_to_get: str, cause: Optional[BaseException] = None,
             ) -> DatasetMissingError:
    reason = f" (download failed: {type(cause).__name__}: {cause})" if cause is not None else ""
    return DatasetMissingError(f"dataset {name!r} not found in {directory}{reason}; {how_to_get}")


# ----------------------------------------------------------------------------------------------
# Sources: one object per dataset, in the DATASETS registry.
# ----------------------------------------------------------------------------------------------


class DatasetSource:
    """How one dataset is described and read from the data root."""

    accepts_overrides = False  # only synthetic takes input_shape / num_classes / size

    def __init__(self, info: DatasetInfo) -> None:
        self.info = info

    def describe(self, input_shape: Optional[Sequence[int]] = None,
                 num_classes: Optional[int] = None) -> DatasetInfo:
        if input_shape is not None or num_classes is not None:
            raise ValueError(
                f"input_shape/num_classes can only be set for dataset 'synthetic', not {self.info.name!r}"
            )
        return self.info

    def load(self, split: str, root: pathlib.Path, download: bool, info: DatasetInfo,
             size: Optional[int]) -> Batch:
        """The split as uint8 (N, C, H, W) images and int64 labels on the CPU."""
        raise ValueError(
            f"dataset {self.info.name!r} is read from disk batch by batch, not held as tensors; "
            f"use train_batches / test_batches / pruning_batches"
        )

    def image_folder(self, split: str, root: pathlib.Path) -> torchvision.datasets.ImageFolder:
        raise ValueError(f"dataset {self.info.name!r} is not an image-folder dataset")


class TorchvisionSource(DatasetSource):
    """A dataset torchvision downloads and parses (MNIST, CIFAR-10, CIFAR-100).

    Loading first tries the files already there without any lock (works on a
    read-only shared data directory); only a download takes the file lock, so
    trials starting together on one node download once and never see a
    half-written archive.
    """

    def __init__(self, info: DatasetInfo, dataset_class: type, folder: str) -> None:
        super().__init__(info)
        self.dataset_class = dataset_class
        self.folder = folder

    def _how_to_get(self, root: pathlib.Path) -> str:
        return (
            f"it downloads there by itself when the machine can reach the internet (download=True); "
            f"otherwise copy {self.folder}/ from a machine that has it into {root}, "
            f"or point --data-dir / ${DATA_DIR_ENV} at a directory that holds it"
        )

    def open(self, split: str, root: pathlib.Path, download: bool) -> Any:
        train = split == "train"
        try:
            return self.dataset_class(str(root), train=train, download=False)
        except RuntimeError as absent:  # torchvision: "Dataset not found or corrupted"
            if not download:
                raise _missing(self.info.name, root / self.folder,
                               f"download=False, so nothing was fetched; {self._how_to_get(root)}") from absent
        try:
            root.mkdir(parents=True, exist_ok=True)
            with FileLock(str(_lock_path(root, self.info.name))), _socket_timeout(DOWNLOAD_SOCKET_TIMEOUT_S):
                return self.dataset_class(str(root), train=train, download=True)
        except _DOWNLOAD_ERRORS as err:
            raise _missing(self.info.name, root / self.folder, self._how_to_get(root), cause=err) from err

    def load(self, split, root, download, info, size):
        dataset = self.open(split, root, download)
        images = torch.as_tensor(np.asarray(dataset.data))
        if images.ndim == 3:  # MNIST: (N, H, W)
            images = images.unsqueeze(1)
        else:  # CIFAR: (N, H, W, C) numpy
            images = images.permute(0, 3, 1, 2)
        labels = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)
        return images.contiguous(), labels


class TinyImageNetSource(DatasetSource):
    """Tiny-ImageNet-200 from its zip's folder layout; the 'test' split is its labelled 'val' folder.

    Class index = position in sorted wnids.txt. Decoding 110k JPEGs takes a
    minute, so the decoded uint8 tensors are cached next to the images
    (`.cache_<split>.pt`, written atomically under the file lock) and later
    trials load the cache in a second. Delete the cache files if the images change.
    """

    def _how_to_get(self, root: pathlib.Path) -> str:
        return (
            f"it downloads there by itself when the machine can reach the internet (download=True); "
            f"otherwise unzip {TINY_IMAGENET_URL} into {root} so that {root / TINY_IMAGENET_FOLDER}/wnids.txt "
            f"exists, or point --data-dir / ${DATA_DIR_ENV} at a directory that holds it"
        )

    @staticmethod
    def _split_present(base: pathlib.Path, split: str) -> bool:
        needed = base / "train" if split == "train" else base / "val" / "val_annotations.txt"
        return (base / "wnids.txt").is_file() and needed.exists()

    def _ensure_tree(self, split: str, root: pathlib.Path, download: bool) -> pathlib.Path:
        base = root / TINY_IMAGENET_FOLDER
        if self._split_present(base, split):
            return base
        if not download:
            raise _missing(self.info.name, base, f"download=False, so nothing was fetched; {self._how_to_get(root)}")
        try:
            root.mkdir(parents=True, exist_ok=True)
            with FileLock(str(_lock_path(root, self.info.name))), _socket_timeout(DOWNLOAD_SOCKET_TIMEOUT_S):
                if not self._split_present(base, split):
                    from torchvision.datasets.utils import download_and_extract_archive

                    download_and_extract_archive(TINY_IMAGENET_URL, str(root), md5=TINY_IMAGENET_MD5)
        except _DOWNLOAD_ERRORS as err:
            raise _missing(self.info.name, base, self._how_to_get(root), cause=err) from err
        if not self._split_present(base, split):
            raise _missing(self.info.name, base, f"the downloaded archive lacks it; {self._how_to_get(root)}")
        return base

    @staticmethod
    def _read_cache(path: pathlib.Path) -> Optional[Batch]:
        if not path.is_file():
            return None
        cached = torch.load(path, weights_only=True)
        if cached.get("format") != _TINY_CACHE_FORMAT:
            return None
        return cached["images"], cached["labels"]

    @staticmethod
    def _labelled_files(base: pathlib.Path, split: str) -> Tuple[List[pathlib.Path], List[int]]:
        wnids = [line.strip() for line in (base / "wnids.txt").read_text().splitlines() if line.strip()]
        class_index = {wnid: i for i, wnid in enumerate(sorted(wnids))}
        paths: List[pathlib.Path] = []
        labels: List[int] = []
        if split == "train":
            for wnid in sorted(class_index):
                found = sorted((base / "train" / wnid / "images").glob("*.JPEG"))
                paths += found
                labels += [class_index[wnid]] * len(found)
        else:
            annotations = base / "val" / "val_annotations.txt"
            for line_number, line in enumerate(annotations.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                fields = line.split("\t")
                if len(fields) < 2 or fields[1] not in class_index:
                    raise ValueError(f"{annotations}:{line_number}: expected 'file<TAB>wnid...' with a wnid "
                                     f"from wnids.txt, got {line!r}")
                paths.append(base / "val" / "images" / fields[0])
                labels.append(class_index[fields[1]])
        return paths, labels

    def _decode(self, paths: List[pathlib.Path]) -> torch.Tensor:
        from PIL import Image

        height, width = self.info.input_shape[1:]

        def read(path: pathlib.Path) -> np.ndarray:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            if pixels.shape != (height, width, 3):
                raise ValueError(f"{path}: expected a {width}x{height} image, got {pixels.shape[1]}x{pixels.shape[0]}")
            return pixels

        images = np.empty((len(paths), height, width, 3), dtype=np.uint8)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for i, pixels in enumerate(pool.map(read, paths)):
                images[i] = pixels
        return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()

    def load(self, split, root, download, info, size):
        base = root / TINY_IMAGENET_FOLDER
        cache = base / f".cache_{split}.pt"
        cached = self._read_cache(cache)
        if cached is not None:
            return cached
        base = self._ensure_tree(split, root, download)
        try:
            lock: Any = FileLock(str(_lock_path(root, self.info.name)))
            lock.acquire()
        except OSError:  # read-only data directory: decode without caching
            lock = None
        try:
            cached = self._read_cache(cache)  # another trial may have decoded it while we waited
            if cached is not None:
                return cached
            paths, labels = self._labelled_files(base, split)
            log.info("decoding %d %s images of %s from %s", len(paths), split, self.info.name, base)
            images = self._decode(paths)
            label_tensor = torch.tensor(labels, dtype=torch.int64)
            if lock is not None:
                partial = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
                try:
                    torch.save({"format": _TINY_CACHE_FORMAT, "images": images, "labels": label_tensor}, partial)
                    os.replace(partial, cache)
                except OSError as err:
                    log.warning("could not cache decoded %s at %s: %s", self.info.name, cache, err)
                    partial.unlink(missing_ok=True)
            return images, label_tensor
        finally:
            if lock is not None:
                lock.release()


class ImageNetSource(DatasetSource):
    """ILSVRC-2012 as ImageFolder trees `<root>/imagenet/{train,val}/<class>/*.JPEG` ('test' reads val)."""

    folder = "imagenet"

    def image_folder(self, split, root):
        directory = root / self.folder / ("train" if split == "train" else "val")
        how_to_get = (
            "ImageNet cannot be downloaded automatically (its licence needs a sign-in at image-net.org); "
            "put ILSVRC-2012 train/ and val/ there as one sub-folder of images per class "
            "(the usual 'valprep' layout for val), or point --data-dir / "
            f"${DATA_DIR_ENV} at a directory holding imagenet/"
        )
        if not directory.is_dir():
            raise _missing(self.info.name, directory, how_to_get)
        try:
            return torchvision.datasets.ImageFolder(str(directory))
        except FileNotFoundError as err:  # no class folders / no images
            raise _missing(self.info.name, directory, f"{err}; {how_to_get}") from err


class DigitsSource(DatasetSource):
    """scikit-learn's bundled 8x8 digits (1,797 images, works offline), with a fixed stratified split.

    Pixel values 0..16 are scaled to uint8 by round(v * 255 / 16); the split is
    `train_test_split(test_size=0.25, stratify=y, random_state=0)`: 1,347 train, 450 test.
    """

    def load(self, split, root, download, info, size):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
        x_train, x_test, y_train, y_test = train_test_split(
            images, digits.target, test_size=0.25, stratify=digits.target, random_state=0
        )
        x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.as_tensor(y, dtype=torch.int64)


class SyntheticSource(DatasetSource):
    """Deterministic random images of any shape and class count, the same in every process.

    Each class has a fixed random prototype image; an example is the mean of its
    class prototype and uniform noise, so a model can learn the labels. `size`
    is the train size (default 512); the test split has size // 2 (at least 1).
    """

    accepts_overrides = True

    def describe(self, input_shape=None, num_classes=None):
        shape = self.info.input_shape if input_shape is None else tuple(input_shape)
        if len(shape) != 3:
            raise ValueError(f"input_shape of 'synthetic' must be (channels, height, width), got {input_shape!r}")
        shape = tuple(_check_int_at_least("input_shape entry", s) for s in shape)
        classes = self.info.num_classes if num_classes is None else _check_int_at_least("num_classes", num_classes, 2)
        channels = shape[0]
        return DatasetInfo(
            name=self.info.name, input_shape=shape, num_classes=classes,
            mean=(self.info.mean[0],) * channels, std=(self.info.std[0],) * channels,
            augment=self.info.augment, tensor_resident=True, crop_padding=self.info.crop_padding,
        )

    def load(self, split, root, download, info, size):
        train_size = SYNTHETIC_TRAIN_SIZE if size is None else _check_int_at_least("size", size)
        count = train_size if split == "train" else max(1, train_size // 2)
        shape = info.input_shape
        prototypes = torch.randint(0, 256, (info.num_classes, *shape), dtype=torch.int16,
                                   generator=_seeded_generator(_SYNTHETIC_SEED, *shape, info.num_classes))
        draw = _seeded_generator(_SYNTHETIC_SEED, SPLITS.index(split), *shape, info.num_classes, count)
        labels = (torch.arange(count) % info.num_classes)[torch.randperm(count, generator=draw)]
        noise = torch.randint(0, 256, (count, *shape), dtype=torch.int16, generator=draw)
        images = ((prototypes[labels] + noise) // 2).to(torch.uint8)
        return images, labels


DATASETS: Registry[DatasetSource] = Registry("dataset")

DATASETS.register("mnist")(TorchvisionSource(
    DatasetInfo("mnist", (1, 28, 28), 10, (0.1307,), (0.3081,), "none", True, 0),
    torchvision.datasets.MNIST, "MNIST",
))
DATASETS.register("cifar10")(TorchvisionSource(
    DatasetInfo("cifar10", (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                "crop_flip", True, 4),
    torchvision.datasets.CIFAR10, "cifar-10-batches-py",
))
DATASETS.register("cifar100")(TorchvisionSource(
    DatasetInfo("cifar100", (3, 32, 32), 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                "crop_flip", True, 4),
    torchvision.datasets.CIFAR100, "cifar-100-python",
))
# Padding 4 at 64x64, as the SynFlow code does (get_transform(size=64, padding=4)).
DATASETS.register("tiny_imagenet")(TinyImageNetSource(
    DatasetInfo("tiny_imagenet", (3, 64, 64), 200, (0.480, 0.448, 0.398), (0.277, 0.269, 0.282),
                "crop_flip", True, 4),
))
DATASETS.register("imagenet")(ImageNetSource(
    DatasetInfo("imagenet", (3, 224, 224), 1000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                "imagenet", False, 0),
))
# mean/std: the 1,347-image train split, after scaling to 0..255.
DATASETS.register("digits")(DigitsSource(
    DatasetInfo("digits", (1, 8, 8), 10, (0.3053,), (0.3758,), "none", True, 0),
))
# mean/std: exact moments of (prototype + noise) // 2 for two uniform 0..255 draws.
DATASETS.register("synthetic")(SyntheticSource(
    DatasetInfo("synthetic", (3, 32, 32), 10, (0.4990,) * 3, (0.2049,) * 3, "none", True, 0),
))


def dataset_info(name: str, input_shape: Optional[Sequence[int]] = None,
                 num_classes: Optional[int] = None) -> DatasetInfo:
    """A dataset's shape, classes and normalisation, without reading any file.

    `input_shape` (C, H, W) and `num_classes` may only be given for 'synthetic'.
    """
    return DATASETS[name].describe(input_shape, num_classes)


def load_tensors(name: str, split: str, data_dir: Optional[Union[str, os.PathLike]] = None,
                 download: bool = True, input_shape: Optional[Sequence[int]] = None,
                 num_classes: Optional[int] = None, size: Optional[int] = None) -> Batch:
    """A whole split as uint8 (N, C, H, W) CPU images and int64 labels, read afresh (no cache).

    Raises DatasetMissingError when the data is absent and cannot be downloaded,
    ValueError for ImageNet (read batch by batch instead) or a bad split / override.
    """
    source = DATASETS[name]
    _check_choice("split", split, SPLITS)
    info = source.describe(input_shape, num_classes)
    if size is not None and not source.accepts_overrides:
        raise ValueError(f"size can only be set for dataset 'synthetic', not {name!r}")
    images, labels = source.load(split, resolve_data_dir(data_dir), download, info, size)
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != info.input_shape:
        raise ValueError(f"{name} {split}: expected uint8 images of shape (N, *{info.input_shape}), "
                         f"got {images.dtype} {tuple(images.shape)}")
    if labels.shape != (images.shape[0],) or (labels.numel() and not 0 <= int(labels.min()) <= int(labels.max())
                                              < info.num_classes):
        raise ValueError(f"{name} {split}: labels must be {images.shape[0]} class indices in "
                         f"[0, {info.num_classes}), got shape {tuple(labels.shape)}")
    return images, labels.to(torch.int64)


# ----------------------------------------------------------------------------------------------
# Randomness, augmentation, normalisation
# ----------------------------------------------------------------------------------------------


def derive_seed(*words: int) -> int:
    """A 63-bit seed that mixes all `words` (non-negative ints); distinct tuples give unrelated streams."""
    state = np.random.SeedSequence([int(w) for w in words]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _seeded_generator(*words: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(derive_seed(*words))
    return generator


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator an epoch's order and augmentation are drawn from."""
    seed = _check_int_at_least("seed", seed, 0)
    return _seeded_generator(_STREAM_EPOCH, seed, _check_int_at_least("epoch", epoch, 0))


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


def augment_batch(images: torch.Tensor, info: DatasetInfo, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding + horizontal flip per example (for 'crop_flip' datasets), on images' device.

    Works on uint8 or float images; pass uint8 to pad with true black as
    torchvision does before normalising. Datasets without augmentation come back unchanged.
    """
    if info.augment != "crop_flip":
        return images
    return crop_flip(images, info.crop_padding, draw_crop_flip(images.shape[0], info.crop_padding, generator))


class Normaliser:
    """uint8 0..255 images -> float32 (x / 255 - mean) / std, on the images' device."""

    def __init__(self, info: DatasetInfo, device: Device) -> None:
        shape = (1, len(info.mean), 1, 1)
        self.offset = torch.tensor([255.0 * m for m in info.mean], device=device).view(shape)
        self.scale = torch.tensor([1.0 / (255.0 * s) for s in info.std], device=device).view(shape)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.to(torch.float32) - self.offset) * self.scale


def normalise(images: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """uint8 images -> normalised float32, for one-off use (TensorBatches keeps its constants)."""
    return Normaliser(info, images.device)(images)


def canonical_device(device: Device) -> torch.device:
    """`device` with its index filled in, so 'cuda' and 'cuda:0' share one cached copy."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


# ----------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------


class TensorBatches:
    """(normalised float32 images, int64 labels) batches of a device-resident uint8 dataset.

    Train: a fresh permutation and crop/flip draw per epoch, all from
    `epoch_generator(seed, epoch)` drawn on the CPU, so the batches are a pure
    function of (seed, epoch) on any device. Test (`train=False`): dataset
    order, no augmentation. Iterating twice yields the same batches.
    """

    def __init__(self, images_u8: torch.Tensor, labels: torch.Tensor, info: DatasetInfo, batch_size: int,
                 device: Device, train: bool, seed: int, epoch: int = 0, drop_last: bool = False) -> None:
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
        self.batch_size = _check_int_at_least("batch_size", batch_size)
        self.train = train
        self.seed = _check_int_at_least("seed", seed, 0)
        self.epoch = _check_int_at_least("epoch", epoch, 0)
        self.drop_last = drop_last
        self._normalise = Normaliser(info, self.device)

    def __len__(self) -> int:
        count = self.images.shape[0]
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
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
                 num_workers: int = DEFAULT_LOADER_WORKERS) -> None:
        self.folder = folder
        self.info = info
        self.batch_size = _check_int_at_least("batch_size", batch_size)
        self.device = canonical_device(device)
        self.train = train
        self.seed = _check_int_at_least("seed", seed, 0)
        self.epoch = _check_int_at_least("epoch", epoch, 0)
        self.drop_last = drop_last
        self.num_workers = _check_int_at_least("num_workers", num_workers, 0)
        self._normalise = Normaliser(info, self.device)

    def __len__(self) -> int:
        count = len(self.folder)
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        if self.train:
            generator = epoch_generator(self.seed, self.epoch)
            order: Optional[List[int]] = torch.randperm(len(self.folder), generator=generator).tolist()
            items = FolderItems(self.folder, imagenet_transform(True), (_STREAM_EPOCH, self.seed, self.epoch))
        else:
            generator, order = _seeded_generator(_STREAM_EPOCH, 0, 0), None
            items = FolderItems(self.folder, imagenet_transform(False))
        loader = torch.utils.data.DataLoader(
            items, batch_size=self.batch_size, sampler=order, num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda", drop_last=self.drop_last,
            generator=generator,  # workers' base seed comes from here, not the trainer's global RNG
        )
        for images, labels in loader:
            images = images.to(self.device, non_blocking=True)
            yield self._normalise(images), labels.to(self.device, non_blocking=True)


# ----------------------------------------------------------------------------------------------
# Per-process caches and the functions a trial calls
# ----------------------------------------------------------------------------------------------

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


def _cache_key(name: str, split: str, data_dir: Any, info: DatasetInfo, size: Optional[int]) -> tuple:
    return (name, split, str(resolve_data_dir(data_dir)), info.input_shape, info.num_classes, size)


def device_tensors(name: str, split: str, data_dir: Optional[Union[str, os.PathLike]], device: Device, *,
                   download: bool = True, input_shape: Optional[Sequence[int]] = None,
                   num_classes: Optional[int] = None, size: Optional[int] = None) -> Batch:
    """A split's uint8 images and labels on `device`: read once per process, moved once per device."""
    info = dataset_info(name, input_shape, num_classes)
    key = _cache_key(name, split, data_dir, info, size)
    device = canonical_device(device)
    with _cache_lock:
        on_device = _device_tensors.get(key + (str(device),))
        if on_device is None:
            host = _host_tensors.get(key)
            if host is None:
                host = load_tensors(name, split, data_dir, download, input_shape, num_classes, size)
                _host_tensors[key] = host
            on_device = (host[0].to(device), host[1].to(device))
            _device_tensors[key + (str(device),)] = on_device
    return on_device


def image_folder(name: str, split: str, data_dir: Optional[Union[str, os.PathLike]] = None,
                 ) -> torchvision.datasets.ImageFolder:
    """The (cached) ImageFolder scan of a folder dataset's split."""
    _check_choice("split", split, SPLITS)
    root = resolve_data_dir(data_dir)
    key = (name, split, str(root))
    with _cache_lock:
        folder = _image_folders.get(key)
        if folder is None:
            folder = DATASETS[name].image_folder(split, root)
            _image_folders[key] = folder
    return folder


def train_batches(name: str, data_dir: Optional[Union[str, os.PathLike]], batch_size: int, device: Device,
                  seed: int, epoch: int, *, download: bool = True, input_shape: Optional[Sequence[int]] = None,
                  num_classes: Optional[int] = None, size: Optional[int] = None, drop_last: bool = False,
                  num_workers: int = DEFAULT_LOADER_WORKERS) -> Union[TensorBatches, FolderBatches]:
    """Epoch `epoch` of the train split: shuffled and augmented, a pure function of (seed, epoch).

    `num_workers` only matters for ImageNet (DataLoader workers).
    """
    info = dataset_info(name, input_shape, num_classes)
    if not info.tensor_resident:
        return FolderBatches(image_folder(name, "train", data_dir), info, batch_size, device, True, seed, epoch,
                             drop_last, num_workers)
    images, labels = device_tensors(name, "train", data_dir, device, download=download, input_shape=input_shape,
                                    num_classes=num_classes, size=size)
    return TensorBatches(images, labels, info, batch_size, device, True, seed, epoch, drop_last)


def test_batches(name: str, data_dir: Optional[Union[str, os.PathLike]], batch_size: int, device: Device, *,
                 download: bool = True, input_shape: Optional[Sequence[int]] = None,
                 num_classes: Optional[int] = None, size: Optional[int] = None,
                 num_workers: int = DEFAULT_LOADER_WORKERS) -> Union[TensorBatches, FolderBatches]:
    """The test split (Tiny-ImageNet's and ImageNet's val), in order, unaugmented, every example once."""
    info = dataset_info(name, input_shape, num_classes)
    if not info.tensor_resident:
        return FolderBatches(image_folder(name, "test", data_dir), info, batch_size, device, False, 0, 0,
                             False, num_workers)
    images, labels = device_tensors(name, "test", data_dir, device, download=download, input_shape=input_shape,
                                    num_classes=num_classes, size=size)
    return TensorBatches(images, labels, info, batch_size, device, False, 0, 0, False)


test_batches.__test__ = False  # not a pytest test when imported into a test module


def class_balanced_indices(labels: torch.Tensor, num_classes: int, per_class: int,
                           generator: torch.Generator) -> torch.Tensor:
    """`per_class` random indices of each class (all of a class that has fewer), in a random order."""
    per_class = _check_int_at_least("examples_per_class", per_class)
    labels = labels.cpu()
    chosen = []
    for label in range(num_classes):
        members = torch.nonzero(labels == label).flatten()
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:per_class]])
    indices = torch.cat(chosen)
    return indices[torch.randperm(indices.numel(), generator=generator)]


def pruning_batches(name: str, data_dir: Optional[Union[str, os.PathLike]], examples_per_class: int,
                    batch_size: int, device: Device, seed: int, *, download: bool = True,
                    input_shape: Optional[Sequence[int]] = None, num_classes: Optional[int] = None,
                    size: Optional[int] = None, num_workers: int = DEFAULT_LOADER_WORKERS) -> List[Batch]:
    """The examples data-driven scorers (SNIP, GraSP) see: class-balanced, from the train split, unaugmented.

    `examples_per_class` examples of every class, chosen by `seed`, shuffled
    together and cut into batches of `batch_size`, normalised, on `device`. A
    class with fewer train examples contributes all it has, so the total is
    examples_per_class * num_classes only when every class has enough.
    ImageNet examples get the test transform (Resize 256 + CenterCrop 224).
    """
    info = dataset_info(name, input_shape, num_classes)
    batch_size = _check_int_at_least("batch_size", batch_size)
    generator = _seeded_generator(_STREAM_PRUNING, _check_int_at_least("seed", seed, 0))
    device = canonical_device(device)
    normaliser = Normaliser(info, device)
    if not info.tensor_resident:
        folder = image_folder(name, "train", data_dir)
        chosen = class_balanced_indices(torch.tensor(folder.targets), info.num_classes, examples_per_class, generator)
        loader = torch.utils.data.DataLoader(
            FolderItems(folder, imagenet_transform(False), indices=chosen.tolist()), batch_size=batch_size,
            num_workers=_check_int_at_least("num_workers", num_workers, 0), pin_memory=device.type == "cuda",
            generator=_seeded_generator(_STREAM_PRUNING, seed, 1),  # leave the trainer's global RNG alone
        )
        return [(normaliser(x.to(device)), y.to(device)) for x, y in loader]
    images, labels = device_tensors(name, "train", data_dir, device, download=download, input_shape=input_shape,
                                    num_classes=num_classes, size=size)
    chosen = class_balanced_indices(labels, info.num_classes, examples_per_class, generator).to(device)
    return [
        (normaliser(images[index]), labels[index])
        for index in (chosen[start:start + batch_size] for start in range(0, chosen.numel(), batch_size))
    ]


# ----------------------------------------------------------------------------------------------
# The plain-PyTorch baseline, for benchmarks only
# ----------------------------------------------------------------------------------------------


class _TransformedTensors(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Any) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), int(self.labels[index])


def make_plain_loader(name: str, data_dir: Optional[Union[str, os.PathLike]], batch_size: int, train: bool,
                      seed: int = 0, *, download: bool = True, num_workers: int = 4,
                      input_shape: Optional[Sequence[int]] = None, num_classes: Optional[int] = None,
                      size: Optional[int] = None) -> torch.utils.data.DataLoader:
    """The usual recipe, to benchmark against: per-example torchvision transforms in DataLoader workers.

    Yields normalised float32 CPU batches (the caller moves them). Not used by trials.
    """
    info = dataset_info(name, input_shape, num_classes)
    if info.tensor_resident:
        images, labels = load_tensors(name, "train" if train else "test", data_dir, download, input_shape,
                                      num_classes, size)
        return plain_loader(images, labels, info, batch_size, train, seed, num_workers=num_workers)
    folder = FolderItems(image_folder(name, "train" if train else "test", data_dir),
                         imagenet_transform(train, to_uint8=False))
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
    generator = _seeded_generator(_STREAM_PLAIN_LOADER, _check_int_at_least("seed", seed, 0))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=train, num_workers=num_workers,
                                       pin_memory=torch.cuda.is_available(), generator=generator,
                                       drop_last=drop_last, persistent_workers=persistent_workers and num_workers > 0)
