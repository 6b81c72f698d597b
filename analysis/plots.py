"""The paper's figures, drawn from a results store.

    python -m analysis.plots --store results/ --out figures/ [--only accuracy,cost] [--band range|ci]
    prune-sweep-plots --store results/ --out figures/ --sweep fig1 --seeds 0:2

Each figure is written as PNG and PDF (see `analysis.accuracy_figures`, `analysis.pruning_figures` and
`analysis.ablation_figures`, `analysis.learning_figures`, `analysis.mask_overlap`), from the trials the selection keeps
(`analysis.select`), drawn by --jobs processes (default: one per CPU; the same files whatever the number).
What the store could not read is printed first, a line each. Exit status 2 with a one-line error on an empty
or absent store, an unknown figure or band, or a selection that names what the store lacks or keeps nothing.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import analysis.ablation_figures
import analysis.accuracy_figures
import analysis.learning_figures
import analysis.mask_overlap
import analysis.pruning_figures
from analysis.drawing import BANDS, FIGURES, FigureOptions, Report, rendering
from analysis.load import load_results
from analysis.select import Selection, add_selection_arguments, selection_from_args
from common.axes import parse_compressions
from common.cli import OneLineArgumentParser, program
from common.registry import UnknownNameError
from results_store import StoreError

# Importing these fills FIGURES.
FIGURE_MODULES = (analysis.accuracy_figures, analysis.pruning_figures, analysis.ablation_figures,
                  analysis.learning_figures)
# The mask overlaps' numbers serve the summary too, which loads no matplotlib: their figure is registered here.
FIGURES.register("mask_overlap")(analysis.mask_overlap.mask_overlap_figure)
# The epochs columns the learning curves draw: 20,000 trials have millions of epoch rows (the others are read whole).
FIGURE_COLUMNS = {"epochs": ["trial_id", "epoch", "top1", "train_loss"]}


def parse_only(text: Optional[str]) -> List[str]:
    if not text:
        return FIGURES.names()
    return [FIGURES.check(name.strip()) for name in text.split(",") if name.strip()]


def draw_all(store: str, out_dir: Path, only: Iterable[str], report: Report = print,
             options: FigureOptions = FigureOptions(), selection: Selection = Selection(), jobs: int = 1) -> List[Path]:
    """Every figure in `only`, drawn by `jobs` processes (1: here); the store is read once, for all of them."""
    results = load_results(store, selection, columns=FIGURE_COLUMNS)
    for line in results.problem_lines():  # first: every figure below is drawn without what it names
        report(line)
    for note in results.notes:
        report(note)
    written: List[Path] = []
    with rendering(jobs):
        for name in only:
            written += FIGURES[name](results, out_dir, report, options)
    return written


def default_jobs() -> int:
    """The CPUs this process may use: figures are drawn one per process."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = OneLineArgumentParser(prog=program("python -m analysis.plots", "prune-sweep-plots"), description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="results store: a directory or a pyarrow URI")
    parser.add_argument("--out", required=True, type=Path, help="directory for the PNG/PDF figures")
    parser.add_argument("--only", help=f"comma-separated figures (default all): {', '.join(FIGURES.names())}")
    parser.add_argument("--band", choices=list(BANDS), default="range",
                        help="what the accuracy and ablations figures' band spans: range = min-max over seeds "
                             "(default), ci = 95%% t-interval of the mean")
    parser.add_argument("--ratios", help="log10 compressions of the learning curves, e.g. 1,2 (default: up to "
                                         "three spread over the trained ones)")
    parser.add_argument("--jobs", type=int, default=default_jobs(),
                        help=f"processes drawing figures (default: the CPUs here, {default_jobs()})")
    add_selection_arguments(parser)
    args = parser.parse_args(argv)
    try:
        only = parse_only(args.only)
        options = FigureOptions(band=args.band, ratios=parse_compressions(args.ratios) if args.ratios else ())
        if args.jobs < 1:
            raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
        written = draw_all(args.store, args.out, only, options=options, selection=selection_from_args(args),
                           jobs=args.jobs)
    except (StoreError, UnknownNameError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write figures to {args.out}: {exc}", file=sys.stderr)
        return 2
    names = sorted({p.stem for p in written if p.suffix == ".png"})
    print(f"wrote {len(names)} figure(s) to {args.out}: {', '.join(names) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
