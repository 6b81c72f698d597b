"""Figures of the sanity checks: accuracy under each ablation, and effective against nominal compression.

The numbers come from `analysis.tables` (pure pandas); this module only draws
them. Every figure draws what exists and reports what is missing, one line each.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from analysis import tables
from analysis.drawing import (BANDS, FIGURES, FigureOptions, PanelLayout, Report, band_plot, chance_classes,
                              chance_handle, chance_line, filled_panels, grid_figure, log_compression_axis, render,
                              styled)
from analysis.load import Results, ablation_of, default_settings
from analysis.style import algorithm_color, algorithm_order, format_ratio
from common.vocabulary import DEFAULT_ABLATION

# ablation -> (colour, linestyle, marker, legend text). "none" is the method itself: the solid black reference.
ABLATION_STYLES: Dict[str, Tuple[str, object, str, str]] = {
    "none": ("#111111", "-", "o", "none (the method's own mask)"),
    "shuffle": ("#e377c2", "--", "s", "shuffle (mask permuted within each layer)"),
    "layerwise_random": ("#17becf", (0, (5, 1.5, 1, 1.5, 1, 1.5)), "v",
                         "layerwise_random (random mask, same per-layer counts)"),
    "reinit": ("#e69f00", ":", "^", "reinit (same mask, weights re-drawn)"),
    "invert": ("#8c564b", "-.", "D", "invert (lowest scores kept)"),
}
OTHER_ABLATION_COLORS = ("#393b79", "#637939", "#843c39", "#7b4173")
INFINITY_STACK = 1.35  # the factor (log y) between algorithms' markers on the ∞ row, each at its true ratio


def ablation_style(ablation: str) -> Tuple[str, object, str, str]:
    if ablation in ABLATION_STYLES:
        return ABLATION_STYLES[ablation]
    color = OTHER_ABLATION_COLORS[sum(map(ord, ablation)) % len(OTHER_ABLATION_COLORS)]
    return color, "--", "x", ablation


@styled
def draw_ablations(curves: pd.DataFrame, panels: Sequence[Tuple[str, str]], algorithms: Sequence[str],
                   band: str = "range", trials: Optional[pd.DataFrame] = None) -> Figure:
    """Top-1 vs compression: a row per (model, dataset), a column per algorithm, a line per ablation."""
    fig, axes = grid_figure(len(panels), len(algorithms))
    width, height = fig.get_size_inches()
    fig.set_size_inches(width, height + (0.5 if len(algorithms) < 3 else 0.0))  # a three-line title
    ablations = tables.ablation_order(curves["ablation"].unique())
    any_chance = False
    for r, (model, dataset) in enumerate(panels):
        for c, algorithm in enumerate(algorithms):
            ax = axes[r, c]
            ax.set_title(f"{model} / {dataset}: {algorithm}", color=algorithm_color(algorithm))
            panel = curves[(curves["model"] == model) & (curves["dataset"] == dataset)
                           & (curves["algorithm"] == algorithm)]
            if panel.empty:  # (the figure function reports it)
                ax.set_visible(False)
                continue
            if (panel["ablation"] == DEFAULT_ABLATION).all():
                ax.text(0.98, 0.98, "no ablation trained", transform=ax.transAxes, ha="right", va="top",
                        fontsize=7, color="0.45")
            for ablation in ablations:
                rows = panel[panel["ablation"] == ablation]
                if rows.empty:
                    continue
                color, linestyle, marker, _ = ablation_style(ablation)
                reference = ablation == DEFAULT_ABLATION
                band_plot(ax, rows, color, ablation, linestyle, marker, band_alpha=0.12 if reference else 0.07,
                          band=band)
                if reference:
                    ax.get_lines()[-1].set_linewidth(2.0)
                    ax.get_lines()[-1].set_zorder(3)
            if trials is not None:
                any_chance |= chance_line(ax, trials, model, dataset)
            log_compression_axis(ax)
            ax.set_xlabel("compression ratio")
            ax.set_ylabel("top-1 accuracy (%)")
    handles = []
    for ablation in ablations:
        color, linestyle, marker, text = ablation_style(ablation)
        handles.append(Line2D([], [], color=color, linestyle=linestyle, marker=marker, markersize=4,
                              linewidth=2.0 if ablation == DEFAULT_ABLATION else 1.4, label=text))
    handles += [chance_handle()] if any_chance else []
    narrow = len(algorithms) < 3
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 2 if narrow else 3),
               frameon=False)
    separator = "\n" if narrow else " "
    fig.suptitle(f"Sanity-check ablations: top-1 vs compression,{separator}mean over seeds, {BANDS[band][2]};\n"
                 "other pruning settings at their defaults", fontsize=10)
    return fig


@FIGURES.register("ablations")
def ablations_figure(results: Results, out_dir: Path, report: Report,
                     options: FigureOptions = FigureOptions()) -> List[Path]:
    ablated = results.trials[ablation_of(results.trials) != DEFAULT_ABLATION]
    if ablated.empty:
        report("ablations: no ablation trials among the selected (every trial has ablation none); figure not drawn")
        return []
    curves = tables.ablation_curves(results.trials)
    drawn = set(zip(curves.loc[curves["ablation"] != DEFAULT_ABLATION, "model"],
                    curves.loc[curves["ablation"] != DEFAULT_ABLATION, "dataset"]))
    for model, dataset in sorted(set(zip(ablated["model"], ablated["dataset"])) - drawn):
        report(f"ablations: ({model}, {dataset}) has no trained ablation trial with the default settings yet")
    if not drawn:
        report("ablations: no trained ablation trials; figure not drawn")
        return []
    for note in tables.coverage_gaps(curves[curves["ablation"] == DEFAULT_ABLATION]):
        report(f"ablations: none: {note}")
    curves = curves[[(m, d) in drawn for m, d in zip(curves["model"], curves["dataset"])]]
    panels = sorted(drawn, key=lambda p: (p[1], p[0]))
    # Only the algorithms some ablation was run for: a panel of `none` alone answers no sanity check.
    algorithms = algorithm_order(curves.loc[curves["ablation"] != DEFAULT_ABLATION, "algorithm"].unique())
    curves = curves[curves["algorithm"].isin(algorithms)]
    for model, dataset in panels:
        here = set(curves.loc[(curves["model"] == model) & (curves["dataset"] == dataset), "algorithm"])
        for algorithm in [a for a in algorithms if a not in here]:
            report(f"ablations: ({model}, {dataset}) has no trained {algorithm} trial; its panel is left blank")
    return render(draw_ablations, (curves, panels, algorithms, options.band, chance_classes(results.trials)), out_dir,
                  "ablations")


# -------------------------------------------------------- effective compression

@styled
def draw_effective_sparsity(table: pd.DataFrame, layout: PanelLayout) -> Figure:
    """Effective vs nominal compression (log-log), a line per algorithm; disconnected seeds drawn on an ∞ row."""
    fig, axes = grid_figure(layout.rows, layout.cols)
    algorithms = algorithm_order(table["algorithm"].unique())
    for ax, panel in filled_panels(axes, table, layout):
        _effective_panel(ax, panel, algorithms)
    handles = [Line2D([], [], color=algorithm_color(a), marker="o", markersize=4, label=a) for a in algorithms]
    handles += [
        Line2D([], [], color="0.45", linestyle="--", linewidth=1, label="y = x: every kept weight on a path"),
        Line2D([], [], color="0.3", linestyle="none", marker="^", markersize=6, label="∞: every seed disconnected"),
        Line2D([], [], color="0.3", linestyle="none", marker="^", markersize=6, markerfacecolor="none",
               label="∞: some seeds disconnected"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3 if layout.cols < 3 else 5),
               frameon=False)
    fig.suptitle("Effective compression (prunable weights / kept weights on an input-output path) vs nominal;\n"
                 "mean over the connected seeds. Disconnected = no input-output path left (infinite effective\n"
                 "compression), drawn on the ∞ row. Default settings, no ablation.", fontsize=9)
    return fig


def _effective_panel(ax, panel: pd.DataFrame, algorithms: Sequence[str]) -> None:
    finite = panel["effective_compression_max"].dropna()
    largest = max(finite.max() if not finite.empty else 1.0, panel["compression"].max())
    infinity = largest * 4.0  # the row that stands for infinite effective compression
    low = min(panel["compression"].min(), panel["effective_compression_min"].min(skipna=True)
              if panel["effective_compression_min"].notna().any() else panel["compression"].min())
    x_span = np.array([low / 1.5, panel["compression"].max() * 1.5])
    ax.plot(x_span, x_span, color="0.45", linestyle="--", linewidth=1, zorder=1)  # y = x, named in the legend
    present = [a for a in algorithms if a in set(panel["algorithm"])]
    stacked: Dict[float, int] = {}  # compression -> markers already on the ∞ row there
    for algorithm in present:
        rows = panel[panel["algorithm"] == algorithm].sort_values("compression")
        color = algorithm_color(algorithm)
        ax.plot(rows["compression"], rows["effective_compression_mean"], color=color, marker="o", markersize=3,
                linewidth=1.4, zorder=3)
        cut = rows[rows["disconnected"] > 0]
        if cut.empty:
            continue
        # Each marker at its true ratio; several algorithms cut at one ratio stack upwards from the ∞ row.
        for row in cut.itertuples():
            lift = INFINITY_STACK ** stacked.get(row.compression, 0)
            stacked[row.compression] = stacked.get(row.compression, 0) + 1
            ax.plot([row.compression], [infinity * lift], linestyle="none", marker="^", markersize=6, color=color,
                    markerfacecolor=color if row.connected == 0 else "none", zorder=4, clip_on=False)
    ax.axhline(infinity, color="0.6", linestyle=":", linewidth=0.8, zorder=1)
    ax.annotate("disconnected", (0.01, infinity), xycoords=("axes fraction", "data"), xytext=(2, 3),
                textcoords="offset points", ha="left", va="bottom", fontsize=7, color="0.35")
    log_compression_axis(ax)
    ax.set_yscale("log")
    ax.set_xlim(x_span[0], x_span[1])
    bottom = min(low / 1.5, x_span[0])
    ax.set_ylim(bottom, infinity * INFINITY_STACK ** max(max(stacked.values(), default=1) - 1, 0) * 2.0)
    # Powers of ten up to the largest finite value, then the ∞ row: no finite tick above infinity.
    powers = [10.0 ** k for k in range(math.ceil(math.log10(bottom)), math.floor(math.log10(largest)) + 1)]
    ax.set_yticks(powers + [infinity], labels=[f"$10^{{{round(math.log10(p))}}}$" for p in powers] + ["∞"])
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("nominal compression ratio")
    ax.set_ylabel("effective compression ratio")


@FIGURES.register("effective_sparsity")
def effective_sparsity_figure(results: Results, out_dir: Path, report: Report,
                              options: FigureOptions = FigureOptions()) -> List[Path]:
    trials = results.trials
    if "effective_remaining_params" not in trials or trials["effective_remaining_params"].isna().all():
        report("effective_sparsity: no trial records effective_remaining_params (the store predates it); "
               "figure not drawn")
        return []
    selected, _ = default_settings(trials, same_training=False)
    table = tables.effective_compression(selected)
    if table.empty:
        report("effective_sparsity: no trial with the default settings records effective_remaining_params; "
               "figure not drawn")
        return []
    for model, dataset in tables.missing_panels(trials, table):
        report(f"effective_sparsity: ({model}, {dataset}) has no effective counts with the default settings; "
               "not drawn")
    cut = table[table["disconnected"] > 0]
    for (model, dataset, algorithm), rows in cut.groupby([*tables.PANEL, "algorithm"], sort=False):
        where = ", ".join(f"{r.disconnected} of {r.trials} at {format_ratio(r.compression)}" for r in rows.itertuples())
        report(f"effective_sparsity: ({model}, {dataset}) {algorithm}: trials disconnected (drawn at ∞): {where}")
    out_dir.mkdir(parents=True, exist_ok=True)
    table_path = out_dir / "effective_sparsity.csv"
    table.to_csv(table_path, index=False)
    return render(draw_effective_sparsity, (table, PanelLayout.of(tables.panels(table))), out_dir,
                  "effective_sparsity") + [table_path]
