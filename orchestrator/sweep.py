"""Run a sweep on a Ray cluster (or local Ray) and land every finished trial in the results store.

    python -m orchestrator.sweep                       # the offline quickstart preset, local Ray, CPU
    python -m orchestrator.sweep --preset fig6 --store s3://bucket/results --storage-path s3://bucket/ray
    python -m orchestrator.sweep --preset fig1 --seeds 0:5 --dry-run   # what would run, and what is done
    python -m orchestrator.sweep --preset fig6 --resume                # continue an interrupted sweep

Progress belongs to the project: the store says which trials are done, and
each unfinished trial's newest whole checkpoint (under the storage path, by
trial id) says how far it got. Every run of a sweep is a fresh Tune run over
the trials not in the store, each continuing from its own checkpoint, so the
same command after any kill finishes the sweep with every trial exactly once
(`--resume` is another spelling of it). Tune's saved experiment state is never
read back.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import re
import sys
import time
import uuid
from collections import Counter
from typing import Dict, List, Optional, Sequence

from orchestrator.cluster import check_feasible, connect, node_capacities
from orchestrator.grid import PRESETS, SweepSpec, with_overrides
from orchestrator.resources import ResourcePolicy, trial_resources
from results_store import ResultsStore, StoreError, check_writable, filesystem_for
from trainables.cli import OneLineArgumentParser
from trainables.pruning.scores import SCORERS
from trainables.specs import TrialSpec

# Bounding kept checkpoints (num_to_keep) makes Tune snapshot experiment state often; that is intended here.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
# The driver prints its own progress lines; Tune's tables and TensorBoard hints would bury them.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

DEFAULT_STORE = "results"
DEFAULT_STORAGE = "ray_runs"
DEFAULT_MAX_FAILURES = 3
CHECKPOINTS_DIR = "checkpoints"  # under --storage-path: <trial_id>/state-*.pt, the project's own
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Bounds on the driver's own numbers (the grid's are checked by the descriptions).
MAX_FAILURES_BOUND = 1000
MAX_CPUS_PER_TRIAL = 4096
MAX_GPUS_PER_TRIAL = 64


class UsageError(ValueError):
    """Bad input: one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineArgumentParser(prog="python -m orchestrator.sweep", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="presets: " + "; ".join(f"{n}: {PRESETS[n].description}" for n in PRESETS.names()))
    ap.add_argument("--preset", default="quickstart", help=f"one of: {', '.join(PRESETS.names())} (default quickstart)")
    axes = ap.add_argument_group("grid overrides (replace the preset's axis)")
    axes.add_argument("--models", help="comma-separated model names")
    axes.add_argument("--datasets", help="comma-separated dataset names")
    axes.add_argument("--algorithms", help="comma-separated: synflow, snip, grasp, magnitude, random, imp")
    axes.add_argument("--log10-compressions", help="a list 0,0.5,1 or a range start:stop:step like 0:3:0.25")
    axes.add_argument("--seeds", help="a list 0,1,2 or a range 0:3 (stop excluded)")
    axes.add_argument("--iterations", type=int, help="pruning rounds for every algorithm")
    axes.add_argument("--levels", type=int, help="train-prune-rewind levels for imp (default 3)")
    train = ap.add_argument_group("training overrides (on top of each pair's paper recipe)")
    train.add_argument("--epochs", type=int, help="epochs per trial; learning-rate drops move in proportion")
    train.add_argument("--lr", type=float)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--weight-decay", type=float)
    train.add_argument("--precision", choices=("auto", "fp32", "bf16"), help="auto: bf16 on GPU, fp32 on CPU")
    where = ap.add_argument_group("where things live")
    where.add_argument("--store", default=DEFAULT_STORE, help="results store: a directory or a pyarrow URI (s3://, gs://)")
    where.add_argument("--storage-path", default=DEFAULT_STORAGE, help="Ray's run directory and checkpoints (shared on a cluster)")
    where.add_argument("--data-dir", help="dataset root on every node (default $PRUNE_SWEEP_DATA or ./data)")
    where.add_argument("--address", help="Ray cluster address host:port (default: a running cluster, else local Ray)")
    run = ap.add_argument_group("running")
    run.add_argument("--resume", action="store_true",
                     help="the same as running the command again: skip what is in the store, continue the rest "
                          "from their checkpoints")
    run.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    run.add_argument("--max-failures", type=int, default=DEFAULT_MAX_FAILURES, help="restarts per trial")
    run.add_argument("--gpus-per-trial", type=float, help="override the GPU share sized to model and data")
    run.add_argument("--cpus-per-trial", type=float, help="override the CPUs per trial")
    run.add_argument("--num-cpus", type=int, help="CPUs of a local Ray started here (default: all)")
    run.add_argument("--name", help="sweep label in the store: letters, digits, '_', '.', '-' (default: the "
                                   "preset's name)")
    run.add_argument("--skip-data-check", action="store_true",
                     help="do not load each needed dataset on this machine before launching (when only the "
                          "cluster's workers hold the data)")
    run.add_argument("--keep-checkpoints", action="store_true",
                     help="keep finished trials' checkpoints (default: deleted once the trial is in the store)")
    run.add_argument("--dry-run", action="store_true", help="run nothing; print the plan")
    run.add_argument("--json", action="store_true", help="print the plan or the summary as one JSON object")
    return ap


