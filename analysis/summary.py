"""A summary of a results store, as markdown, LaTeX or CSV: accuracy tables, seed-paired differences, the
sanity checks, critical compressions, costs, and mask overlaps (when the store keeps masks).

    python -m analysis.summary --store results/ [--out summary.md] [--reference synflow] [--format latex]
    prune-sweep-summary --store results/ --sweep fig1 --format csv --out fig1.csv

The numbers are the ones the figures draw (`analysis.tables`, `analysis.comparisons`), so a summary and a
figure made from the same store always agree. Tables follow a paper's layout: a row per algorithm (or
ablation), a column per compression, cells `mean ± half-width (n)`. CSV is the same numbers in long form, one
row per cell, for a spreadsheet or pandas. What the store could not read opens the summary, a line each (on
stderr beside CSV).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import pandas as pd

from analysis import comparisons, mask_overlap, stats, tables
from analysis.load import Results, default_settings, load_results
from analysis.select import add_selection_arguments, selection_from_args
from analysis.style import algorithm_order, format_ratio
from common.cli import OneLineArgumentParser, program
from results_store import StoreError

DEFAULT_REFERENCE = "synflow"
# What the summary reads of the epochs and layers tables: their trial ids only (it draws no curve and no layer),
# so every file is still opened and one the store cannot read is named.
SUMMARY_COLUMNS = {"epochs": ["trial_id"], "layers": ["trial_id"]}
FORMATS = ("markdown", "latex", "csv")
SMALL_N = (f"Cells with fewer than {stats.MIN_SEEDS_FOR_INTERVAL} seeds (n < {stats.MIN_SEEDS_FOR_INTERVAL}) show "
           "no interval and no significance mark: from 2 seeds a 95% t-interval is the mean ± 12.7 standard "
           "errors, wider than an accuracy's range, and one lucky pair would decide a test.")
HOLM = ("Holm-Bonferroni over the {m} tested comparison(s) of this table; * = significant after the correction. "
        "Each interval is the t-interval at the level Holm tested that comparison at, so * marks exactly the "
        "intervals that exclude 0. Identical = the same difference in every pair (no spread to test).")


class UnknownReferenceError(ValueError):
    """A --reference algorithm the store does not hold; the message lists the ones it does."""


@dataclass
class Table:
    header: List[str]
    rows: List[List[str]]
    text_columns: int = 1  # the first columns hold names (left-aligned); the rest numbers


Block = Union[Tuple[int, str], str, Table]  # (level, heading), a paragraph, a table


# ------------------------------------------------------------------ cells

def accuracy_cell(mean: float, low: float, high: float, n: int, latex: bool = False) -> str:
    """'91.3 ± 0.2 (3)'; '99.6 [98.1, 100.0] (3)' where the interval meets an accuracy's bound; '91.3 (2)' below
    three seeds."""
    pm = r"$\pm$" if latex else "±"
    if n < stats.MIN_SEEDS_FOR_INTERVAL or math.isnan(low):
        return f"{mean:.1f} ({n})"
    half = (high - low) / 2.0
    if math.isclose(mean - half, low, abs_tol=1e-9) and math.isclose(mean + half, high, abs_tol=1e-9):
        return f"{mean:.1f} {pm} {half:.1f} ({n})"
    return f"{mean:.1f} [{low:.1f}, {high:.1f}] ({n})"


def difference_cell(row, latex: bool = False) -> str:
    """'-3.1 [-5.0, -1.2] (3) *', '+0.0 identical (3)', or '+1.2 (2)' below three pairs."""
    text = f"{row.diff_mean:+.1f}"
    if row.identical:
        return f"{text} identical ({row.pairs})"
    if math.isnan(row.diff_ci_low):
        return f"{text} ({row.pairs})"
    mark = (r" $^{*}$" if latex else " *") if row.significant else ""
    return f"{text} [{row.diff_ci_low:+.1f}, {row.diff_ci_high:+.1f}] ({row.pairs}){mark}"


def ratio_header(log10: float) -> str:
    return format_ratio(10 ** log10)


def wide_table(frame: pd.DataFrame, row_key: str, order: Sequence[str], cell, label: str) -> Table:
    """Rows `order` (values of `row_key`), columns compressions, each cell `cell(row)`; '-' where none."""
    ratios = sorted(frame["log10_compression"].unique())
    cells = {(r[row_key], r["log10_compression"]): cell(r) for _, r in frame.iterrows()}
    rows = [[name] + [cells.get((name, x), "-") for x in ratios] for name in order if name in set(frame[row_key])]
    return Table([label] + [ratio_header(x) for x in ratios], rows)


# ------------------------------------------------------------------ sections

def accuracy_blocks(curves: pd.DataFrame, panels: Sequence[Tuple[str, str]], latex: bool) -> List[Block]:
    blocks: List[Block] = [(2, "Top-1 accuracy"),
                           "Top-1 accuracy (%) at each compression: mean over seeds ± the half-width of its 95% "
                           "Student-t interval (t(0.975, n-1) · std / √n), bounded to [0, 100], with the number "
                           "of seeds n in parentheses."]
    for model, dataset in panels:
        panel = curves[(curves["model"] == model) & (curves["dataset"] == dataset)]
        blocks.append((3, f"{model} / {dataset}"))
        if panel.empty:
            blocks.append("No completed trials with a final accuracy yet.")
            continue
        blocks.append(wide_table(panel, "algorithm", algorithm_order(panel["algorithm"].unique()),
                                 lambda r: accuracy_cell(r.top1_mean, r.top1_ci_low, r.top1_ci_high, int(r.trials),
                                                         latex), "algorithm"))
    return blocks


def family_blocks(frame: pd.DataFrame, row_key: str, order: Sequence[str], latex: bool) -> List[Block]:
    tested = int(frame["family_size"].iloc[0])
    note = HOLM.format(m=tested) if tested else \
        f"No comparison here could be tested (fewer than {stats.MIN_SEEDS_FOR_INTERVAL} pairs, or identical pairs)."
    return [note, wide_table(frame, row_key, order, lambda r: difference_cell(r, latex), row_key)]


def paired_blocks(differences: pd.DataFrame, selected: pd.DataFrame, reference: str,
                  panels: Sequence[Tuple[str, str]], latex: bool) -> List[Block]:
    blocks: List[Block] = [
        (2, f"Paired differences to {reference}"),
        f"Top-1 (%) of each algorithm minus {reference}'s at the same (model, dataset, compression, seed), in "
        "percentage points: every algorithm at one seed prunes the same initial weights, so seeds pair up. Cells: "
        "mean difference [95% interval] (pairs). Default settings only (no ablation)."]
    trained = tables.trained(selected)
    for model, dataset in panels:
        blocks.append((3, f"{model} / {dataset}"))
        panel = differences[(differences["model"] == model) & (differences["dataset"] == dataset)]
        if panel.empty:
            mine = trained[(trained["model"] == model) & (trained["dataset"] == dataset)]
            why = (f"{reference} has no trained trial here" if (mine["algorithm"] != reference).all()
                   else f"no other algorithm shares a compression and seed with {reference} here")
            blocks.append(f"No pairs: {why}.")
            continue
        blocks += family_blocks(panel, "algorithm", algorithm_order(panel["algorithm"].unique()), latex)
    return blocks


def sanity_blocks(differences: pd.DataFrame, latex: bool) -> List[Block]:
    blocks: List[Block] = [
        (2, "Sanity checks: each ablation minus the method's own mask"),
        "Top-1 (%) under each ablation minus the same algorithm's own mask (`none`), paired by seed, in "
        "percentage points; one table per algorithm. shuffle = the mask permuted within each layer, "
        "layerwise_random = a random mask with the same per-layer counts, reinit = the same mask on re-drawn "
        "weights, invert = the lowest scores kept. An algorithm whose accuracy survives shuffle or reinit "
        "(no significant drop) is not using its per-weight scores (Frankle et al., ICLR 2021)."]
    for (model, dataset, algorithm), family in differences.groupby(["model", "dataset", "algorithm"], sort=False):
        blocks.append((3, f"{model} / {dataset}: {algorithm}"))
        blocks += family_blocks(family, "ablation", tables.ablation_order(family["ablation"].unique()), latex)
    return blocks


def critical_blocks(critical: pd.DataFrame) -> List[Block]:
    blocks: List[Block] = [(2, "Critical compression")]
    if critical.empty:
        return blocks + ["No pruned trials yet."]
    rows = []
    for r in critical.itertuples():
        value = "collapsed at every ratio" if pd.isna(r.critical) else \
            ("≥ " if r.censored else "") + format_ratio(r.critical)
        first = "-" if pd.isna(r.first_collapse) else format_ratio(r.first_collapse)
        rows.append([r.model, r.dataset, r.algorithm, value, first, format_ratio(r.max_tested),
                     format_ratio(r.theoretical_max), str(r.trials)])
    return blocks + [
        "The largest tested compression at which no seed's pruned network has an empty conv/linear layer "
        "(≥: nothing collapsed up to the largest ratio tested). Max possible = prunable weights / prunable layers.",
        Table(["model", "dataset", "algorithm", "critical", "first collapse", "max tested", "max possible",
               "trials"], rows, text_columns=3)]


def overlap_blocks(overlaps: "mask_overlap.Overlaps") -> List[Block]:
    blocks: List[Block] = [
        (2, "Mask overlap"),
        "Jaccard overlap |A∩B| / |A∪B| of the weights two algorithms keep in the same network (same model, "
        "dataset, recipe, seed and compression), over every prunable layer, mean over seeds (n). Two "
        "independent random masks of density d overlap d / (2 − d). Default settings only; masks kept by "
        "sweeps run with --keep-masks."]
    for (model, dataset, recipe), frame in mask_overlap.summary_rows(overlaps).items():
        blocks.append((3, f"{model} / {dataset} ({recipe})"))
        chance = frame.drop_duplicates("log10_compression").assign(pair="two random masks", n=0)
        blocks.append(wide_table(pd.concat([frame, chance]), "pair", [*dict.fromkeys(frame["pair"]), "two random masks"],
                                 lambda r: mask_overlap.jaccard_text(r.chance) if not r.n else
                                 f"{mask_overlap.jaccard_text(r.jaccard_mean)} ({r.n})", "pair"))
    return blocks


def _number(value: float) -> str:
    """Readable at a glance: 12,000 / 3.6 / 0.042."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def cost_blocks(cost: pd.DataFrame) -> List[Block]:
    rows = [[r.model, r.dataset, f"{r.algorithm} x{r.iterations}" + (" (ablations)" if r.ablations else ""),
             str(r.trials), _number(r.prune_passes),
             f"{_number(r.prune_seconds)} [{_number(r.prune_seconds_min)}, {_number(r.prune_seconds_max)}]",
             f"{_number(r.train_seconds)} [{_number(r.train_seconds_min)}, {_number(r.train_seconds_max)}]",
             _number(r.gpu_hours), _number(r.hours)] for r in cost.itertuples()]
    return [(2, "Cost"),
            "Per trial: median pruning passes, and median [min, max] pruning and training seconds (per trial, so "
            "an algorithm with more trials does not look dearer; its ablation trials are a row of their own). "
            "Totals over the trials: GPU-hours ((prune + train seconds) x GPUs) and plain hours.",
            Table(["model", "dataset", "algorithm", "trials", "passes/trial", "prune s/trial", "train s/trial",
                   "GPU-hours", "hours"], rows, text_columns=3)]


