"""The throughput table the sweep's plan estimates time from, measured here: `orchestrator/throughput.json`.

    python benchmarks/throughput_table.py                      # print the measurements for this machine
    python benchmarks/throughput_table.py --write              # and merge them into orchestrator/throughput.json
    python benchmarks/throughput_table.py --device cuda --write --pairs vgg16_bn/cifar10,resnet18/cifar10

Each entry is the training images/s of this project's own trial loop
(`ours_images_per_second` of train_throughput.py: device-resident data
augmented on the device, masks applied, the precision `auto` picks) for one
model at one dataset's input shape on one device kind, with the device, core
count, batch, date and machine, so the plan can name where its estimate comes
from. An entry replaces an earlier one of the same (device, model, shape).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import platform
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from orchestrator.cost import THROUGHPUT_TABLE, pair_facts  # noqa: E402
from trainables.data import dataset_info  # noqa: E402
from trainables.specs import DataSpec  # noqa: E402
from train_throughput import ours_images_per_second  # noqa: E402

DEFAULT_PAIRS = "mlp/digits,conv/digits,resnet20/cifar10,vgg11_bn/cifar10,vgg16_bn/cifar10,resnet18/cifar10"


def device_kind(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--pairs", default=DEFAULT_PAIRS, help="comma-separated model/dataset")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--write", action="store_true", help="merge into orchestrator/throughput.json")
    ap.add_argument("--machine", default=f"{os.cpu_count()}-core {platform.machine()}",
                    help="how the table names this machine")
    args = ap.parse_args()
    device = torch.device(args.device)
    threads = torch.get_num_threads()
    kind = device_kind(device)
    today = dt.date.today().isoformat()
    print(f"# throughput_table on {kind} ({args.machine}), torch {torch.__version__}, threads {threads}, "
          f"batch {args.batch_size}, {args.steps} timed steps")
    print(f"{'model':<14}{'shape':<10}{'MACs/example':>16}{'img/s':>12}")
    entries = []
    for pair in args.pairs.split(","):
        model, dataset = pair.split("/")
        facts = pair_facts(model, dataset)
        info = dataset_info(DataSpec(dataset))
        rate = ours_images_per_second(model, facts.input_shape, device, args.batch_size, args.steps, warmup=2,
                                      info=info)
        entries.append({"device": kind, "model": model, "input_shape": list(facts.input_shape),
                        "macs_per_example": facts.dense_macs, "images_per_second": round(rate, 1),
                        "threads": threads if device.type == "cpu" else None, "batch_size": args.batch_size,
                        "measured": today, "source": f"benchmarks/throughput_table.py on {args.machine}"})
        print(f"{model:<14}{'x'.join(map(str, facts.input_shape)):<10}{facts.dense_macs:>16,}{rate:>12,.0f}")
    if args.write:
        table = json.loads(THROUGHPUT_TABLE.read_text()) if THROUGHPUT_TABLE.exists() else {"measurements": []}
        fresh = {(e["device"], e["model"], tuple(e["input_shape"])) for e in entries}
        kept = [e for e in table["measurements"] if (e["device"], e["model"], tuple(e["input_shape"])) not in fresh]
        table["measurements"] = kept + entries
        THROUGHPUT_TABLE.write_text(json.dumps(table, indent=1) + "\n")
        print(f"wrote {len(entries)} entries to {THROUGHPUT_TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
