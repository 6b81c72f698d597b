"""Live curves in the trackers researchers already use: TensorBoard, MLflow, W&B (`--log-to`).

Each is Ray Tune's own logger callback, narrowed to what a researcher reads: every
run is named for its trial (`run_name`), its config is the trial's description
(`tracker_config`), and its metrics are exactly the epoch rows the store keeps,
stepped by epoch. Tune's status reports (started, pruning, failed, ...) never
reach a tracker. This module imports no Ray, torch or tracker package at import
time, so `check_trackers` runs among the sweep's early argument checks.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any, Dict, List, Optional, Sequence

from common.checks import UsageError, did_you_mean

TRACKERS = ("tensorboard", "mlflow", "wandb")
# The module each tracker needs, and the extra that installs it (tensorboardX ships with the default install).
_NEEDS = {"tensorboard": ("tensorboardX", None), "mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}
EPOCH_METRICS = ("epoch", "train_loss", "test_loss", "top1", "top5", "lr", "seconds")  # the store's `epochs` row
EPOCH_STATUSES = ("running", "completed", "diverged")  # the reports of trainables/trial.py that carry an epoch row
DEFAULT_WANDB_PROJECT = "prune-sweep"


def parse_trackers(value: Optional[str]) -> List[str]:
    """`--log-to tensorboard,mlflow` as a list of known tracker names (one-line error otherwise)."""
    if not value:
        return []
    names = [n.strip() for n in value.split(",") if n.strip()]
    for name in names:
        if name not in TRACKERS:
            raise UsageError(f"unknown tracker {name!r} in --log-to{did_you_mean(name, TRACKERS)}; valid: "
                             f"{', '.join(TRACKERS)}")
    return list(dict.fromkeys(names))


def check_trackers(names: Sequence[str], storage_path: str, mlflow_uri: Optional[str]) -> None:
    """Before Ray starts: each tracker's package is installed, and MLflow has somewhere to write."""
    for name in names:
        module, extra = _NEEDS[name]
        if importlib.util.find_spec(module) is None:
            raise UsageError(f"--log-to {name} needs the {module} package: pip install -e \".[{extra}]\"")
    if "wandb" in names and not _wandb_can_log():
        raise UsageError("--log-to wandb needs a W&B login: run `wandb login` or set WANDB_API_KEY; or set "
                         "WANDB_MODE=offline to keep the runs on disk for `wandb sync`")
    if "mlflow" in names and mlflow_tracking_uri(storage_path, mlflow_uri) is None:
        raise UsageError(f"--log-to mlflow with a remote --storage-path {storage_path} needs --mlflow-uri or "
                         f"$MLFLOW_TRACKING_URI (an MLflow server, or a local or shared directory)")


def _wandb_can_log() -> bool:
    """Offline, or an API key to hand (W&B's own check, without a network call): else Tune's callback would fail
    only once Ray has started."""
    if os.environ.get("WANDB_MODE") in ("offline", "disabled") or os.environ.get("WANDB_API_KEY"):
        return True
    import wandb

    return bool(wandb.login(prompt=False, verify=False))


def mlflow_tracking_uri(storage_path: str, given: Optional[str]) -> Optional[str]:
    """--mlflow-uri, else $MLFLOW_TRACKING_URI, else file:<storage path>/mlruns when the storage path is local
    (None for a remote one: MLflow's file store cannot write to an object store)."""
    if given or os.environ.get("MLFLOW_TRACKING_URI"):
        return given or os.environ["MLFLOW_TRACKING_URI"]
    local = local_directory(storage_path)
    return None if local is None else "file:" + os.path.join(local, "mlruns")


def local_directory(storage_path: str) -> Optional[str]:
    """The storage path as an absolute local directory; None for a remote one (s3://, gs://, ...)."""
    if "://" in storage_path and not storage_path.startswith("file://"):
        return None
    return os.path.abspath(storage_path[len("file://"):] if storage_path.startswith("file://") else storage_path)


def wandb_project(given: Optional[str]) -> str:
    return given or os.environ.get("WANDB_PROJECT") or DEFAULT_WANDB_PROJECT


