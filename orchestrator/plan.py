"""A sweep's plan: what the grid holds, what the store already has, what each trial asks for and costs.

Everything here runs before Ray starts, so `--dry-run` and every bad-input check are quick.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from collections import Counter
from typing import Dict, List, Optional, Sequence

from common.checks import UsageError
from common.vocabulary import DEFAULT_PRUNE_MODE, DEFAULT_SCOPE
from orchestrator import cost
from orchestrator.grid import SweepSpec
from orchestrator.resources import ResourcePolicy, trial_resources
from results_store import ResultsStore
from trainables.pruning.algorithms import ALGORITHMS
from trainables.pruning.loop import scoring_passes
from trainables.pruning.scores import SCORERS
from trainables.specs import TrialSpec


def estimated_prune_passes(spec: TrialSpec) -> Optional[int]:
    """Forward/backward passes the prune will take (iterations x examples); None for imp (it trains)."""
    if spec.prune.algorithm == "imp":
        return None
    from trainables.data import dataset_info

    info = dataset_info(spec.data)
    return scoring_passes(SCORERS[ALGORITHMS[spec.prune.algorithm].scorer], spec.prune.iterations,
                          spec.prune.examples_per_class * info.num_classes)


def describe_recipe(train) -> str:
    if train.epochs == 0:
        return "prune only (no training)"
    if train.optimizer == "adamw" or train.lr_schedule == "cosine":
        return (f"{train.epochs} epochs, batch {train.batch_size}, {train.optimizer} lr {train.lr:g}, "
                + (f"cosine after {train.warmup_epochs} warmup epochs" if train.lr_schedule == "cosine" else
                   f"x{train.lr_drop_factor:g} after epochs {', '.join(map(str, train.lr_drops)) or 'none'}")
                + f", weight decay {train.weight_decay:g}, precision {train.precision}")
    drops = ", ".join(map(str, train.lr_drops)) or "none"
    return (f"{train.epochs} epochs, batch {train.batch_size}, lr {train.lr:g} x{train.lr_drop_factor:g} after epochs "
            f"{drops}, momentum {train.momentum:g}, weight decay {train.weight_decay:g}, precision {train.precision}")


def needs_data(spec: TrialSpec) -> bool:
    return (spec.train.epochs > 0 or spec.prune.algorithm == "imp"
            or SCORERS[ALGORITHMS[spec.prune.algorithm].scorer].needs_data)


def check_datasets(names: Sequence[str], data_dir: str, download: bool) -> Dict[str, str]:
    """Load each dataset's splits once here (downloading it once, under its lock): 'ready' or why not."""
    from trainables import data
    from trainables.specs import DataSpec

    status = {}
    for name in names:
        try:
            spec = DataSpec(name)
            for split in ("train", "test"):
                if data.dataset_info(spec).tensor_resident:
                    data.load_tensors(spec, split, data_dir, download=download)
                else:
                    data.image_folder(spec, split, data_dir)
            status[name] = "ready"
        except (data.DatasetMissingError, FileNotFoundError, OSError) as exc:
            status[name] = str(exc).splitlines()[0]
    return status


def resource_asks(to_run: Sequence[TrialSpec], policy: ResourcePolicy) -> List[Dict]:
    """How many trials ask for each distinct resource bundle."""
    asks = Counter(json.dumps(trial_resources(t, policy), sort_keys=True) for t in to_run)
    return [{"per_trial": json.loads(k), "trials": n} for k, n in sorted(asks.items())]


def seen_resources(address: Optional[str], num_cpus: Optional[int]) -> "cost.Resources":
    """The resources the sweep would run on: the Ray cluster at `address` (queried, then left), else this
    machine (its CPUs, or --num-cpus, and its GPUs)."""
    if address:
        import ray

        from orchestrator.cluster import connect

        seen = cluster_resources(connect(address, None, None))
        ray.shutdown()
        return seen
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return cost.Resources("this machine", float(num_cpus or os.cpu_count() or 1), float(gpus),
                          torch.cuda.get_device_name(0) if gpus else None)


def cluster_resources(where: str) -> "cost.Resources":
    """The connected Ray cluster's CPUs, GPUs and GPU kind (Ray's `accelerator_type`)."""
    import ray

    total = ray.cluster_resources()
    kinds = sorted(k.split(":", 1)[1] for k in total if k.startswith("accelerator_type:"))
    return cost.Resources(where, float(total.get("CPU", 0)), float(total.get("GPU", 0)), kinds[0] if kinds else None)


def stored_throughputs(store: ResultsStore):
    """The store's finished trials, only the columns throughput is measured from (None for a new store)."""
    if not store.exists():
        return None
    frame = store.read("trials", columns=["model", "dataset", "device", "epochs", "train_seconds", "status",
                                          "prune_seconds", "started_at", "finished_at"])
    return frame if not frame.empty else None


