"""A markdown summary of a results store: accuracy tables, critical compressions, costs.

    python -m analysis.summary --store results/ [--out summary.md]

The numbers are the ones the figures draw (`analysis.tables`), so a summary
and a figure made from the same store always agree.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from analysis import tables
from analysis.load import Results, default_settings, load_results
from analysis.style import algorithm_order, format_ratio
from common.cli import OneLineArgumentParser, program
from results_store import StoreError


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align_right_from: int = 1) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i >= align_right_from else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def format_accuracy(mean: float, std: float, trials: int, usual_trials: int) -> str:
    """'91.3 ± 0.2'; a lone seed has no spread, and a cell with fewer seeds than usual says how many."""
    text = f"{mean:.1f}" if trials < 2 or math.isnan(std) else f"{mean:.1f} ± {std:.1f}"
    return text if trials == usual_trials else f"{text} (n={trials})"


def accuracy_section(curves: pd.DataFrame, model: str, dataset: str) -> str:
    """Rows: compression ratios; columns: algorithms; cells: mean ± std top-1 (%) over seeds."""
    panel = curves[(curves["model"] == model) & (curves["dataset"] == dataset)]
    if panel.empty:
        return f"## {model} / {dataset}\n\nNo completed trials with a final accuracy yet.\n"
    algorithms = algorithm_order(panel["algorithm"].unique())
    usual = int(panel["trials"].mode().max())
    rows = []
    for log10, group in panel.groupby("log10_compression", sort=True):
        cells = {r.algorithm: format_accuracy(r.top1_mean, r.top1_std, r.trials, usual) for r in group.itertuples()}
        rows.append([f"{format_ratio(10 ** log10)} (10^{log10:g})"] + [cells.get(a, "-") for a in algorithms])
    table = markdown_table(["compression", *algorithms], rows)
    return (f"## {model} / {dataset}\n\nTop-1 accuracy (%), mean ± std over seeds "
            f"({usual} seed(s) per cell unless marked n=...):\n\n{table}\n")


def critical_section(critical: pd.DataFrame) -> str:
    if critical.empty:
        return "## Critical compression\n\nNo pruned trials yet.\n"
    rows = []
    for r in critical.itertuples():
        value = "collapsed at every ratio" if pd.isna(r.critical) else \
            ("≥ " if r.censored else "") + format_ratio(r.critical)
        first = "-" if pd.isna(r.first_collapse) else format_ratio(r.first_collapse)
        rows.append([r.model, r.dataset, r.algorithm, value, first, format_ratio(r.max_tested),
                     format_ratio(r.theoretical_max), str(r.trials)])
    table = markdown_table(["model", "dataset", "algorithm", "critical", "first collapse", "max tested",
                            "max possible", "trials"], rows, align_right_from=3)
    return ("## Critical compression\n\nThe largest tested compression at which no seed's pruned network has "
            "an empty conv/linear layer (≥: nothing collapsed up to the largest ratio tested). "
            "Max possible = prunable weights / prunable layers.\n\n" + table + "\n")


def _number(value: float) -> str:
    """Readable at a glance: 12,000 / 3.6 / 0.042."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def cost_section(cost: pd.DataFrame) -> str:
    rows = [[r.algorithm, str(r.iterations), str(r.trials), _number(r.prune_passes), _number(r.prune_seconds),
             _number(r.train_seconds), _number(r.gpu_hours), _number(r.hours)] for r in cost.itertuples()]
    table = markdown_table(["algorithm", "iterations", "trials", "passes/trial", "prune s/trial",
                            "train s/trial", "GPU-hours", "hours"], rows)
    return ("## Cost\n\nPer trial: mean pruning passes and seconds; totals over all trials: GPU-hours "
            "((prune + train seconds) x GPUs) and plain hours.\n\n" + table + "\n")


def summarize(results: Results) -> str:
    trials = results.trials
    selected, settings = default_settings(trials)
    curves = tables.accuracy_curves(selected)
    trained = tables.trained(trials)
    diverged = int((trials["status"] == "diverged").sum())
    parts = [
        f"# Results summary: {results.location}\n",
        f"{len(trials)} trials ({len(trained)} trained to completion, {diverged} diverged, "
        f"{len(trials) - len(trained) - diverged} pruned only); "
        f"models: {', '.join(sorted(trials['model'].unique()))}; "
        f"datasets: {', '.join(sorted(trials['dataset'].unique()))}.\n",
        f"Accuracy tables and critical compressions use the default settings only: {settings}.\n",
    ]
    datasets, models = tables.panel_grid(trials)
    present = set(zip(trials["model"], trials["dataset"]))
    for dataset in datasets:
        for model in models:
            if (model, dataset) in present:
                parts.append(accuracy_section(curves, model, dataset))
    pruning_selected, _ = default_settings(trials, same_training=False)
    parts.append(critical_section(tables.critical_compression(pruning_selected)))
    parts.append(cost_section(tables.cost_table(trials)))
    notes = [f"no trials for ({m}, {d})" for m, d in tables.missing_panels(trials, trials)]
    notes += [f"accuracy {n}" for n in tables.coverage_gaps(curves)] + list(results.problems)
    if notes:
        parts.append("## Notes\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    return "\n".join(parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = OneLineArgumentParser(prog=program("python -m analysis.summary", "prune-sweep-summary"), description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="results store: a directory or a pyarrow URI")
    parser.add_argument("--out", type=Path, help="write the markdown here instead of stdout")
    args = parser.parse_args(argv)
    try:
        text = summarize(load_results(args.store))
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    except OSError as exc:
        print(f"error: cannot write {args.out}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
