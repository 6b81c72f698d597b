"""Figures of accuracy against compression: the headline comparison, and iterative / scoring-mode / budget variants.

The numbers come from `analysis.tables` (pure pandas); this module only draws
them. Every figure draws what exists and reports what is missing, one line each.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullFormatter

from analysis import tables
from analysis.drawing import (BANDS, FIGURES, MARKERS, LINESTYLES, PANEL_SIZE, FigureOptions, PanelLayout, Report,
                              algorithm_legend, band_plot, chance_classes, chance_handle, chance_line, figure_width,
                              grid_figure, log_compression_axis, render, styled)
from analysis.load import Results, ablation_of, default_settings
from analysis.style import DENSE_COLOR, algorithm_color, algorithm_order
from common.vocabulary import DEFAULT_ABLATION, DEFAULT_SCOPE, SCOPES


ZOOM_MAX_LOG10 = 1.5  # the accuracy figure's zoom strip spans 1x to 10^1.5 = 31.6x


@styled
def draw_accuracy(curves: pd.DataFrame, dense: pd.DataFrame, trials: pd.DataFrame, layout: PanelLayout,
                  caption: str, band: str = "range") -> Figure:
    """Top-1 vs compression per laid-out (model, dataset), each panel with a zoom strip on 1x-31.6x below it.

    The zoom gets its own axes rather than an inset, so it can never hide a curve. `band` picks what the
    shaded band spans (`drawing.BANDS`): min-max over seeds, or the 95% t-interval of the mean. A dotted
    line marks chance (100 / classes) where the store records the class count.
    """
    fig = Figure(figsize=(figure_width(layout.cols), PANEL_SIZE[1] * 1.4 * layout.rows + 0.9), layout="constrained")
    grid = fig.subplots(2 * layout.rows, layout.cols, squeeze=False,
                        gridspec_kw={"height_ratios": [3, 1.25] * layout.rows})
    layout.hide_unused(grid[0::2])
    layout.hide_unused(grid[1::2])
    algorithms = algorithm_order(curves["algorithm"].unique()) if not curves.empty else []
    any_chance = False
    for (model, dataset), (r, c) in layout.cells:
        ax, zoom = grid[2 * r, c], grid[2 * r + 1, c]
        ax.set_title(f"{model} / {dataset}")
        panel = curves[(curves["model"] == model) & (curves["dataset"] == dataset)]
        reference = dense[(dense["model"] == model) & (dense["dataset"] == dataset)]
        for algorithm in algorithm_order(panel["algorithm"].unique()):
            band_plot(ax, panel[panel["algorithm"] == algorithm], algorithm_color(algorithm), algorithm,
                      band=band)
        if not reference.empty:
            ax.axhline(reference["top1_mean"].iloc[0], color=DENSE_COLOR, linestyle="--", linewidth=1)
        any_chance |= chance_line(ax, trials, model, dataset)
        log_compression_axis(ax)
        ax.set_xlabel("compression ratio")
        ax.set_ylabel("top-1 accuracy (%)")
        _accuracy_zoom(zoom, panel, reference, band)
    dense_handle = Line2D([], [], color=DENSE_COLOR, linestyle="--", linewidth=1, label="dense (unpruned)")
    algorithm_legend(fig, algorithms, [dense_handle] + ([chance_handle()] if any_chance else []))
    wrapped = textwrap.fill(f"Default settings only: {caption}.", width=int(115 * layout.cols / 2) + 20)
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
    # Trials, not rows: a shared dense trial drawn as the default algorithms' 1x point is not left out.
    not_drawn = done[~done["trial_id"].isin(set(tables.trained(selected)["trial_id"]))].drop_duplicates("trial_id")
    ablated = int((ablation_of(not_drawn) != DEFAULT_ABLATION).sum())
    budgeted = int(((not_drawn["scope"].fillna(DEFAULT_SCOPE) != DEFAULT_SCOPE)
                    & (ablation_of(not_drawn) == DEFAULT_ABLATION)).sum()) if "scope" in not_drawn else 0
    left_out = len(not_drawn) - ablated - budgeted
    if left_out:
        report(f"accuracy: {left_out} trained trial(s) with non-default settings left out "
               "(see the iterative figure)")
    if budgeted:
        report(f"accuracy: {budgeted} trained trial(s) under another layer budget left out (see the budgets figure)")
    if ablated:
        report(f"accuracy: {ablated} trained ablation trial(s) left out (see the ablations figure)")
    for model, dataset in tables.missing_panels(results.trials, curves):
        report(f"accuracy: ({model}, {dataset}) has no trained trial with the default settings; not drawn")
    for note in tables.coverage_gaps(curves):
        report(f"accuracy: {note}")
    if curves.empty:
        report("accuracy: no completed trials with a final accuracy; figure not drawn")
        return []
    layout = PanelLayout.of(tables.panels(curves))
    missing_chance = [f"({m}, {d})" for (m, d), _ in layout.cells
                      if results.trials.loc[(results.trials["model"] == m) & (results.trials["dataset"] == d),
                                            "num_classes"].isna().all()]
    if missing_chance:
        report(f"accuracy: no chance line for {', '.join(missing_chance)}: the store predates the class count")
    return render(draw_accuracy, (curves, dense, chance_classes(results.trials), layout, caption, options.band),
                  out_dir, "accuracy")


# --------------------------------------------------------------- layer density

def _variant_styles(curves: pd.DataFrame, by: str) -> Dict[str, Tuple[str, str, str]]:
    """variant -> (colour, linestyle, marker), in drawing order: colour from the algorithm, style from the setting."""
    styles = {}
    for algorithm in algorithm_order(curves["algorithm"].unique()):
        rows = curves[curves["algorithm"] == algorithm]
        values = sorted(rows[by].unique(), key=lambda v: (SCOPES.index(v) if by == "scope" and v in SCOPES else
                                                          len(SCOPES), v))  # the global budget solid, first
        for rank, value in enumerate(values):
            variant = rows.loc[rows[by] == value, "variant"].iloc[0]
            styles[variant] = (algorithm_color(algorithm), LINESTYLES[rank % 4], MARKERS[rank % 4])
    return styles


# (curves' column, panel title, the algorithms whose variants make the comparison)
ITERATIVE_SIDES = {"iterations": ("iterative SNIP, FORCE vs SynFlow", ("snip", "force")),
                   "prune_mode": ("eval vs train scoring mode", ("snip", "grasp")),
                   "scope": ("layer budgets", ())}  # (): every algorithm run under several budgets


@styled
def draw_iterative(cells: Sequence[Tuple[Tuple[str, str], str, pd.DataFrame]],
                   trials: Optional[pd.DataFrame] = None) -> Figure:
    """One panel per ((model, dataset), setting) that has variants to compare: iterative SNIP/FORCE vs SynFlow,
    or eval vs train scoring mode for SNIP and GraSP. Nothing is drawn for a comparison that was not run."""
    cols = min(len(cells), 2)
    fig, axes = grid_figure(math.ceil(len(cells) / cols), cols)
    for ax in axes.flat[len(cells):]:
        ax.set_visible(False)
    for ax, ((model, dataset), by, panel) in zip(axes.flat, cells):
        ax.set_title(f"{model} / {dataset}: {ITERATIVE_SIDES[by][0]}", fontsize=9)
        for variant, (color, linestyle, marker) in _variant_styles(panel, by).items():
            band_plot(ax, panel[panel["variant"] == variant], color, variant, linestyle, marker, 0.1)
        if trials is not None and chance_line(ax, trials, model, dataset):
            ax.get_lines()[-1].set_label("chance")
        log_compression_axis(ax)
        ax.set_xlabel("compression ratio")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.legend(loc="lower left", frameon=True, framealpha=0.85)
    sides = {by for _, by, _ in cells}
    legend = [text for by, text in (("iterations", "x N = pruning iterations"),
                                    ("prune_mode", "train mode = batch-norm in train mode while scoring"),
                                    ("scope", "layer budgets: global = one threshold, local = same density per layer, "
                                              "erk/er = Erdos-Renyi(-Kernel)")) if by in sides]
    fig.suptitle("Pruning variants: mean over seeds, band = min-max; other settings at their defaults.\n"
                 + "; ".join(legend), fontsize=10)
    return fig


@FIGURES.register("iterative")
def iterative_figure(results: Results, out_dir: Path, report: Report,
                     options: FigureOptions = FigureOptions()) -> List[Path]:
    sides = {"iterations": tables.iterative_curves(results.trials), "prune_mode": tables.prune_mode_curves(results.trials)}
    cells = []
    for by, curves in sides.items():
        for pair in tables.panels(curves):
            if any(_has_variants(curves, pair, by, algorithm) for algorithm in ITERATIVE_SIDES[by][1]):
                cells.append((pair, by, curves[(curves["model"] == pair[0]) & (curves["dataset"] == pair[1])]))
    if not cells:
        report("iterative: no snip or force trained with several iteration counts, and no snip or grasp trained "
               "in both scoring modes; figure not drawn")
        return []
    cells.sort(key=lambda cell: (cell[0][1], cell[0][0], list(sides).index(cell[1])))
    return render(draw_iterative, (cells, chance_classes(results.trials)), out_dir, "iterative")


@FIGURES.register("budgets")
def budgets_figure(results: Results, out_dir: Path, report: Report,
                   options: FigureOptions = FigureOptions()) -> List[Path]:
    """Each algorithm under each layer budget it ran with (ERK-random beside random, SNIP under ERK, ...)."""
    curves = tables.budget_curves(results.trials)
    cells = [(pair, "scope", curves[(curves["model"] == pair[0]) & (curves["dataset"] == pair[1])])
             for pair in tables.panels(curves) if _has_variants(curves, pair, "scope")]
    if not cells:
        report("budgets: no algorithm trained under more than one layer budget (--budgets global,erk,er); "
               "figure not drawn")
        return []
    cells.sort(key=lambda cell: (cell[0][1], cell[0][0]))
    return render(draw_iterative, (cells, chance_classes(results.trials)), out_dir, "budgets")


def _has_variants(curves: pd.DataFrame, panel: Tuple[str, str], by: str, algorithm: Optional[str] = None) -> bool:
    rows = curves[(curves["model"] == panel[0]) & (curves["dataset"] == panel[1])]
    if algorithm is not None:
        rows = rows[rows["algorithm"] == algorithm]
    return bool((rows.groupby("algorithm")[by].nunique() > 1).any())


# ----------------------------------------------------------------- conservation
