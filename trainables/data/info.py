"""What a dataset looks like without loading it, and where the data lives.

`dataset_info` reads no file, so a prune-only trial of a data-free algorithm
(SynFlow, magnitude, random) and the sweep's planning need no downloaded data.
The `DATASETS` registry is created here and filled by `sources`.
"""
from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Tuple, Union

import torch

from common.checks import check_choice
from common.registry import Registry

if TYPE_CHECKING:
    from trainables.data.sources import DatasetSource
    from trainables.specs import DataSpec

DATA_DIR_ENV = "PRUNE_SWEEP_DATA"
DEFAULT_DATA_DIR = "data"
SPLITS = ("train", "test")
AUGMENTATIONS = ("crop_flip", "none", "imagenet")

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
    train_examples: Optional[int] = None  # the splits' sizes, for the sweep's bill (None: the dataset does not say)
    test_examples: Optional[int] = None

    def __post_init__(self) -> None:
        check_choice("augment", self.augment, AUGMENTATIONS)
        channels = self.input_shape[0]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ValueError(
                f"mean/std of {self.name!r} need {channels} values (one per channel), "
                f"got {len(self.mean)} and {len(self.std)}"
            )


DATASETS: Registry[DatasetSource] = Registry("dataset")


def dataset_info(data_spec: DataSpec) -> DatasetInfo:
    """The dataset's shape, classes and normalisation, without reading any file.

    For 'synthetic', the spec's `input_shape` (C, H, W) and `num_classes` replace the defaults.
    """
    return DATASETS[data_spec.name].describe(data_spec)


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
