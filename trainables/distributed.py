"""One trial on several workers: a Ray Train TorchTrainer (DDP) inside the sweep's Tune trial.

The Tune function (`trial.run_trial`) stays the trial: it holds the trial's
lease on the store (with its heartbeat), checks the store, launches the
TorchTrainer, and once the workers are done writes the store's rows, once,
from rank 0's final checkpoint. Under it:

- Rank 0 restores the newest checkpoint or prunes (once; the workers never
  prune) and broadcasts the whole training state (weights, masks, optimizer,
  schedule, progress) to every rank; each rank checks the masks it holds hash
  the same as rank 0's, at the start and at the end.
- The model is wrapped in DDP after its masks are bound to its parameters: DDP
  keeps the module's own parameter tensors, so `Masks.apply()` after every
  optimizer step zeroes the very weights DDP trains, on every rank.
- Rank r trains on positions r, r+N, ... of every global batch of the epoch's
  seeded (seed, epoch) order (`data.train_batches(shard=...)`).
- Learning rate: the recipe's batch size is the *global* batch, split evenly
  over the ranks (each rank takes batch/N), and DDP averages the gradients, so
  one step is the one-worker step on the same examples and the recipe's lr
  holds unchanged. Nothing scales it.
- Only rank 0 evaluates (the whole test split) and writes checkpoints, with
  the project's `TrialCheckpoints`, every epoch and once more at the end with
  the final status; a restarted trial (a Tune retry, or the sweep run again)
  continues on every rank from the newest one.
- Rank 0's per-epoch reports reach Tune through Ray's `TuneReportCallback`.
- A worker that dies fails the TorchTrainer (Train's own retries are off) and
  so the Tune trial: Tune retries it under the sweep's `--max-failures`, from
  its checkpoint.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
import uuid
from typing import Any, Dict, List, Optional

import torch

from common.locations import join_location
from results_store import filesystem_for
from trainables import data
from trainables.checkpoints import TrialCheckpoints
from trainables.pruning import Masks
from trainables.pruning.algorithms import ALGORITHMS
from trainables.specs import TrialSpec
from trainables.training import Trainer, resolve_precision


def workers_of(config: Dict[str, Any]) -> int:
    """The trial's Ray Train workers: 1 (the Tune function trains) unless the sweep asked for more."""
    return int((config.get("workers") or {}).get("count", 1))


def mask_hash(masks: Masks) -> str:
    """One digest of every mask (names, shapes and bits), to compare ranks and runs."""
    digest = hashlib.sha256()
    for name in masks.names:
        mask = masks.mask(name).detach().to("cpu", torch.bool).contiguous()
        digest.update(f"{name}:{tuple(mask.shape)};".encode())
        digest.update(mask.numpy().tobytes())
    return digest.hexdigest()


def to_cpu(value: Any) -> Any:
    """A state (nested dicts, lists, tensors) with every tensor on the CPU: ranks may see their GPU as another index."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value


class DdpTrainer(Trainer):
    """A Trainer whose model is DDP-wrapped for the training steps; checkpoints and evaluation see the bare module."""

    def __init__(self, trainer: Trainer, ddp: torch.nn.Module) -> None:  # noqa: D107 - adopts `trainer`'s state
        self.__dict__.update(trainer.__dict__)
        self.bare = trainer.model
        self.model = ddp

    def state_dict(self) -> dict:
        return {"model": self.bare.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "masks": self.masks.state_dict() if self.masks is not None else None}

    def evaluate(self, batches):
        ddp, self.model = self.model, self.bare  # no collective: only rank 0 evaluates
        try:
            return super().evaluate(batches)
        finally:
            self.model = ddp


class LeaseWatch:
    """Rank 0's view of the Tune function's lease: lost once the store's lease file holds another token."""

    def __init__(self, store: Optional[str], name: str, token: Optional[str]) -> None:
        self.store, self.name, self.token = store, name, token
        self.lost = self

    def is_set(self) -> bool:
        if not self.store or not self.token:
            return False
        from results_store import ResultsStore
        from results_store.lease import holder_of

        holder = holder_of(ResultsStore(self.store), self.name)
        return holder is not None and holder.token != self.token


def check_distributable(spec: TrialSpec, workers: int, checkpoints: Optional[TrialCheckpoints]) -> None:
    """Refuse, before any worker starts, what this path cannot run (a deterministic failure, not a retry)."""
    if ALGORITHMS[spec.prune.algorithm].trains_between_cuts:
        raise ValueError(f"{spec.prune.algorithm} trains between its cuts on one worker: run it with one worker "
                         f"per trial")
    if spec.train.batch_size % workers:
        raise ValueError(f"batch {spec.train.batch_size} does not split evenly over {workers} workers")
    if checkpoints is None:
        raise ValueError("a trial on several workers hands its result over in its checkpoints: give the run a "
                         "checkpoint root")