# ------------------------------------------------------------------ assembling

def check_reference(trials: pd.DataFrame, reference: str) -> str:
    """`reference` if some trial used that algorithm, else UnknownReferenceError listing the ones present."""
    present = algorithm_order(trials["algorithm"].unique())
    if reference not in present:
        raise UnknownReferenceError(f"unknown reference algorithm {reference!r}; algorithms in the store: "
                                    f"{', '.join(present)}")
    return reference


@dataclass
class Readings:
    """Every number the summary prints, as frames (what --format csv writes)."""
    curves: pd.DataFrame
    differences: pd.DataFrame
    sanity: pd.DataFrame
    critical: pd.DataFrame
    cost: pd.DataFrame
    overlaps: "mask_overlap.Overlaps"
    reference: str
    settings: str
    selected: pd.DataFrame  # the default-settings trials the accuracy and paired tables use


def readings(results: Results, reference: Optional[str] = None) -> Readings:
    trials = results.trials
    if reference is not None:
        check_reference(trials, reference)
    chosen = reference or DEFAULT_REFERENCE
    selected, settings = default_settings(trials)
    pruning_selected, _ = default_settings(trials, same_training=False)
    return Readings(
        curves=tables.accuracy_curves(selected),
        differences=comparisons.algorithm_differences(selected, chosen),
        sanity=comparisons.ablation_differences(tables.ablation_trials(trials)),
        critical=tables.critical_compression(pruning_selected),
        cost=tables.cost_table(trials), overlaps=mask_overlap.mask_overlaps(results), reference=chosen,
        settings=settings, selected=selected)