def plan(sweep: SweepSpec, store: ResultsStore, policy: ResourcePolicy) -> Dict:
    """What the sweep would run: the grid less what the store holds (unreadable store files are moved aside and
    their trials run again). A shared dense trial counts as done when the store holds it, or any trial it stands
    for (a store written before dense trials were shared)."""
    trials = sweep.trials()
    own = sweep.own_trials()
    members = sweep.shared_dense_members()
    ids = [t.trial_id for t in trials]  # each id hashes the trial's whole description: once here, not per use
    done = store.finished_ids() if store.exists() else set()
    stored_as = {i: [m for m in members.get(i, ()) if m in done] for i in ids}
    left = [(t, i) for t, i in zip(trials, ids) if i not in done and not stored_as[i]]
    to_run, to_run_ids = [t for t, _ in left], [i for _, i in left]
    passes = {i: estimated_prune_passes(t) for t, i in left}
    pairs, facts, seen_pairs = [], {}, set()
    parts = sweep.parts()
    for part in parts:
        for model, dataset in ((m, d) for m in part.models for d in part.datasets if (m, d) not in seen_pairs):
            seen_pairs.add((model, dataset))
            facts[(model, dataset)] = pair = cost.pair_facts(model, dataset)
            top = max(part.log10_compressions)
            if 10 ** top > pair.prunable_weights:
                raise UsageError(
                    f"log10 compression {top:g} is above what {model}/{dataset} allows: it has "
                    f"{pair.prunable_weights:,} prunable weights, so the largest meaningful log10 compression is "
                    f"{math.log10(pair.prunable_weights):.2f}"
                )
            pairs.append({"model": model, "dataset": dataset, "prunable_weights": pair.prunable_weights,
                          "dense_macs_per_example": pair.dense_macs,
                          "recipe": describe_recipe(part.recipe(model, dataset)),
                          "recipe_source": part.recipe_source(model, dataset)})
    variants = [f"{v.algorithm} x{v.prune(0).iterations}" + (f" ({v.mode} mode)" if v.mode != DEFAULT_PRUNE_MODE else "")
                + (f" ({v.scope} budget)" if v.scope != DEFAULT_SCOPE else "")
                + (f" ({v.levels} levels)" if v.levels else "") + (f" [{v.ablation}]" if v.ablation != "none" else "")
                for v in dict.fromkeys(v for part in parts for v in part.algorithms)]
    shared = [i for i in ids if i in members]
    return {
        "sweep": sweep.name, "trials": len(trials), "done": len(trials) - len(to_run), "to_run": len(to_run),
        "trials_without_sharing": len(own), "shared_dense_trials": len(shared),
        "shared_dense_done_as_older_trials": sum(1 for i in shared if stored_as[i] and i not in done),
        "model_names": list(dict.fromkeys(m for part in parts for m in part.models)),
        "dataset_names": list(dict.fromkeys(d for part in parts for d in part.datasets)),
        "pairs": pairs, "algorithms": variants,
        "log10_compressions": sorted({c for part in parts for c in part.log10_compressions}),
        "seeds": sorted({s for part in parts for s in part.seeds}),
        "resources": resource_asks(to_run, policy),
        "workers_per_trial": policy.workers,
        "prune_passes": sum(p for p in passes.values() if p is not None),
        "imp_trials_not_counted_in_prune_passes": sum(p is None and t.prune.algorithm == "imp" for t, p in
                                                      zip(to_run, passes.values())),
        "trials_counting_prune_passes_as_they_run": sum(p is None and t.prune.algorithm != "imp" for t, p in
                                                        zip(to_run, passes.values())),
        "datasets_needed": sorted({t.data.name for t in to_run if needs_data(t)}),
        "store": str(store), "to_run_specs": to_run, "to_run_ids": to_run_ids, "all_specs": trials, "done_ids": done,
        "grid_ids": ids + [m for ms in members.values() for m in ms],
        # each trial as the store holds it: a dense trial found as an algorithm's own 1x trial, by that trial's id
        "stored_ids": {i: (stored_as[i][0] if stored_as[i] and i not in done else i) for i in ids},
        "pair_facts": facts, "passes_by_trial": passes,
        "quarantined": list(getattr(store, "quarantined", [])),
    }


