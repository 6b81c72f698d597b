"""Time per training step, masked (pruned 10x, masks re-applied after every step) against dense, same model, same run.

    python benchmarks/train_step.py [--device cpu|cuda] [--models vgg16_bn,resnet20] [--batch-size 128] [--steps 20]

Dense and masked steps are interleaved in rounds so machine noise hits both
alike; the figure is the median step time of each.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from trainables.models import build_model
from trainables.pruning import prune_model
from trainables.specs import TrainSpec
from trainables.training import Trainer


def step_times(trainer: Trainer, x, y, steps: int) -> list:
    times = []
    for _ in range(steps):
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        trainer.train_epoch([(x, y)])
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", default="vgg16_bn,resnet20")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    args = ap.parse_args()
    device = torch.device(args.device)
    shape, classes = (3, 32, 32), 100
    print(f"# train_step: batch {args.batch_size}, {args.steps} steps x {args.rounds} rounds, device={device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
          f"threads={torch.get_num_threads()}, torch={torch.__version__}, precision={args.precision}")
    print(f"{'model':<10} {'dense ms/step':>14} {'masked ms/step':>15} {'overhead':>9}")
    g = torch.Generator().manual_seed(0)
    x = torch.randn((args.batch_size, *shape), generator=g).to(device)
    y = torch.randint(0, classes, (args.batch_size,), generator=g).to(device)
    spec = TrainSpec(epochs=1, lr=0.01, weight_decay=1e-4, precision=args.precision)
    for name in args.models.split(","):
        dense_model = build_model(name, shape, classes, seed=0).to(device)
        masked_model = build_model(name, shape, classes, seed=0).to(device)
        masks = prune_model(masked_model, "magnitude", 10.0, shape).masks
        dense, masked = Trainer(dense_model, None, spec, device), Trainer(masked_model, masks, spec, device)
        step_times(dense, x, y, 3), step_times(masked, x, y, 3)  # warm-up
        dense_times, masked_times = [], []
        for _ in range(args.rounds):
            dense_times += step_times(dense, x, y, args.steps)
            masked_times += step_times(masked, x, y, args.steps)
        d, m = statistics.median(dense_times), statistics.median(masked_times)
        print(f"{name:<10} {d * 1e3:>14.2f} {m * 1e3:>15.2f} {100 * (m - d) / d:>8.2f}%")
    print("target: masked overhead <= 3% of step time")


if __name__ == "__main__":
    main()
