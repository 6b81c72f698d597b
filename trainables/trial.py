"""One trial as a Ray Tune function trainable: seed, resume or prune, train, report, checkpoint, store.

The trainable's config is what `orchestrator.grid` makes: the trial's
description (`spec`, a `TrialSpec` dict) plus where things live (`store`,
`data_dir`) and labels (`sweep`, `resources`). Every epoch is reported with a
checkpoint holding the model, optimizer, scheduler, masks, epoch, RNG state and
the prune metrics, so a restarted trial continues at the next epoch and never
prunes again. The finished trial writes its rows to the results store itself
(one writer per trial id), then reports its last epoch.
"""
from __future__ import annotations

import math
import os
import pathlib
import random
import socket
import tempfile
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from trainables import data
from trainables.pruning import Masks, PruneResult
from trainables.pruning.algorithms import ALGORITHMS
from trainables.prune import initial_model, prune_at_init
from trainables.specs import TrialSpec
from trainables.training import EpochMetrics, Trainer, resolve_precision

CHECKPOINT_FILE = "trial_state.pt"
PROJECT_VERSION = "0.1.0"
IMP_EPOCH_OFFSET = 1_000_000  # IMP's level-l training epochs draw data as epochs l*offset + e


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> Dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def assigned_resources() -> Dict[str, float]:
    """What Ray gave this trial ({} outside Ray)."""
    import ray

    if not ray.is_initialized():
        return {}
    return dict(ray.get_runtime_context().get_assigned_resources())


def trial_device(resources: Dict[str, float]) -> torch.device:
    """CUDA when Ray gave this trial a GPU share (Ray then exposes only that GPU), else CPU."""
    return torch.device("cuda" if resources.get("GPU", 0) > 0 and torch.cuda.is_available() else "cpu")


def _batches(spec: TrialSpec, data_dir, device, epoch: int, train: bool):
    d = spec.data
    kwargs = dict(input_shape=d.input_shape, num_classes=d.num_classes, size=d.size)
    if train:
        return data.train_batches(d.name, data_dir, spec.train.batch_size, device, spec.seed, epoch, **kwargs)
    return data.test_batches(d.name, data_dir, spec.train.batch_size, device, **kwargs)


def imp_prune(model: nn.Module, spec: TrialSpec, info, device, data_dir=None,
              resume: Optional[Dict[str, Any]] = None, save=None) -> PruneResult:
    """Iterative magnitude pruning with rewinding (the lottery-ticket baseline).

    Each level trains the masked network for `train.epochs`, prunes by
    magnitude to the level's share of the target (rho^(level/levels)), then
    rewinds every surviving weight, and the batch-norm state, to its value at
    initialization. The original SynFlow code skipped the rewind.

    IMP trains for levels x epochs before its final training, so it is
    checkpointed too: `save(state)` is called after every epoch of every level,
    and `resume=state` continues from there.
    """
    state = resume or {"initial": {k: v.detach().clone() for k, v in model.state_dict().items()}, "level": 1,
                       "epoch": 0, "masks": None, "trainer": None, "trained_examples": 0, "seconds": 0.0}
    levels, rho = spec.prune.levels, spec.prune.compression
    start = time.perf_counter() - state["seconds"]
    named = dict(model.named_parameters())
    masks: Optional[Masks] = None
    if state["masks"] is not None:
        masks = Masks({n: named[n] for n in state["masks"]})
        masks.load_state_dict(state["masks"])
    result: Optional[PruneResult] = None
    for level in range(state["level"], levels + 1):
        trainer = Trainer(model, masks, spec.train, device)
        if state["trainer"] is not None:
            trainer.load_state_dict(state["trainer"])
        for epoch in range(state["epoch"] + 1, spec.train.epochs + 1):
            batches = _batches(spec, data_dir, device, level * IMP_EPOCH_OFFSET + epoch, train=True)
            trainer.train_epoch(batches)
            state.update(level=level, epoch=epoch, trainer=trainer.state_dict(),
                         trained_examples=state["trained_examples"] + _count_examples(batches),
                         seconds=time.perf_counter() - start)
            if save is not None:
                save(state)
        result = prune_at_init(model, spec, info, device, data_dir, compression=rho ** (level / levels), masks=masks)
        masks = result.masks
        with torch.no_grad():
            model.load_state_dict(state["initial"])
        masks.apply()
        state.update(level=level + 1, epoch=0, trainer=None, masks=masks.state_dict())
    assert result is not None
    result.prune_seconds = time.perf_counter() - start
    result.prune_passes = state["trained_examples"]
    return result


