"""One trial as a Ray Tune function trainable: restore or prune, train, record.

The config is what the sweep makes: the trial's description (`spec`, a
`TrialSpec` dict), where things live (`store`, `data_dir`, `checkpoint_root`)
and labels (`sweep`). Progress belongs to the project, not to Tune: after
pruning and after every epoch the trial writes its own checkpoint (model,
optimizer, scheduler, masks, epoch, RNG state, prune metrics) under
`checkpoint_root/<trial_id>/`, and any start of the trial, a Tune retry or a
new sweep run, continues from the newest whole one. The finished trial writes
its rows to the results store once, then frees its checkpoints; with
`keep_masks` in the config (`--keep-masks`, not part of the description) it
first writes its final masks (`<store>/masks/<trial_id>.parquet`).

Every report carries the attempt's own start (`attempt_started_at`, the
first report says only "started"), and the last one the trial's `finished_at`
(the store row's): the driver's progress line counts running trials and
estimates the time left from these, not from Tune's lagging trial states.

A deterministic error (a bad description past the plan's checks, a trial over
its GPU share) ends the trial once with status "failed" and its message:
retrying would only repeat it. Anything else raises, and Tune retries the trial
from its checkpoint.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from common.plugins import import_by_name
from common.storage import one_line, storage_errno
from results_store import ResultsStore, StoreError
from results_store.lease import Heartbeat, acquire, default_holder, holder_of
from results_store.masks import PackedMask, write_masks
from trainables import data
from trainables.checkpoints import TrialCheckpoints, rng_state, set_rng_state
from trainables.distributed import workers_of
from trainables.imp import fresh_imp_state, imp_prune, train_batches
from trainables.memory import ShareTooSmallError
from trainables.initial_prune import initial_model, prune_at_init
from trainables.pruning import Masks
from trainables.pruning.algorithms import ALGORITHMS
from trainables.record import trial_row, write_once
from trainables.specs import TrialSpec
from trainables.training import Trainer, resolve_precision

DETERMINISTIC_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, AssertionError,
                        NotImplementedError, ZeroDivisionError, ShareTooSmallError)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def assigned_resources() -> Dict[str, float]:
    """What Ray gave this trial ({} outside Ray)."""
    import ray

    if not ray.is_initialized():
        return {}
    return dict(ray.get_runtime_context().get_assigned_resources())


def trial_device(resources: Dict[str, float]) -> torch.device:
    """CUDA when Ray gave this trial a GPU share (Ray then exposes only that GPU), else CPU."""
    return torch.device("cuda" if resources.get("GPU", 0) > 0 and torch.cuda.is_available() else "cpu")


@dataclass
class Setting:
    """Where and how this attempt runs; none of it is part of the trial's description."""

    spec: TrialSpec
    config: Dict[str, Any]
    resources: Dict[str, float]
    device: torch.device
    precision: str
    checkpoints: Optional[TrialCheckpoints]
    attempt_started_at: float  # this attempt's, not the trial's first
    heartbeat: Optional[Any] = None  # renews this trial's lease on the store while it runs

    @property
    def data_dir(self) -> Optional[str]:
        return self.config.get("data_dir")

    def batches(self, epoch: int, train: bool):
        if train:
            return train_batches(self.spec, self.data_dir, self.device, epoch)
        return data.test_batches(self.spec.data, self.data_dir, self.spec.train.batch_size, self.device)


class LeaseLost(Exception):
    """Another sweep took this trial's lease over (ours went unrenewed past its time to live): it trains it now."""


@dataclass
class Progress:
    """What a training checkpoint holds beyond the trainer: enough to continue as if never stopped."""

    prune: Dict[str, Any]
    history: List[Dict[str, Any]] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    train_seconds: float = 0.0
    restarts: int = 0
    resumed_from: int = 0
    step: int = 0


