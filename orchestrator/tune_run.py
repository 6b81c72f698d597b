"""Running a planned sweep on Ray Tune: one fresh Tune run over the trials the store lacks.

Each trial continues from its own newest checkpoint (under the storage path, by
trial id); Tune's saved experiment state is never read back. Also here: the
progress lines, run directory names, and freeing finished trials' checkpoints.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from common.locations import absolute, checkpoint_root, join_location
from common.plugins import Plugin
from orchestrator.cluster import check_feasible, connect, node_capacities
from orchestrator.grid import SweepSpec
from orchestrator.plan import add_bill, cluster_resources, data_dir, print_plan, resource_asks
from orchestrator.resources import ResourcePolicy, concurrent_distributed, tune_bundles, worker_resources
from orchestrator.stops import install_stop_handlers, ray_watchdog
from results_store import ResultsStore, filesystem_for
from trainables.specs import TrialSpec

# Set before Ray is imported (it is imported lazily, on launch).
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# The driver prints its own progress lines; Tune's tables and TensorBoard hints would bury them.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


FINAL_STATUSES = ("completed", "diverged", "failed", "already_in_store", "storage_error", "held_elsewhere")  # a trial's last report says one of these


@dataclass
class TrialClock:
    """One trial as its own reports tell it: this attempt's start, its end, and how far it got."""

    started_at: Optional[float] = None
    ended_at: Optional[float] = None  # the trial's finish, or when the driver learnt its attempt failed
    fraction: float = 0.0  # of its epochs done (a prune-only trial: 0 until finished)
    fraction_before: Optional[float] = None  # done before this run (resumed from a checkpoint of an earlier run)
    outcome: Optional[str] = None  # "done" or "failed" once finished


def running_at(intervals: Iterable[Tuple[Optional[float], Optional[float]]], now: float) -> int:
    """How many (start, end) intervals cover `now`: a trial with no known start is not running yet, one with no
    known end still is."""
    return sum(1 for start, end in intervals if start is not None and start <= now and (end is None or end > now))


def running_during(intervals: Iterable[Tuple[Optional[float], Optional[float]]], since: float, now: float) -> int:
    """How many trials ran at once between `since` and `now`, on average (rounded): the trial-seconds in the
    window over its length. Short trials run back to back in each slot, so at any instant one slot may be
    between trials; the average counts the slots in use. A window of no length is the instant `now`."""
    if now <= since:
        return running_at(intervals, now)
    busy = 0.0
    for start, end in intervals:
        if start is None:
            continue
        busy += max(0.0, min(now if end is None else end, now) - max(start, since))
    return int(round(busy / (now - since)))


def eta_seconds(total_cost: float, work: Iterable[Tuple[float, float, float]], elapsed: float) -> Optional[float]:
    """Seconds left at the rate this run has done cost so far, or None before it has done any.

    `work` holds (expected cost, fraction done, fraction done before this run) for each trial heard from;
    the trials not in it have all their cost left. Weighting by cost, not by count, keeps a few cheap trials
    finishing first from promising an early end (nor a few dear ones a late one)."""
    done_ever = done_here = 0.0
    for cost, fraction, before in work:
        done_ever += cost * fraction
        done_here += cost * max(fraction - before, 0.0)
    if done_here <= 0 or elapsed <= 0:
        return None
    return max(total_cost - done_ever, 0.0) / (done_here / elapsed)


def resolved_costs(expected_cost: Optional[Mapping[str, Optional[float]]]) -> Tuple[Dict[str, float], float]:
    """(cost per trial id, the cost of a trial with none): unknown costs are the mean of the known ones, all 1
    when none is known."""
    known = {k: float(v) for k, v in (expected_cost or {}).items()
             if v is not None and math.isfinite(float(v)) and float(v) >= 0}
    default = sum(known.values()) / len(known) if known else 1.0
    if not any(known.values()):  # all zero: weights would say nothing
        known, default = {}, 1.0
    return {k: known.get(k, default) for k in (expected_cost or {})}, default


