"""How the results store scales: per-trial files against compacted parts, at the paper's grid and 10x it.

Builds synthetic stores of N trials (160 epoch rows and 16 layer rows each, the
size of a 160-epoch CIFAR trial on a 16-layer network), written with
`ResultsStore.write_trial` from a few threads as a sweep's workers would, then
times, in one run:

- on per-trial files: finished_ids(), has_trial() of one id, read("trials"),
  read("epochs") and pd.read_parquet(store/"trials");
- compact();
- on the compacted store: the same again.

    python benchmarks/store_scale.py                      # 2,340 and 23,400 trials
    python benchmarks/store_scale.py --trials 1000 --keep --dir /tmp/stores

Imports pandas, pyarrow and the store only (no torch, no ray).
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List

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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[2_340, 23_400], metavar="N",
                        help="store sizes to build and measure (default: 2340 23400)")
    parser.add_argument("--threads", type=int, default=4, help="writer threads while building (default 4)")
    parser.add_argument("--dir", default=None, help="where to build the stores (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the stores built")
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.trials):
        parser.error("--trials takes positive counts")

    print(f"# store_scale: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
          f"{platform.machine()} {platform.system()} {platform.release()}, Python {platform.python_version()}, "
          f"pyarrow {pa.__version__}, pandas {pd.__version__}")
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