# --- the Tune function's side -------------------------------------------------------------------------------------


def train_and_record(setting) -> None:
    """The distributed counterpart of `trial.train_and_record`: same reports, same errors, same single store write."""
    from trainables import trial

    spec = setting.spec
    workers = workers_of(setting.config)
    trial.report(setting, {"status": "started"})
    try:
        check_distributable(spec, workers, setting.checkpoints)
        state = setting.checkpoints.newest("cpu")
        if state is None or "status" not in state:  # not already trained to the end by an earlier attempt
            run_workers(setting, workers)
            state = setting.checkpoints.newest("cpu")
            if state is None or "status" not in state:
                raise RuntimeError(f"the workers of trial {spec.trial_id} ended without a final checkpoint")
        setting.resources = dict(state["resources"])
        setting.device = torch.device(state["device"])
        setting.precision = resolve_precision(spec.train.precision, setting.device)
        progress = trial.Progress(prune=state["prune"], history=state["history"], started_at=state["started_at"],
                                  train_seconds=state["train_seconds"], restarts=state["restarts"],
                                  resumed_from=state["resumed_from"], step=state["step"])
        trial.record(setting, progress, state["status"], final_masks(spec, state))
    except trial.DETERMINISTIC_ERRORS as exc:
        trial.report(setting, {"status": "failed", "error": f"[{spec.prune.algorithm}] {type(exc).__name__}: {exc}",
                               "epoch": 0, "finished_at": time.time()})
    except trial.LeaseLost as exc:
        trial.report(setting, {"status": "held_elsewhere", "epoch": 0, "finished_at": time.time(),
                               "held_by": str(exc)})
    except Exception as exc:
        from common.storage import storage_errno

        if setting.heartbeat is not None and setting.heartbeat.lost.is_set():
            trial.report(setting, {"status": "held_elsewhere", "epoch": 0, "finished_at": time.time(),
                                   "held_by": f"lost the lease of trial {spec.trial_id}: another sweep took it over"})
            return
        cause = worker_error(exc)
        if isinstance(cause, trial.DETERMINISTIC_ERRORS):
            trial.report(setting, {"status": "failed", "epoch": 0, "finished_at": time.time(),
                                   "error": f"[{spec.prune.algorithm}] {type(cause).__name__}: {cause}"})
            return
        if storage_errno(exc) is None and storage_errno(cause) is None:
            raise  # Tune retries it from its checkpoint
        trial.report_storage_error(setting, cause if storage_errno(cause) is not None else exc)


def worker_error(exc: BaseException) -> BaseException:
    """The first worker's own exception inside a TorchTrainer failure, else `exc`."""
    for failure in (getattr(exc, "worker_failures", None) or {}).values():
        return failure
    return exc


def final_masks(spec: TrialSpec, state: Dict[str, Any]) -> Masks:
    """The final checkpoint's masks, bound to a bare model (what `--keep-masks` writes)."""
    from trainables.initial_prune import initial_model

    model, _ = initial_model(spec, "cpu")
    named = dict(model.named_parameters())
    masks = Masks({n: named[n] for n in state["trainer"]["masks"]})
    masks.load_state_dict(state["trainer"]["masks"])
    return masks


def run_workers(setting, workers: int) -> None:
    """The TorchTrainer of this trial: `workers` ranks (gloo on CPU, nccl on GPUs), each with its share."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    spec = setting.spec
    per_worker = dict((setting.config["workers"].get("resources") or {}).get(spec.data.name) or {"CPU": 1.0})
    use_gpu = per_worker.get("GPU", 0) > 0
    per_worker.pop("GPU", None)
    lease = setting.heartbeat.lease if setting.heartbeat is not None else None
    loop_config = {"config": setting.config, "attempt_started_at": setting.attempt_started_at,
                   "lease_token": lease.token if lease is not None else None,
                   "resources": {**per_worker, **({"GPU": 1.0} if use_gpu else {})}}
    root, run_name = join_location(setting.config["checkpoint_root"], "_ray_train"), f"{spec.trial_id}-{uuid.uuid4().hex[:6]}"
    trainer = TorchTrainer(
        worker_loop, train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=root,
            failure_config=ray.train.FailureConfig(max_failures=0),  # Tune retries the whole trial instead
            callbacks=[TuneReportCallback()]),
    )
    try:
        trainer.fit()
    finally:  # Train's own run directory (a storage marker: the trial's checkpoints are rank 0's): one per attempt
        fs, path = filesystem_for(join_location(root, run_name))
        with contextlib.suppress(OSError):
            fs.delete_dir(path)


# --- every rank's side ----------------------------------------------------------------------------------------------


def broadcast(value: Any) -> Any:
    """Rank 0's `value` on every rank."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any) -> List[Any]:
    import torch.distributed as dist

    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def check_same_masks(masks: Masks) -> List[str]:
    """Every rank's mask digest (rank order); AssertionError unless all equal rank 0's."""
    hashes = gather(mask_hash(masks))
    if len(set(hashes)) != 1:
        raise AssertionError(f"the ranks hold different masks: {hashes}")
    return hashes


