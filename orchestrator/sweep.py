"""Run a sweep on a Ray cluster (or local Ray) and land every finished trial in the results store.

    python -m orchestrator.sweep                       # the offline quickstart preset, local Ray, CPU
    python -m orchestrator.sweep --preset fig6 --store s3://bucket/results --storage-path s3://bucket/ray
    python -m orchestrator.sweep --preset fig1 --seeds 0:4 --dry-run   # what would run, and what is done
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
import hashlib
import json
import math
import os
import re
import sys
from collections import Counter
from typing import List, Optional

# Only torch-free modules up to here: arguments, names and ranges are checked before torch, Ray or pandas load,
# so a typo is reported at once (benchmarks/cli_latency.py measures it).
from common.axes import RANGE_RULE
from common.checks import UsageError
from common.cli import OneLineArgumentParser, program
from common.plugins import load_plugins
from common.vocabulary import BUILTIN_ALGORITHMS, DENSE_ALGORITHM, LR_SCHEDULES, OPTIMIZERS
from orchestrator.grid import GRID_AXES, PRESETS, SweepSpec, with_overrides
from orchestrator.trackers import check_trackers, parse_trackers, where_curves_are


DEFAULT_STORE = "results"
DEFAULT_STORAGE = "ray_runs"
DEFAULT_MAX_FAILURES = 3
DEFAULT_COMPACT_AT = 500  # per-trial files: at 2,340 a scan took 1.6 s and a read 2.8 s, compacted 0.01 s each
ABANDONED_AFTER_SECONDS = 3600.0  # checkpoints of no recorded grid, untouched this long, are freed at a sweep's end
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Bounds on the driver's own numbers (the grid's are checked by the descriptions).
MAX_FAILURES_BOUND = 1000
MAX_CPUS_PER_TRIAL = 4096
MAX_GPUS_PER_TRIAL = 64
MAX_WORKERS_PER_TRIAL = 1024


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineArgumentParser(prog=program("python -m orchestrator.sweep", "prune-sweep"),
                               description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="presets: " + "; ".join(f"{n}: {PRESETS[n].description}" for n in PRESETS.names()))
    ap.add_argument("--preset", default="quickstart", help=f"one of: {', '.join(PRESETS.names())} (default quickstart)")
    axes = ap.add_argument_group(f"grid overrides (replace the preset's axis; each is {RANGE_RULE})")
    axes.add_argument("--models", help="comma-separated model names")
    axes.add_argument("--datasets", help="comma-separated dataset names")
    axes.add_argument("--algorithms", help="comma-separated: " + ", ".join(
        a for a in BUILTIN_ALGORITHMS if a != DENSE_ALGORITHM) + ", or a plugin's")
    axes.add_argument("--log10-compressions", help="a list 0,0.5,1 or a range like 0:3:0.25 (both ends included)")
    axes.add_argument("--seeds", help="a list 0,1,2 or a range like 0:2 (both ends included)")
    axes.add_argument("--iterations", type=int, help="pruning rounds for every algorithm")
    axes.add_argument("--levels", type=int, help="train-prune-rewind levels for imp (default 3)")
    axes.add_argument("--ablations", help="comma-separated sanity checks, every algorithm under each: "
                                          "none, shuffle, reinit, invert, layerwise_random (imp: none only)")
    axes.add_argument("--budgets", help="comma-separated layer budgets, every algorithm under each: global (one "
                                        "threshold), local (same density per layer), erk, er (Erdos-Renyi(-Kernel) "
                                        "densities from each layer's shape)")
    train = ap.add_argument_group("training overrides (on top of each pair's paper recipe)")
    train.add_argument("--epochs", type=int, help="epochs per trial; learning-rate drops move in proportion")
    train.add_argument("--lr", type=float)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--weight-decay", type=float)
    train.add_argument("--precision", choices=("auto", "fp32", "bf16"), help="auto: bf16 on GPU, fp32 on CPU")
    train.add_argument("--optimizer", choices=OPTIMIZERS, help="sgd (with --momentum 0.9; the paper's) or adamw "
                                                              "(decoupled weight decay; the transformers' recipe)")
    train.add_argument("--lr-schedule", choices=LR_SCHEDULES, help="multistep (the recipe's drops) or cosine "
                                                                   "(after --warmup-epochs of linear warmup)")
    train.add_argument("--warmup-epochs", type=int, help="linear warmup epochs of the cosine schedule")
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
    run.add_argument("--workers-per-trial", type=int,
                     help="train each trial on this many Ray Train workers (DDP; gloo on CPU, one GPU each with "
                          "nccl); --gpus-per-trial N above 1 means N workers too (default 1)")
    run.add_argument("--num-cpus", type=int, help="CPUs of a local Ray started here (default: all)")
    run.add_argument("--name", help="sweep label in the store: letters, digits, '_', '.', '-' (default: the "
                                   "preset's name)")
    run.add_argument("--skip-data-check", action="store_true",
                     help="do not load each needed dataset on this machine before launching (when only the "
                          "cluster's workers hold the data)")
    run.add_argument("--keep-checkpoints", action="store_true",
                     help="keep finished trials' checkpoints (default: deleted once the trial is in the store)")
    run.add_argument("--keep-masks", action="store_true",
                     help="store every trial's final mask, bit-packed, under STORE/masks/<trial_id>.parquet (not part "
                          "of the trial's id; for mask overlaps)")
    run.add_argument("--compact-at", type=int, default=DEFAULT_COMPACT_AT, metavar="N",
                     help=f"at the end, compact the store when it holds N or more per-trial files (default "
                          f"{DEFAULT_COMPACT_AT}; 0: never)")
    run.add_argument("--plugins", action="append", default=[], metavar="MODULE",
                     help="your own scorers/models/datasets: a dotted module or a .py path, imported here and on "
                          "every Ray worker (repeatable)")
    run.add_argument("--dry-run", action="store_true", help="run nothing; print the plan")
    run.add_argument("--json", action="store_true", help="print the plan or the summary as one JSON object")
    live = ap.add_argument_group("live curves (each trial's epochs as they train; README, \"Running sweeps\")")
    live.add_argument("--log-to", metavar="TRACKERS",
                      help="comma-separated: tensorboard (event files in each trial's directory under the storage "
                           "path), mlflow (pip install -e \".[mlflow]\"), wandb (pip install -e \".[wandb]\")")
    live.add_argument("--mlflow-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else "
                                           "STORAGE_PATH/mlruns); the experiment is the sweep's name")
    live.add_argument("--wandb-project", help="W&B project (default $WANDB_PROJECT, else prune-sweep); each sweep is a "
                                              "group; with WANDB_MODE=offline the runs stay in STORAGE_PATH/wandb for wandb sync")
    return ap


def resolve_sweep(args: argparse.Namespace) -> SweepSpec:
    base = PRESETS[args.preset]
    sweep = with_overrides(
        base, models=args.models, datasets=args.datasets, algorithms=args.algorithms,
        log10_compressions=args.log10_compressions, seeds=args.seeds, iterations=args.iterations, levels=args.levels,
        ablations=args.ablations, budgets=args.budgets,
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, weight_decay=args.weight_decay,
        precision=args.precision, optimizer=args.optimizer, lr_schedule=args.lr_schedule,
        warmup_epochs=args.warmup_epochs,
    )
    if args.name is not None:
        if not _LABEL.match(args.name) or ".." in args.name:
            raise UsageError(f"bad --name {args.name!r}; a label of letters, digits, '_', '.', '-' (at most 64, "
                             f"starting with a letter or digit)")
        sweep = dataclasses.replace(sweep, name=args.name, origin=args.preset)
    elif all(getattr(args, axis) is not None for axis in GRID_AXES):
        # Nothing of the preset's grid is left: its name would say a grid that did not run.
        digest = hashlib.sha256(",".join(sorted(t.trial_id for t in sweep.trials())).encode()).hexdigest()[:6]
        sweep = dataclasses.replace(sweep, name=f"custom-{digest}", origin=args.preset)
    if args.gpus_per_trial is None and base.gpus_per_trial is not None:
        args.gpus_per_trial = base.gpus_per_trial  # the preset's own ask (imagenet: 8 GPUs, one worker each)
    check_driver_numbers(args)
    return sweep


def naming_note(args: argparse.Namespace, sweep: SweepSpec) -> str:
    """How the sweep got its name, when the command line changed what the preset's name would say."""
    given = [f"--{axis.replace('_', '-')}" for axis in GRID_AXES if getattr(args, axis) is not None]
    if sweep.origin and args.name is None:
        return (f"named {sweep.name}: every grid axis was given on the command line, so the {args.preset} preset "
                f"gives only its recipe; select it with --sweep {sweep.name}, or choose a name with --name")
    if given and args.name is None:
        return f"the {args.preset} preset with {', '.join(given)} from the command line"
    return ""


