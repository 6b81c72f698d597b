"""How the results store scales, and the analysis and the plan on a large one.

Default: synthetic stores of N trials (160 epoch rows and 16 layer rows each,
the size of a 160-epoch CIFAR trial on a 16-layer network), written with
`ResultsStore.write_trial` from a few threads as a sweep's workers would, then
timed, in one run:

- on per-trial files: finished_ids(), has_trial() of one id, read("trials"),
  read("epochs") and pd.read_parquet(store/"trials");
- compact();
- on the compacted store: the same again.

`--analysis`: a realistic compacted store of 20,145 trials (the fig6 preset at
seeds 0-24, plus the iterative, train-mode and sanity-checks presets, so every
figure has something to draw: real trial ids and descriptions, each pair's real
layers, accuracy falling with compression by algorithm and ablation, layers
emptied past each algorithm's collapse point, a few diverged runs, learning
curves with the recipe's lr drops), then, each a whole process, before (the code
at --before, default the commit before this benchmark's analysis section) and
after (this checkout):

- python -m analysis.plots --store S --out F (after: with --jobs 1 as well);
- python -m analysis.summary --store S;
- python -m orchestrator.sweep --preset fig6 --seeds 0:24 --store S --dry-run
  (every trial already in the store).

Before and after must print the same lines and write the same PNGs and CSVs,
byte for byte; the benchmark says so or stops.

    python benchmarks/store_scale.py                      # 2,340 and 23,400 trials
    python benchmarks/store_scale.py --trials 1000 --keep --dir /tmp/stores
    python benchmarks/store_scale.py --analysis --keep --dir /tmp/stores   # kept: reused by the next run

Imports pandas, pyarrow and the store only (no torch, no ray); --analysis also
builds each pair's network once, with torch, to take its layers.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import io
import platform
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402

from results_store import ResultsStore  # noqa: E402

EPOCHS = 160
LAYERS = 16
STARTED = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)


def trial_id(i: int) -> str:
    return hashlib.sha256(f"trial-{i}".encode()).hexdigest()[:16]


def synthetic_trial(i: int) -> Dict:
    algorithms = ("synflow", "snip", "grasp", "magnitude", "random")
    log10 = (i % 13) * 0.25
    return dict(
        trial_id=trial_id(i), sweep="scale", model="vgg16_bn", dataset="cifar100", algorithm=algorithms[i % 5],
        log10_compression=log10, compression=10 ** log10, seed=i % 3, iterations=100, schedule="exponential",
        scope="global", prune_mode="eval", levels=0, examples_per_class=10, prunable_params=14_715_584,
        prunable_layers=LAYERS, remaining_params=int(14_715_584 / 10 ** log10), density=1 / 10 ** log10,
        collapsed=False, prune_passes=100, prune_seconds=12.5, dense_flops=313_000_000, remaining_flops=21_000_000,
        epochs=EPOCHS, final_top1=0.7, final_top5=0.9, best_top1=0.71, final_test_loss=1.1, train_seconds=3600.0,
        status="completed", error=None, started_at=STARTED, finished_at=STARTED + dt.timedelta(hours=1),
        host=f"node-{i % 8}", device="NVIDIA H100", precision="bf16", restarts=0, resumed_from_epoch=None,
        cpus=4.0, gpus=0.25, torch_version="2.15.0", project_version="0.1.0", config=f'{{"seed":{i % 3}}}',
    )


def synthetic_epochs(i: int) -> List[Dict]:
    noise = random.Random(i)  # real curves differ trial by trial, and so compress like real ones
    return [dict(epoch=e, train_loss=2.0 / e + noise.random() * 0.1, test_loss=2.1 / e + noise.random() * 0.1,
                 top1=min(1.0, 0.3 + e / 400 + noise.random() * 0.01), top5=min(1.0, 0.9 + noise.random() * 0.05),
                 lr=0.1 * 0.2 ** (e // 60), seconds=22.5 + noise.random()) for e in range(1, EPOCHS + 1)]


def synthetic_layers(i: int) -> List[Dict]:
    noise = random.Random(-i)
    rows = []
    for k in range(LAYERS):
        size = 36_864 * (k + 1)
        remaining = noise.randrange(size)
        rows.append(dict(layer_index=k, layer=f"features.{3 * k}", param=f"features.{3 * k}.weight", kind="conv",
                         size=size, remaining=remaining, density=remaining / size, score_sum=noise.random() * 10))
    return rows


def build(root: str, trials: int, threads: int) -> float:
    store = ResultsStore(root)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda i: store.write_trial(synthetic_trial(i), synthetic_epochs(i), synthetic_layers(i)),
                      range(trials)))
    return time.perf_counter() - started


def timed(label: str, fn: Callable, check: Callable[[object], None]) -> float:
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    check(result)
    print(f"  {label:<44} {seconds:8.2f}", flush=True)
    return seconds


def measure(root: str, trials: int) -> None:
    ids = {trial_id(i) for i in range(trials)}
    one = trial_id(trials // 2)

    def same_ids(found) -> None:
        assert found == ids, f"{len(found)} trials found, {trials} written"

    def rows(count: int):
        def check(frame) -> None:
            assert len(frame) == count, f"{len(frame)} rows, expected {count}"
        return check

    def true(found) -> None:
        assert found is True

    for stage in ("per-trial files", "compacted"):
        if stage == "compacted":
            report = None

            def run_compact():
                nonlocal report
                report = ResultsStore(root).compact()
                return report

            print(" compaction:", flush=True)
            timed("compact()", run_compact, lambda r: None)
            assert report is not None and report.trials == trials
            print(f"    ({report.trials} trials into {len(report.parts) // 3} group(s) of 3 parts, at most "
                  f"{max(r for _, r in report.parts):,} rows a part)", flush=True)
        print(f" {stage}:", flush=True)
        timed("finished_ids()", lambda: ResultsStore(root).finished_ids(), same_ids)
        timed(f"has_trial({one!r})", lambda: ResultsStore(root).has_trial(one), true)
        timed('read("trials")', lambda: ResultsStore(root).read("trials"), rows(trials))
        timed('read("epochs")', lambda: ResultsStore(root).read("epochs"), rows(trials * EPOCHS))
        timed('read("epochs", columns=["trial_id", "top1"])',
              lambda: ResultsStore(root).read("epochs", ["trial_id", "top1"]), rows(trials * EPOCHS))
        timed('pd.read_parquet(store/"trials")', lambda: pd.read_parquet(os.path.join(root, "trials")), rows(trials))


# ------------------------------------------------------------------------------- the analysis at scale

ANALYSIS_SEEDS = 25  # fig6 at seeds 0-24 (18,300 trials); with EXTRA_PRESETS 20,145 trials
EXTRA_PRESETS = ("iterative", "train-mode", "sanity-checks")  # their variants and ablations: every figure draws
DATASET_TOP1 = {"cifar10": 0.93, "cifar100": 0.72, "tiny_imagenet": 0.58}
MODEL_TOP1 = {"resnet20": -0.015, "vgg11_bn": -0.012, "vgg16_bn": 0.0, "resnet18": 0.012, "wide_resnet18": 0.022}
# Top-1 lost per (log10 compression)^2; the log10 compression from which a layer empties (up to half a decade
# earlier, by seed); how unevenly each algorithm spreads what it keeps (0: every layer the same density).
DROP = {"dense": 0.0, "synflow": 0.012, "snip": 0.02, "grasp": 0.018, "magnitude": 0.025, "random": 0.05,
        "force": 0.015}
COLLAPSE = {"snip": 2.75, "grasp": 3.0, "magnitude": 2.5, "random": 2.25}
SKEW = {"synflow": 0.5, "snip": 0.3, "grasp": 0.35, "magnitude": 0.2, "random": 0.0, "force": 0.3}
ABLATION_DROP = {"none": 0.0, "shuffle": 0.015, "layerwise_random": 0.018, "reinit": 0.004, "invert": 0.25}
SECONDS_PER_EPOCH = {"resnet20": 4.0, "vgg11_bn": 6.0, "vgg16_bn": 9.0, "resnet18": 14.0, "wide_resnet18": 45.0}


def analysis_grid(seeds: int):
    """fig6 at `seeds` seeds (the sweep the dry run plans) and every trial to store: (sweep name, spec)."""
    from orchestrator.grid import PRESETS, with_overrides

    fig6 = with_overrides(PRESETS["fig6"], seeds=f"0:{seeds - 1}")
    chosen = {}
    for sweep in (fig6, *(PRESETS[name] for name in EXTRA_PRESETS)):
        for spec in sweep.trials():
            chosen.setdefault(spec.trial_id, (sweep.name, spec))
    return fig6, list(chosen.values())


def network_layers(model: str, dataset: str):
    """The pair's real prunable layers [(layer, param, kind, size)], dense multiply-adds and classes."""
    from trainables.data import dataset_info
    from trainables.models import build_model
    from trainables.pruning import prunable_parameters
    from trainables.pruning.metrics import macs
    from trainables.specs import DataSpec

    info = dataset_info(DataSpec(dataset))
    params = prunable_parameters(build_model(model, info.input_shape, info.num_classes, seed=0), info.input_shape)
    return [(p.layer, p.name, p.kind, p.size) for p in params], macs(params), info.num_classes