def run_name(spec) -> str:
    """`vgg16_bn-cifar100-synflow-1e2-s0`, then each setting that differs from its default (budget `erk`,
    iterations `x10`, scoring mode `train`, ablation `shuffle`, imp's `levels3`, ...): every field of the
    description that can vary within one sweep's (model, dataset) pair, so no two trials of a sweep share one."""
    from common.vocabulary import DEFAULT_ABLATION, DEFAULT_PRUNE_MODE, DEFAULT_SCHEDULE, DEFAULT_SCOPE, default_iterations

    p = spec.prune
    parts = [spec.model.name, spec.data.name, p.algorithm, f"1e{p.log10_compression:g}", f"s{spec.seed}"]
    if p.scope != DEFAULT_SCOPE:
        parts.append(p.scope)
    if p.iterations != default_iterations(p.algorithm):
        parts.append(f"x{p.iterations}")
    if p.schedule != DEFAULT_SCHEDULE:
        parts.append(p.schedule)
    if p.mode != DEFAULT_PRUNE_MODE:
        parts.append(p.mode)
    if p.ablation != DEFAULT_ABLATION:
        parts.append(p.ablation)
    if p.levels:
        parts.append(f"levels{p.levels}")
    if p.examples_per_class != 10:
        parts.append(f"ex{p.examples_per_class}")
    parts += [f"+{kind}" for kind in ("bias", "batchnorm", "residual", "layernorm", "embedding")
              if getattr(p, f"prune_{kind}")]
    return "-".join(parts)


def tracker_config(spec, sweep: str) -> Dict[str, Any]:
    """The trial's settings as flat scalars (what every tracker can show and filter on); no paths."""
    p, t = spec.prune, spec.train
    return {
        "name": run_name(spec), "trial_id": spec.trial_id, "sweep": sweep,
        "model": spec.model.name, "dataset": spec.data.name, "algorithm": p.algorithm,
        "log10_compression": p.log10_compression, "compression": p.compression, "seed": spec.seed,
        "iterations": p.iterations, "schedule": p.schedule, "scope": p.scope, "mode": p.mode,
        "ablation": p.ablation, "levels": p.levels,
        "epochs": t.epochs, "batch_size": t.batch_size, "optimizer": t.optimizer, "lr": t.lr,
        "momentum": t.momentum, "weight_decay": t.weight_decay, "lr_schedule": t.lr_schedule,
        "lr_drops": ",".join(str(d) for d in t.lr_drops), "lr_drop_factor": t.lr_drop_factor,
        "warmup_epochs": t.warmup_epochs, "precision": t.precision,
    }


