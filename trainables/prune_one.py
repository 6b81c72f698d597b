"""Prune one freshly initialised network and report what was kept.

    python -m trainables.prune_one --model vgg16_bn --dataset cifar100 --algorithm synflow --log10-compression 3
    prune-one --model mlp --dataset digits --algorithm snip --json

It runs `prune_at_init`, what every trial runs, so it shows exactly what a
sweep's trial would prune.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

import torch

from common.cli import OneLineArgumentParser, program
from common.plugins import load_plugins
from common.vocabulary import (ABLATIONS, DEFAULT_ABLATION, DEFAULT_PRUNE_MODE, DEFAULT_SCHEDULE, DEFAULT_SCOPE,
                               PRUNE_MODES, SCHEDULES, SCOPES)
from trainables import data
from trainables.initial_prune import initial_model, prune_at_init
from trainables.pruning import PruneResult, save_masks
from trainables.pruning.scores import SCORERS
from trainables.specs import DataSpec, ModelSpec, PruneSpec, TrialSpec


def format_table(result: PruneResult) -> str:
    rows = [f"{'#':>3}  {'parameter':<34} {'kind':<9} {'size':>11} {'remaining':>11} {'on a path':>11} "
            f"{'density':>9}  {'score sum':>10}"]
    for s in result.layers:
        effective = "-" if s.effective_remaining is None else f"{s.effective_remaining:,}"
        rows.append(f"{s.layer_index:>3}  {s.param:<34} {s.kind:<9} {s.size:>11,} {s.remaining:>11,} {effective:>11} "
                    f"{s.density:>9.3g}  {s.score_sum:>10.3g}")
    effective = result.effective_remaining_params
    effective_compression = f"{result.prunable_params / effective:.4g}x" if effective else "infinite: no path"
    rows.append(
        f"total: {result.remaining_params:,} of {result.prunable_params:,} prunable weights remain "
        f"(density {result.density:.3g}, compression {result.prunable_params / result.remaining_params:.4g}x); "
        f"on an input-output path: {effective:,} (effective compression {effective_compression}); "
        f"collapsed: {'yes' if result.collapsed else 'no'}; prune passes: {result.prune_passes:,}; "
        f"prune seconds: {result.prune_seconds:.2f}; FLOPs (multiply-adds per example): "
        f"{result.remaining_flops:,} of {result.dense_flops:,}"
    )
    return "\n".join(rows)


def check_writable_file(path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise ValueError(f"cannot write masks to {path}: directory {directory} does not exist or is not writable")


def build_parser() -> argparse.ArgumentParser:
    from trainables.models import MODELS

    ap = OneLineArgumentParser(prog=program("python -m trainables.prune_one", "prune-one"),
                               description=__doc__.splitlines()[0],
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", default="vgg16_bn", help=f"one of: {', '.join(MODELS.names())}")
    ap.add_argument("--dataset", default="cifar100", help=f"one of: {', '.join(data.DATASETS.names())}")
    ap.add_argument("--algorithm", default="synflow",
                    help=f"one of: {', '.join(SCORERS.names())} (imp trains, so it runs only in sweeps)")
    ap.add_argument("--log10-compression", type=float, default=1.0, help="compression ratio = 10 ** this (>= 0)")
    ap.add_argument("--iterations", type=int, default=None, help="rounds; default 100 for synflow and force, "
                                                                 "1 otherwise")
    ap.add_argument("--schedule", default=DEFAULT_SCHEDULE, help=f"one of: {', '.join(SCHEDULES)}")
    ap.add_argument("--scope", default=DEFAULT_SCOPE, help=f"one of: {', '.join(SCOPES)}")
    ap.add_argument("--mode", default=DEFAULT_PRUNE_MODE, help=f"one of: {', '.join(PRUNE_MODES)}")
    ap.add_argument("--examples-per-class", type=int, default=10,
                    help="scoring examples per class (algorithms that need data: snip, grasp, grasp_abs, force, plugins)")
    ap.add_argument("--prune-bias", action="store_true")
    ap.add_argument("--prune-batchnorm", action="store_true")
    ap.add_argument("--prune-residual", action="store_true", help="also prune residual 1x1 projections")
    ap.add_argument("--prune-layernorm", action="store_true", help="also prune layer-norm weights and biases")
    ap.add_argument("--prune-embedding", action="store_true",
                    help="also prune embeddings (a transformer's class token and position embedding)")
    ap.add_argument("--ablation", default=DEFAULT_ABLATION, help=f"sanity check, one of: {', '.join(ABLATIONS)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    ap.add_argument("--data-dir", default=None, help=f"dataset root (default ${data.DATA_DIR_ENV} or ./data)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--save-masks", metavar="PATH", default=None,
                    help="write the final boolean masks, {parameter name: mask} in forward order (torch.load reads it)")
    ap.add_argument("--plugins", action="append", default=[], metavar="MODULE",
                    help="a dotted module or a .py path that registers scorers, models or datasets (repeatable)")
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        load_plugins(args.plugins)
        if args.save_masks:  # fail before a long prune, not after it
            check_writable_file(args.save_masks)
        if args.algorithm == "imp":
            raise ValueError("imp trains between cuts, so it is not a prune-only algorithm; "
                             f"valid here: {', '.join(SCORERS.names())}")
        spec = TrialSpec(
            model=ModelSpec(args.model), data=DataSpec(args.dataset),
            prune=PruneSpec(
                algorithm=args.algorithm, log10_compression=args.log10_compression, iterations=args.iterations,
                schedule=args.schedule, scope=args.scope, mode=args.mode, prune_bias=args.prune_bias,
                prune_batchnorm=args.prune_batchnorm, prune_residual=args.prune_residual,
                prune_layernorm=args.prune_layernorm, prune_embedding=args.prune_embedding,
                examples_per_class=args.examples_per_class, ablation=args.ablation,
            ),
            seed=args.seed,
        )
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {args.device!r} asked for, but no CUDA device is available; valid: cpu")
        model, info = initial_model(spec, device)
        result = prune_at_init(model, spec, info, device, args.data_dir)
    except data.DatasetMissingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, KeyError, RuntimeError) as e:  # bad input, or a plugin's bad scorer
        print(f"error: {type(e).__name__ + ': ' if isinstance(e, (TypeError, KeyError)) else ''}{e}",
              file=sys.stderr)
        return 2
    if args.save_masks:
        try:
            save_masks(result.masks, args.save_masks)
        except OSError as e:
            print(f"error: cannot write masks to {args.save_masks}: {e.strerror or e}", file=sys.stderr)
            return 2
    if args.json:
        summary = result.summary()
        summary.update(model=args.model, dataset=args.dataset, algorithm=args.algorithm,
                       compression=spec.prune.compression, log10_compression=spec.prune.log10_compression,
                       iterations=spec.prune.iterations, ablation=spec.prune.ablation, seed=args.seed,
                       scope=spec.prune.scope, mode=spec.prune.mode, schedule=spec.prune.schedule,
                       examples_per_class=spec.prune.examples_per_class)
        print(json.dumps(summary))
    else:
        print(f"{args.algorithm} x{spec.prune.iterations} on {args.model}/{args.dataset} "
              f"{info.input_shape}, {info.num_classes} classes, compression 10^{spec.prune.log10_compression:g}, "
              f"seed {args.seed}" + (f", ablation {spec.prune.ablation}" if spec.prune.ablation != "none" else ""))
        print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