def realistic_trial(index: int, sweep: str, spec, network) -> Tuple[Dict, List[Dict], List[Dict]]:
    """One trial's rows as a sweep stores them: accuracy falling with compression by algorithm and ablation, layers
    emptied past each algorithm's collapse point, some diverged runs, learning curves with the recipe's lr drops."""
    import json
    import math

    layers, dense_macs, classes = network
    p, train = spec.prune, spec.train
    rng = random.Random(spec.trial_id)
    log10 = p.log10_compression
    sizes = [size for _, _, _, size in layers]
    total = sum(sizes)
    algorithm = p.algorithm
    drop = DROP.get(algorithm, 0.02) / (1 + math.log10(p.iterations) / 2 if algorithm in ("snip", "force") else 1)
    collapse_at = COLLAPSE.get(algorithm)
    collapsed = collapse_at is not None and p.ablation != "invert" and log10 >= collapse_at - 0.5 * rng.random()
    chance = 1.0 / classes
    top1 = (DATASET_TOP1[spec.data.name] + MODEL_TOP1.get(spec.model.name, 0.0) - drop * log10 ** 2
            - (ABLATION_DROP[p.ablation] if log10 > 0 else 0.0) - (0.01 if p.mode == "train" else 0.0)
            + rng.gauss(0, 0.004))
    top1 = min(0.99, max(chance, chance + rng.random() * 0.002 if collapsed else top1))
    # What each layer keeps: the budget spread by size^(1 - skew), a layer never above its size.
    kept_total = round(total / 10 ** log10)
    weights = [size ** (1 - SKEW.get(algorithm, 0.0)) for size in sizes]
    kept = [min(size, round(kept_total * w / sum(weights))) for size, w in zip(sizes, weights)]
    if collapsed:
        kept[sizes.index(max(sizes))] = 0
    on_path = 1.0 if algorithm in ("synflow", "dense") else max(0.3, 1 - 0.12 * log10)
    effective = [0 if collapsed else round(k * on_path) for k in kept]
    remaining = sum(kept)
    epochs = train.epochs
    diverged = log10 >= 2.5 and rng.random() < 0.02
    ran = rng.randint(3, epochs) if diverged else epochs
    per_epoch = SECONDS_PER_EPOCH.get(spec.model.name, 10.0) * (4 if spec.data.name == "tiny_imagenet" else 1)
    history = []
    for e in range(1, ran + 1):
        progress = e / epochs
        acc = top1 - (top1 - chance) * math.exp(-5 * progress) + rng.gauss(0, 0.004)
        lr = train.lr * train.lr_drop_factor ** sum(1 for d in train.lr_drops if e > d)
        history.append(dict(epoch=e, train_loss=0.05 + 2.3 * math.exp(-4 * progress) + abs(rng.gauss(0, 0.01)),
                            test_loss=0.4 + 2.0 * math.exp(-3 * progress) + abs(rng.gauss(0, 0.02)),
                            top1=min(1.0, max(0.0, acc)), top5=min(1.0, max(0.0, acc + 0.2 * (1 - acc))), lr=lr,
                            seconds=per_epoch * (1 + 0.05 * rng.random())))
    if diverged:
        history[-1].update(train_loss=float("inf"), test_loss=None, top1=None, top5=None)
    else:
        history[-1].update(top1=top1, top5=min(1.0, top1 + 0.2 * (1 - top1)))
    finished = [h for h in history if h["top1"] is not None]
    passes = {"synflow": p.iterations, "magnitude": 0, "random": 0, "dense": 0}.get(
        algorithm, p.iterations * math.ceil(p.examples_per_class * classes / 256))
    prune_seconds = 0.5 + passes * 0.04 * per_epoch / 10
    train_seconds = sum(h["seconds"] for h in history)
    started = STARTED + dt.timedelta(minutes=index)
    trial = dict(
        trial_id=spec.trial_id, sweep=sweep, model=spec.model.name, dataset=spec.data.name, num_classes=classes,
        algorithm=algorithm, log10_compression=log10, compression=p.compression, seed=spec.seed,
        iterations=p.iterations, schedule=p.schedule, scope=p.scope, prune_mode=p.mode, levels=p.levels,
        examples_per_class=p.examples_per_class, ablation=p.ablation, prunable_params=total,
        prunable_layers=sum(1 for _, _, kind, _ in layers if kind in ("conv", "linear")), remaining_params=remaining,
        effective_remaining_params=sum(effective), density=remaining / total, collapsed=collapsed,
        prune_passes=passes, imp_trained_examples=None, prune_seconds=prune_seconds, dense_flops=2 * dense_macs,
        remaining_flops=round(2 * dense_macs * remaining / total), epochs=len(history),
        final_top1=finished[-1]["top1"] if finished else None, final_top5=finished[-1]["top5"] if finished else None,
        best_top1=max(h["top1"] for h in finished) if finished else None,
        final_test_loss=finished[-1]["test_loss"] if finished else None, train_seconds=train_seconds,
        status="diverged" if diverged else "completed",
        error=f"training loss became inf at epoch {len(history)}" if diverged else None,
        started_at=started, finished_at=started + dt.timedelta(seconds=prune_seconds + train_seconds + 20),
        host=f"node-{index % 8}", device="NVIDIA H200", precision="bf16", restarts=0, resumed_from_epoch=None,
        cpus=4.0, gpus=0.25, torch_version="2.15.0", project_version="0.1.0",
        config=json.dumps(spec.to_dict(), sort_keys=True, separators=(",", ":")))
    scores = {"synflow": lambda i, size: 1e4 * (1 + 1e-9 * rng.random()), "snip": lambda i, size: size * 1e-3 * rng.random(),
              "grasp": lambda i, size: rng.uniform(-1, 1) * size * 1e-4, "magnitude": lambda i, size: size * 0.02,
              "random": lambda i, size: size * 0.5, "force": lambda i, size: size * 1e-3 * rng.random()}
    score = scores.get(algorithm)
    layer_rows = [dict(layer_index=i, layer=layer, param=param, kind=kind, size=size, remaining=k, density=k / size,
                       score_sum=score(i, size) if score and log10 > 0 else None, effective_remaining=eff)
                  for i, ((layer, param, kind, size), k, eff) in enumerate(zip(layers, kept, effective))]
    return trial, history, layer_rows