def epoch_row(result: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The epoch row a report carries (its non-missing values), or None for a status report."""
    if result.get("status") not in EPOCH_STATUSES or not result.get("epoch") or "train_loss" not in result:
        return None
    return {k: result[k] for k in EPOCH_METRICS if result.get(k) is not None}


def trial_run_name(trial) -> str:
    """Tune's `trial_name_creator`: the trial's run name (its Tune id if its description does not parse; the
    trial then fails on its own, with the reason)."""
    from trainables.specs import TrialSpec

    try:
        return run_name(TrialSpec.from_dict(trial.config["spec"]))
    except Exception:
        return trial.trial_id


def _config_of(trial) -> Dict[str, Any]:
    from trainables.specs import TrialSpec

    return tracker_config(TrialSpec.from_dict(trial.config["spec"]), trial.config.get("sweep", ""))


def tracker_callbacks(names: Sequence[str], sweep: str, storage_path: str, mlflow_uri: Optional[str] = None,
                      project: Optional[str] = None) -> List[Any]:
    """Tune logger callbacks for the trackers in `names` (checked by `check_trackers`)."""
    callbacks: List[Any] = []
    if "tensorboard" in names:
        callbacks.append(_tensorboard())
    if "mlflow" in names:
        callbacks.append(_mlflow(mlflow_tracking_uri(storage_path, mlflow_uri), sweep))
    if "wandb" in names:
        callbacks.append(_wandb(wandb_project(project), sweep, wandb_dir(storage_path)))
    return callbacks


def where_curves_are(names: Sequence[str], sweep: str, storage_path: str, mlflow_uri: Optional[str] = None,
                     project: Optional[str] = None) -> List[str]:
    """One line per tracker: where its curves go and the command that opens them."""
    lines = []
    if "tensorboard" in names:
        lines.append(f"live curves: tensorboard --logdir {storage_path}")
    if "mlflow" in names:
        uri = mlflow_tracking_uri(storage_path, mlflow_uri)
        opener = (f"MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {uri} (the UI needs pip install mlflow)"
                  if uri.startswith("file:") else f"MLflow at {uri}")
        lines.append(f"live curves: {opener}; experiment {sweep}")
    if "wandb" in names:
        runs, project = os.path.join(wandb_dir(storage_path), "wandb"), wandb_project(project)
        if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
            lines.append(f"live curves: W&B offline runs in {runs}/offline-run-* (project {project}, group {sweep}); "
                         f"upload with: wandb sync {runs}/offline-run-*")
        else:
            lines.append(f"live curves: W&B project {project}, group {sweep} (local copies in {runs})")
    return lines


def _tensorboard():
    """Event files in `<trial dir>/<run name>/`: TensorBoard labels a run by its directory, and the trial's
    directory itself must stay its trial id (the checkpoints and the store go by it)."""
    from ray.tune.logger import TBXLoggerCallback
    from tensorboardX.summary import hparams

    class EpochTBXLogger(TBXLoggerCallback):
        def log_trial_start(self, trial):
            if trial in self._trial_writer:
                self._trial_writer[trial].close()
            trial.init_local_path()
            self._trial_writer[trial] = self._summary_writer_cls(os.path.join(trial.local_path, str(trial)),
                                                                 flush_secs=30)
            self._trial_result[trial] = {}

        def log_trial_result(self, iteration, trial, result):
            row = epoch_row(result)
            if row is not None:  # tags ray/tune/<metric>, step = epoch
                super().log_trial_result(iteration, trial, {**row, "training_iteration": row["epoch"]})

        def _try_log_hparams(self, trial, result):
            for summary in hparams(hparam_dict=_config_of(trial), metric_dict=result):
                self._trial_writer[trial].file_writer.add_summary(summary)

    return EpochTBXLogger()


def _mlflow(tracking_uri: str, sweep: str):
    """One MLflow run per trial in the experiment named for the sweep. A directory store (the default, beside the
    run directories) needs no server nor database; MLflow 3 keeps it in maintenance mode behind an opt-in."""
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    if "://" not in tracking_uri or tracking_uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

    class EpochMLflowLogger(MLflowLoggerCallback):
        def log_trial_start(self, trial):
            if trial not in self._trial_runs:  # a restarted trial goes on in its run
                tags = {**self.tags, "trial_name": str(trial), "trial_id": _config_of(trial)["trial_id"]}
                self._trial_runs[trial] = self.mlflow_util.start_run(tags=tags, run_name=str(trial)).info.run_id
                self.mlflow_util.log_params(run_id=self._trial_runs[trial], params_to_log=_config_of(trial))

        def log_trial_result(self, iteration, trial, result):
            row = epoch_row(result)
            if row is not None:
                if trial not in self._trial_runs:
                    self.log_trial_start(trial)
                self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=row, step=row["epoch"])

    return EpochMLflowLogger(tracking_uri, experiment_name=sweep, tags={"sweep": sweep})


def wandb_dir(storage_path: str) -> str:
    """Where W&B keeps its run directories (`wandb/run-*`, `wandb/offline-run-*` for `wandb sync`): $WANDB_DIR, else
    the storage path when it is local, else this directory. Never a trial's own directory: Tune copies that to the
    storage path while the logging actor may still be writing, and an offline run's copy could keep only its header."""
    if os.environ.get("WANDB_DIR"):
        return os.path.abspath(os.environ["WANDB_DIR"])
    return local_directory(storage_path) or os.getcwd()


def _wandb(project: str, sweep: str, directory: str):
    """One W&B run per trial in the project, grouped by sweep, named for its trial."""
    from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

    mode = os.environ.get("WANDB_MODE")

    class FlushingActor(_WandbLoggingActor):
        def run(self):
            super().run()
            # wandb.finish() hands the last records to W&B's service process; Tune kills this actor as soon as run()
            # returns, so wait for that process to close the run's file first.
            self._wandb.teardown()

    class EpochWandbLogger(WandbLoggerCallback):
        _logger_actor_cls = FlushingActor

        def _start_logging_actor(self, trial, exclude_results, **init):
            if not self._remote_logger_class:  # as Tune's, without restarts: a dead logger loses curves, not
                # trials, and Ray warns about restarting an actor whose arguments live in the object store
                import ray
                from ray.air.integrations.wandb import _force_on_current_node

                keys = {k: os.environ[k] for k in ("WANDB_API_KEY",) if k in os.environ}
                self._remote_logger_class = ray.remote(num_cpus=0, **_force_on_current_node(), max_restarts=0,
                                                       runtime_env={"env_vars": keys})(self._logger_actor_cls)
            os.makedirs(directory, exist_ok=True)
            init.update(config=_config_of(trial), dir=directory)
            if mode:  # the logging actor's environment is the Ray node's, not this driver's
                init["mode"] = mode
            super()._start_logging_actor(trial, exclude_results, **init)

        def log_trial_result(self, iteration, trial, result):
            row = epoch_row(result)
            if row is not None:  # the logging actor steps by training_iteration: here the epoch
                super().log_trial_result(iteration, trial, {**row, "training_iteration": row["epoch"]})

    return EpochWandbLogger(project=project, group=sweep)
