"""A sweep's bill before it runs: trial-epochs, training FLOPs, disk, and GPU-hours and wall time where measured.

Compute is counted from the models: each (model, dataset) network's
conv/linear multiply-adds per example, from the table of the presets' pairs
(`pair_facts.json`, used only while the model code it was counted from is
unchanged; tests/test_scale.py checks it against the built networks), else
from the network built once on the CPU. A training step is ~3x a forward
pass (forward, backward for inputs, backward for weights), and a multiply-add
is 2 FLOPs, so an epoch costs 6 x MACs x train examples + 2 x MACs x test
examples (the evaluation).
Pruned weights are zeros in dense kernels: they still multiply, so a pruned
trial takes as long as a dense one; its nonzero FLOPs are only a reading.

Time needs a measured throughput, never a guess: first this store's own
finished trials of the same model, dataset and device kind (median seconds per
epoch), else the table the project ships from `benchmarks/train_throughput.py`
(`orchestrator/throughput.json`: images/s per device, model and input shape),
scaled by FLOPs from the nearest measured model of that device when the model
itself was not measured, and named so. Without either there is no estimate,
and the plan says so.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import pathlib
import statistics
import sys
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from trainables.specs import TrialSpec

THROUGHPUT_TABLE = pathlib.Path(__file__).with_name("throughput.json")
# The built-in pairs' counts, so a plan does not build networks it already knows (`python -m orchestrator.cost`
# writes it). An entry counts only while the code it was counted from is unchanged (`counting_code`).
PAIR_FACTS_TABLE = pathlib.Path(__file__).with_name("pair_facts.json")
# What a network's counts follow from, besides the dataset's shape and classes: the model zoo and the code that
# finds and counts the prunable weights. Paths inside the `trainables` package.
COUNTED_FROM = ("models", "pruning/params.py", "pruning/metrics.py")
FLOPS_PER_MAC = 2
TRAIN_PASSES = 3        # forward + two backward matmuls per training example
CHECKPOINTS_KEPT = 2    # trainables.checkpoints.KEEP: newest checkpoints kept per running trial
# Bytes the store takes per trial, measured on quickstart stores (one Parquet file per table per trial until
# `python -m results_store compact`): a trial's row, plus one per epoch and one per layer.
# A model without its own measurement borrows the nearest measured model's FLOP rate only within 10x in FLOPs.
MAX_FLOP_SCALING_DECADES = 1.0
STORE_BYTES_PER_TRIAL = 24_000
STORE_BYTES_PER_EPOCH = 60
STORE_BYTES_PER_LAYER = 120


@dataclass(frozen=True)
class PairFacts:
    """What the bill needs of one (model, dataset): counted from the network, built once on the CPU."""
    model: str
    dataset: str
    input_shape: Tuple[int, ...]
    parameters: int          # every parameter and buffer element (what a checkpoint holds)
    prunable_weights: int
    prunable_layers: int
    dense_macs: int          # conv/linear multiply-adds per example
    train_examples: Optional[int]
    test_examples: Optional[int]


_COUNTED: Dict[Tuple[str, str], PairFacts] = {}  # built-in pairs already looked up or built in this process


def pair_facts(model: str, dataset: str) -> PairFacts:
    """The pair's counts: from the shipped table when its entry was counted from this very model code and dataset
    description, else from the network, built on the CPU. A built-in pair is looked up or built once per process;
    a plugin's model or dataset is counted afresh (another plugin may define the same name)."""
    from common.vocabulary import BUILTIN_DATASETS, BUILTIN_MODELS

    key = (model, dataset)
    if key in _COUNTED:
        return _COUNTED[key]
    facts = tabled_pair_facts(model, dataset) or count_pair_facts(model, dataset)
    if model in BUILTIN_MODELS and dataset in BUILTIN_DATASETS:
        _COUNTED[key] = facts
    return facts