def refuse_if_over_share(model: nn.Module, setting: Setting, info) -> None:
    """Before any compute: fail with a clear message if this trial would outgrow its GPU share."""
    from trainables.memory import check_fits, estimate_training_memory

    spec = setting.spec
    dataset_bytes = 0
    if info.tensor_resident:
        images, _ = data.device_tensors(spec.data, "train", setting.data_dir, "cpu")
        dataset_bytes = int(images.numel() * 1.2)  # train + test split, uint8
    estimate = estimate_training_memory(model, info.input_shape, spec.train.batch_size, setting.precision, dataset_bytes,
                                        optimizer=spec.train.optimizer, momentum=spec.train.momentum)
    total = torch.cuda.get_device_properties(setting.device).total_memory
    check_fits(estimate, total, setting.resources.get("GPU", 1.0),
               f"trial {spec.trial_id} ({spec.model.name}/{spec.data.name}, batch {spec.train.batch_size}, "
               f"{setting.precision})")


def report(setting: Setting, metrics: Dict[str, Any]) -> None:
    from ray import tune

    # "spec_id", not "trial_id": Tune overwrites a reported trial_id with its own.
    tune.report({**metrics, "spec_id": setting.spec.trial_id, "device": str(setting.device),
                 "attempt_started_at": setting.attempt_started_at})


def check_lease(setting: Setting) -> None:
    if setting.heartbeat is not None and setting.heartbeat.lost.is_set():
        raise LeaseLost(f"lost the lease of trial {setting.spec.trial_id}: another sweep took it over")


def save(setting: Setting, state: Dict[str, Any]) -> None:
    check_lease(setting)  # never two writers of one trial's checkpoints
    if setting.checkpoints is not None:
        setting.checkpoints.save(state)


def prune_phase(model: nn.Module, info, setting: Setting, state: Optional[Dict[str, Any]]):
    """Prune from the start, or continue IMP's levels from `state`: (masks, progress)."""
    spec = setting.spec
    restarts = state["restarts"] + 1 if state is not None else 0
    started_at = state["started_at"] if state is not None else setting.attempt_started_at
    step = state["step"] if state is not None else 0
    seed_everything(spec.seed)
    if ALGORITHMS[spec.prune.algorithm].trains_between_cuts:
        def save_imp(imp_state: Dict[str, Any]) -> None:
            nonlocal step
            step += 1
            save(setting, {"step": step, "phase": "imp", "imp": imp_state, "started_at": started_at,
                           "restarts": restarts})
            report(setting, {"epoch": 0, "status": "pruning", "imp_level": imp_state["level"],
                             "imp_epoch": imp_state["epoch"], "restarts": restarts})

        resume = state["imp"] if state is not None else fresh_imp_state(model)
        result = imp_prune(model, spec, info, setting.device, setting.data_dir, resume=resume, save=save_imp)
    else:
        result = prune_at_init(model, spec, info, setting.device, setting.data_dir)
    progress = Progress(prune=result.summary(), started_at=started_at, restarts=restarts, step=step)
    return result.masks, progress


def restore_training(model: nn.Module, setting: Setting, state: Dict[str, Any]):
    """A training checkpoint back into (trainer, progress): the masks, weights, optimizer, schedule and RNGs."""
    named = dict(model.named_parameters())
    masks = Masks({n: named[n] for n in state["trainer"]["masks"]})
    trainer = Trainer(model, masks, setting.spec.train, setting.device)
    trainer.load_state_dict(state["trainer"])
    set_rng_state(state["rng"])
    progress = Progress(prune=state["prune"], history=state["history"], started_at=state["started_at"],
                        train_seconds=state["train_seconds"], restarts=state["restarts"] + 1,
                        resumed_from=state["epoch"], step=state["step"])
    return trainer, progress


def save_training(setting: Setting, trainer: Trainer, progress: Progress) -> None:
    progress.step += 1
    save(setting, {"step": progress.step, "phase": "training", "trainer": trainer.state_dict(), "rng": rng_state(),
                   "prune": progress.prune, "history": progress.history, "epoch": len(progress.history),
                   "started_at": progress.started_at, "train_seconds": progress.train_seconds,
                   "restarts": progress.restarts})


