"""Figures of accuracy against compression: the headline comparison, and iterative / scoring-mode variants.

The numbers come from `analysis.tables` (pure pandas); this module only draws
them. Every figure draws what exists and reports what is missing, one line each.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullFormatter

from analysis import tables
from analysis.drawing import (BANDS, FIGURES, MARKERS, LINESTYLES, PANEL_SIZE, FigureOptions, Report, figure_width,
                              algorithm_legend, band_plot, grid_figure, log_compression_axis, mark_empty, save,
                              styled)
from analysis.load import Results, ablation_of, default_settings
from analysis.style import DENSE_COLOR, algorithm_color, algorithm_order
from common.vocabulary import DEFAULT_ABLATION


ZOOM_MAX_LOG10 = 1.5  # the accuracy figure's zoom strip spans 1x to 10^1.5 = 31.6x


@styled
def draw_accuracy(curves: pd.DataFrame, dense: pd.DataFrame, datasets: Sequence[str], models: Sequence[str],
                  caption: str, band: str = "range") -> Figure:
    """Top-1 vs compression per (dataset row, model column), each panel with a zoom strip on 1x-31.6x below it.

    The zoom gets its own axes rather than an inset, so it can never hide a curve. `band` picks what the
    shaded band spans (`drawing.BANDS`): min-max over seeds, or the 95% t-interval of the mean.
    """
    rows, cols = len(datasets), len(models)
    fig = Figure(figsize=(figure_width(cols), PANEL_SIZE[1] * 1.4 * rows + 0.9), layout="constrained")
    grid = fig.subplots(2 * rows, cols, squeeze=False, gridspec_kw={"height_ratios": [3, 1.25] * rows})
    algorithms = algorithm_order(curves["algorithm"].unique()) if not curves.empty else []
    for r, dataset in enumerate(datasets):
        for c, model in enumerate(models):
            ax, zoom = grid[2 * r, c], grid[2 * r + 1, c]
            ax.set_title(f"{model} / {dataset}")
            panel = curves[(curves["model"] == model) & (curves["dataset"] == dataset)]
            if panel.empty:
                mark_empty(ax, "no trained trials")
                zoom.set_visible(False)
                continue
            reference = dense[(dense["model"] == model) & (dense["dataset"] == dataset)]
            for algorithm in algorithm_order(panel["algorithm"].unique()):
                band_plot(ax, panel[panel["algorithm"] == algorithm], algorithm_color(algorithm), algorithm,
                          band=band)
            if not reference.empty:
                ax.axhline(reference["top1_mean"].iloc[0], color=DENSE_COLOR, linestyle="--", linewidth=1)
            log_compression_axis(ax)
            ax.set_xlabel("compression ratio")
            ax.set_ylabel("top-1 accuracy (%)")
            _accuracy_zoom(zoom, panel, reference, band)
    dense_handle = Line2D([], [], color=DENSE_COLOR, linestyle="--", linewidth=1, label="dense (unpruned)")
    algorithm_legend(fig, algorithms, [dense_handle])
    wrapped = textwrap.fill(f"Default settings only: {caption}.", width=int(115 * len(models) / 2) + 20)
    fig.suptitle(f"Top-1 accuracy vs compression: mean over seeds, {BANDS[band][2]}.\n{wrapped}", fontsize=9)
    return fig


def _accuracy_zoom(zoom, panel: pd.DataFrame, reference: pd.DataFrame, band: str = "range") -> None:
    """Compressions 1 to 10^1.5, where the best curves sit on top of each other.

    Its y range spans the better half of the algorithms, so the ones that drop
    early leave it at the bottom instead of flattening the rest.
    """
    near = panel[panel["log10_compression"] <= ZOOM_MAX_LOG10 + 1e-9]
    if near["log10_compression"].nunique() < 2:
        zoom.set_visible(False)
        return
    for algorithm in algorithm_order(near["algorithm"].unique()):
        band_plot(zoom, near[near["algorithm"] == algorithm], algorithm_color(algorithm), None, band_alpha=0.12,
                  band=band)
    low = near.groupby("algorithm")["top1_mean"].min().median()
    high = min(near[BANDS[band][1]].max(), 100.0)  # NaN (skipped) where a cell has one seed and no interval
    high = near["top1_mean"].max() if pd.isna(high) else max(high, near["top1_mean"].max())
    if not reference.empty:
        dense_top1 = reference["top1_mean"].iloc[0]
        zoom.axhline(dense_top1, color=DENSE_COLOR, linestyle="--", linewidth=0.8)
        high = max(high, dense_top1)
    pad = max((high - low) * 0.15, 0.2)
    zoom.set_ylim(low - pad, high + pad)
    zoom.set_xscale("log")
    zoom.set_xlim(1, 10 ** ZOOM_MAX_LOG10)
    zoom.set_xticks([1, 10 ** 0.5, 10, 10 ** 1.5], labels=["1", "3.2", "10", "32"])
    zoom.xaxis.set_minor_formatter(NullFormatter())
    zoom.yaxis.set_major_locator(MaxNLocator(4))
    zoom.tick_params(labelsize=7)
    zoom.set_title("zoom: 1x to 31.6x", fontsize=8)
    zoom.set_ylabel("top-1 (%)", fontsize=8)


@FIGURES.register("accuracy")
def accuracy_figure(results: Results, out_dir: Path, report: Report,
                    options: FigureOptions = FigureOptions()) -> List[Path]:
    selected, caption = default_settings(results.trials)
    curves = tables.accuracy_curves(selected)
    dense = tables.dense_reference(selected)
    done = tables.trained(results.trials)
    ablated = int((ablation_of(done) != DEFAULT_ABLATION).sum())
    left_out = len(done) - ablated - len(tables.trained(selected))
    if left_out:
        report(f"accuracy: {left_out} trained trial(s) with non-default settings left out "
               "(see the iterative figure)")
    if ablated:
        report(f"accuracy: {ablated} trained ablation trial(s) left out (see the ablations figure)")
    for model, dataset in tables.missing_panels(results.trials, curves):
        report(f"accuracy: no trials for ({model}, {dataset})")
    for note in tables.coverage_gaps(curves):
        report(f"accuracy: {note}")
    if curves.empty:
        report("accuracy: no completed trials with a final accuracy; figure not drawn")
        return []
    datasets, models = tables.panel_grid(results.trials)
    return save(draw_accuracy(curves, dense, datasets, models, caption, options.band), out_dir, "accuracy")


# --------------------------------------------------------------- layer density

def _variant_styles(curves: pd.DataFrame, by: str) -> Dict[str, Tuple[str, str, str]]:
    """variant -> (colour, linestyle, marker), in drawing order: colour from the algorithm, style from the setting."""
    styles = {}
    for algorithm in algorithm_order(curves["algorithm"].unique()):
        rows = curves[curves["algorithm"] == algorithm]
        for rank, value in enumerate(sorted(rows[by].unique())):
            variant = rows.loc[rows[by] == value, "variant"].iloc[0]
            styles[variant] = (algorithm_color(algorithm), LINESTYLES[rank % 4], MARKERS[rank % 4])
    return styles


@styled
def draw_iterative(iterative: pd.DataFrame, modes: pd.DataFrame, panels: Sequence[Tuple[str, str]]) -> Figure:
    """Per (model, dataset) row: iterative SNIP vs SynFlow, and eval vs train scoring mode for SNIP and GraSP."""
    fig, axes = grid_figure(len(panels), 2)
    sides = ((iterative, "iterations", "iterative SNIP, FORCE vs SynFlow", "no snip, force or synflow trials"),
             (modes, "prune_mode", "eval vs train scoring mode", "no snip or grasp trials"))
    for r, (model, dataset) in enumerate(panels):
        for c, (curves, by, title, empty_text) in enumerate(sides):
            ax = axes[r, c]
            ax.set_title(f"{model} / {dataset}: {title}", fontsize=9)
            panel = curves[(curves["model"] == model) & (curves["dataset"] == dataset)] if not curves.empty else curves
            if panel.empty:
                mark_empty(ax, empty_text)
                continue
            styles = _variant_styles(panel, by)
            for variant, (color, linestyle, marker) in styles.items():
                band_plot(ax, panel[panel["variant"] == variant], color, variant, linestyle, marker, 0.1)
            log_compression_axis(ax)
            ax.set_xlabel("compression ratio")
            ax.set_ylabel("top-1 accuracy (%)")
            ax.legend(loc="lower left", frameon=True, framealpha=0.85)
    fig.suptitle("Pruning variants: mean over seeds, band = min-max; other settings at their defaults.\n"
                 "x N = pruning iterations; train mode = batch-norm in train mode while scoring", fontsize=10)
    return fig


@FIGURES.register("iterative")
def iterative_figure(results: Results, out_dir: Path, report: Report,
                     options: FigureOptions = FigureOptions()) -> List[Path]:
    iterative = tables.iterative_curves(results.trials)
    modes = tables.prune_mode_curves(results.trials)
    existing = sorted(set(zip(iterative["model"], iterative["dataset"])) | set(zip(modes["model"], modes["dataset"])))
    if not existing:
        report("iterative: no trained snip, grasp or synflow trials; figure not drawn")
        return []
    compared = [p for p in existing if _has_variants(iterative, p, "iterations", "snip")
                or _has_variants(iterative, p, "iterations", "force") or _has_variants(modes, p, "prune_mode")]
    if not compared:
        report("iterative: no snip trained with several iteration counts and no snip/grasp trained in both "
               "scoring modes; drawing the default curves only")
    for model, dataset in sorted(set(existing) - set(compared)) if compared else []:
        report(f"iterative: ({model}, {dataset}) has no variants to compare; left out")
    return save(draw_iterative(iterative, modes, compared or existing), out_dir, "iterative")


def _has_variants(curves: pd.DataFrame, panel: Tuple[str, str], by: str, algorithm: Optional[str] = None) -> bool:
    rows = curves[(curves["model"] == panel[0]) & (curves["dataset"] == panel[1])]
    if algorithm is not None:
        rows = rows[rows["algorithm"] == algorithm]
    return bool((rows.groupby("algorithm")[by].nunique() > 1).any())


# ----------------------------------------------------------------- conservation
