"""Training throughput: this project's trial loop against the plain PyTorch loop, packing, and the fig6 bill.

    python benchmarks/train_throughput.py                 # CPU figures (or GPU when one is visible)
    python benchmarks/train_throughput.py --device cuda --fig6

Measured in one run on synthetic CIFAR-shaped uint8 data with CIFAR's
augmentation (random crop with 4-pixel padding + horizontal flip):

1. images/s of one training step loop for each model, this project's loop
   (device-resident data augmented on the device, bf16 autocast + channels_last
   on CUDA, masks re-applied with one fused multiply, metrics read once per
   epoch) against the plain loop (torchvision transforms in a DataLoader with
   4 workers, `.item()` every step), run twice where the precisions differ: in
   the same precision and memory format as ours (the loop's own gain), and in
   fp32 (the usual baseline; the two plain lines give the precision's gain);
2. aggregate images/s of 1, 2 and 4 trials packed on one GPU through Ray Tune
   (fractional GPU resources; on CPU, 1 and 2 single-core trials);
3. the wall time of one 160-epoch vgg16_bn/CIFAR trial and the GPU-hours of the
   fig6 preset, extrapolated from measured throughput.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import platform
import time
from typing import Dict, List

import os

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no Tune tables between the figures

import torch
import torch.nn.functional as F

from plain_loader import plain_loader  # benchmarks/ is on sys.path when this file runs as a script
from trainables import data
from trainables.models import build_model
from trainables.pruning import prune_model
from trainables.specs import DataSpec, TrainSpec
from trainables.training import Trainer, resolve_precision

CIFAR = (3, 32, 32)
TINY = (3, 64, 64)


def synthetic_images(count: int, shape, classes: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, *shape), generator=g, dtype=torch.uint8), torch.randint(0, classes, (count,), generator=g)


def cifar_like_info(shape):
    info = data.dataset_info(DataSpec("cifar10"))
    return dataclasses.replace(info, input_shape=tuple(shape))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def ours_images_per_second(name, shape, device, batch_size, steps, warmup, precision="auto", images=None,
                           info=None) -> float:
    """`info`: the dataset's DatasetInfo (its augmentation and normalisation), CIFAR's at `shape` if not given."""
    images, labels = images if images is not None else synthetic_images(max(batch_size * (steps + warmup), 2048), shape)
    model = build_model(name, shape, 10, seed=0).to(device)
    masks = prune_model(model, "magnitude", 10.0, shape).masks
    trainer = Trainer(model, masks, TrainSpec(epochs=1, batch_size=batch_size, lr=0.01, precision=precision), device)
    info = info if info is not None else cifar_like_info(shape)
    batches = data.TensorBatches(images, labels, info, batch_size, device, train=True, seed=0, drop_last=True)
    trainer.train_epoch(itertools.islice(iter(batches), warmup))
    sync(device)
    start = time.perf_counter()
    done = 0
    while done < steps:
        take = min(steps - done, len(batches))
        batches.epoch += 1
        trainer.train_epoch(itertools.islice(iter(batches), take))  # reads the loss once, at the end
        done += take
    sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def describe(precision: str, device) -> str:
    """A precision as the trial's Trainer runs it: bf16 autocast adds channels_last on CUDA."""
    return "bf16 + channels_last" if precision == "bf16" and device.type == "cuda" else precision