def train(setting: Setting, trainer: Trainer, progress: Progress) -> str:
    """Train from the epoch after the last one in `progress`, checkpointing each; 'completed' or 'diverged'."""
    if len(progress.history) >= setting.spec.train.epochs:
        return "completed"  # prune only: the dataset is never loaded
    test = setting.batches(0, train=False)
    for epoch in range(len(progress.history) + 1, setting.spec.train.epochs + 1):
        metrics = trainer.run_epoch(epoch, setting.batches(epoch, train=True), test)
        progress.train_seconds += metrics.seconds
        progress.history.append(metrics.as_row())
        if not math.isfinite(metrics.train_loss):
            return "diverged"
        if epoch < setting.spec.train.epochs:
            save_training(setting, trainer, progress)
            report(setting, {**metrics.as_row(), "epoch": epoch, "status": "running", "restarts": progress.restarts,
                             "resumed_from_epoch": progress.resumed_from,
                             "prune_seconds": progress.prune["prune_seconds"]})
    return "completed"


def keep_masks(setting: Setting, masks: Masks, layers: List[Dict[str, Any]]) -> None:
    """The trial's final masks beside the store, before its rows: a stored row then implies its mask."""
    index = {row["param"]: row["layer_index"] for row in layers}
    packed = [PackedMask.of(index[name], name, masks.mask(name).cpu().numpy()) for name in masks.names]
    check_lease(setting)
    write_masks(ResultsStore(setting.config["store"]), setting.spec.trial_id, packed)


def record(setting: Setting, progress: Progress, status: str, masks: Optional[Masks] = None) -> None:
    """The trial's rows into the store (once; with `keep_masks`, its masks first), its checkpoints freed, and its
    last report."""
    config = setting.config
    finished_at = time.time()
    if config.get("store"):
        row = trial_row(config, setting.spec, progress.prune, progress.history, status,
                        started_at=progress.started_at, device=setting.device, precision=setting.precision,
                        train_seconds=progress.train_seconds, resources=setting.resources,
                        restarts=progress.restarts, resumed_from=progress.resumed_from)
        finished_at = row["finished_at"]  # the driver's progress line and the store agree on the trial's end
        check_lease(setting)
        store = ResultsStore(config["store"])
        if config.get("keep_masks") and masks is not None and not store.has_trial(setting.spec.trial_id):
            keep_masks(setting, masks, progress.prune["layers"])
            check_lease(setting)
        write_once(store, row, progress.history, progress.prune["layers"])
        if setting.checkpoints is not None and not config.get("keep_checkpoints"):
            setting.checkpoints.delete_all()
    last = progress.history[-1] if progress.history else {}
    p = progress.prune
    report(setting, {**last, "epoch": len(progress.history), "status": status, "restarts": progress.restarts,
                     "resumed_from_epoch": progress.resumed_from, "remaining_params": p["remaining_params"],
                     "collapsed": p["collapsed"], "prune_seconds": p["prune_seconds"], "finished_at": finished_at})


def open_setting(config: Dict[str, Any], spec: TrialSpec, attempt_started_at: float) -> Setting:
    resources = assigned_resources()
    device = trial_device(resources)
    root = config.get("checkpoint_root")
    return Setting(spec=spec, config=config, resources=resources, device=device,
                   precision=resolve_precision(spec.train.precision, device),
                   checkpoints=TrialCheckpoints(root, spec.trial_id) if root else None,
                   attempt_started_at=attempt_started_at)


