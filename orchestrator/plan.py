"""A sweep's plan: what the grid holds, what the store already has, what each trial asks for and costs.

Everything here runs before Ray starts, so `--dry-run` and every bad-input check are quick.
"""
from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from typing import Dict, List, Optional, Sequence

from common.vocabulary import DEFAULT_PRUNE_MODE
from orchestrator.grid import SweepSpec
from orchestrator.resources import ResourcePolicy, trial_resources
from results_store import ResultsStore
from trainables.pruning.loop import scoring_passes
from trainables.pruning.scores import SCORERS
from trainables.specs import TrialSpec


class UsageError(ValueError):
    """Bad input: one line, exit code 2."""


def estimated_prune_passes(spec: TrialSpec) -> Optional[int]:
    """Forward/backward passes the prune will take (iterations x examples); None for imp (it trains)."""
    if spec.prune.algorithm == "imp":
        return None
    from trainables.data import dataset_info

    info = dataset_info(spec.data)
    return scoring_passes(SCORERS[spec.prune.algorithm], spec.prune.iterations,
                          spec.prune.examples_per_class * info.num_classes)


def prunable_weights(model: str, dataset: str) -> int:
    """Prunable conv/linear weights of the pair's network (builds it on the CPU once)."""
    from trainables.data import dataset_info
    from trainables.models import build_model
    from trainables.pruning import prunable_parameters
    from trainables.specs import DataSpec

    info = dataset_info(DataSpec(dataset))
    network = build_model(model, info.input_shape, info.num_classes, seed=0)
    return sum(p.size for p in prunable_parameters(network, info.input_shape))


def describe_recipe(train) -> str:
    if train.epochs == 0:
        return "prune only (no training)"
    drops = ", ".join(map(str, train.lr_drops)) or "none"
    return (f"{train.epochs} epochs, batch {train.batch_size}, lr {train.lr:g} x{train.lr_drop_factor:g} at epochs "
            f"{drops}, momentum {train.momentum:g}, weight decay {train.weight_decay:g}, precision {train.precision}")


def needs_data(spec: TrialSpec) -> bool:
    return spec.train.epochs > 0 or spec.prune.algorithm == "imp" or SCORERS[spec.prune.algorithm].needs_data


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


def plan(sweep: SweepSpec, store: ResultsStore, policy: ResourcePolicy) -> Dict:
    """What the sweep would run: the grid less what the store holds (unreadable store files are moved aside and
    their trials run again)."""
    trials = sweep.trials()
    done = store.finished_ids() if store.exists() else set()
    to_run = [t for t in trials if t.trial_id not in done]
    passes = [estimated_prune_passes(t) for t in to_run]
    pairs, seen_pairs = [], set()
    parts = sweep.parts()
    for part in parts:
        for model, dataset in ((m, d) for m in part.models for d in part.datasets if (m, d) not in seen_pairs):
            seen_pairs.add((model, dataset))
            prunable = prunable_weights(model, dataset)
            top = max(part.log10_compressions)
            if 10 ** top > prunable:
                raise UsageError(
                    f"log10 compression {top:g} is above what {model}/{dataset} allows: it has {prunable:,} prunable "
                    f"weights, so the largest meaningful log10 compression is {math.log10(prunable):.2f}"
                )
            pairs.append({"model": model, "dataset": dataset, "prunable_weights": prunable,
                          "recipe": describe_recipe(part.recipe(model, dataset)),
                          "recipe_source": part.recipe_source(model, dataset)})
    variants = [f"{v.algorithm} x{v.prune(0).iterations}" + (f" ({v.mode} mode)" if v.mode != DEFAULT_PRUNE_MODE else "")
                + (f" ({v.levels} levels)" if v.levels else "") + (f" [{v.ablation}]" if v.ablation != "none" else "")
                for v in dict.fromkeys(v for part in parts for v in part.algorithms)]
    return {
        "sweep": sweep.name, "trials": len(trials), "done": len(trials) - len(to_run), "to_run": len(to_run),
        "pairs": pairs, "algorithms": variants,
        "log10_compressions": sorted({c for part in parts for c in part.log10_compressions}),
        "seeds": sorted({s for part in parts for s in part.seeds}),
        "resources": resource_asks(to_run, policy),
        "prune_passes": sum(p for p in passes if p is not None),
        "imp_trials_not_counted_in_prune_passes": sum(p is None for p in passes),
        "datasets_needed": sorted({t.data.name for t in to_run if needs_data(t)}),
        "store": str(store), "to_run_specs": to_run, "all_specs": trials, "done_ids": done,
        "quarantined": list(getattr(store, "quarantined", [])),
    }


def print_plan(p: Dict, as_json: bool, gpu_note: str) -> None:
    public = {k: v for k, v in p.items() if k not in ("to_run_specs", "all_specs", "done_ids", "plugin_modules")}
    public["plugins"] = [plugin.given for plugin in p.get("plugin_modules", [])]
    if as_json:
        print(json.dumps(public))
        return
    print(f"sweep {p['sweep']}: {p['trials']} trials, {p['done']} already in {p['store']}, {p['to_run']} to run")
    print(f"  algorithms: {', '.join(p['algorithms'])}")
    if public["plugins"]:
        print(f"  plugins (imported here and on every worker): {', '.join(public['plugins'])}")
    print(f"  log10 compressions: {', '.join(f'{c:g}' for c in p['log10_compressions'])}; "
          f"seeds: {', '.join(map(str, p['seeds']))}")
    for pair in p["pairs"]:
        print(f"  {pair['model']}/{pair['dataset']} ({pair['prunable_weights']:,} prunable weights): "
              f"{pair['recipe']} [{pair['recipe_source']}]")
    for name, state in p.get("datasets", {}).items():
        print(f"  dataset {name}: {state}")
    for r in p["resources"]:
        print(f"  {r['trials']} trials ask for {r['per_trial']} each")
    print(f"  pruning: {p['prune_passes']:,} forward/backward passes in total"
          + (f" (+ {p['imp_trials_not_counted_in_prune_passes']} imp trials, which train to prune)"
             if p["imp_trials_not_counted_in_prune_passes"] else ""))
    if gpu_note:
        print(f"  {gpu_note}")


def data_dir(args: argparse.Namespace) -> str:
    """--data-dir, else $PRUNE_SWEEP_DATA, else ./data, as an absolute path: trials run in other directories."""
    from trainables.data import resolve_data_dir

    return str(resolve_data_dir(args.data_dir))