def plain_images_per_second(name, shape, device, batch_size, steps, warmup, workers=4, precision="fp32") -> float:
    """The plain loop; `precision` "bf16" autocasts its forward and loss, with channels_last on CUDA, exactly as
    the trial's Trainer does, so that only the loop differs from ours."""
    images, labels = synthetic_images(max(batch_size * (steps + warmup), 2048), shape)
    loader = plain_loader(images, labels, cifar_like_info(shape), batch_size, train=True, num_workers=workers,
                          drop_last=True, persistent_workers=True)
    model = build_model(name, shape, 10, seed=0).to(device)
    channels_last = precision == "bf16" and device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train()

    def autocast():
        if precision == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def run(count):
        seen = 0
        while seen < count:
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast():
                    loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss.item()
                seen += 1
                if seen == count:
                    return

    run(warmup)
    sync(device)
    start = time.perf_counter()
    run(steps)
    sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def packed_throughput(name, shape, device_type, batch_size, seconds, counts: List[int]) -> Dict[int, float]:
    """Aggregate images/s of k trials sharing one GPU (or k single-core CPU trials), through real Ray Tune."""
    import ray
    from ray import tune

    def worker(config):
        torch.set_num_threads(1) if device_type == "cpu" else None
        device = torch.device(device_type)
        rate = ours_images_per_second(name, shape, device, batch_size, steps=config["steps"], warmup=2)
        tune.report({"images_per_second": rate})

    results = {}
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    for k in counts:
        probe = ours_images_per_second(name, shape, torch.device(device_type), batch_size, steps=3, warmup=1)
        steps = max(3, int(seconds * probe / batch_size))
        resources = {"cpu": 1, "gpu": 1.0 / k} if device_type == "cuda" else {"cpu": 1}
        tuner = tune.Tuner(tune.with_resources(worker, resources),
                           param_space={"steps": steps, "i": tune.grid_search(list(range(k)))},
                           tune_config=tune.TuneConfig(max_concurrent_trials=k),
                           run_config=tune.RunConfig(verbose=0, storage_path="/tmp/prune_sweep_bench"))
        grid = tuner.fit()
        results[k] = sum(r.metrics["images_per_second"] for r in grid)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", default="vgg16_bn,resnet20")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default: 200 GPU, 8 CPU)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                    help="this project's loop (auto: bf16 + channels_last on CUDA, fp32 on CPU, as trials run)")
    ap.add_argument("--packed", default=None, help="trial counts to pack (default 1,2,4 on GPU, 1,2 on CPU); '' skips")
    ap.add_argument("--packed-seconds", type=float, default=None)
    ap.add_argument("--fig6", action="store_true", help="measure the four fig6 models at 32x32 and 64x64 for the bill")
    args = ap.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    steps = args.steps or (200 if gpu else 8)
    warmup = 20 if gpu else 2
    name = torch.cuda.get_device_name(device) if gpu else (platform.processor() or platform.machine())
    precision = resolve_precision(args.precision, device)
    same = describe(precision, device)
    print(f"# train_throughput on {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"batch {args.batch_size}, {steps} timed steps")
    rates = {}
    print(f"{'model':<10} {'loop':<36} {'img/s':>7} {'vs plain fp32':>14}")
    for model in args.models.split(","):
        ours = ours_images_per_second(model, CIFAR, device, args.batch_size, steps, warmup, precision=args.precision)
        plain = {"fp32": plain_images_per_second(model, CIFAR, device, args.batch_size, steps, warmup)}
        if precision != "fp32":  # the plain loop in our precision and memory format too: gains told apart
            plain[precision] = plain_images_per_second(model, CIFAR, device, args.batch_size, steps, warmup,
                                                       precision=precision)
        rates[model] = ours
        lines = [(f"this project ({same})", ours), *((f"plain loop ({describe(p, device)})", r)
                                                     for p, r in sorted(plain.items(), key=lambda i: i[0] == "fp32"))]
        for label, rate in lines:
            print(f"{model:<10} {label:<36} {rate:>7.0f} {rate / plain['fp32']:>13.2f}x")
        if precision != "fp32":
            print(f"{model:<10}   the loop's gain in {same}: {ours / plain[precision]:.2f}x; "
                  f"{same}'s gain in the plain loop: {plain[precision] / plain['fp32']:.2f}x")
    print("targets: vgg16_bn >= 3x the plain fp32 loop on an H100/H200")

    packed_counts = [int(c) for c in (args.packed if args.packed is not None else ("1,2,4" if gpu else "1,2")).split(",") if c]
    packing = {}
    if packed_counts:
        seconds = args.packed_seconds or (20 if gpu else 10)
        packing = packed_throughput("vgg16_bn", CIFAR, device.type, args.batch_size, seconds, packed_counts)
        print(f"packed vgg16_bn trials on one {'GPU' if gpu else 'CPU (one core each)'}: "
              + ", ".join(f"{k} -> {v:.0f} img/s aggregate" for k, v in packing.items()))
        print("target: >= 60,000 img/s aggregate per GPU for vgg16_bn/CIFAR")

    if "vgg16_bn" in rates:
        per_trial = rates["vgg16_bn"]
        images = 160 * (50_000 + 10_000 / 3)  # eval counted at ~3x training speed
        line = f"one 160-epoch vgg16_bn/CIFAR trial: {images / per_trial / 3600:.2f} h alone on the device"
        if packing:
            k, aggregate = max(packing.items(), key=lambda item: item[1])
            line += (f"; {images / aggregate / 3600:.2f} device-hours each when {k} share it "
                     f"({images * k / aggregate / 3600:.2f} h wall time)")
        print(line)
    if args.fig6:
        from orchestrator.grid import PRESETS

        bill = 0.0
        cache = {}
        for t in PRESETS["fig6"].trials():
            shape = TINY if t.data.name == "tiny_imagenet" else CIFAR
            key = (t.model.name, shape)
            if key not in cache:
                cache[key] = ours_images_per_second(t.model.name, shape, device, args.batch_size, steps, warmup)
            train_images = 100_000 if t.data.name == "tiny_imagenet" else 50_000
            bill += t.train.epochs * (train_images + 10_000 / 3) / cache[key] / 3600
        factor = (max(packing.values()) / packing[min(packing)]) if packing else 1.0
        print(f"fig6 preset (2,340 trials): {bill:.0f} device-hours one trial at a time; "
              f"{bill / factor:.0f} with the measured packing gain x{factor:.2f}  (target <= 150 GPU-hours)")
        for (model, shape), rate in cache.items():
            print(f"  {model} {shape}: {rate:.0f} img/s")


if __name__ == "__main__":
    main()
