"""What counting effective (on-path) weights adds to a prune: one binary forward/backward against the prune itself.

Every trial now counts the kept weights on an input-output path after pruning.
This measures that count against the prune it follows (SynFlow-100 and SNIP on
vgg16_bn, CIFAR-100 shape, at 10^3), in one process on the same weights. Both
are timed the same way: one untimed warm-up run, then the best of `--repeats`
(each prune on a fresh copy of the same initial network, copied off the clock).

    python benchmarks/effective_cost.py [--device cpu|cuda] [--repeats 3]
"""
from __future__ import annotations

import argparse
import copy
import platform
import time

import torch

from trainables.models import build_model
from trainables.pruning import prunable_parameters, prune_model
from trainables.pruning.effective import effective_remaining

SHAPE = (3, 32, 32)


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {device} ({name}), torch {torch.__version__}")
    print(f"each figure: best of {args.repeats} after one untimed warm-up run")
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(1000, *SHAPE, generator=g).to(device), (torch.arange(1000) % 100).to(device))]
    initial = build_model("vgg16_bn", SHAPE, 100, seed=0).to(device)
    for algorithm, iterations in (("synflow", 100), ("snip", 1)):
        prunes = []
        for _ in range(1 + args.repeats):
            model = copy.deepcopy(initial)  # every prune starts from the same weights, copied off the clock
            pruned = {}
            seconds = timed(lambda: pruned.update(result=prune_model(
                model, algorithm, 1000.0, SHAPE, iterations=iterations, batches=lambda: batches)), device)
            prunes.append((seconds, model, pruned["result"]))
        prune_seconds = min(seconds for seconds, _, _ in prunes[1:])
        _, model, result = prunes[-1]
        params = prunable_parameters(model, SHAPE)
        counts = [timed(lambda: effective_remaining(model, result.masks, params, SHAPE), device)
                  for _ in range(1 + args.repeats)]
        best = min(counts[1:])
        print(f"{algorithm} x{iterations} at 10^3: prune {prune_seconds:.2f} s (includes one count; cold first run "
              f"{prunes[0][0]:.2f} s), effective count {best:.3f} s (cold {counts[0]:.3f} s) = "
              f"{best / prune_seconds:.1%} of the prune; "
              f"{result.effective_remaining_params:,} of {result.remaining_params:,} kept weights on a path")


if __name__ == "__main__":
    main()