def shared_trials(trials: pd.DataFrame) -> int:
    return int(trials.loc[trials["shared_dense"].astype(bool), "trial_id"].nunique()) if "shared_dense" in trials else 0


def document(results: Results, numbers: Readings, latex: bool = False) -> List[Block]:
    trials = tables.once_per_trial(results.trials)  # a shared dense trial is one trial, however many 1x points
    trained = tables.trained(trials)
    diverged = int((trials["status"] == "diverged").sum())
    title = f"Results summary: {results.location}" + (f" ({results.selection})" if results.selection else "")
    blocks: List[Block] = [
        (1, title),
        *results.problem_lines(),  # every number below is without what they name
        f"{len(trials)} trials ({len(trained)} trained to completion, {diverged} diverged, "
        f"{len(trials) - len(trained) - diverged} pruned only); models: {', '.join(sorted(trials['model'].unique()))}; "
        f"datasets: {', '.join(sorted(trials['dataset'].unique()))}."
        + (f" At 1x every prune-at-init algorithm trains the unpruned network: {shared} shared trial(s) stand as "
           f"each algorithm's 1x point." if (shared := shared_trials(results.trials)) else ""),
        f"Accuracy tables, paired differences and critical compressions use the default settings only: "
        f"{numbers.settings}.",
    ]
    counts = pd.concat([numbers.curves["trials"], numbers.differences["pairs"], numbers.sanity["pairs"]])
    if not counts.empty and (counts < stats.MIN_SEEDS_FOR_INTERVAL).all():
        blocks.append(f"Every cell here has fewer than {stats.MIN_SEEDS_FOR_INTERVAL} seeds: no interval and no "
                      f"significance mark anywhere. " + SMALL_N.split(": ", 1)[1].capitalize())
    elif (counts < stats.MIN_SEEDS_FOR_INTERVAL).any():
        blocks.append(SMALL_N)
    panels = tables.panels(trials)
    blocks += accuracy_blocks(numbers.curves, panels, latex)
    if numbers.reference in set(trials["algorithm"]):
        blocks += paired_blocks(numbers.differences, numbers.selected, numbers.reference, panels, latex)
    else:
        blocks += [(2, f"Paired differences to {numbers.reference}"),
                   f"The store has no {numbers.reference} trials; pass --reference with one of: "
                   f"{', '.join(algorithm_order(trials['algorithm'].unique()))}."]
    if not numbers.sanity.empty:
        blocks += sanity_blocks(numbers.sanity, latex)
    blocks += critical_blocks(numbers.critical)
    blocks += cost_blocks(numbers.cost)
    if not numbers.overlaps.empty:
        blocks += overlap_blocks(numbers.overlaps)
    notes = list(results.notes) + [f"accuracy {n}" for n in tables.coverage_gaps(numbers.curves)]
    if notes:
        blocks += [(2, "Notes")] + [f"- {n}" for n in notes]
    return blocks


