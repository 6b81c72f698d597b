"""What each trial asks Ray for: a GPU share sized to its model and data, and CPUs for its data loading.

Several small trials share one GPU through fractional GPU resources; a
cluster without GPUs runs every trial on CPU. Both are overridable from the
sweep CLI (`--gpus-per-trial`, `--cpus-per-trial`).

A trial on several workers (`--workers-per-trial N`, or `--gpus-per-trial N`
with N > 1: one GPU a worker) is a Ray Train TorchTrainer inside the Tune
trial. Ray Train V2 schedules its workers in its own placement group, not in
the trial's, so the Tune function itself asks for next to nothing
(`DRIVER_BUNDLE`) and each worker asks for its share (`worker_resources`);
`trial_resources` is then the trial's total, which the plan and the bill count.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from trainables.data import dataset_info
from trainables.specs import TrialSpec

SMALL_MODELS = ("mlp", "conv")
WIDE_MODELS = ("wide_resnet18", "imagenet_vgg16", "imagenet_vgg19", "imagenet_resnet50")
# Fraction of one GPU per trial, by dataset (then model width): the packing the throughput benchmark favours.
GPU_SHARE_BY_DATASET = {"digits": 0.125, "synthetic": 0.125, "mnist": 0.125, "cifar10": 0.25, "cifar100": 0.25,
                        "tiny_imagenet": 0.5, "imagenet": 1.0}
CPUS_FOR_FOLDER_DATA = 8  # DataLoader workers for datasets read from image folders (ImageNet)
# What the Tune function of a multi-worker trial holds while its TorchTrainer's workers train: Tune refuses an
# all-zero bundle, and a CPU share, however small, would keep the last worker off a full machine.
DRIVER_BUNDLE = {"memory": 1.0}


@dataclass(frozen=True)
class ResourcePolicy:
    cluster_has_gpus: bool = False
    gpus_per_trial: Optional[float] = None   # override for every trial
    cpus_per_trial: Optional[float] = None
    workers_per_trial: Optional[int] = None  # None: 1, or --gpus-per-trial when that is a whole number above 1

    def __post_init__(self) -> None:
        if self.gpus_per_trial is not None and not 0 <= self.gpus_per_trial:
            raise ValueError(f"--gpus-per-trial must be >= 0, got {self.gpus_per_trial}")
        if self.cpus_per_trial is not None and not 0 < self.cpus_per_trial:
            raise ValueError(f"--cpus-per-trial must be > 0, got {self.cpus_per_trial}")
        if self.workers_per_trial is not None and not (isinstance(self.workers_per_trial, int)
                                                       and self.workers_per_trial >= 1):
            raise ValueError(f"--workers-per-trial must be a whole number >= 1, got {self.workers_per_trial}")
        gpus = self.gpus_per_trial
        if self.workers_per_trial is None and gpus is not None and gpus > 1 and gpus != int(gpus):
            raise ValueError(f"--gpus-per-trial {gpus:g}: above 1 a trial runs one worker per GPU, so give a whole "
                             f"number")
        if self.workers > 1 and gpus and gpus != self.workers:
            raise ValueError(f"--workers-per-trial {self.workers} with --gpus-per-trial {gpus:g}: each worker "
                             f"(one NCCL rank) takes one whole GPU, so give --gpus-per-trial {self.workers}")

    @property
    def workers(self) -> int:
        """Ray Train workers (DDP ranks) per trial: 1 runs the trial in the Tune function itself."""
        if self.workers_per_trial is not None:
            return self.workers_per_trial
        if self.gpus_per_trial is not None and self.gpus_per_trial > 1:
            return int(self.gpus_per_trial)
        return 1


def gpu_share(spec: TrialSpec) -> float:
    share = GPU_SHARE_BY_DATASET.get(spec.data.name, 0.25)
    if spec.model.name in SMALL_MODELS:
        share = min(share, 0.125)
    if spec.model.name in WIDE_MODELS:
        share = min(1.0, share * 2)
    return share


def trial_resources(spec: TrialSpec, policy: ResourcePolicy) -> Dict[str, float]:
    """{"CPU": n, "GPU": share} for one trial (no GPU key on a CPU-only cluster); a multi-worker trial's total."""
    if policy.workers > 1:
        return {k: v * policy.workers for k, v in worker_resources(spec, policy).items()}
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


def worker_resources(spec: TrialSpec, policy: ResourcePolicy) -> Dict[str, float]:
    """What each Ray Train worker of a multi-worker trial asks for: --cpus-per-trial split over the workers (else the
    dataset's own loader CPUs each), and one whole GPU each where the trial gets GPUs."""
    workers = policy.workers
    info = dataset_info(spec.data)
    cpus = (policy.cpus_per_trial / workers if policy.cpus_per_trial
            else (1.0 if info.tensor_resident else float(CPUS_FOR_FOLDER_DATA)))
    resources = {"CPU": cpus}
    if policy.cluster_has_gpus and policy.gpus_per_trial != 0 or policy.gpus_per_trial:
        resources["GPU"] = 1.0
    return resources


def tune_bundles(spec: TrialSpec, policy: ResourcePolicy) -> List[Dict[str, float]]:
    """The Tune trial's placement group: the trial's resources, or for a multi-worker trial only the driver's (its
    TorchTrainer reserves the workers' own)."""
    if policy.workers > 1:
        return [dict(DRIVER_BUNDLE)]
    return [trial_resources(spec, policy)]


def concurrent_distributed(policy: ResourcePolicy, specs: List[TrialSpec], cluster: Dict[str, float],
                           max_concurrent: Optional[int]) -> Optional[int]:
    """How many multi-worker trials to start at once: as many as the cluster holds all the workers of. Their Tune
    functions ask for next to nothing, so without this cap every trial would start and wait, lease in hand, for
    workers. None (no cap beyond `max_concurrent`) for one-worker trials."""
    if policy.workers <= 1 or not specs:
        return max_concurrent
    fits = None
    for spec in specs:
        ask = trial_resources(spec, policy)
        n = min(int(cluster.get(k, 0.0) // v) for k, v in ask.items() if v > 0)
        fits = n if fits is None else min(fits, n)
    fits = max(fits or 0, 1)  # never 0: a trial too big for the cluster waits (and the plan says why)
    return min(fits, max_concurrent) if max_concurrent else fits