def check_driver_numbers(args: argparse.Namespace) -> None:
    """Every number the driver itself takes is finite and in range (one line, exit 2, otherwise)."""
    bounds = {"compact_at": (0, 10**9), "max_concurrent": (1, 100_000), "max_failures": (0, MAX_FAILURES_BOUND), "num_cpus": (1, 100_000),
              "gpus_per_trial": (0, MAX_GPUS_PER_TRIAL), "cpus_per_trial": (0, MAX_CPUS_PER_TRIAL),
              "workers_per_trial": (1, MAX_WORKERS_PER_TRIAL)}
    for flag, (low, high) in bounds.items():
        value = getattr(args, flag)
        if value is None:
            continue
        ok = math.isfinite(value) and low <= value <= high and (flag != "cpus_per_trial" or value > 0)
        if not ok:
            lower = "> 0" if flag == "cpus_per_trial" else f">= {low:g}"
            raise UsageError(f"--{flag.replace('_', '-')} must be {lower} and <= {high:g}, got {value:g}")


def check_workers(sweep: SweepSpec, workers: int) -> None:
    """Before Ray starts: what a trial on several workers cannot run (else each such trial fails on its own)."""
    if workers == 1:
        return
    from trainables.pruning.algorithms import ALGORITHMS

    specs = sweep.trials()
    one_worker = sorted({s.prune.algorithm for s in specs if ALGORITHMS[s.prune.algorithm].trains_between_cuts})
    if one_worker:
        raise UsageError(f"{', '.join(one_worker)} trains between its cuts on one worker: run it in a sweep of its "
                         f"own without --workers-per-trial/--gpus-per-trial above 1")
    uneven = sorted({s.train.batch_size for s in specs if s.train.batch_size % workers})
    if uneven:
        raise UsageError(f"batch {uneven[0]} does not split evenly over {workers} workers: choose a --batch-size "
                         f"divisible by {workers}, or another worker count")


