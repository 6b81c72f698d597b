"""The paper's figures, drawn from a results store.

    python -m analysis.plots --store results/ --out figures/ [--only accuracy,cost] [--band range|ci]
    prune-sweep-plots --store results/ --out figures/ --sweep fig1 --seeds 0:2

Each figure is written as PNG and PDF (see `analysis.accuracy_figures`, `analysis.pruning_figures` and
`analysis.ablation_figures`, `analysis.learning_figures`), from the trials the selection keeps
(`analysis.select`). Exit status 2 with a one-line error on an empty or absent store, an unknown figure or
band, or a selection that names what the store lacks or keeps nothing.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import analysis.ablation_figures
import analysis.accuracy_figures
import analysis.learning_figures
import analysis.pruning_figures
from analysis.drawing import BANDS, FIGURES, FigureOptions, Report
from analysis.load import load_results
from analysis.select import Selection, add_selection_arguments, selection_from_args
from common.axes import parse_compressions
from common.cli import OneLineArgumentParser, program
from common.registry import UnknownNameError
from results_store import StoreError

# Importing these fills FIGURES.
FIGURE_MODULES = (analysis.accuracy_figures, analysis.pruning_figures, analysis.ablation_figures,
                  analysis.learning_figures)


def parse_only(text: Optional[str]) -> List[str]:
    if not text:
        return FIGURES.names()
    return [FIGURES.check(name.strip()) for name in text.split(",") if name.strip()]


def draw_all(store: str, out_dir: Path, only: Iterable[str], report: Report = print,
             options: FigureOptions = FigureOptions(), selection: Selection = Selection()) -> List[Path]:
    results = load_results(store, selection)
    for problem in results.problems:
        report(f"warning: {problem}")
    for note in results.notes:
        report(note)
    written: List[Path] = []
    for name in only:
        paths = FIGURES[name](results, out_dir, report, options)
        written += paths
    return written


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
    add_selection_arguments(parser)
    args = parser.parse_args(argv)
    try:
        only = parse_only(args.only)
        options = FigureOptions(band=args.band, ratios=parse_compressions(args.ratios) if args.ratios else ())
        written = draw_all(args.store, args.out, only, options=options, selection=selection_from_args(args))
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
