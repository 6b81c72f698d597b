"""How long the sweep CLI takes to answer, as whole processes: a bad argument, a small --dry-run, and what a check
after importing torch and Ray would cost.

    python benchmarks/cli_latency.py            # 5 runs each, medians
    python benchmarks/cli_latency.py --runs 9

Target: a bad-argument error in under 1 s. The sweep checks its arguments,
names and ranges before torch, Ray or pandas load (orchestrator/sweep.py); the
last line is the floor that ordering avoids: the same interpreter importing
torch and Ray, as every error did before.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(cmd: List[str], expect: int, runs: int) -> List[float]:
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        seconds.append(time.perf_counter() - start)
        if out.returncode != expect:
            raise SystemExit(f"{' '.join(cmd)} exited {out.returncode}, expected {expect}: {out.stderr[-500:]}")
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    store = tempfile.mkdtemp(prefix="cli_latency")
    sweep = [sys.executable, "-m", "orchestrator.sweep", "--store", store]
    cases = [
        ("bad algorithm name (exit 2)", sweep + ["--algorithms", "synflwo", "--dry-run"], 2),
        ("bad seed range (exit 2)", sweep + ["--seeds", "3:1", "--dry-run"], 2),
        ("small --dry-run (mlp/digits, 1 trial)", sweep + ["--models", "mlp", "--algorithms", "magnitude",
                                                           "--log10-compressions", "1", "--seeds", "0",
                                                           "--num-cpus", "2", "--dry-run"], 0),
        ("floor before: import torch and ray", [sys.executable, "-c", "import torch, ray, ray.tune"], 0),
    ]
    print(f"# cli_latency on {platform.machine()} ({os.cpu_count()} cores), python {platform.python_version()}, "
          f"{args.runs} runs each, whole processes")
    print(f"{'case':<42}{'median s':>10}{'min s':>8}{'max s':>8}")
    for name, cmd, expect in cases:
        seconds = timed(cmd, expect, args.runs)
        print(f"{name:<42}{statistics.median(seconds):>10.2f}{min(seconds):>8.2f}{max(seconds):>8.2f}")
    print("target: a bad-argument error under 1 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
