"""Where each dataset's bytes come from: one source per dataset, registered in `DATASETS`.

Every dataset but ImageNet is small enough to hold whole as one uint8 tensor
(N, C, H, W) plus int64 labels; `load_tensors` reads a split afresh and checks
it. Sources that download (torchvision's MNIST / CIFAR, Tiny-ImageNet) do so
under a file lock, so trials starting together on one node download once, and
fail with a `DatasetMissingError` that says where the data should be and how
to get it. ImageNet is an ImageFolder tree read batch by batch (`batches`).
"""
from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import socket
import tarfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
import torchvision
from filelock import FileLock

from common.checks import check_choice
from trainables.data.augment import seeded_generator
from trainables.data.info import (DATA_DIR_ENV, DATASETS, SPLITS, Batch, DatasetInfo, DatasetMissingError,
                                  resolve_data_dir)

if TYPE_CHECKING:
    from trainables.specs import DataSpec

log = logging.getLogger(__name__)

# Per blocking socket operation, not per download: a refused or black-holed
# network fails in this long instead of hanging a trial forever.
DOWNLOAD_SOCKET_TIMEOUT_S = 60.0
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINY_IMAGENET_FOLDER = "tiny-imagenet-200"
_TINY_CACHE_FORMAT = 1
SYNTHETIC_TRAIN_SIZE = 512
_SYNTHETIC_SEED = 20200611  # fixed: synthetic data is the same in every process


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


class DatasetSource:
    """How one dataset is described and read from the data root."""

    def __init__(self, info: DatasetInfo) -> None:
        self.info = info

    def describe(self, data_spec: DataSpec) -> DatasetInfo:
        """The dataset as `data_spec` shapes it (only synthetic has overrides; `DataSpec` refuses others')."""
        return self.info

    def load(self, split: str, root: pathlib.Path, download: bool, info: DatasetInfo,
             size: Optional[int]) -> Batch:
        """The split as uint8 (N, C, H, W) images and int64 labels on the CPU."""
        raise ValueError(
            f"dataset {self.info.name!r} is read from disk batch by batch, not held as tensors; "
            f"use train_batches / test_batches / scoring_batches"
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

    def describe(self, data_spec):
        shape = self.info.input_shape if data_spec.input_shape is None else data_spec.input_shape
        if len(shape) != 3:
            raise ValueError(f"input_shape of 'synthetic' must be (channels, height, width), got {shape!r}")
        classes = self.info.num_classes if data_spec.num_classes is None else data_spec.num_classes
        channels = shape[0]
        train_size = SYNTHETIC_TRAIN_SIZE if data_spec.size is None else data_spec.size
        return DatasetInfo(
            name=self.info.name, input_shape=shape, num_classes=classes,
            mean=(self.info.mean[0],) * channels, std=(self.info.std[0],) * channels,
            augment=self.info.augment, tensor_resident=True, crop_padding=self.info.crop_padding,
            train_examples=train_size, test_examples=max(1, train_size // 2),
        )

    def load(self, split, root, download, info, size):
        train_size = SYNTHETIC_TRAIN_SIZE if size is None else size
        count = train_size if split == "train" else max(1, train_size // 2)
        shape = info.input_shape
        prototypes = torch.randint(0, 256, (info.num_classes, *shape), dtype=torch.int16,
                                   generator=seeded_generator(_SYNTHETIC_SEED, *shape, info.num_classes))
        draw = seeded_generator(_SYNTHETIC_SEED, SPLITS.index(split), *shape, info.num_classes, count)
        labels = (torch.arange(count) % info.num_classes)[torch.randperm(count, generator=draw)]
        noise = torch.randint(0, 256, (count, *shape), dtype=torch.int16, generator=draw)
        images = ((prototypes[labels] + noise) // 2).to(torch.uint8)
        return images, labels


DATASETS.register("mnist")(TorchvisionSource(
    DatasetInfo("mnist", (1, 28, 28), 10, (0.1307,), (0.3081,), "none", True, 0, 60_000, 10_000),
    torchvision.datasets.MNIST, "MNIST",
))
DATASETS.register("cifar10")(TorchvisionSource(
    DatasetInfo("cifar10", (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                "crop_flip", True, 4, 50_000, 10_000),
    torchvision.datasets.CIFAR10, "cifar-10-batches-py",
))
DATASETS.register("cifar100")(TorchvisionSource(
    DatasetInfo("cifar100", (3, 32, 32), 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                "crop_flip", True, 4, 50_000, 10_000),
    torchvision.datasets.CIFAR100, "cifar-100-python",
))
# Padding 4 at 64x64, as the SynFlow code does (get_transform(size=64, padding=4)).
DATASETS.register("tiny_imagenet")(TinyImageNetSource(
    DatasetInfo("tiny_imagenet", (3, 64, 64), 200, (0.480, 0.448, 0.398), (0.277, 0.269, 0.282),
                "crop_flip", True, 4, 100_000, 10_000),
))
DATASETS.register("imagenet")(ImageNetSource(
    DatasetInfo("imagenet", (3, 224, 224), 1000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                "imagenet", False, 0, 1_281_167, 50_000),
))
# mean/std: the 1,347-image train split, after scaling to 0..255.
DATASETS.register("digits")(DigitsSource(
    DatasetInfo("digits", (1, 8, 8), 10, (0.3053,), (0.3758,), "none", True, 0, 1_347, 450),
))
# mean/std: exact moments of (prototype + noise) // 2 for two uniform 0..255 draws.
DATASETS.register("synthetic")(SyntheticSource(
    DatasetInfo("synthetic", (3, 32, 32), 10, (0.4990,) * 3, (0.2049,) * 3, "none", True, 0),
))


def load_tensors(data_spec: DataSpec, split: str, data_dir: Optional[Union[str, os.PathLike]] = None,
                 download: bool = True) -> Batch:
    """A whole split as uint8 (N, C, H, W) CPU images and int64 labels, read afresh (no cache).

    Raises DatasetMissingError when the data is absent and cannot be downloaded,
    ValueError for ImageNet (read batch by batch instead) or a bad split.
    """
    name = data_spec.name
    source = DATASETS[name]
    check_choice("split", split, SPLITS)
    info = source.describe(data_spec)
    images, labels = source.load(split, resolve_data_dir(data_dir), download, info, data_spec.size)
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != info.input_shape:
        raise ValueError(f"{name} {split}: expected uint8 images of shape (N, *{info.input_shape}), "
                         f"got {images.dtype} {tuple(images.shape)}")
    if labels.shape != (images.shape[0],) or (labels.numel() and not 0 <= int(labels.min()) <= int(labels.max())
                                              < info.num_classes):
        raise ValueError(f"{name} {split}: labels must be {images.shape[0]} class indices in "
                         f"[0, {info.num_classes}), got shape {tuple(labels.shape)}")
    return images, labels.to(torch.int64)