def resolve_sweep(args: argparse.Namespace) -> SweepSpec:
    base = PRESETS[args.preset]
    sweep = with_overrides(
        base, models=args.models, datasets=args.datasets, algorithms=args.algorithms,
        log10_compressions=args.log10_compressions, seeds=args.seeds, iterations=args.iterations, levels=args.levels,
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, weight_decay=args.weight_decay,
        precision=args.precision,
    )
    if args.name is not None:
        if not _LABEL.match(args.name) or ".." in args.name:
            raise UsageError(f"bad --name {args.name!r}; a label of letters, digits, '_', '.', '-' (at most 64, "
                             f"starting with a letter or digit)")
        sweep = dataclasses.replace(sweep, name=args.name)
    check_driver_numbers(args)
    return sweep


def check_driver_numbers(args: argparse.Namespace) -> None:
    """Every number the driver itself takes is finite and in range (one line, exit 2, otherwise)."""
    bounds = {"max_concurrent": (1, 100_000), "max_failures": (0, MAX_FAILURES_BOUND), "num_cpus": (1, 100_000),
              "gpus_per_trial": (0, MAX_GPUS_PER_TRIAL), "cpus_per_trial": (0, MAX_CPUS_PER_TRIAL)}
    for flag, (low, high) in bounds.items():
        value = getattr(args, flag)
        if value is None:
            continue
        ok = math.isfinite(value) and low <= value <= high and (flag != "cpus_per_trial" or value > 0)
        if not ok:
            lower = "> 0" if flag == "cpus_per_trial" else f">= {low:g}"
            raise UsageError(f"--{flag.replace('_', '-')} must be {lower} and <= {high:g}, got {value:g}")


def estimated_prune_passes(spec: TrialSpec) -> Optional[int]:
    """Forward/backward passes the prune will take (iterations x examples); None for imp (it trains)."""
    if spec.prune.algorithm == "imp":
        return None
    from trainables.data import dataset_info

    scorer = SCORERS[spec.prune.algorithm]
    info = dataset_info(spec.data.name, spec.data.input_shape, spec.data.num_classes)
    examples = spec.prune.examples_per_class * info.num_classes if scorer.needs_data else 1
    return spec.prune.iterations * examples * scorer.passes_per_example


def prunable_weights(model: str, dataset: str) -> int:
    """Prunable conv/linear weights of the pair's network (builds it on the CPU once)."""
    from trainables.data import dataset_info
    from trainables.models import build_model
    from trainables.pruning import prunable_parameters

    info = dataset_info(dataset)
    network = build_model(model, info.input_shape, info.num_classes, seed=0)
    return sum(p.size for p in prunable_parameters(network, info.input_shape))


def describe_recipe(train) -> str:
    if train.epochs == 0:
        return "prune only (no training)"
    drops = ", ".join(map(str, train.lr_drops)) or "none"
    return (f"{train.epochs} epochs, batch {train.batch_size}, lr {train.lr:g} x{train.lr_drop_factor:g} at epochs "
            f"{drops}, momentum {train.momentum:g}, weight decay {train.weight_decay:g}, precision {train.precision}")


def needs_data(spec: TrialSpec) -> bool:
    return spec.train.epochs > 0 or spec.prune.algorithm == "imp" or SCORERS[spec.prune.algorithm].needs_data


def check_datasets(names: Sequence[str], data_dir: str, download: bool) -> Dict[str, str]:
    """Load each dataset's splits once here (downloading it once, under its lock): 'ready' or why not."""
    from trainables import data

    status = {}
    for name in names:
        try:
            for split in ("train", "test"):
                if data.dataset_info(name).tensor_resident:
                    data.load_tensors(name, split, data_dir, download=download)
                else:
                    data.image_folder(name, split, data_dir)
            status[name] = "ready"
        except (data.DatasetMissingError, FileNotFoundError, OSError) as exc:
            status[name] = str(exc).splitlines()[0]
    return status


def resource_asks(to_run: Sequence[TrialSpec], policy: ResourcePolicy) -> List[Dict]:
    """How many trials ask for each distinct resource bundle."""
    asks = Counter(json.dumps(trial_resources(t, policy), sort_keys=True) for t in to_run)
    return [{"per_trial": json.loads(k), "trials": n} for k, n in sorted(asks.items())]