def _count_examples(batches) -> int:
    images = getattr(batches, "images", None)
    if images is not None:
        return int(images.shape[0])
    return len(batches) * getattr(batches, "batch_size", 1)


def prune_trial(model: nn.Module, spec: TrialSpec, info, device, data_dir=None, resume=None, save=None) -> PruneResult:
    if ALGORITHMS[spec.prune.algorithm].trains_between_cuts:
        return imp_prune(model, spec, info, device, data_dir, resume=resume, save=save)
    return prune_at_init(model, spec, info, device, data_dir)


def trial_row(config: Dict[str, Any], spec: TrialSpec, prune: Dict[str, Any], history: List[Dict[str, Any]],
              status: str, started_at: float, device: torch.device, precision: str, train_seconds: float,
              resources: Dict[str, float], restarts: int = 0, resumed_from: int = 0) -> dict:
    finished = [h for h in history if h["top1"] is not None]
    p = spec.prune
    return {
        "trial_id": spec.trial_id, "sweep": config.get("sweep", ""), "model": spec.model.name,
        "dataset": spec.data.name, "algorithm": p.algorithm, "log10_compression": p.log10_compression,
        "compression": p.compression, "seed": spec.seed, "iterations": p.iterations, "schedule": p.schedule,
        "scope": p.scope, "prune_mode": p.mode, "levels": p.levels, "examples_per_class": p.examples_per_class,
        "prunable_params": prune["prunable_params"], "prunable_layers": prune["prunable_layers"],
        "remaining_params": prune["remaining_params"], "density": prune["density"], "collapsed": prune["collapsed"],
        "prune_passes": prune["prune_passes"], "prune_seconds": prune["prune_seconds"],
        "dense_flops": prune["dense_flops"], "remaining_flops": prune["remaining_flops"],
        "epochs": len(history),
        "final_top1": finished[-1]["top1"] if finished else None,
        "final_top5": finished[-1]["top5"] if finished else None,
        "best_top1": max(h["top1"] for h in finished) if finished else None,
        "final_test_loss": finished[-1]["test_loss"] if finished else None,
        "train_seconds": train_seconds, "status": status,
        "error": None if status == "completed" else f"training loss became {history[-1]['train_loss']} at epoch {len(history)}",
        "started_at": started_at, "finished_at": time.time(), "host": socket.gethostname(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": precision, "cpus": float(resources.get("CPU", 1)), "gpus": float(resources.get("GPU", 0)),
        "restarts": restarts, "resumed_from_epoch": resumed_from if restarts else None,
        "torch_version": torch.__version__, "project_version": PROJECT_VERSION, "config": spec.canonical_json(),
    }


def write_to_store(config: Dict[str, Any], spec: TrialSpec, prune, history, status: str, **row) -> None:
    from results_store import ResultsStore

    if config.get("store"):
        row = trial_row(config, spec, prune, history, status, **row)
        ResultsStore(config["store"]).write_trial(row, [dict(h) for h in history], [dict(l) for l in prune["layers"]])


def already_stored(config: Dict[str, Any], trial_id: str) -> bool:
    from results_store import ResultsStore

    return bool(config.get("store")) and ResultsStore(config["store"]).has_trial(trial_id)


def refuse_if_over_share(model: nn.Module, spec: TrialSpec, info, precision: str, share: float, device,
                         data_dir=None) -> None:
    """Before any compute: fail with a clear message if this trial would outgrow its GPU share."""
    from trainables.memory import check_fits, estimate_training_memory

    dataset_bytes = 0
    if info.tensor_resident:
        images, _ = data.device_tensors(spec.data.name, "train", data_dir, "cpu", input_shape=spec.data.input_shape,
                                        num_classes=spec.data.num_classes, size=spec.data.size)
        dataset_bytes = int(images.numel() * 1.2)  # train + test split, uint8
    estimate = estimate_training_memory(model, info.input_shape, spec.train.batch_size, precision, dataset_bytes)
    total = torch.cuda.get_device_properties(device).total_memory
    check_fits(estimate, total, share, f"trial {spec.trial_id} ({spec.model.name}/{spec.data.name}, "
                                       f"batch {spec.train.batch_size}, {precision})")


def _load_state(directory: str, device) -> Dict[str, Any]:
    return torch.load(pathlib.Path(directory) / CHECKPOINT_FILE, map_location=device, weights_only=False)


def checkpoint_dirs(config: Dict[str, Any], trial_id: str):
    """(filesystem, this trial's checkpoint directories in the run, newest first); no filesystem outside a sweep."""
    import pyarrow.fs as pafs

    from results_store import filesystem_for

    root = config.get("checkpoint_root")
    if not root:
        return None, []
    fs, base = filesystem_for(root)
    infos = fs.get_file_info(pafs.FileSelector(f"{base.rstrip('/')}/{trial_id}", allow_not_found=True))
    found = [i for i in infos if i.base_name.startswith("checkpoint_") and i.type == pafs.FileType.Directory]
    return fs, [i.path for i in sorted(found, key=lambda i: i.base_name, reverse=True)]


def newest_saved_state(config: Dict[str, Any], trial_id: str, device) -> Optional[Dict[str, Any]]:
    """The newest loadable checkpoint under this trial's directory of the run (`checkpoint_root`).

    Tune's saved experiment state can predate a trial's last checkpoints when
    the driver is killed; the checkpoints themselves are on storage. A
    half-written one fails to load and the one before it is used.
    """
    import io

    fs, paths = checkpoint_dirs(config, trial_id)
    for path in paths:
        try:
            with fs.open_input_file(f"{path}/{CHECKPOINT_FILE}") as stream:
                return torch.load(io.BytesIO(stream.read()), map_location=device, weights_only=False)
        except Exception:  # noqa: BLE001 - a partial, emptied or foreign checkpoint: try the one before
            continue
    return None


def report_with_checkpoint(metrics: Dict[str, Any], state: Dict[str, Any]) -> None:
    """Report to Tune with `state` saved as this trial's checkpoint."""
    from ray import tune
    from ray.tune import Checkpoint

    with tempfile.TemporaryDirectory() as directory:
        torch.save(state, os.path.join(directory, CHECKPOINT_FILE))
        tune.report(metrics, checkpoint=Checkpoint.from_directory(directory))


def run_trial(config: Dict[str, Any]) -> None:
    """The Ray Tune function trainable. Raises on error; never prints and quits."""
    from ray import tune

    spec = TrialSpec.from_dict(config["spec"])
    if already_stored(config, spec.trial_id):
        # A resumed sweep whose saved state predates this trial's finish: the store already has it.
        tune.report({"spec_id": spec.trial_id, "status": "already_in_store", "epoch": spec.train.epochs})
        return
    data_dir = config.get("data_dir")
    resources = assigned_resources()
    device = trial_device(resources)
    data.clear_cache()  # a reused worker must not carry another trial's tensors
    if device.type == "cuda":
        torch.cuda.empty_cache()
    model, info = initial_model(spec, device)
    precision = resolve_precision(spec.train.precision, device)
    if device.type == "cuda":
        refuse_if_over_share(model, spec, info, precision, resources.get("GPU", 1.0), device, data_dir)

    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = _load_state(directory, device)
    on_storage = newest_saved_state(config, spec.trial_id, device)
    if on_storage is not None and (state is None or _progress(on_storage) > _progress(state)):
        state = on_storage
    imp_resume = state.pop("imp") if state is not None and "imp" in state else None
    restarts = state["restarts"] + 1 if state is not None else 0

    def save_imp(imp_state: Dict[str, Any]) -> None:
        """IMP's own training levels: checkpointed every epoch, reported as epoch 0 (final training not begun)."""
        report_with_checkpoint(
            {"spec_id": spec.trial_id, "epoch": 0, "status": "pruning", "imp_level": imp_state["level"],
             "imp_epoch": imp_state["epoch"], "restarts": restarts},
            {"imp": imp_state, "started_at": started_at, "restarts": restarts})
        _maybe_inject_failure(config, imp_state["epoch"], phase=f"imp level {imp_state['level']}")

    if state is not None and imp_resume is None:
        named = dict(model.named_parameters())
        masks = Masks({n: named[n] for n in state["trainer"]["masks"]})
        trainer = Trainer(model, masks, spec.train, device)
        trainer.load_state_dict(state["trainer"])
        set_rng_state(state["rng"])
        prune, history = state["prune"], state["history"]
        started_at, train_seconds = state["started_at"], state["train_seconds"]
        prune_runs, resumed_from = state["prune_runs"], state["epoch"]
    else:
        seed_everything(spec.seed)
        started_at = state["started_at"] if state is not None else time.time()
        result = prune_trial(model, spec, info, device, data_dir, resume=imp_resume, save=save_imp)
        prune = result.summary()
        masks = result.masks
        trainer = Trainer(model, masks, spec.train, device)
        history, train_seconds, prune_runs = [], 0.0, 1
        resumed_from = 0

    def store(status: str) -> None:
        write_to_store(config, spec, prune, history, status, started_at=started_at, device=device,
                       precision=precision, train_seconds=train_seconds, resources=resources,
                       restarts=restarts, resumed_from=resumed_from)

    def report(metrics: Dict[str, Any], epoch: int, with_checkpoint: bool) -> None:
        # "spec_id", not "trial_id": Tune overwrites a reported trial_id with its own.
        metrics = {**metrics, "spec_id": spec.trial_id, "epoch": epoch, "prune_runs": prune_runs,
                   "resumed_from_epoch": resumed_from, "restarts": restarts,
                   "remaining_params": prune["remaining_params"], "collapsed": prune["collapsed"],
                   "prune_seconds": prune["prune_seconds"], "device": str(device)}
        if not with_checkpoint:
            tune.report(metrics)
            return
        report_with_checkpoint(metrics, {
            "trainer": trainer.state_dict(), "rng": rng_state(), "prune": prune, "history": history, "epoch": epoch,
            "started_at": started_at, "train_seconds": train_seconds, "prune_runs": prune_runs, "restarts": restarts})

    epochs = spec.train.epochs
    if len(history) >= epochs:
        # Prune-only, or restored from the final epoch's checkpoint (the store write precedes that report).
        last = history[-1] if history else {}
        status = "diverged" if last and not math.isfinite(last["train_loss"]) else "completed"
        store(status)
        report({**last, "status": status}, len(history), with_checkpoint=False)
        return

    test = _batches(spec, data_dir, device, 0, train=False)
    for epoch in range(len(history) + 1, epochs + 1):
        metrics: EpochMetrics = trainer.run_epoch(epoch, _batches(spec, data_dir, device, epoch, train=True), test)
        train_seconds += metrics.seconds
        history.append(metrics.as_row())
        diverged = not math.isfinite(metrics.train_loss)
        finished = diverged or epoch == epochs
        status = "diverged" if diverged else "completed"
        if finished:
            store(status)
            # In the store now: a restart would find it there, so this last report needs no checkpoint.
            report({**metrics.as_row(), "status": status}, epoch, with_checkpoint=not config.get("store"))
            if config.get("store") and not config.get("keep_checkpoints"):
                delete_checkpoints(config, spec.trial_id)
            return
        report({**metrics.as_row(), "status": "running"}, epoch, with_checkpoint=True)
        _maybe_inject_failure(config, epoch)


def delete_checkpoints(config: Dict[str, Any], trial_id: str) -> None:
    """Free a finished trial's checkpoints (hundreds of GB over a paper-scale sweep); best effort.

    Only the state files go: Tune's saved experiment state may still name a
    checkpoint directory, and restoring a sweep fails if it is missing. A
    restored finished trial never reads it: it finds itself in the store first.
    """
    try:
        fs, paths = checkpoint_dirs(config, trial_id)
        for path in paths:
            fs.delete_dir_contents(path, missing_dir_ok=True)
    except OSError:
        pass


def _progress(state: Dict[str, Any]) -> tuple:
    """How far a checkpoint got: IMP's levels come before any epoch of the final training."""
    if "imp" in state:
        return (0, state["imp"]["level"], state["imp"]["epoch"])
    return (1, state["epoch"], 0)


def _maybe_inject_failure(config: Dict[str, Any], epoch: int, phase: str = "training") -> None:
    """Test hook: fail once after `fail_after_epoch` of `fail_in_phase`, so tests can prove a real restart resumes."""
    after, marker = config.get("fail_after_epoch"), config.get("fail_marker")
    if after is None or epoch != after or not marker or config.get("fail_in_phase", "training") != phase:
        return
    marker = pathlib.Path(marker)
    if marker.exists():
        return
    marker.write_text(str(epoch))
    raise RuntimeError(f"injected failure after epoch {epoch}")