def run_trial(config: Dict[str, Any]) -> None:
    """The Ray Tune function trainable: restore or prune, train, record."""
    attempt_started_at = time.time()
    try:
        import_by_name(config.get("plugins", ()))  # the sweep's plugins register their scorers, models, datasets
        spec = TrialSpec.from_dict(config["spec"])
    except DETERMINISTIC_ERRORS as exc:
        from ray import tune

        tune.report({"status": "failed", "error": f"{type(exc).__name__}: {exc}", "epoch": 0})
        return
    setting = open_setting(config, spec, attempt_started_at)
    store = ResultsStore(config["store"]) if config.get("store") else None
    lease = None
    if store is not None:
        try:
            lease = acquire(store, f"trial-{spec.trial_id}",
                            holder=f"{default_holder()} sweep {config.get('sweep', '')}")
        except StoreError as exc:
            if storage_errno(exc) is None:
                raise
            report_storage_error(setting, exc)
            return
        if lease is None:  # another sweep trains it now: this one skips it and the driver waits for that one
            holder = holder_of(store, f"trial-{spec.trial_id}")
            report(setting, {"status": "held_elsewhere", "epoch": 0, "finished_at": time.time(),
                             "held_by": holder.describe() if holder is not None else "another sweep"})
            return
    try:
        # Checked under the lease: a sweep that finished it released the lease only after storing it.
        if store is not None and store.has_trial(spec.trial_id):
            report(setting, {"status": "already_in_store", "epoch": spec.train.epochs})  # another run finished it
            return
        with Heartbeat(lease) if lease is not None else contextlib.nullcontext() as heartbeat:
            setting.heartbeat = heartbeat
            if workers_of(config) > 1:  # a Ray Train TorchTrainer under this trial's lease (trainables/distributed.py)
                from trainables import distributed

                distributed.train_and_record(setting)
            else:
                train_and_record(setting)
    finally:
        if lease is not None:
            lease.release()


def train_and_record(setting: Setting) -> None:
    """Prune or restore, train, and store; a storage error or a lost lease ends the trial without a retry."""
    spec = setting.spec
    report(setting, {"status": "started"})  # before any data or pruning: the driver counts it running from now
    data.clear_cache()  # a reused worker must not carry another trial's tensors
    if setting.device.type == "cuda":
        torch.cuda.empty_cache()
    try:
        trainer, progress = restore_or_prune(setting)
        status = train(setting, trainer, progress)
        record(setting, progress, status, trainer.masks)
    except DETERMINISTIC_ERRORS as exc:  # named by algorithm, so the sweep's summary says whose error it is
        report(setting, {"status": "failed", "error": f"[{spec.prune.algorithm}] {type(exc).__name__}: {exc}",
                         "epoch": 0, "finished_at": time.time()})
    except LeaseLost as exc:
        report(setting, {"status": "held_elsewhere", "epoch": 0, "finished_at": time.time(), "held_by": str(exc)})
    except Exception as exc:
        if storage_errno(exc) is None:
            raise  # Tune retries it from its checkpoint
        report_storage_error(setting, exc)


def report_storage_error(setting: Setting, exc: BaseException) -> None:
    """The trial's last report: the driver stops the sweep at once on it, naming the path."""
    where = "" if isinstance(exc, StoreError) or setting.checkpoints is None else (
        f"checkpoints {setting.checkpoints.directory}: ")
    report(setting, {"status": "storage_error", "error": where + one_line(exc), "epoch": 0,
                     "finished_at": time.time()})


def restore_or_prune(setting: Setting):
    """The trial's trainer and progress: from its newest training checkpoint, or pruned (IMP: continued)."""
    spec = setting.spec
    model, info = initial_model(spec, setting.device)
    if setting.device.type == "cuda":
        refuse_if_over_share(model, setting, info)
    state = setting.checkpoints.newest(setting.device) if setting.checkpoints is not None else None
    if state is not None and state["phase"] == "training":
        return restore_training(model, setting, state)
    masks, progress = prune_phase(model, info, setting, state)
    trainer = Trainer(model, masks, spec.train, setting.device)
    if spec.train.epochs:
        save_training(setting, trainer, progress)  # a kill during epoch 1 need not prune again
    return trainer, progress
