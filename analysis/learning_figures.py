"""Learning curves from the `epochs` table: top-1 and training loss per epoch, at a few compressions.

One figure per (model, dataset): a column per chosen compression, top-1 above
and training loss below, a line per algorithm (mean over seeds, band = min-max),
the dense network (1x) dashed in every column. Whether a pruned network trains
slower, plateaus lower or diverges shows here and nowhere else.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis import tables
from analysis.drawing import FIGURES, FigureOptions, Report, algorithm_legend, grid_figure, render, slug, styled
from analysis.load import Results, default_settings
from analysis.style import DENSE_COLOR, algorithm_color, algorithm_order, format_ratio

MAX_DEFAULT_RATIOS = 3
METRICS = (("top1", "top-1 accuracy (%)", "linear"), ("train_loss", "training loss", "log"))


def default_ratios(log10s: Sequence[float]) -> List[float]:
    """Up to three pruned compressions spread over what was trained: the powers of ten if any, else all;
    then the smallest, the middle and the largest of those."""
    pruned = sorted(x for x in set(log10s) if x > 0)
    decades = [x for x in pruned if float(x).is_integer()] or pruned
    if len(decades) <= MAX_DEFAULT_RATIOS:
        return decades
    return [decades[0], decades[len(decades) // 2], decades[-1]]


@styled
def draw_learning_curves(curves: pd.DataFrame, model: str, dataset: str, ratios: Sequence[float]) -> Figure:
    fig, axes = grid_figure(len(METRICS), len(ratios))
    dense = curves[curves["log10_compression"] == 0]
    algorithms = algorithm_order(curves.loc[curves["log10_compression"].isin(ratios), "algorithm"].unique())
    for c, log10 in enumerate(ratios):
        at_ratio = curves[curves["log10_compression"] == log10]
        for r, (metric, label, scale) in enumerate(METRICS):
            ax = axes[r, c]
            if not dense.empty:  # every algorithm's 1x is the same dense network: its mean over them
                reference = dense.groupby("epoch")[f"{metric}_mean"].mean()
                ax.plot(reference.index, reference.values, color=DENSE_COLOR, linestyle="--", linewidth=1)
            for algorithm in algorithms:
                rows = at_ratio[at_ratio["algorithm"] == algorithm].sort_values("epoch")
                if rows.empty:
                    continue
                color = algorithm_color(algorithm)
                low, high, mean = (rows[f"{metric}_{k}"].replace([np.inf, -np.inf], np.nan) for k in ("min", "max", "mean"))
                ax.fill_between(rows["epoch"], low, high, color=color, alpha=0.15, linewidth=0)
                ax.plot(rows["epoch"], mean, color=color, linewidth=1.3)
            ax.set_yscale(scale)
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            if r == 0:
                ax.set_title(f"{format_ratio(10 ** log10)} (10^{log10:g})")
    dense_handle = [Line2D([], [], color=DENSE_COLOR, linestyle="--", linewidth=1, label="dense (1x)")] \
        if not dense.empty else []
    algorithm_legend(fig, algorithms, dense_handle)
    fig.suptitle(f"{model} / {dataset}: learning curves at each compression; mean over seeds, band = min-max;\n"
                 "default pruning settings, no ablation", fontsize=10)
    return fig


@FIGURES.register("learning_curves")
def learning_curves_figures(results: Results, out_dir: Path, report: Report,
                            options: FigureOptions = FigureOptions()) -> List[Path]:
    selected, _ = default_settings(results.trials)
    curves = tables.learning_curves(selected, results.epochs)
    if curves.empty:
        report("learning_curves: no trained trial has epoch rows; figure not drawn")
        return []
    written: List[Path] = []
    for model, dataset in tables.missing_panels(results.trials, curves):
        report(f"learning_curves: ({model}, {dataset}) has no trained trial with the default settings; not drawn")
    for (model, dataset), panel in curves.groupby(tables.PANEL, sort=True):
        trained = sorted(set(panel["log10_compression"]))
        ratios = [x for x in options.ratios if x in trained] if options.ratios else default_ratios(trained)
        absent = [x for x in options.ratios if x not in trained]
        if absent:
            report(f"learning_curves: ({model}, {dataset}) has no trained trial at "
                   f"{', '.join(f'10^{x:g}' for x in absent)}; trained: {', '.join(f'10^{x:g}' for x in trained)}")
        if not ratios:
            report(f"learning_curves: ({model}, {dataset}) has no chosen compression trained; not drawn")
            continue
        written += render(draw_learning_curves, (panel, model, dataset, ratios), out_dir,
                          slug("learning_curves", model, dataset))
    return written