def make_progress(total: int, name: str, stream=None, interval: float = 5.0,
                  expected_cost: Optional[Mapping[str, Optional[float]]] = None):
    """The progress callback of a run of `total` trials; `expected_cost` maps this run's trial ids to their
    expected cost in any one unit (seconds, FLOPs); without it every trial weighs the same. Lines go to `stream`,
    else to sys.stderr as it is when printing (the Tuner pickles its callbacks: none may hold a stream)."""
    from ray.tune import Callback

    costs, default_cost = resolved_costs(expected_cost)
    total_cost = sum(costs.values()) + max(total - len(costs), 0) * default_cost

    class Progress(Callback):
        """One line of progress every few seconds: done/total, running, failed, ETA.

        Running and done come from the trials' own reported start and finish times, not from Tune's trial
        states (which lag behind with reused actors); each printed (time, running) is kept in `samples`."""

        def __init__(self) -> None:
            self.start = time.time()
            self.clocks: Dict[str, TrialClock] = {}
            self.restarted = 0
            self.last_print = 0.0
            self.samples: List[Tuple[float, int]] = []
            self.keys: Dict[str, str] = {}  # Tune's trial id -> the project's

        def setup(self, **info):
            self.start = time.time()  # the Tune run's start, not this object's: the rate counts running time

        def clock(self, trial, result: Optional[Dict] = None) -> TrialClock:
            """The trial's clock, by the project's trial id (from its reports, else from its spec)."""
            key = (result or {}).get("spec_id") or self.keys.get(trial.trial_id)
            if key is None:
                try:
                    key = TrialSpec.from_dict(trial.config["spec"]).trial_id
                except Exception:  # a spec the trial itself fails on: Tune's id will do
                    key = trial.trial_id
            self.keys[trial.trial_id] = key
            return self.clocks.setdefault(key, TrialClock())

        def on_trial_result(self, iteration, trials, trial, result, **info):
            clock = self.clock(trial, result)
            started = result.get("attempt_started_at")
            if started is not None and started != clock.started_at and clock.outcome is None:
                clock.started_at, clock.ended_at = started, None  # a new attempt replaces the old
            epochs = ((trial.config.get("spec") or {}).get("train") or {}).get("epochs")
            if result.get("epoch") is not None and epochs:
                clock.fraction = min(max(result["epoch"] / epochs, 0.0), 1.0)
                if clock.fraction_before is None and result.get("resumed_from_epoch") is not None:
                    clock.fraction_before = min(result["resumed_from_epoch"] / epochs, 1.0)
            if result.get("status") in FINAL_STATUSES:
                self.finish(clock, result["status"], result.get("finished_at"))
                self.maybe_print(force=self.all_finished())

        def on_trial_complete(self, iteration, trials, trial, **info):
            clock = self.clock(trial)
            if clock.outcome is None:  # no final report arrived: ended now
                self.finish(clock, (trial.last_result or {}).get("status") or "failed", None)
                self.maybe_print(force=self.all_finished())

        def on_trial_error(self, iteration, trials, trial, **info):
            self.finish(self.clock(trial), "failed", None)  # Tune gave up on it: finished when we learn it
            self.maybe_print(force=self.all_finished())

        def all_finished(self) -> bool:
            """Every trial has ended: the last line is printed then, whatever the interval."""
            return sum(1 for c in self.clocks.values() if c.outcome is not None) >= total

        def on_trial_recover(self, iteration, trials, trial, **info):
            self.restarted += 1
            clock = self.clock(trial)
            if clock.ended_at is None:
                clock.ended_at = time.time()  # this attempt is over; the next one's first report starts it again

        def on_step_end(self, iteration, trials, **info):
            self.maybe_print()

        @staticmethod
        def finish(clock: TrialClock, status: str, finished_at: Optional[float]) -> None:
            """Done for good: none of its cost is left. Only a completed trial worked its way there; the epochs a
            diverged, failed or already stored trial skips are no work of this run's, so they leave the rate be."""
            if clock.outcome is not None:
                return
            clock.outcome = {"failed": "failed", "storage_error": "failed", "held_elsewhere": "held"}.get(status, "done")
            clock.ended_at = finished_at if finished_at is not None else time.time()
            if status != "completed":
                clock.fraction_before = (clock.fraction_before or 0.0) + (1.0 - clock.fraction)
            clock.fraction = 1.0

        def running(self, now: float) -> int:
            """Trials running at once over the last interval, on average (an interval of 0: the instant); none
            once every trial has ended."""
            if self.all_finished():
                return 0
            return running_during([(c.started_at, c.ended_at) for c in self.clocks.values()],
                                  max(now - interval, self.start), now)

        def eta(self, now: float) -> Optional[float]:
            work = [(costs.get(key, default_cost), c.fraction, c.fraction_before or 0.0)
                    for key, c in self.clocks.items()]
            return eta_seconds(total_cost, work, now - self.start)

        def maybe_print(self, force: bool = False) -> None:
            now = time.time()
            if not force and now - self.last_print < interval:
                return
            self.last_print = now
            running = self.running(now)
            self.samples.append((now, running))
            outcomes = Counter(c.outcome for c in self.clocks.values())
            elapsed, eta = now - self.start, self.eta(now)
            print(f"[{name}] {outcomes['done']}/{total} done, {running} running, {outcomes['failed']} failed"
                  + (f", {self.restarted} restarted" if self.restarted else "")
                  + (f", {outcomes['held']} being trained by another sweep" if outcomes["held"] else "")
                  + f", {format_seconds(elapsed)} elapsed" + (f", ETA {format_seconds(eta)}" if eta is not None else ""),
                  file=stream or sys.stderr, flush=True)

    return Progress()


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
              policy: ResourcePolicy, plugins: Sequence[Plugin] = (),
              expected_cost: Optional[Mapping[str, Optional[float]]] = None) -> Dict:
    """One fresh Tune run over the trials not in the store; each continues from its own newest checkpoint.
    `expected_cost` (trial id -> cost in any one unit) weighs the progress line's ETA."""
    from ray import tune
    from ray.tune import PlacementGroupFactory

    from orchestrator.trackers import tracker_callbacks, trial_run_name
    from trainables.trial import run_trial

    storage_path = absolute(args.storage_path)
    # Tune's saved experiment state is never read back (each trial resumes from its own checkpoint), so its failure
    # to save it (a full disk) is no news; the trial that meets the disk names it in one line.
    logging.getLogger("ray.tune.execution.experiment_state").setLevel(logging.CRITICAL)

    def resources(config: Dict) -> PlacementGroupFactory:
        return PlacementGroupFactory(tune_bundles(TrialSpec.from_dict(config["spec"]), policy))

    class StopOnStorageError(tune.Stopper):
        """A full, read-only or forbidden disk ends the whole run at once: every trial would only fail the same way
        after training (before: 4 retries of every trial, each trained in full, 32 tracebacks)."""

        def __init__(self) -> None:
            self.stopped = False

        def __call__(self, trial_id, result) -> bool:
            if result.get("status") == "storage_error":
                self.stopped = True
            return False

        def stop_all(self) -> bool:
            return self.stopped

    run_name = unique_run_name(sweep.name)
    progress = make_progress(len(to_run), sweep.name,
                             expected_cost={t.trial_id: (expected_cost or {}).get(t.trial_id) for t in to_run})
    tuner = tune.Tuner(
        tune.with_resources(run_trial, resources),
        param_space={
            "spec": tune.grid_search([t.to_dict() for t in to_run]),
            "store": absolute(str(store)), "sweep": sweep.name, "data_dir": data_dir(args),
            "keep_checkpoints": args.keep_checkpoints, "checkpoint_root": checkpoint_root(storage_path),
            "keep_masks": getattr(args, "keep_masks", False),  # a run option, never part of the trial's id
            "plugins": [p.import_name for p in plugins],
            # Ray Train workers per trial and each one's ask, by dataset: run options, never part of the trial's id.
            "workers": {"count": policy.workers, "resources": {t.data.name: worker_resources(t, policy)
                                                               for t in to_run} if policy.workers > 1 else {}},
        },
        tune_config=tune.TuneConfig(
            reuse_actors=True, max_concurrent_trials=args.max_concurrent if policy.workers <= 1 else
            concurrent_distributed(policy, list(to_run), __import__("ray").cluster_resources(), args.max_concurrent),
            trial_dirname_creator=lambda trial: TrialSpec.from_dict(trial.config["spec"]).trial_id,
            trial_name_creator=trial_run_name,  # what trackers and logs call it; the directory stays its id
        ),
        run_config=tune.RunConfig(
            name=run_name, storage_path=storage_path, verbose=0,
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            callbacks=[progress, *tracker_callbacks(getattr(args, "trackers", ()), sweep.name, storage_path,
                                                    getattr(args, "mlflow_uri", None), getattr(args, "wandb_project", None))],
            stop=StopOnStorageError(),
        ),
    )
    print(f"[{sweep.name}] running {len(to_run)} trials; checkpoints in {checkpoint_root(storage_path)}, "
          f"Tune's run directory {join_location(storage_path, run_name)}", file=sys.stderr)
    start = time.time()
    try:
        results = tuner.fit()
    except Exception as exc:  # Tune's own writes under the storage path: name the disk, not Ray's EOFError
        problem = storage_problem(storage_path, exc)
        if problem is None:
            raise
        return {"ran": len(to_run), "seconds": time.time() - start, "errored": [], "interrupted": True,
                "storage_error": problem}
    storage = [str(r.metrics.get("error")) for r in results if (r.metrics or {}).get("status") == "storage_error"]
    errored = [_last_line(str(r.error)) for r in results if r.error is not None]
    errored += [str((r.metrics or {}).get("error")) for r in results
                if r.error is None and (r.metrics or {}).get("status") == "failed"]
    finished = sum(1 for r in results if r.error is not None or (r.metrics or {}).get("status") in FINAL_STATUSES)
    held = sorted({str(r.metrics.get("spec_id")) for r in results
                   if r.error is None and (r.metrics or {}).get("status") == "held_elsewhere"})
    return {"ran": len(to_run), "seconds": time.time() - start, "errored": errored,
            "interrupted": finished < len(to_run), "storage_error": storage[0] if storage else None, "held": held}