def markdown(blocks: Sequence[Block]) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, tuple):
            parts.append(f"{'#' * block[0]} {block[1]}\n")
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(block.header) + " |",
                     "|" + "|".join("---" if i < block.text_columns else "---:" for i in range(len(block.header)))
                     + "|"]
            parts.append("\n".join(lines + ["| " + " | ".join(row) + " |" for row in block.rows]) + "\n")
        else:
            parts.append(block + "\n")
    return "\n".join(parts)


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_", "{": r"\{",
                 "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "≥": r"$\geq$",
                 "±": r"$\pm$", "·": r"$\cdot$", "√": r"$\surd$", "∞": r"$\infty$"}


def latex_text(text: str) -> str:
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in text)


def latex(blocks: Sequence[Block]) -> str:
    """Fragments to \\input into a paper (tables need \\usepackage{booktabs}); cells already hold LaTeX."""
    parts = ["% prune-sweep summary; the tables need \\usepackage{booktabs}"]
    commands = {1: "section*", 2: "subsection*", 3: "subsubsection*"}
    for block in blocks:
        if isinstance(block, tuple):
            parts.append(f"\\{commands[block[0]]}{{{latex_text(block[1])}}}")
        elif isinstance(block, Table):
            cells = lambda row: " & ".join(c if "$" in c else latex_text(c) for c in row)  # noqa: E731
            parts.append("\\begin{tabular}{" + "l" * block.text_columns + "r" * (len(block.header) - block.text_columns)
                         + "}\n\\toprule\n"
                         + cells(block.header) + " \\\\\n\\midrule\n"
                         + "".join(cells(row) + " \\\\\n" for row in block.rows) + "\\bottomrule\n\\end{tabular}\n")
        else:
            parts.append(latex_text(block) + "\n")
    return "\n".join(parts) + "\n"


