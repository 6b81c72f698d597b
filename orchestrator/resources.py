"""What each trial asks Ray for: a GPU share sized to its model and data, and CPUs for its data loading.

Several small trials share one GPU through fractional GPU resources; a
cluster without GPUs runs every trial on CPU. Both are overridable from the
sweep CLI (`--gpus-per-trial`, `--cpus-per-trial`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

from trainables.data import dataset_info
from trainables.specs import TrialSpec

SMALL_MODELS = ("mlp", "conv")
WIDE_MODELS = ("wide_resnet18", "imagenet_vgg16", "imagenet_vgg19", "imagenet_resnet50")
# Fraction of one GPU per trial, by dataset (then model width): the packing the throughput benchmark favours.
GPU_SHARE_BY_DATASET = {"digits": 0.125, "synthetic": 0.125, "mnist": 0.125, "cifar10": 0.25, "cifar100": 0.25,
                        "tiny_imagenet": 0.5, "imagenet": 1.0}
CPUS_FOR_FOLDER_DATA = 8  # DataLoader workers for datasets read from image folders (ImageNet)


@dataclass(frozen=True)
class ResourcePolicy:
    cluster_has_gpus: bool = False
    gpus_per_trial: Optional[float] = None   # override for every trial
    cpus_per_trial: Optional[float] = None

    def __post_init__(self) -> None:
        if self.gpus_per_trial is not None and not 0 <= self.gpus_per_trial:
            raise ValueError(f"--gpus-per-trial must be >= 0, got {self.gpus_per_trial}")
        if self.cpus_per_trial is not None and not 0 < self.cpus_per_trial:
            raise ValueError(f"--cpus-per-trial must be > 0, got {self.cpus_per_trial}")


def gpu_share(spec: TrialSpec) -> float:
    share = GPU_SHARE_BY_DATASET.get(spec.data.name, 0.25)
    if spec.model.name in SMALL_MODELS:
        share = min(share, 0.125)
    if spec.model.name in WIDE_MODELS:
        share = min(1.0, share * 2)
    return share


def trial_resources(spec: TrialSpec, policy: ResourcePolicy) -> Dict[str, float]:
    """{"CPU": n, "GPU": share} for one trial (no GPU key on a CPU-only cluster)."""
    info = dataset_info(spec.data)
    cpus = policy.cpus_per_trial or (1.0 if info.tensor_resident else float(CPUS_FOR_FOLDER_DATA))
    gpus = 0.0
    if policy.cluster_has_gpus:
        gpus = policy.gpus_per_trial if policy.gpus_per_trial is not None else gpu_share(spec)
    elif policy.gpus_per_trial:
        gpus = policy.gpus_per_trial
    resources = {"CPU": cpus}
    if gpus > 0:
        resources["GPU"] = gpus
    return resources
