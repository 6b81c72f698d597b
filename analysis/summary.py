"""A markdown summary of a results store: accuracy tables, seed-paired differences, critical compressions, costs.

    python -m analysis.summary --store results/ [--out summary.md] [--reference synflow]

The numbers are the ones the figures draw (`analysis.tables`), so a summary
and a figure made from the same store always agree.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import List, Optional, Sequence

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


DEFAULT_REFERENCE = "synflow"


class UnknownReferenceError(ValueError):
    """A --reference algorithm the store does not hold; the message lists the ones it does."""


def format_accuracy(mean: float, half_width: float, trials: int, usual_trials: int) -> str:
    """'91.3 ± 0.2' (± the 95% t-interval half-width); a lone seed has no interval, and a cell with fewer
    seeds than usual says how many."""
    text = f"{mean:.1f}" if trials < 2 or math.isnan(half_width) else f"{mean:.1f} ± {half_width:.1f}"
    return text if trials == usual_trials else f"{text} (n={trials})"


def accuracy_section(curves: pd.DataFrame, model: str, dataset: str) -> str:
    """Rows: compression ratios; columns: algorithms; cells: mean ± 95% t-interval half-width of top-1 (%)."""
    panel = curves[(curves["model"] == model) & (curves["dataset"] == dataset)]
    if panel.empty:
        return f"## {model} / {dataset}\n\nNo completed trials with a final accuracy yet.\n"
    algorithms = algorithm_order(panel["algorithm"].unique())
    usual = int(panel["trials"].mode().max())
    rows = []
    for log10, group in panel.groupby("log10_compression", sort=True):
        cells = {r.algorithm: format_accuracy(r.top1_mean, r.top1_ci, r.trials, usual) for r in group.itertuples()}
        rows.append([f"{format_ratio(10 ** log10)} (10^{log10:g})"] + [cells.get(a, "-") for a in algorithms])
    table = markdown_table(["compression", *algorithms], rows)
    return (f"## {model} / {dataset}\n\nTop-1 accuracy (%), mean over seeds ± the half-width of its 95% "
            f"Student-t interval (t(0.975, n-1) · std / √n; none for a single seed) "
            f"({usual} seed(s) per cell unless marked n=...):\n\n{table}\n")


def check_reference(trials: pd.DataFrame, reference: str) -> str:
    """`reference` if some trial used that algorithm, else UnknownReferenceError listing the ones present."""
    present = algorithm_order(trials["algorithm"].unique())
    if reference not in present:
        raise UnknownReferenceError(f"unknown reference algorithm {reference!r}; algorithms in the store: "
                                    f"{', '.join(present)}")
    return reference


def _signed(value: float) -> str:
    return f"{value:+.1f}"


def paired_section(differences: pd.DataFrame, selected: pd.DataFrame, reference: str,
                   panels: Sequence[tuple]) -> str:
    """Per panel: each algorithm's mean seed-paired difference to `reference` with its 95% interval."""
    parts = [f"## Paired differences to {reference}\n",
             f"Top-1 (%) of each algorithm minus {reference}'s at the same (model, dataset, compression, seed), "
             "in percentage points: every algorithm at one seed prunes the same initial weights, so seeds are "
             "paired. Mean over the paired seeds with its 95% Student-t interval; * = the interval excludes "
             "zero. Default settings only (no ablation).\n"]
    trained = tables.trained(selected)
    for model, dataset in panels:
        parts.append(f"### {model} / {dataset}\n")
        panel = differences[(differences["model"] == model) & (differences["dataset"] == dataset)]
        if panel.empty:
            mine = trained[(trained["model"] == model) & (trained["dataset"] == dataset)]
            why = (f"{reference} has no trained trial here" if (mine["algorithm"] != reference).all()
                   else f"no other algorithm shares a compression and seed with {reference} here")
            parts.append(f"No pairs: {why}.\n")
            continue
        rows = []
        for r in panel.itertuples():
            interval = "-" if pd.isna(r.diff_ci) else f"[{_signed(r.diff_ci_low)}, {_signed(r.diff_ci_high)}]"
            rows.append([f"{format_ratio(r.compression)} (10^{r.log10_compression:g})", r.algorithm,
                         _signed(r.diff_mean), interval, str(r.pairs), "*" if r.excludes_zero else ""])
        parts.append(markdown_table(["compression", "algorithm", f"minus {reference} (pp)", "95% interval",
                                     "pairs", "excl. 0"], rows, align_right_from=2) + "\n")
    return "\n".join(parts)


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


def summarize(results: Results, reference: Optional[str] = None) -> str:
    """The markdown text. `reference` (default synflow) is what the paired differences subtract; an explicit
    one the store lacks raises UnknownReferenceError, the default one is only noted as absent."""
    trials = results.trials
    if reference is not None:
        check_reference(trials, reference)
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
    panels: List[tuple] = [(m, d) for d in datasets for m in models if (m, d) in present]
    for model, dataset in panels:
        parts.append(accuracy_section(curves, model, dataset))
    chosen = reference or DEFAULT_REFERENCE
    if chosen in set(trials["algorithm"]):
        parts.append(paired_section(tables.paired_differences(selected, chosen), selected, chosen, panels))
    else:
        parts.append(f"## Paired differences to {chosen}\n\nThe store has no {chosen} trials; pass --reference "
                     f"with one of: {', '.join(algorithm_order(trials['algorithm'].unique()))}.\n")
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
    parser.add_argument("--reference", help=f"algorithm the paired differences subtract (default {DEFAULT_REFERENCE}; "
                                            "must be in the store when given)")
    args = parser.parse_args(argv)
    try:
        text = summarize(load_results(args.store), args.reference)
    except (StoreError, UnknownReferenceError) as exc:
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