def interrupted_message(args: argparse.Namespace) -> str:
    from orchestrator.stops import interrupted_line

    return interrupted_line(args.store)


def storage_message(problem: str) -> str:
    return (f"error: {problem}. Stopped at once rather than retrying. Nothing stored is lost and every unfinished "
            f"trial keeps its checkpoints: free space (or fix the permission) and run the same command again")


def read_hint(location: str) -> str:
    """How to read the store's trials in pandas: the directory, or, for a URI with a query (which pandas would take
    for part of the key), the store's own reader."""
    from common.locations import join_location, split_query

    if split_query(location)[1]:
        return f"from results_store import read_table; read_table('{location}', 'trials')"
    return f"pd.read_parquet('{join_location(location, 'trials')}')"


def data_dir(args: argparse.Namespace) -> str:
    from orchestrator.plan import data_dir as resolved

    return resolved(args)


def main(argv: Optional[List[str]] = None) -> int:
    from orchestrator.stops import EXIT_STORAGE, install_stop_handlers, interrupted_status

    install_stop_handlers()  # SIGTERM (Slurm, Kubernetes, timeout) and SIGHUP are interruptions, like Ctrl-C
    args = build_parser().parse_args(argv)
    try:
        plugins = load_plugins(args.plugins)  # a plugin's names join the registries before the grid is checked
        sweep = resolve_sweep(args)
        args.trackers = parse_trackers(args.log_to)  # before Ray: a missing package is one line, not a dead run
        check_trackers(args.trackers, args.storage_path, args.mlflow_uri)
        # The arguments hold: now the heavy imports (torch, Ray, pyarrow).
        from orchestrator.plan import add_bill, check_datasets, plan, print_plan, seen_resources
        from orchestrator.resources import ResourcePolicy
        from orchestrator.tune_run import checkpoint_root, free_finished_checkpoints, launch, summarize
        from results_store import ResultsStore, check_writable, record_grid

        store = ResultsStore(args.store)
        if not args.dry_run:
            store.check_writable()
            check_writable(checkpoint_root(args.storage_path), "--storage-path")
        policy = ResourcePolicy(cluster_has_gpus=args.gpus_per_trial != 0, gpus_per_trial=args.gpus_per_trial,
                                cpus_per_trial=args.cpus_per_trial, workers_per_trial=args.workers_per_trial)
        check_workers(sweep, policy.workers)
        the_plan = plan(sweep, store, policy)
        the_plan["plugin_modules"] = plugins
        the_plan["named"] = naming_note(args, sweep)
        for line in the_plan["quarantined"]:
            print(f"[{sweep.name}] {line}: that trial will run again", file=sys.stderr)
        if args.keep_masks and (note := unmasked_note(store, the_plan)):
            print(f"[{sweep.name}] {note}", file=sys.stderr)
        if args.dry_run:
            the_plan["datasets"] = check_datasets(the_plan["datasets_needed"], data_dir(args), download=False)
            seen = seen_resources(args.address or os.environ.get("RAY_ADDRESS"), args.num_cpus)
            add_bill(the_plan, store, ResourcePolicy(cluster_has_gpus=seen.gpus > 0 and args.gpus_per_trial != 0,
                                                     gpus_per_trial=args.gpus_per_trial,
                                                     cpus_per_trial=args.cpus_per_trial,
                                                     workers_per_trial=args.workers_per_trial),
                     seen, args.max_concurrent, args.keep_checkpoints)
            print_plan(the_plan, args.json,
                       "" if args.json else "GPU shares apply on a cluster with GPUs; without GPUs every trial runs on CPU")
            return 0
        # Before anything runs: the analysis selects this sweep by these ids, including trials stored by others.
        record_grid(store, sweep.name, the_plan["grid_ids"], sys.argv[1:] if argv is None else argv)
        if not args.keep_checkpoints:
            free_finished_checkpoints(args.storage_path, the_plan["done_ids"])
        outcome = {"sweep": sweep.name, "ran": 0, "seconds": 0.0, "errored": [], "interrupted": False}
        if the_plan["to_run_specs"]:
            if not args.skip_data_check:
                the_plan["datasets"] = check_datasets(the_plan["datasets_needed"], data_dir(args), download=True)
                missing = [why for why in the_plan["datasets"].values() if why != "ready"]
                if missing:
                    print(f"error: {missing[0]} (or pass --skip-data-check if only the workers hold it)", file=sys.stderr)
                    return 2
            for line in where_curves_are(args.trackers, sweep.name, args.storage_path, args.mlflow_uri,
                                         args.wandb_project):
                print(f"[{sweep.name}] {line}", file=sys.stderr)
            outcome.update(launch(args, sweep, store, the_plan))
        elif not args.json:
            print_plan(the_plan, False, "")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from results_store import StoreError  # imported here: the store (pandas) loads only past the checks

        if not isinstance(exc, StoreError):
            raise
        from common.storage import storage_errno

        if storage_errno(exc) is not None:
            print(storage_message(str(exc)), file=sys.stderr)
            return EXIT_STORAGE
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the message and the exit status, not a traceback
        print("\n" + interrupted_message(args), file=sys.stderr)
        return interrupted_status()
    if outcome.get("storage_error"):
        print(storage_message(outcome["storage_error"]), file=sys.stderr)
        return EXIT_STORAGE
    if outcome["interrupted"]:
        print(interrupted_message(args), file=sys.stderr)
        return interrupted_status()
    from orchestrator.tune_run import format_seconds

    try:
        tidy_up(args, store, sweep.name)
    except KeyboardInterrupt:
        print("\n" + interrupted_message(args), file=sys.stderr)
        return interrupted_status()
    outcome["in_store_before"] = the_plan["done"]
    summary = summarize(set(the_plan["stored_ids"].values()), store, outcome)
    if args.json:
        print(json.dumps(summary))
    elif not summary["ran"]:
        print(f"{sweep.name}: all {summary['trials']} trials already in the store; nothing to run. "
              f"store: {summary['store']}")
    else:
        location = summary["store"]
        for message, count in Counter(outcome["errored"]).most_common(5):
            print(f"error in {count} trial(s): {message}", file=sys.stderr)
        query = f" ({read_hint(location)})" if summary["in_store"] else ""
        print(f"{sweep.name}: {summary['in_store']}/{summary['trials']} trials in the store "
              f"({summary['completed']} completed, {summary['diverged']} diverged; {summary['errored']} errored, "
              f"not stored) after {format_seconds(summary['seconds'])}; store: {location}{query}")
        for line in where_curves_are(args.trackers, sweep.name, args.storage_path, args.mlflow_uri, args.wandb_project):
            print(f"{sweep.name}: {line.replace('live curves', 'curves')}")
    return 1 if summary["errored"] else 0