def long_form(numbers: Readings) -> pd.DataFrame:
    """One row per printed cell: accuracy, paired differences and sanity checks, with n and the interval."""
    columns = ["table", "model", "dataset", "algorithm", "ablation", "reference", "log10_compression", "compression",
               "n", "mean", "ci_low", "ci_high", "p_value", "holm_p", "significant", "identical"]
    accuracy = numbers.curves.assign(table="accuracy", ablation="none", reference="", n=numbers.curves["trials"],
                                     mean=numbers.curves["top1_mean"], ci_low=numbers.curves["top1_ci_low"],
                                     ci_high=numbers.curves["top1_ci_high"])
    frames = [accuracy]
    overlap = numbers.overlaps.network
    if not overlap.empty:
        frames.append(overlap.assign(table="mask_overlap", algorithm=overlap["variant_a"], ablation="none",
                                     reference=overlap["variant_b"], mean=overlap["jaccard_mean"]))
    for name, frame, extra in (("paired_difference", numbers.differences, {"ablation": "none"}),
                               ("sanity_check", numbers.sanity, {})):
        if not frame.empty:
            frames.append(frame.assign(table=name, n=frame["pairs"], mean=frame["diff_mean"],
                                       ci_low=frame["diff_ci_low"], ci_high=frame["diff_ci_high"], **extra))
    return pd.concat([f.reindex(columns=columns) for f in frames], ignore_index=True)


def summarize(results: Results, reference: Optional[str] = None, fmt: str = "markdown") -> str:
    """The summary text in `fmt` (markdown, latex, csv). `reference` (default synflow) is what the paired
    differences subtract; an explicit one the store lacks raises UnknownReferenceError."""
    numbers = readings(results, reference)
    if fmt == "csv":
        return long_form(numbers).to_csv(index=False)
    blocks = document(results, numbers, latex=fmt == "latex")
    return latex(blocks) if fmt == "latex" else markdown(blocks)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = OneLineArgumentParser(prog=program("python -m analysis.summary", "prune-sweep-summary"),
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="results store: a directory or a pyarrow URI")
    parser.add_argument("--out", type=Path, help="write the summary here instead of stdout")
    parser.add_argument("--format", choices=FORMATS, default="markdown",
                        help="markdown (default), latex (booktabs tables to \\input), or csv (every cell in long form)")
    parser.add_argument("--reference", help=f"algorithm the paired differences subtract (default {DEFAULT_REFERENCE}; "
                                            "must be in the store when given)")
    add_selection_arguments(parser)
    args = parser.parse_args(argv)
    try:
        results = load_results(args.store, selection_from_args(args), columns=SUMMARY_COLUMNS)
        text = summarize(results, args.reference, args.format)
    except (StoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        if args.format == "csv":  # the lines a markdown or LaTeX summary opens with; CSV rows stay rows
            for line in results.problem_lines():
                print(line, file=sys.stderr)
        sys.stdout.write(text)
        return 0
    for line in results.problem_lines():
        print(line)
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