def plan(sweep: SweepSpec, store: ResultsStore, policy: ResourcePolicy) -> Dict:
    """What the sweep would run: the grid less what the store holds (unreadable store files are moved aside and
    their trials run again)."""
    trials = sweep.trials()
    done = store.finished_ids() if store.exists() else set()
    to_run = [t for t in trials if t.trial_id not in done]
    passes = [estimated_prune_passes(t) for t in to_run]
    pairs = []
    for model in sweep.models:
        for dataset in sweep.datasets:
            prunable = prunable_weights(model, dataset)
            top = max(sweep.log10_compressions)
            if 10 ** top > prunable:
                raise UsageError(
                    f"log10 compression {top:g} is above what {model}/{dataset} allows: it has {prunable:,} prunable "
                    f"weights, so the largest meaningful log10 compression is {math.log10(prunable):.2f}"
                )
            pairs.append({"model": model, "dataset": dataset, "prunable_weights": prunable,
                          "recipe": describe_recipe(sweep.recipe(model, dataset)),
                          "recipe_source": sweep.recipe_source(model, dataset)})
    variants = [f"{v.algorithm} x{v.prune(0).iterations}" + (f" ({v.mode} mode)" if v.mode != "eval" else "")
                + (f" ({v.levels} levels)" if v.levels else "") for v in sweep.algorithms]
    return {
        "sweep": sweep.name, "trials": len(trials), "done": len(trials) - len(to_run), "to_run": len(to_run),
        "pairs": pairs, "algorithms": variants, "log10_compressions": list(sweep.log10_compressions),
        "seeds": list(sweep.seeds),
        "resources": resource_asks(to_run, policy),
        "prune_passes": sum(p for p in passes if p is not None),
        "imp_trials_not_counted_in_prune_passes": sum(p is None for p in passes),
        "datasets_needed": sorted({t.data.name for t in to_run if needs_data(t)}),
        "store": str(store), "to_run_specs": to_run, "all_specs": trials, "done_ids": done,
        "quarantined": list(getattr(store, "quarantined", [])),
    }


def print_plan(p: Dict, as_json: bool, gpu_note: str) -> None:
    public = {k: v for k, v in p.items() if k not in ("to_run_specs", "all_specs", "done_ids")}
    if as_json:
        print(json.dumps(public))
        return
    print(f"sweep {p['sweep']}: {p['trials']} trials, {p['done']} already in {p['store']}, {p['to_run']} to run")
    print(f"  algorithms: {', '.join(p['algorithms'])}")
    print(f"  log10 compressions: {', '.join(f'{c:g}' for c in p['log10_compressions'])}; "
          f"seeds: {', '.join(map(str, p['seeds']))}")
    for pair in p["pairs"]:
        print(f"  {pair['model']}/{pair['dataset']} ({pair['prunable_weights']:,} prunable weights): "
              f"{pair['recipe']} [{pair['recipe_source']}]")
    for name, state in p.get("datasets", {}).items():
        print(f"  dataset {name}: {state}")
    for r in p["resources"]:
        print(f"  {r['trials']} trials ask for {r['per_trial']} each")
    print(f"  pruning: {p['prune_passes']:,} forward/backward passes in total"
          + (f" (+ {p['imp_trials_not_counted_in_prune_passes']} imp trials, which train to prune)"
             if p["imp_trials_not_counted_in_prune_passes"] else ""))
    if gpu_note:
        print(f"  {gpu_note}")


def data_dir(args: argparse.Namespace) -> str:
    """--data-dir, else $PRUNE_SWEEP_DATA, else ./data, as an absolute path: trials run in other directories."""
    from trainables.data import resolve_data_dir

    return str(resolve_data_dir(args.data_dir))


def _absolute(location: str) -> str:
    return location if "://" in location else os.path.abspath(os.path.expanduser(location))


def _format_seconds(seconds: float) -> str:
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
                  + f", {_format_seconds(elapsed)} elapsed" + (f", ETA {_format_seconds(eta)}" if eta is not None else ""),
                  file=stream, flush=True)

    return Progress()


