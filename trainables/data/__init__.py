"""Datasets for the sweep: what they look like without loading them, and fast batches of them.

Every function that picks a dataset takes a `trainables.specs.DataSpec` (its
name, and for 'synthetic' the shape, class count and size). The modules, one
job each, in import order:

- `info`: `DatasetInfo` (shape, classes, normalisation, augmentation), the
  `DATASETS` registry, `dataset_info` and `resolve_data_dir`. `dataset_info`
  never touches the disk, so a prune-only trial of a data-free algorithm
  (SynFlow, magnitude, random) needs no downloaded data;
- `augment`: the seeded random streams (an epoch's order, crop offsets and
  flips come from a generator seeded from (seed, epoch) and drawn on the CPU,
  so an epoch's batches are a pure function of (seed, epoch), identical on
  every device and after a resume), crop/flip on the device, normalisation;
- `sources`: one source per dataset (torchvision's MNIST / CIFAR, Tiny-ImageNet,
  ImageNet folders, scikit-learn's digits, synthetic), downloads under a file
  lock, registered in `DATASETS`; `load_tensors` reads a whole split as uint8
  (N, C, H, W) tensors plus int64 labels;
- `batches`: `TensorBatches` moves that tensor to the training device once and
  shuffles, augments (random crop with zero padding + horizontal flip, the
  paper's CIFAR / Tiny-ImageNet recipe), converts and normalises every batch on
  the device, with no DataLoader workers: a GPU trial never waits on Python
  image code. ImageNet keeps a DataLoader over an ImageFolder tree with worker
  processes (`FolderBatches`). `train_batches` / `test_batches` are what a trial
  calls; the per-process caches behind them are emptied by `clear_cache`;
- `scoring`: `scoring_batches`, the class-balanced examples SNIP and GraSP score with;
- `custom`: `dataset`, the decorator that registers a researcher's own tensor dataset (plugins).

The plain-PyTorch DataLoader baseline the benchmarks compare against is
`benchmarks/plain_loader.py`, not part of this package.
"""
from trainables.data.info import (DATA_DIR_ENV, DATASETS, DatasetInfo, DatasetMissingError, dataset_info,
                                  resolve_data_dir)
from trainables.data.sources import load_tensors  # also fills DATASETS
from trainables.data.batches import (FolderBatches, TensorBatches, clear_cache, device_tensors, image_folder,
                                     test_batches, train_batches)
from trainables.data.scoring import scoring_batches
from trainables.data.custom import dataset

__all__ = [
    "DATA_DIR_ENV", "DATASETS", "DatasetInfo", "DatasetMissingError", "dataset_info", "resolve_data_dir",
    "load_tensors",
    "FolderBatches", "TensorBatches", "clear_cache", "device_tensors", "image_folder", "test_batches",
    "train_batches",
    "scoring_batches", "dataset",
]