def build_analysis_store(root: str, trials, threads: int) -> float:
    """Write every trial with write_trial from `threads` threads, as a sweep's workers would; seconds taken."""
    networks = {}
    for _, spec in trials:
        key = (spec.model.name, spec.data.name)
        if key not in networks:
            networks[key] = network_layers(*key)
    store = ResultsStore(root)

    def write(item) -> None:
        index, (sweep, spec) = item
        store.write_trial(*realistic_trial(index, sweep, spec, networks[(spec.model.name, spec.data.name)]))

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(write, enumerate(trials)))
    return time.perf_counter() - started


REPO = Path(__file__).resolve().parents[1]
# The analysis and the plan before issue 19's point 8 (plots 78.5 s and --dry-run 17 s at 20,280 trials).
BEFORE = "8977c34a11f014087b4886407aed94e582ad1576"
MEASURED_CODE = ("analysis", "orchestrator/plan.py", "orchestrator/cost.py")


def code_at(rev: str, into: Path) -> Path:
    """This checkout with MEASURED_CODE as it was at `rev`: run from there, `python -m` finds those first."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, *MEASURED_CODE], capture_output=True,
                             check=True).stdout
    shutil.copytree(REPO / "orchestrator", into / "orchestrator", ignore=shutil.ignore_patterns("__pycache__"))
    (into / "orchestrator" / "plan.py").unlink()
    (into / "orchestrator" / "cost.py").unlink()
    tarfile.open(fileobj=io.BytesIO(archive)).extractall(into)
    return into


def run_timed(where: Path, argv: Sequence[str]) -> Tuple[float, str]:
    """Seconds of one whole process run from `where` (its code first, then this checkout's), and its stdout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(where), str(REPO)]))
    started = time.perf_counter()
    run = subprocess.run([sys.executable, *argv], cwd=where, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} (from {where}) exited {run.returncode}: {run.stderr[-2000:]}")
    return seconds, run.stdout


def same_files(a: Path, b: Path) -> List[str]:
    """Names of the PNGs and CSVs that differ between two figure directories (or exist in one only)."""
    names = {p.name for d in (a, b) for p in d.iterdir() if p.suffix in (".png", ".csv")}
    return sorted(n for n in names if not ((a / n).exists() and (b / n).exists()
                                           and (a / n).read_bytes() == (b / n).read_bytes()))


def measure_analysis(root: str, seeds: int, before: Optional[str], work: Path) -> None:
    store = str(Path(root).resolve())
    plots = ["-m", "analysis.plots", "--store", store, "--out"]
    summary = ["-m", "analysis.summary", "--store", store]
    dry_run = ["-m", "orchestrator.sweep", "--preset", "fig6", "--seeds", f"0:{seeds - 1}", "--store", store,
               "--dry-run"]
    old = code_at(before, work / "before") if before else None
    out = {name: work / f"figures-{name}" for name in ("before", "after", "after-1")}

    def measure(label: str, argv: List[str], argv_before: Optional[List[str]],
                verdict: Callable[[Optional[Tuple[float, str]], Tuple[float, str]], str]) -> None:
        was = run_timed(old, argv_before) if old is not None and argv_before else None
        now = run_timed(REPO, argv)
        print(f"  {label:<48} {'-' if was is None else f'{was[0]:.1f}':>7} {now[0]:7.1f}   {verdict(was, now)}",
              flush=True)

    def figures(was, now) -> str:
        if was is None:
            return ""
        differ = same_files(out["before"], out["after"])
        if was[1].replace(str(out["before"]), "OUT") != now[1].replace(str(out["after"]), "OUT") or differ:
            raise SystemExit(f"the figures differ before/after: {', '.join(differ) or 'the printed lines'}")
        return (f"same lines, same {len(list(out['after'].glob('*.png')))} PNGs and "
                f"{len(list(out['after'].glob('*.csv')))} CSVs, byte for byte")

    def one_process(was, now) -> str:
        if same_files(out["after"], out["after-1"]):
            raise SystemExit("--jobs 1 wrote other figures than the default")
        return "the same files as the default"

    def same_text(what: str):
        def verdict(was, now) -> str:
            if was is not None and was[1] != now[1]:
                raise SystemExit(f"the {what} differs before/after")
            return f"same {what}" if was is not None else ""
        return verdict

    jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    print(f"  before: {', '.join(MEASURED_CODE)} at {before[:10]}; after: this checkout" if before else
          "  this checkout only (--before none)", flush=True)
    print(f"  {'python -m ... (whole processes, one run each)':<48} {'before':>7} {'after':>7}   seconds", flush=True)
    measure(f"analysis.plots (after: --jobs {jobs}, the default)", plots + [str(out["after"])],
            plots + [str(out["before"])], figures)
    measure("analysis.plots --jobs 1", plots + [str(out["after-1"]), "--jobs", "1"], None, one_process)
    measure("analysis.summary", summary, summary, same_text("text"))
    measure(f"orchestrator.sweep --dry-run (fig6, seeds 0-{seeds - 1})", dry_run, dry_run, same_text("plan"))


def run_analysis(args) -> None:
    fig6, trials = analysis_grid(args.seeds)
    base = Path(args.dir or tempfile.mkdtemp(prefix="store-scale-"))
    root = base / f"store-analysis-{args.seeds}"
    ids = {spec.trial_id for _, spec in trials}
    if root.exists() and ResultsStore(str(root)).finished_ids() == ids:
        print(f"{len(trials):,} trials: reusing the store at {root}", flush=True)
    else:
        shutil.rmtree(root, ignore_errors=True)
        seconds = build_analysis_store(str(root), trials, args.threads)
        print(f"{len(trials):,} trials (fig6 at seeds 0-{args.seeds - 1}: {len(fig6.trials()):,}; with "
              f"{', '.join(EXTRA_PRESETS)}): written with write_trial from {args.threads} threads in {seconds:.0f} s",
              flush=True)
        started = time.perf_counter()
        report = ResultsStore(str(root)).compact()
        print(f"  compacted in {time.perf_counter() - started:.0f} s: {report.trials:,} trials", flush=True)
    rows = {table: len(ResultsStore(str(root)).read(table, ["trial_id"])) for table in ("trials", "epochs", "layers")}
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    print(f"  {rows['trials']:,} trials rows, {rows['epochs']:,} epochs rows, {rows['layers']:,} layers rows; "
          f"{size / 2 ** 20:.0f} MiB compacted", flush=True)
    with tempfile.TemporaryDirectory(prefix="store-scale-work-") as work:
        measure_analysis(str(root), args.seeds, None if args.before == "none" else args.before, Path(work))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[2_340, 23_400], metavar="N",
                        help="store sizes to build and measure (default: 2340 23400)")
    parser.add_argument("--threads", type=int, default=4, help="writer threads while building (default 4)")
    parser.add_argument("--dir", default=None, help="where to build the stores (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the stores built (--analysis: reused next time)")
    parser.add_argument("--analysis", action="store_true",
                        help="the analysis and the plan on a realistic compacted store, before and after")
    parser.add_argument("--seeds", type=int, default=ANALYSIS_SEEDS,
                        help=f"--analysis: fig6's seeds in the store (default {ANALYSIS_SEEDS}: 20,145 trials)")
    parser.add_argument("--before", default=BEFORE,
                        help=f"--analysis: the commit whose {', '.join(MEASURED_CODE)} are 'before' "
                             f"(default {BEFORE[:10]}; 'none' to time this checkout alone)")
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.trials) or args.seeds < 1:
        parser.error("--trials and --seeds take positive counts")

    print(f"# store_scale: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
          f"{platform.machine()} {platform.system()} {platform.release()}, Python {platform.python_version()}, "
          f"pyarrow {pa.__version__}, pandas {pd.__version__}")
    if args.analysis:
        run_analysis(args)
        return 0
    print(f"# each trial: 1 trials row, {EPOCHS} epochs rows, {LAYERS} layers rows; seconds below, one run each")
    base = args.dir or tempfile.mkdtemp(prefix="store-scale-")
    try:
        for trials in args.trials:
            root = os.path.join(base, f"store-{trials}")
            shutil.rmtree(root, ignore_errors=True)
            seconds = build(root, trials, args.threads)
            size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
            print(f"{trials} trials: built with write_trial from {args.threads} threads in {seconds:.1f} s "
                  f"({3 * trials} files, {size / 2 ** 20:.0f} MiB)", flush=True)
            measure(root, trials)
            size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
            print(f"  compacted store: {size / 2 ** 20:.1f} MiB", flush=True)
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