def checkpoint_root(storage_path: str) -> str:
    return f"{_absolute(storage_path).rstrip('/')}/{CHECKPOINTS_DIR}"


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
              policy: ResourcePolicy) -> Dict:
    """One fresh Tune run over the trials not in the store; each continues from its own newest checkpoint."""
    from ray import tune
    from ray.tune import PlacementGroupFactory

    from trainables.trial import run_trial

    storage_path = _absolute(args.storage_path)

    def resources(config: Dict) -> PlacementGroupFactory:
        return PlacementGroupFactory([trial_resources(TrialSpec.from_dict(config["spec"]), policy)])

    run_name = unique_run_name(sweep.name)
    progress = make_progress(len(to_run), sweep.name)
    tuner = tune.Tuner(
        tune.with_resources(run_trial, resources),
        param_space={
            "spec": tune.grid_search([t.to_dict() for t in to_run]),
            "store": _absolute(str(store)), "sweep": sweep.name, "data_dir": data_dir(args),
            "keep_checkpoints": args.keep_checkpoints, "checkpoint_root": checkpoint_root(storage_path),
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


def interrupted_message(args: argparse.Namespace) -> str:
    return (f"interrupted: finished trials are in {args.store}; run the same command again (or add --resume) to "
            f"continue the others from their checkpoints")


def launch(args: argparse.Namespace, sweep: SweepSpec, store: ResultsStore, the_plan: Dict) -> Dict:
    """Connect, check the asks against the cluster, and run what is left."""
    import ray

    where = connect(args.address, args.num_cpus)
    policy = ResourcePolicy(cluster_has_gpus=ray.cluster_resources().get("GPU", 0) > 0,
                            gpus_per_trial=args.gpus_per_trial, cpus_per_trial=args.cpus_per_trial)
    the_plan["resources"] = resource_asks(the_plan["to_run_specs"], policy)  # now that the GPUs are known
    check_feasible([r["per_trial"] for r in the_plan["resources"]], node_capacities())
    if not args.json:
        print_plan(the_plan, False, f"on {where}")
    return run_sweep(args, sweep, store, the_plan["to_run_specs"], policy)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sweep = resolve_sweep(args)
        store = ResultsStore(args.store)
        if not args.dry_run:
            store.check_writable()
            check_writable(checkpoint_root(args.storage_path), "--storage-path")
        policy = ResourcePolicy(cluster_has_gpus=args.gpus_per_trial != 0, gpus_per_trial=args.gpus_per_trial,
                                cpus_per_trial=args.cpus_per_trial)
        the_plan = plan(sweep, store, policy)
        for line in the_plan["quarantined"]:
            print(f"[{sweep.name}] {line}: that trial will run again", file=sys.stderr)
        if args.dry_run:
            the_plan["datasets"] = check_datasets(the_plan["datasets_needed"], data_dir(args), download=False)
            print_plan(the_plan, args.json,
                       "" if args.json else "GPU shares apply on a cluster with GPUs; without GPUs every trial runs on CPU")
            return 0
        if not args.keep_checkpoints:
            free_finished_checkpoints(args.storage_path, the_plan["done_ids"])
        outcome = {"sweep": sweep.name, "ran": 0, "seconds": 0.0, "errored": [], "interrupted": False}
        if the_plan["to_run_specs"]:
            if not args.skip_data_check:
                the_plan["datasets"] = check_datasets(the_plan["datasets_needed"], data_dir(args), download=True)
                missing = [why for why in the_plan["datasets"].values() if why != "ready"]
                if missing:
                    print(f"error: {missing[0]} (or pass --skip-data-check if only the workers hold it)", file=sys.stderr)
                    return 1
            outcome.update(launch(args, sweep, store, the_plan))
        elif not args.json:
            print_plan(the_plan, False, "")
    except (ValueError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the message and the exit status, not a traceback
        print("\n" + interrupted_message(args), file=sys.stderr)
        return 130
    if outcome["interrupted"]:
        print(interrupted_message(args), file=sys.stderr)
        return 130
    outcome["in_store_before"] = the_plan["done"]
    summary = summarize({t.trial_id for t in the_plan["all_specs"]}, store, outcome)
    if args.json:
        print(json.dumps(summary))
    elif not summary["ran"]:
        print(f"{sweep.name}: all {summary['trials']} trials already in the store; nothing to run. "
              f"store: {summary['store']}")
    else:
        location = summary["store"]
        for message, count in Counter(outcome["errored"]).most_common(5):
            print(f"error in {count} trial(s): {message}", file=sys.stderr)
        query = f" (pd.read_parquet('{location.rstrip('/')}/trials'))" if summary["in_store"] else ""
        print(f"{sweep.name}: {summary['in_store']}/{summary['trials']} trials in the store "
              f"({summary['completed']} completed, {summary['diverged']} diverged; {summary['errored']} errored, "
              f"not stored) after {_format_seconds(summary['seconds'])}; store: {location}{query}")
    return 1 if summary["errored"] else 0


def shutdown_quietly() -> None:
    """Stop this driver's Ray with Ctrl-C ignored: a second press during the shutdown would only print a traceback."""
    import signal

    import ray

    if ray.is_initialized():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        ray.shutdown()


if __name__ == "__main__":
    code = main()
    shutdown_quietly()
    sys.exit(code)
