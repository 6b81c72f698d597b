"""Running a planned sweep on Ray Tune: one fresh Tune run over the trials the store lacks.

Each trial continues from its own newest checkpoint (under the storage path, by
trial id); Tune's saved experiment state is never read back. Also here: the
progress lines, run directory names, and freeing finished trials' checkpoints.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import uuid
from collections import Counter
from typing import Dict, Sequence

from common.plugins import Plugin
from orchestrator.cluster import check_feasible, connect, node_capacities
from orchestrator.grid import SweepSpec
from orchestrator.plan import data_dir, print_plan, resource_asks
from orchestrator.resources import ResourcePolicy, trial_resources
from results_store import ResultsStore, filesystem_for
from trainables.specs import TrialSpec

# Set before Ray is imported (it is imported lazily, on launch).
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# The driver prints its own progress lines; Tune's tables and TensorBoard hints would bury them.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
CHECKPOINTS_DIR = "checkpoints"  # under --storage-path: <trial_id>/state-*.pt, the project's own


def absolute(location: str) -> str:
    return location if "://" in location else os.path.abspath(os.path.expanduser(location))


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def make_progress(total: int, name: str, stream=sys.stderr, interval: float = 5.0):
    from ray.tune import Callback

    class Progress(Callback):
        """One line of progress every few seconds: done/total, running, failed, ETA."""

        def __init__(self) -> None:
            self.start = time.time()
            self.done = 0
            self.failed = 0
            self.restarted = 0
            self.last_print = 0.0

        def on_trial_complete(self, iteration, trials, trial, **info):
            if (trial.last_result or {}).get("status") == "failed":
                self.failed += 1
            else:
                self.done += 1
            self.maybe_print(trials, force=True, ending=trial)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.failed += 1
            self.maybe_print(trials, force=True, ending=trial)

        def on_trial_recover(self, iteration, trials, trial, **info):
            self.restarted += 1

        def on_step_end(self, iteration, trials, **info):
            self.maybe_print(trials)

        def maybe_print(self, trials, force: bool = False, ending=None) -> None:
            now = time.time()
            if not force and now - self.last_print < interval:
                return
            self.last_print = now
            running = sum(1 for t in trials if t.status == "RUNNING" and t is not ending)
            elapsed = now - self.start
            finished = self.done + self.failed
            eta = elapsed / finished * (total - finished) if finished else None
            print(f"[{name}] {self.done}/{total} done, {running} running, {self.failed} failed"
                  + (f", {self.restarted} restarted" if self.restarted else "")
                  + f", {format_seconds(elapsed)} elapsed" + (f", ETA {format_seconds(eta)}" if eta is not None else ""),
                  file=stream, flush=True)

    return Progress()


def checkpoint_root(storage_path: str) -> str:
    return f"{absolute(storage_path).rstrip('/')}/{CHECKPOINTS_DIR}"


def free_finished_checkpoints(storage_path: str, done: set) -> int:
    """Delete the checkpoints of trials already in the store (left by a kill between the store write and the
    cleanup); the number of trials freed."""
    import pyarrow.fs as pafs

    fs, root = filesystem_for(checkpoint_root(storage_path))
    freed = 0
    for info in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
        if info.type == pafs.FileType.Directory and info.base_name in done:
            try:
                fs.delete_dir(info.path)
                freed += 1
            except OSError:
                pass
    return freed


def unique_run_name(sweep_name: str) -> str:
    """Tune's run directory: unique per run, so two sweeps started in one second never share one."""
    return f"{sweep_name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def run_sweep(args: argparse.Namespace, sweep: SweepSpec, store: ResultsStore, to_run: Sequence[TrialSpec],
              policy: ResourcePolicy, plugins: Sequence[Plugin] = ()) -> Dict:
    """One fresh Tune run over the trials not in the store; each continues from its own newest checkpoint."""
    from ray import tune
    from ray.tune import PlacementGroupFactory

    from trainables.trial import run_trial

    storage_path = absolute(args.storage_path)

    def resources(config: Dict) -> PlacementGroupFactory:
        return PlacementGroupFactory([trial_resources(TrialSpec.from_dict(config["spec"]), policy)])

    run_name = unique_run_name(sweep.name)
    progress = make_progress(len(to_run), sweep.name)
    tuner = tune.Tuner(
        tune.with_resources(run_trial, resources),
        param_space={
            "spec": tune.grid_search([t.to_dict() for t in to_run]),
            "store": absolute(str(store)), "sweep": sweep.name, "data_dir": data_dir(args),
            "keep_checkpoints": args.keep_checkpoints, "checkpoint_root": checkpoint_root(storage_path),
            "plugins": [p.import_name for p in plugins],
        },
        tune_config=tune.TuneConfig(
            reuse_actors=True, max_concurrent_trials=args.max_concurrent,
            trial_dirname_creator=lambda trial: TrialSpec.from_dict(trial.config["spec"]).trial_id,
        ),
        run_config=tune.RunConfig(
            name=run_name, storage_path=storage_path, verbose=0,
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            callbacks=[progress],
        ),
    )
    print(f"[{sweep.name}] running {len(to_run)} trials; checkpoints in {checkpoint_root(storage_path)}, "
          f"Tune's run directory {storage_path}/{run_name}", file=sys.stderr)
    start = time.time()
    results = tuner.fit()
    errored = [_last_line(str(r.error)) for r in results if r.error is not None]
    errored += [str((r.metrics or {}).get("error")) for r in results
                if r.error is None and (r.metrics or {}).get("status") == "failed"]
    finished = sum(1 for r in results if r.error is not None or (r.metrics or {}).get("status") in
                   ("completed", "diverged", "failed", "already_in_store"))
    return {"ran": len(to_run), "seconds": time.time() - start, "errored": errored,
            "interrupted": finished < len(to_run)}