def add_bill(the_plan: Dict, store: ResultsStore, policy: ResourcePolicy, resources: "cost.Resources",
             max_concurrent: Optional[int], keep_checkpoints: bool) -> None:
    """The plan's cost lines, for the resources seen (and each trial's expected cost, which weights the ETA)."""
    to_run = the_plan["to_run_specs"]
    asks = {i: trial_resources(t, policy) for t, i in zip(to_run, the_plan["to_run_ids"])}
    the_plan["bill"] = cost.bill(to_run, the_plan["pair_facts"], the_plan["passes_by_trial"], asks, resources,
                                 stored_throughputs(store), max_concurrent, keep_checkpoints)
    the_plan["expected_cost"] = the_plan["bill"].pop("expected_cost")


PRIVATE_KEYS = ("to_run_specs", "to_run_ids", "all_specs", "done_ids", "plugin_modules", "pair_facts", "passes_by_trial",
                "expected_cost", "grid_ids", "stored_ids")


def print_plan(p: Dict, as_json: bool, gpu_note: str) -> None:
    public = {k: v for k, v in p.items() if k not in PRIVATE_KEYS}
    public["plugins"] = [plugin.given for plugin in p.get("plugin_modules", [])]
    if as_json:
        print(json.dumps(public))
        return
    saved = p["trials_without_sharing"] - p["trials"]
    print(f"sweep {p['sweep']}: {p['trials']} trials, {p['done']} already in {p['store']}, {p['to_run']} to run")
    if p.get("named"):
        print(f"  {p['named']}")
    if saved:
        print(f"  each distinct network trains once: {p['trials_without_sharing']} trials before sharing, "
              f"{p['trials']} after ({p['shared_dense_trials']} dense trials stand for every algorithm's 1x; "
              f"{saved} saved)" + (f"; {p['shared_dense_done_as_older_trials']} of them found in the store as "
                                  f"an algorithm's own 1x trial" if p["shared_dense_done_as_older_trials"] else ""))
    print(f"  models: {', '.join(p['model_names'])}; datasets: {', '.join(p['dataset_names'])}")
    print(f"  algorithms: {', '.join(p['algorithms'])}")
    if public["plugins"]:
        print(f"  plugins (imported here and on every worker): {', '.join(public['plugins'])}")
    print(f"  log10 compressions: {', '.join(f'{c:g}' for c in p['log10_compressions'])} "
          f"(= {', '.join(f'{10 ** c:,.3g}x' for c in p['log10_compressions'])}); "
          f"seeds: {', '.join(map(str, p['seeds']))}")
    for pair in p["pairs"]:
        print(f"  {pair['model']}/{pair['dataset']} ({pair['prunable_weights']:,} prunable weights): "
              f"{pair['recipe']} [{pair['recipe_source']}]")
    for name, state in p.get("datasets", {}).items():
        print(f"  dataset {name}: {state}")
    workers = p.get("workers_per_trial", 1)
    for r in p["resources"]:
        backend = "nccl, one GPU each" if r["per_trial"].get("GPU") else "gloo"
        print(f"  {r['trials']} trials ask for {r['per_trial']} each"
              + (f": {workers} DDP workers a trial ({backend}), the recipe's batch split across them" if workers > 1 else ""))
    print(f"  pruning: {p['prune_passes']:,} forward/backward passes in total"
          + (f" (+ {p['imp_trials_not_counted_in_prune_passes']} imp trials, which train to prune)"
             if p["imp_trials_not_counted_in_prune_passes"] else "")
          + (f" (+ {p['trials_counting_prune_passes_as_they_run']} trials of data-free plugins that did not declare "
             f"their passes: counted as they run)" if p.get("trials_counting_prune_passes_as_they_run") else ""))
    if p.get("bill") and p["to_run"]:
        for line in cost.bill_lines(p["bill"]):
            print(f"  {line}")
        for line in cpu_warning(p["bill"]):
            print(f"  {line}")
    if gpu_note:
        print(f"  {gpu_note}")


def cpu_warning(b: Dict) -> List[str]:
    """Without GPUs every trial runs on CPU: say what that costs before anyone starts it."""
    r = b["resources"]
    if r["gpus"]:
        return []
    if b["wall_hours"] is None:
        return [f"warning: {r['where']} has no GPU, so every trial would run on its CPUs, and no CPU throughput is "
                f"measured for these models; give --address of a GPU cluster to plan for it"]
    if b["wall_hours"] > 24:
        least = "" if b["trials_timed"] == b["trials_to_run"] else "at least "
        return [f"warning: {r['where']} has no GPU: on its CPUs this sweep would take {least}~"
                f"{cost.human_duration(b['wall_hours'])}; run it on a GPU cluster (--address)"]
    return []


def data_dir(args: argparse.Namespace) -> str:
    """--data-dir, else $PRUNE_SWEEP_DATA, else ./data, as an absolute path: trials run in other directories."""
    from trainables.data import resolve_data_dir

    return str(resolve_data_dir(args.data_dir))
