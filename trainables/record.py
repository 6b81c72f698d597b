"""A finished trial's rows for the results store: one `trials` row, its epochs, its layers."""
from __future__ import annotations

import json
import socket
import time
from importlib import metadata
from typing import Any, Dict, List

import torch

from results_store import ResultsStore
from trainables.data import dataset_info
from trainables.specs import TrialSpec


def project_version() -> str:
    """The installed project's version (pyproject.toml is its one definition)."""
    try:
        return metadata.version("prune-sweep")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def trial_row(config: Dict[str, Any], spec: TrialSpec, prune: Dict[str, Any], history: List[Dict[str, Any]],
              status: str, started_at: float, device: torch.device, precision: str, train_seconds: float,
              resources: Dict[str, float], restarts: int = 0, resumed_from: int = 0) -> dict:
    finished = [h for h in history if h["top1"] is not None]
    p = spec.prune
    return {
        "trial_id": spec.trial_id, "sweep": config.get("sweep", ""), "model": spec.model.name,
        "dataset": spec.data.name, "num_classes": dataset_info(spec.data).num_classes, "algorithm": p.algorithm,
        "log10_compression": p.log10_compression,
        "compression": p.compression, "seed": spec.seed, "iterations": p.iterations, "schedule": p.schedule,
        "scope": p.scope, "prune_mode": p.mode, "levels": p.levels, "examples_per_class": p.examples_per_class,
        "ablation": p.ablation,
        "prunable_params": prune["prunable_params"], "prunable_layers": prune["prunable_layers"],
        "remaining_params": prune["remaining_params"],
        "effective_remaining_params": prune.get("effective_remaining_params"),
        "density": prune["density"], "collapsed": prune["collapsed"],
        "prune_passes": prune["prune_passes"], "imp_trained_examples": prune.get("trained_examples"),
        "prune_seconds": prune["prune_seconds"],
        "dense_flops": prune["dense_flops"], "remaining_flops": prune["remaining_flops"],
        "epochs": len(history),
        "final_top1": finished[-1]["top1"] if finished else None,
        "final_top5": finished[-1]["top5"] if finished else None,
        "best_top1": max(h["top1"] for h in finished) if finished else None,
        "final_test_loss": finished[-1]["test_loss"] if finished else None,
        "train_seconds": train_seconds, "status": status,
        "error": None if status == "completed" else f"training loss became {history[-1]['train_loss']} at epoch {len(history)}",
        "started_at": started_at, "finished_at": time.time(), "host": socket.gethostname(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": precision, "cpus": float(resources.get("CPU", 1)), "gpus": float(resources.get("GPU", 0)),
        "restarts": restarts, "resumed_from_epoch": resumed_from if restarts else None,
        "torch_version": torch.__version__, "project_version": project_version(),
        "config": json.dumps(spec.to_dict(), sort_keys=True, separators=(",", ":")),
    }


def write_once(store: ResultsStore, row: Dict[str, Any], history: List[Dict[str, Any]],
               layers: List[Dict[str, Any]]) -> bool:
    """Write the trial's rows unless the store already has it (another run finished it first); True if written."""
    if store.has_trial(row["trial_id"]):
        return False
    store.write_trial(row, [dict(h) for h in history], [dict(layer) for layer in layers])
    return True