def _last_line(text: str) -> str:
    """The exception's own message: the last non-empty line of a (remote) traceback."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


def summarize(sweep_ids: set, store: ResultsStore, outcome: Dict) -> Dict:
    """Counts for this sweep's trials; reads only the id and status columns, and only when trials ran."""
    if not outcome["ran"]:
        return {"sweep": outcome["sweep"], "trials": len(sweep_ids), "in_store": outcome["in_store_before"],
                "completed": None, "diverged": None, "errored": 0, "ran": 0, "seconds": 0.0, "store": str(store)}
    done = store.finished_ids() if store.exists() else set()
    mine = sweep_ids & done
    trials = store.read("trials", columns=["trial_id", "status"])
    statuses = Counter(trials[trials.trial_id.isin(mine)].status)
    return {
        "sweep": outcome["sweep"], "trials": len(sweep_ids), "in_store": len(mine),
        "completed": int(statuses.get("completed", 0)), "diverged": int(statuses.get("diverged", 0)),
        "errored": len(outcome["errored"]), "ran": outcome["ran"], "seconds": round(outcome["seconds"], 1),
        "store": str(store),
    }


def launch(args: argparse.Namespace, sweep: SweepSpec, store: ResultsStore, the_plan: Dict) -> Dict:
    """Connect, check the asks against the cluster, and run what is left."""
    import ray

    plugins = the_plan.get("plugin_modules", [])
    where = connect(args.address, args.num_cpus,
                    {"py_modules": list({id(p.shipped): p.shipped for p in plugins}.values())} if plugins else None)
    policy = ResourcePolicy(cluster_has_gpus=ray.cluster_resources().get("GPU", 0) > 0,
                            gpus_per_trial=args.gpus_per_trial, cpus_per_trial=args.cpus_per_trial)
    the_plan["resources"] = resource_asks(the_plan["to_run_specs"], policy)  # now that the GPUs are known
    check_feasible([r["per_trial"] for r in the_plan["resources"]], node_capacities())
    if not args.json:
        print_plan(the_plan, False, f"on {where}")
    return run_sweep(args, sweep, store, the_plan["to_run_specs"], policy, plugins)