def worker_loop(loop_config: Dict[str, Any]) -> None:
    """One rank: receive rank 0's pruned or restored state, train its shard under DDP, rank 0 checkpoints."""
    import ray.train
    import ray.train.torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from common.plugins import import_by_name
    from trainables import trial
    from trainables.initial_prune import initial_model

    config = loop_config["config"]
    import_by_name(config.get("plugins", ()))
    spec = TrialSpec.from_dict(config["spec"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    root = config["checkpoint_root"]
    setting = trial.Setting(
        spec=spec, config=config, resources=dict(loop_config["resources"]), device=device,
        precision=resolve_precision(spec.train.precision, device),
        checkpoints=TrialCheckpoints(root, spec.trial_id) if rank == 0 else None,
        attempt_started_at=loop_config["attempt_started_at"],
        heartbeat=LeaseWatch(config.get("store"), f"trial-{spec.trial_id}", loop_config.get("lease_token")),
    )
    data.clear_cache()
    payload = None
    if rank == 0:
        trainer, progress = trial.restore_or_prune(setting)  # prunes once, here, and checkpoints the result
        payload = {"trainer": to_cpu(trainer.state_dict()), "progress": dataclasses.asdict(progress)}
    payload = broadcast(payload)
    if rank != 0:
        model, _ = initial_model(spec, device)
        named = dict(model.named_parameters())
        trainer = Trainer(model, Masks({n: named[n] for n in payload["trainer"]["masks"]}), spec.train, device)
        trainer.load_state_dict(payload["trainer"])
        progress = trial.Progress(**payload["progress"])
    del payload
    hashes = check_same_masks(trainer.masks)
    ddp = DistributedDataParallel(trainer.model, device_ids=[device.index] if device.type == "cuda" else None)
    trainer = DdpTrainer(trainer, ddp)
    status = train_shard(setting, trainer, progress, rank, world, hashes)
    hashes = check_same_masks(trainer.masks)
    if rank == 0:
        progress.step += 1
        trial.save(setting, {
            "step": progress.step, "phase": "training", "status": status, "trainer": trainer.state_dict(),
            "rng": trial.rng_state(), "prune": progress.prune, "history": progress.history,
            "epoch": len(progress.history), "started_at": progress.started_at,
            "train_seconds": progress.train_seconds, "restarts": progress.restarts,
            "resumed_from": progress.resumed_from, "mask_hashes": hashes, "workers": world,
            "device": str(device), "resources": {k: v * world for k, v in setting.resources.items()}})
    dist.barrier()


def train_shard(setting, trainer: DdpTrainer, progress, rank: int, world: int, hashes: List[str]) -> str:
    """Every epoch after the checkpoint's on this rank's shard; 'completed' or 'diverged' (the same on all ranks)."""
    import ray.train
    import torch.distributed as dist

    from trainables import trial

    spec = setting.spec
    test = data.test_batches(spec.data, setting.data_dir, spec.train.batch_size, setting.device) if rank == 0 else None
    for epoch in range(len(progress.history) + 1, spec.train.epochs + 1):
        batches = data.train_batches(spec.data, setting.data_dir, spec.train.batch_size, setting.device, spec.seed,
                                     epoch, shard=(rank, world))
        if rank == 0:
            metrics = trainer.run_epoch(epoch, batches, test)
            loss, seconds = metrics.train_loss, metrics.seconds
        else:
            start = time.perf_counter()
            loss = trainer.train_epoch(batches)
            seconds = time.perf_counter() - start
        mean = torch.tensor([loss], dtype=torch.float64, device=setting.device)
        dist.all_reduce(mean)  # the epoch's train loss over every rank's shard (NaN on all if any diverged)
        loss = float(mean) / world
        row: Dict[str, Any] = {}
        if rank == 0:
            metrics.train_loss = loss
            progress.train_seconds += seconds
            progress.history.append(metrics.as_row())
            row = {**metrics.as_row(), "epoch": epoch, "status": "running", "restarts": progress.restarts,
                   "resumed_from_epoch": progress.resumed_from, "prune_seconds": progress.prune["prune_seconds"],
                   "spec_id": spec.trial_id, "device": str(setting.device),
                   "attempt_started_at": setting.attempt_started_at, "workers": world, "mask_hashes": hashes}
            if loss == loss and abs(loss) != float("inf") and epoch < spec.train.epochs:
                trial.save_training(setting, trainer, progress)
        if not (loss == loss and abs(loss) != float("inf")):
            return "diverged"
        if epoch < spec.train.epochs:
            ray.train.report(row)  # every rank reports; rank 0's row is the one Tune sees
    return "completed"