def storage_problem(storage_path: str, exc: BaseException) -> Optional[str]:
    """One line naming the storage path and its error, when the run died of a disk that is full, read-only or
    forbidden (in the exception, or found by writing a probe there now); None for any other error."""
    from common.storage import one_line, storage_errno
    from results_store import StoreError, check_writable

    if storage_errno(exc) is not None:
        return f"--storage-path {storage_path}: {one_line(exc)}"
    try:
        check_writable(storage_path, "--storage-path")
    except StoreError as probe:
        if storage_errno(probe) is not None:
            return str(probe)
    return None


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
    install_stop_handlers()  # again: ray.init replaced them (SIGTERM ended the driver with a C++ stack dump)
    policy = ResourcePolicy(cluster_has_gpus=ray.cluster_resources().get("GPU", 0) > 0,
                            gpus_per_trial=args.gpus_per_trial, cpus_per_trial=args.cpus_per_trial,
                            workers_per_trial=getattr(args, "workers_per_trial", None))
    the_plan["resources"] = resource_asks(the_plan["to_run_specs"], policy)  # now that the GPUs are known
    check_feasible([r["per_trial"] for r in the_plan["resources"]], node_capacities())
    add_bill(the_plan, store, policy, cluster_resources(where), args.max_concurrent, args.keep_checkpoints)
    if not args.json:
        print_plan(the_plan, False, f"on {where}")
    to_run = the_plan["to_run_specs"]
    with ray_watchdog(str(store)):
        outcome = run_sweep(args, sweep, store, to_run, policy, plugins, the_plan.get("expected_cost"))
        # Trials another sweep was training: wait for it, then train those it left unfinished (its lease went stale).
        while outcome.get("held") and not outcome["interrupted"] and not outcome.get("storage_error"):
            left = wait_for_other_sweeps(store, outcome["held"], sweep.name)
            if not left:
                break
            more = run_sweep(args, sweep, store, [t for t in to_run if t.trial_id in left], policy, plugins,
                             the_plan.get("expected_cost"))
            outcome = {**more, "ran": outcome["ran"] + more["ran"], "seconds": outcome["seconds"] + more["seconds"],
                       "errored": outcome["errored"] + more["errored"]}
    return outcome


def wait_for_other_sweeps(store: ResultsStore, trial_ids: Sequence[str], name: str,
                          stream=None, note_every: float = 30.0) -> List[str]:
    """Wait while another sweep holds a fresh lease on any of `trial_ids`; the ids not in the store once none is
    held (their holder died: this sweep trains them, from their checkpoints). A line every `note_every` s names
    what it waits for, so a batch log never goes silent."""
    from results_store.lease import holder_of, lease_ttl

    poll = min(max(lease_ttl() / 4, 0.5), 10.0)
    last_note = 0.0
    while True:
        done = store.finished_ids() if len(trial_ids) > 20 else {i for i in trial_ids if store.has_trial(i)}
        open_ids = [i for i in trial_ids if i not in done]
        holders = {i: holder_of(store, f"trial-{i}") for i in open_ids}
        held = {i: h for i, h in holders.items() if h is not None}
        if not held:
            return open_ids
        if time.time() - last_note >= note_every:
            last_note = time.time()
            first = sorted(held)[0]
            print(f"[{name}] waiting for {len(held)} trial(s) another sweep is training (trial {first}: "
                  f"{held[first].describe()}); each is trained once, by whichever sweep holds it", file=stream or sys.stderr,
                  flush=True)
        time.sleep(poll)