def count_pair_facts(model: str, dataset: str) -> PairFacts:
    """Build the network on the CPU and count its parameters, prunable weights and multiply-adds."""
    from trainables.data import dataset_info
    from trainables.models import build_model
    from trainables.pruning import prunable_parameters
    from trainables.pruning.metrics import macs
    from trainables.specs import DataSpec

    info = dataset_info(DataSpec(dataset))
    network = build_model(model, info.input_shape, info.num_classes, seed=0)
    params = prunable_parameters(network, info.input_shape)
    elements = sum(p.numel() for p in network.parameters()) + sum(b.numel() for b in network.buffers())
    return PairFacts(model, dataset, tuple(info.input_shape), elements, sum(p.size for p in params),
                     sum(1 for p in params if p.is_layer_weight), macs(params), info.train_examples,
                     info.test_examples)


def counting_code() -> str:
    """A digest of the sources in COUNTED_FROM: a table entry written under another digest may be stale."""
    import trainables

    root = pathlib.Path(trainables.__file__).parent
    digest = hashlib.sha256()
    for name in COUNTED_FROM:
        path = root / name
        for source in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(source.relative_to(root).as_posix().encode() + b"\0" + source.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _dataset_facts(dataset: str) -> Dict[str, object]:
    """What the table's entry must still say of the dataset (read from its description: no file is opened)."""
    from trainables.data import dataset_info
    from trainables.specs import DataSpec

    info = dataset_info(DataSpec(dataset))
    return {"input_shape": list(info.input_shape), "num_classes": info.num_classes,
            "train_examples": info.train_examples, "test_examples": info.test_examples}


def tabled_pair_facts(model: str, dataset: str, path: Optional[pathlib.Path] = None) -> Optional[PairFacts]:
    """The pair's entry in the table (default the shipped one), or None: no entry, other model code, or another
    dataset shape."""
    try:
        table = json.loads((path or PAIR_FACTS_TABLE).read_text())
    except (OSError, ValueError):
        return None
    entry = next((e for e in table.get("pairs", []) if e["model"] == model and e["dataset"] == dataset), None)
    if entry is None or table.get("counting_code") != counting_code():
        return None
    if any(entry.get(k) != v for k, v in _dataset_facts(dataset).items()):
        return None
    return PairFacts(model, dataset, tuple(entry["input_shape"]), entry["parameters"], entry["prunable_weights"],
                     entry["prunable_layers"], entry["dense_macs"], entry["train_examples"], entry["test_examples"])


def write_pair_facts_table(pairs: Iterable[Tuple[str, str]], path: Optional[pathlib.Path] = None) -> List[PairFacts]:
    """Count each pair from its built network and write the table, stamped with the code it was counted from."""
    counted = [count_pair_facts(model, dataset) for model, dataset in sorted(set(pairs))]
    entries = [json.dumps({**dataclasses.asdict(f), **_dataset_facts(f.dataset)}) for f in counted]
    (path or PAIR_FACTS_TABLE).write_text(f'{{"counting_code": "{counting_code()}", "pairs": [\n '
                                         + ",\n ".join(entries) + "\n]}\n")
    return counted


def preset_pairs() -> List[Tuple[str, str]]:
    """Every (model, dataset) some preset sweeps: the pairs worth a table entry."""
    from orchestrator.grid import PRESETS

    return list(dict.fromkeys((m, d) for name in PRESETS.names() for part in PRESETS[name].parts()
                              for m in part.models for d in part.datasets))


def trial_epochs(spec: TrialSpec) -> int:
    """Epochs the trial trains: IMP trains every level before its final training."""
    return spec.train.epochs * (spec.prune.levels + 1 if spec.prune.algorithm == "imp" else 1)


def training_flops(spec: TrialSpec, facts: PairFacts, prune_passes: Optional[int]) -> Optional[float]:
    """FLOPs of the trial on dense kernels (training, evaluation each epoch, scoring passes); None if a split's
    size is unknown (a plugin dataset that does not say)."""
    if spec.train.epochs and (facts.train_examples is None or facts.test_examples is None):
        return None
    per_example = FLOPS_PER_MAC * facts.dense_macs
    train = trial_epochs(spec) * (facts.train_examples or 0) * TRAIN_PASSES * per_example
    evaluation = spec.train.epochs * (facts.test_examples or 0) * per_example
    return float(train + evaluation + (prune_passes or 0) * TRAIN_PASSES * per_example)


def epoch_equivalents(facts: PairFacts) -> Optional[float]:
    """An epoch in training-example units (evaluation is a third of a training step per example)."""
    if facts.train_examples is None or facts.test_examples is None:
        return None
    return facts.train_examples + facts.test_examples / TRAIN_PASSES


# --- where the time comes from -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Throughput:
    seconds_per_epoch: float   # one training epoch plus its evaluation, on one trial's share of the device
    source: str
    overhead_seconds: float = 0.0  # per trial beyond pruning and training (start, data, checkpoints, the store)


def same_device(kind_a: str, kind_b: str) -> bool:
    """'NVIDIA H200' and 'H200' (Ray's accelerator type) are one kind; 'cpu' is only 'cpu'."""
    a, b = kind_a.lower().strip(), kind_b.lower().strip()
    if "cpu" in (a, b):
        return a == b
    return bool(a and b) and (a in b or b in a)


def store_throughput(finished, model: str, dataset: str, device_kind: str) -> Optional[Throughput]:
    """Median seconds per epoch of this store's finished trials of the pair on this device kind (or None).

    `finished` is the store's trials frame (columns model, dataset, device, epochs, train_seconds, status).
    """
    if finished is None or finished.empty:
        return None
    rows = finished[(finished["model"] == model) & (finished["dataset"] == dataset)
                    & (finished["status"] == "completed") & (finished["epochs"] > 0)
                    & (finished["train_seconds"] > 0)]
    rows = rows[[same_device(str(d), device_kind) for d in rows["device"]]]
    if rows.empty:
        return None
    per_epoch = statistics.median((rows["train_seconds"] / rows["epochs"]).tolist())
    overhead = 0.0
    if {"started_at", "finished_at", "prune_seconds"} <= set(rows.columns):
        wall = [(f - s).total_seconds() for s, f in zip(pd_timestamps(rows["started_at"]),
                                                         pd_timestamps(rows["finished_at"]))]
        overhead = max(0.0, statistics.median(
            w - t - p for w, t, p in zip(wall, rows["train_seconds"], rows["prune_seconds"].fillna(0.0))))
    return Throughput(per_epoch, f"median of {len(rows)} finished {model}/{dataset} trial(s) on "
                                 f"{device_kind} in this store, {overhead:.2f} s a trial besides", overhead)


def pd_timestamps(column):
    import pandas as pd

    return pd.to_datetime(column)


def load_throughput_table(path: pathlib.Path = THROUGHPUT_TABLE) -> List[Dict]:
    return json.loads(path.read_text())["measurements"]


def table_throughput(facts: PairFacts, device_kind: str, cpus: float,
                     table: Optional[List[Dict]] = None) -> Optional[Throughput]:
    """Seconds per epoch from the shipped benchmark table: this model's own measurement on the device kind, else
    the nearest measured model's FLOP rate on it; on a CPU, scaled to the trial's cores."""
    epoch = epoch_equivalents(facts)
    if epoch is None or not facts.dense_macs:
        return None
    rows = [r for r in (table if table is not None else load_throughput_table())
            if same_device(r["device"], device_kind)]
    if not rows:
        return None
    own = [r for r in rows if r["model"] == facts.model and tuple(r["input_shape"]) == facts.input_shape]
    chosen = own[0] if own else min(rows, key=lambda r: abs(math.log(r["macs_per_example"] / facts.dense_macs)))
    if not own and abs(math.log10(chosen["macs_per_example"] / facts.dense_macs)) > MAX_FLOP_SCALING_DECADES:
        return None  # small networks are bound by overheads, not FLOPs: no honest scaling across that gap
    images_per_second = chosen["images_per_second"]
    if not own:  # the same device's achieved FLOP rate, on this model's FLOPs
        images_per_second *= chosen["macs_per_example"] / facts.dense_macs
    how = (f"{chosen['model']} {'x'.join(map(str, chosen['input_shape']))}, {chosen['images_per_second']:,.0f} "
           f"img/s" + ("" if own else f", scaled by FLOPs to {facts.model}"))
    if chosen["device"] == "cpu":  # measured on `threads` cores; a trial gets its --cpus-per-trial
        images_per_second *= cpus / chosen["threads"]
        how += f", {chosen['threads']} cores -> {cpus:g}"
    return Throughput(epoch / images_per_second,
                      f"the shipped benchmark table ({chosen['source']}, {chosen['measured']}; {how})")


# --- the bill ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Resources:
    """What the sweep would run on: this machine, or the Ray cluster at --address."""
    where: str
    cpus: float
    gpus: float
    gpu_kind: Optional[str]    # 'NVIDIA H200' or Ray's 'H200'; None without GPUs

    @property
    def device_kind(self) -> str:
        return self.gpu_kind or ("GPU" if self.gpus else "cpu")


def concurrent_trials(asks: Sequence[Dict[str, float]], resources: Resources,
                      max_concurrent: Optional[int]) -> int:
    """How many trials fit at once (by their largest ask), at least 1."""
    cpu = max((a.get("CPU", 1.0) for a in asks), default=1.0)
    gpu = max((a.get("GPU", 0.0) for a in asks), default=0.0)
    fits = resources.cpus // cpu if cpu else math.inf
    if gpu:
        fits = min(fits, resources.gpus // gpu)
    fits = int(max(1, fits if math.isfinite(fits) else 1))
    return min(fits, max_concurrent) if max_concurrent else fits


def bill(to_run: Sequence[TrialSpec], facts: Dict[Tuple[str, str], PairFacts], passes: Dict[str, Optional[int]],
         asks: Dict[str, Dict[str, float]], resources: Resources, finished, max_concurrent: Optional[int],
         keep_checkpoints: bool, table: Optional[List[Dict]] = None) -> Dict:
    """The plan's cost lines, and each trial's expected cost (seconds where measured, else FLOPs) for the ETA."""
    epochs = sum(trial_epochs(t) for t in to_run)
    ids = [t.trial_id for t in to_run]  # each id hashes the trial's whole description: once, not per use
    flops: Dict[str, Optional[float]] = {}
    remaining_flops = 0.0
    for t, i in zip(to_run, ids):
        pair = facts[(t.model.name, t.data.name)]
        flops[i] = training_flops(t, pair, passes.get(i))
        if flops[i] is not None:
            remaining_flops += flops[i] / t.prune.compression
    known = [f for f in flops.values() if f is not None]
    unknown_flops = sorted({t.data.name for t, i in zip(to_run, ids) if flops[i] is None})

    kind = resources.device_kind
    throughputs: Dict[Tuple[str, str], Optional[Throughput]] = {}
    seconds: Dict[str, float] = {}
    gpu_seconds = 0.0
    for t, i in zip(to_run, ids):
        key = (t.model.name, t.data.name)
        if key not in throughputs:
            throughputs[key] = store_throughput(finished, *key, kind) or table_throughput(
                facts[key], kind, asks[i].get("CPU", 1.0), table)
        rate = throughputs[key]
        epoch = epoch_equivalents(facts[key])
        if rate is None or (epoch is None and passes.get(i)):
            continue
        prune = (passes.get(i) or 0) * rate.seconds_per_epoch / epoch if epoch else 0.0
        seconds[i] = trial_epochs(t) * rate.seconds_per_epoch + prune + rate.overhead_seconds
        gpu_seconds += seconds[i] * asks[i].get("GPU", 0.0)
    slots = concurrent_trials(list(asks.values()), resources, max_concurrent)
    estimated = len(seconds) == len(to_run) and bool(to_run)
    total_seconds = sum(seconds.values())

    checkpoint_bytes = {key: CHECKPOINTS_KEPT * (8 * f.parameters + f.prunable_weights) for key, f in facts.items()}
    biggest = max((checkpoint_bytes[(t.model.name, t.data.name)] for t in to_run), default=0)
    peak_checkpoints = (sum(checkpoint_bytes[(t.model.name, t.data.name)] for t in to_run) if keep_checkpoints
                        else min(slots, len(to_run)) * biggest)
    store_bytes = sum(STORE_BYTES_PER_TRIAL + t.train.epochs * STORE_BYTES_PER_EPOCH
                      + facts[(t.model.name, t.data.name)].prunable_layers * STORE_BYTES_PER_LAYER for t in to_run)
    return {
        "trial_epochs": epochs,
        "training_flops": sum(known) if known else None,
        "nonzero_flops_if_pruned_uniformly": remaining_flops if known else None,
        "flops_unknown_for_datasets": unknown_flops,
        "store_bytes": store_bytes,
        "checkpoint_bytes_at_peak": peak_checkpoints,
        "resources": {"where": resources.where, "cpus": resources.cpus, "gpus": resources.gpus,
                      "device": kind, "concurrent_trials": slots},
        "throughput_sources": [{"model": m, "dataset": d, "seconds_per_epoch": r.seconds_per_epoch if r else None,
                                "source": r.source if r else None} for (m, d), r in sorted(throughputs.items())],
        "trials_timed": len(seconds), "trials_to_run": len(to_run),
        "device_hours": total_seconds / 3600.0 if seconds else None,
        "gpu_hours": gpu_seconds / 3600.0 if seconds and resources.gpus else None,
        "wall_hours": total_seconds / slots / 3600.0 if seconds else None,
        "expected_cost": dict(seconds) if estimated else (dict(flops) if len(known) == len(flops) else None),
        "expected_cost_unit": "seconds" if estimated else "flops",
    }


def human_duration(hours: float) -> str:
    if hours >= 24 * 365:
        return f"{hours / (24 * 365):,.1f} years"
    if hours >= 48:
        return f"{hours / 24:,.1f} days"
    if hours >= 1:
        return f"{hours:,.1f} h"
    if hours >= 1 / 60:
        return f"{hours * 60:,.1f} min"
    return f"{hours * 3600:,.0f} s"


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1000.0
    return f"{count:,.1f} TB"


def bill_lines(b: Dict) -> List[str]:
    """The bill as the plan prints it."""
    lines = [f"compute: {b['trial_epochs']:,} trial-epochs"]
    if b["training_flops"] is not None:
        lines[0] += (f", {b['training_flops']:.3g} training FLOPs on dense kernels (pruned weights are zeros that "
                     f"still multiply, so masked training saves no time; the nonzero weights' share would be "
                     f"~{b['nonzero_flops_if_pruned_uniformly']:.3g} if every layer kept 1/compression)")
    if b["flops_unknown_for_datasets"]:
        lines.append(f"  no FLOP count for {', '.join(b['flops_unknown_for_datasets'])}: the dataset does not "
                     f"say its size")
    lines.append(f"disk: ~{human_bytes(b['store_bytes'])} for the store; ~{human_bytes(b['checkpoint_bytes_at_peak'])} "
                 f"of checkpoints at peak")
    r = b["resources"]
    seen = (f"{r['where']}: {r['cpus']:g} CPUs" + (f", {r['gpus']:g} GPUs ({r['device']})" if r["gpus"] else "")
            + f", {r['concurrent_trials']} trials at once")
    if b["wall_hours"] is None:
        lines.append(f"time: no estimate on {seen}")
    else:
        hours = f"{b['gpu_hours']:,.1f} GPU-hours, " if b["gpu_hours"] is not None else \
            f"{human_duration(b['device_hours'])} of trials on CPU, "
        part = ("" if b["trials_timed"] == b["trials_to_run"] else
                f" for the {b['trials_timed']:,} of {b['trials_to_run']:,} trials with a measured throughput (the "
                f"rest: no estimate)")
        lines.append(f"time: {hours}~{human_duration(b['wall_hours'])} wall on {seen}{part}")
    for s in b["throughput_sources"]:
        where = (f"{s['seconds_per_epoch']:,.2f} s/epoch from {s['source']}" if s["source"] else
                 f"no throughput measured on {r['device']} (none in this store, none in the shipped table)")
        lines.append(f"  {s['model']}/{s['dataset']}: {where}")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.cost",
                                     description="Write orchestrator/pair_facts.json: every preset pair's counts, "
                                                 "from its built network (run after changing a model).")
    parser.parse_args(argv)
    for f in write_pair_facts_table(preset_pairs()):
        print(f"{f.model}/{f.dataset}: {f.prunable_weights:,} prunable weights in {f.prunable_layers} layers, "
              f"{f.dense_macs:,} multiply-adds per example")
    print(f"wrote {PAIR_FACTS_TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