def unmasked_note(store, the_plan) -> str:
    """With --keep-masks: how many of the grid's stored trials keep no mask. They are not trained again (a mask
    is no reason to spend a trial's training), so the overlaps leave them out; '' when none lacks one."""
    from results_store.masks import masked_trial_ids

    stored = {i for i in the_plan["stored_ids"].values() if i in the_plan["done_ids"]}
    missing = stored - masked_trial_ids(store) if stored else set()
    if not missing:
        return ""
    return (f"--keep-masks: {len(missing)} of the {len(stored)} trials of this grid already in the store keep no "
            f"mask (stored by a run without --keep-masks); they are not trained again, so mask overlaps leave "
            f"them out")


def tidy_up(args: argparse.Namespace, store, name: str) -> None:
    """The end of a sweep: compact the store when its per-trial files are many enough to slow every reader, and
    free checkpoints nobody will resume. Neither may fail the sweep: a problem is one line."""
    from results_store import LeaseHeld, StoreError
    from results_store.collect import collect_checkpoints

    try:
        if args.compact_at and store.exists() and store.per_trial_count() >= args.compact_at:
            report = store.compact()
            print(f"[{name}] {report.lines()[0]} (the store had {args.compact_at:,}+ per-trial files; "
                  f"--compact-at 0 turns this off)", file=sys.stderr)
    except LeaseHeld as exc:
        print(f"[{name}] compaction skipped: {exc}", file=sys.stderr)
    except StoreError as exc:
        print(f"[{name}] compaction failed, the store is as it was: {exc}", file=sys.stderr)
    if args.keep_checkpoints:
        return
    try:
        collected = collect_checkpoints(store, args.storage_path, older_than=ABANDONED_AFTER_SECONDS)
    except StoreError as exc:
        print(f"[{name}] checkpoints not collected: {exc}", file=sys.stderr)
        return
    if collected.finished or collected.abandoned:
        print(f"[{name}] {collected.lines()[0]}", file=sys.stderr)


def shutdown_quietly() -> None:
    """Stop this driver's Ray with Ctrl-C ignored: a second press during the shutdown would only print a traceback."""
    import signal

    import ray

    if ray.is_initialized():
        from orchestrator.stops import STOP_SIGNALS

        for sig in (signal.SIGINT, *STOP_SIGNALS):  # a second signal here would only print a traceback
            signal.signal(sig, signal.SIG_IGN)
        ray.shutdown()


def cli() -> int:
    """The `prune-sweep` command (and `python -m orchestrator.sweep`)."""
    code = main()
    shutdown_quietly()
    return code


if __name__ == "__main__":
    sys.exit(cli())
