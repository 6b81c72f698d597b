"""Figures of what pruning did: per-layer density, critical compression, score conservation, and cost.

The numbers come from `analysis.tables` (pure pandas); this module only draws
them. Every figure draws what exists and reports what is missing, one line each.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from analysis import tables
from analysis.drawing import (FIGURES, DENSITY_CMAP, FigureOptions, PanelLayout, Report, filled_panels, grid_figure,
                              render, slug, styled)
from analysis.load import Results, default_settings
from analysis.style import DENSE_COLOR, algorithm_color, algorithm_order, format_ratio


@styled
def draw_layer_density(profiles: pd.DataFrame, model: str, dataset: str) -> Figure:
    """Fraction remaining per layer, one panel per algorithm, one line per compression (light to dark)."""
    algorithms = algorithm_order(profiles["algorithm"].unique())
    cols = min(len(algorithms), 3)
    rows = math.ceil(len(algorithms) / cols)
    fig, axes = grid_figure(rows, cols)
    norm = Normalize(profiles["log10_compression"].min(), max(profiles["log10_compression"].max(), 1e-9))
    positive = profiles.loc[profiles["density_mean"] > 0, "density_mean"]
    floor = positive.min() / 3 if not positive.empty else 1e-6
    positions = sorted(profiles["position"].unique())
    named = profiles.drop_duplicates("position").set_index("position")
    labels = {p: f"{_short_layer(named.at[p, 'layer'])} ({_count(named.at[p, 'size'])})" for p in positions}
    for i, ax in enumerate(axes.flat):
        if i >= len(algorithms):
            ax.set_visible(False)
            continue
        algorithm = algorithms[i]
        ax.set_title(algorithm, color=algorithm_color(algorithm))
        mine = profiles[profiles["algorithm"] == algorithm]
        for log10, rows_ in mine.groupby("log10_compression", sort=True):
            rows_ = rows_.sort_values("position")
            color = DENSITY_CMAP(norm(log10))
            y = rows_["density_mean"].where(rows_["density_mean"] > 0)  # empty layers break the line...
            if y.isna().any():  # ...and a dotted detour down to the marker shows where
                ax.plot(rows_["position"], y.fillna(floor), color=color, linewidth=0.8, linestyle=":")
            ax.plot(rows_["position"], y, color=color, linewidth=1.2, marker=".", markersize=3)
            empty = rows_[rows_["density_mean"] == 0]
            some = rows_[(rows_["zero_seeds"] > 0) & (rows_["density_mean"] > 0)]
            ax.plot(empty["position"], np.full(len(empty), floor), linestyle="none", marker="v", markersize=5,
                    color=color)
            ax.plot(some["position"], np.full(len(some), floor), linestyle="none", marker="v", markersize=5,
                    markerfacecolor="none", color=color)
        ax.set_yscale("log")
        ax.set_ylim(floor / 1.6, 1.6)
        ax.set_xlabel("layer (forward order, conv/linear; weights)")
        ax.set_ylabel("fraction of weights remaining")
        step = max(1, math.ceil(len(positions) / MAX_LAYER_LABELS))
        ax.set_xticks(positions[::step], labels=[labels[p] for p in positions[::step]], rotation=90,
                      fontsize=6 if len(positions) > 12 else 7)
        ax.set_xlim(positions[0] - 0.5, positions[-1] + 0.5)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=DENSITY_CMAP), ax=axes.ravel().tolist(), shrink=0.9,
                       pad=0.01)
    bar.set_label("compression ratio")
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"$10^{{{v:g}}}$"))
    fig.legend(handles=[
        Line2D([], [], linestyle="none", marker="v", color="0.3", label="layer empty in every seed"),
        Line2D([], [], linestyle="none", marker="v", markerfacecolor="none", color="0.3",
               label="layer empty in some seeds"),
    ], loc="outside lower center", ncols=2, frameon=False)
    fig.suptitle(f"{model} / {dataset}: per-layer density (mean over seeds, default settings)", fontsize=10)
    return fig


MAX_LAYER_LABELS = 40  # beyond this, every other (third, ...) layer is named


def _short_layer(name: str) -> str:
    """The module name without a trailing '.weight': what a reader finds in print(model)."""
    return name[: -len(".weight")] if name.endswith(".weight") else name


def _count(size: float) -> str:
    """A weight count at a glance: 432, 9.2k, 2.4M."""
    size = float(size)
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if size >= scale:
            return f"{size / scale:.3g}{unit}"
    return f"{size:.0f}"


@FIGURES.register("layer_density")
def layer_density_figures(results: Results, out_dir: Path, report: Report,
                          options: FigureOptions = FigureOptions()) -> List[Path]:
    selected, _ = default_settings(results.trials, same_training=False)
    profiles = tables.layer_density_profiles(selected, results.layers)
    written: List[Path] = []
    for model, dataset in tables.missing_panels(results.trials, profiles):
        report(f"layer_density: no layer rows for ({model}, {dataset})")
    for (model, dataset), panel in profiles.groupby(tables.PANEL, sort=True):
        written += render(draw_layer_density, (panel, model, dataset), out_dir, slug("layer_density", model, dataset))
    return written


# -------------------------------------------------------- critical compression

@styled
def draw_critical_compression(critical: pd.DataFrame, layout: PanelLayout) -> Figure:
    """Bars (log y) of the largest uncollapsed compression; hatched where nothing collapsed (a lower bound)."""
    fig, axes = grid_figure(layout.rows, layout.cols)
    for ax, panel in filled_panels(axes, critical, layout):
        x = np.arange(len(panel))
        heights = panel["critical"].fillna(1.0)
        ax.bar(x, heights, color=[algorithm_color(a) for a in panel["algorithm"]], width=0.7,
               hatch=["//" if cen else "" for cen in panel["censored"]], edgecolor="white", linewidth=0)
        for xi, (_, row) in zip(x, panel.iterrows()):
            label = ("none" if pd.isna(row["critical"])
                     else ("≥" if row["censored"] else "") + format_ratio(row["critical"]))
            ax.annotate(label, (xi, heights.iloc[xi]), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7)
        theoretical = panel["theoretical_max"].iloc[0]
        ax.axhline(theoretical, color=DENSE_COLOR, linestyle="--", linewidth=1)
        ax.annotate(format_ratio(theoretical), (1.0, theoretical), xycoords=("axes fraction", "data"),
                    xytext=(-2, 2), textcoords="offset points", ha="right", va="bottom", fontsize=7)
        ax.set_yscale("log")
        top = max(theoretical, heights.max())
        ax.set_ylim(0.8, top * 6)
        ax.set_xticks(x, labels=panel["algorithm"].tolist(), rotation=30, ha="right")
        ax.grid(axis="x", visible=False)
        ax.set_ylabel("critical compression ratio")
    fig.legend(handles=[
        Line2D([], [], color=DENSE_COLOR, linestyle="--", label="max possible (prunable weights / layers)"),
        Patch(facecolor="0.6", hatch="//", edgecolor="white", label="no collapse up to the largest ratio tested"),
    ], loc="outside lower center", ncols=2, frameon=False)
    fig.suptitle("Critical compression: largest tested ratio at which no seed's network has an empty layer",
                 fontsize=10)
    return fig


@FIGURES.register("critical_compression")
def critical_compression_figure(results: Results, out_dir: Path, report: Report,
                                options: FigureOptions = FigureOptions()) -> List[Path]:
    selected, _ = default_settings(results.trials, same_training=False)
    critical = tables.critical_compression(selected)
    for model, dataset in tables.missing_panels(results.trials, critical):
        report(f"critical_compression: ({model}, {dataset}) has no trial with the default settings; not drawn")
    if critical.empty:
        report("critical_compression: no trial with the default settings; figure not drawn")
        return []
    for row in critical[critical["critical"].isna()].itertuples():
        report(f"critical_compression: ({row.model}, {row.dataset}) {row.algorithm} collapsed at every ratio tested")
    out_dir.mkdir(parents=True, exist_ok=True)
    table_path = out_dir / "critical_compression.csv"
    critical.to_csv(table_path, index=False)
    layout = PanelLayout.of(tables.panels(critical))
    return render(draw_critical_compression, (critical, layout), out_dir, "critical_compression") + [table_path]


# -------------------------------------------------------------------- iterative

@styled
def draw_conservation(pairs: pd.DataFrame, model: str, dataset: str) -> Figure:
    """|score sum| per layer (log y) for synflow next to the other algorithms, same compression and seed."""
    algorithms = algorithm_order(pairs["algorithm"].unique())
    cols = min(len(algorithms), 3)
    fig, axes = grid_figure(math.ceil(len(algorithms) / cols), cols)
    for i, ax in enumerate(axes.flat):
        if i >= len(algorithms):
            ax.set_visible(False)
            continue
        algorithm = algorithms[i]
        rows = pairs[pairs["algorithm"] == algorithm].sort_values("position")
        color = algorithm_color(algorithm)
        shown = rows[rows["abs_score"] > 0]
        ax.plot(shown["position"], shown["abs_score"], color=color, marker="o", markersize=4, linewidth=1.4)
        ax.plot(shown["position"], shown["score_per_weight"], color=color, marker=".", markersize=3,
                linewidth=1, linestyle="--", alpha=0.6)
        negative = shown[shown["score_sum"] < 0]
        ax.plot(negative["position"], negative["abs_score"], linestyle="none", marker="o", markersize=8,
                markerfacecolor="none", color="black")
        ax.set_yscale("log")
        ax.set_title(algorithm, color=color)
        ax.set_xlabel("layer (forward order, conv/linear)")
        ax.set_ylabel("score (log scale)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.legend(handles=[
        Line2D([], [], color="0.3", marker="o", markersize=4, label="|sum of scores in layer|"),
        Line2D([], [], color="0.3", marker=".", linestyle="--", alpha=0.6, label="|sum| / weights in layer"),
        Line2D([], [], color="black", marker="o", markersize=8, markerfacecolor="none", linestyle="none",
               label="sum is negative"),
    ], loc="outside lower center", ncols=3, frameon=False)
    first = pairs.iloc[0]
    fig.suptitle(f"{model} / {dataset}: per-layer scores at compression "
                 f"{format_ratio(10 ** first['log10_compression'])}, seed {first['seed']} "
                 "(a flat solid line = score conserved across layers)", fontsize=10)
    return fig


@FIGURES.register("conservation")
def conservation_figures(results: Results, out_dir: Path, report: Report,
                         options: FigureOptions = FigureOptions()) -> List[Path]:
    selected, _ = default_settings(results.trials, same_training=False)
    pairs, notes = tables.conservation_pairs(selected, results.layers)
    for note in notes:
        report(f"conservation: {note}")
    written: List[Path] = []
    for (model, dataset), panel in pairs.groupby(tables.PANEL, sort=True):
        written += render(draw_conservation, (panel, model, dataset), out_dir, slug("conservation", model, dataset))
    if pairs.empty:
        report("conservation: no matching trials; figure not drawn")
    return written


# ------------------------------------------------------------------------- cost

def cost_label(row) -> str:
    return f"{row.algorithm} x{row.iterations}" + (" (ablations)" if row.ablations else "")


@styled
def draw_cost(cost: pd.DataFrame, pairs: Sequence[Tuple[str, str]]) -> Figure:
    """Per (model, dataset) row: seconds per trial (training + pruning), pruning passes and pruning seconds per trial.

    Bars are medians over trials, whiskers their min-max: a per-trial number compares algorithms fairly
    however many trials of each ran. Ablation trials are their own bars.
    """
    fig, axes = grid_figure(len(pairs), 3)
    pruning_style = dict(alpha=0.45, hatch="//", edgecolor="white", linewidth=0)
    for r, (model, dataset) in enumerate(pairs):
        panel = cost[(cost["model"] == model) & (cost["dataset"] == dataset)].reset_index(drop=True)
        labels = [cost_label(row) for row in panel.itertuples()]
        colors = [algorithm_color(a) for a in panel["algorithm"]]
        x = np.arange(len(panel))
        faces = ["white" if ablated else color for ablated, color in zip(panel["ablations"], colors)]

        ax = axes[r, 0]
        ax.bar(x, panel["train_seconds"], color=faces, edgecolor=colors, linewidth=1, width=0.7)
        ax.bar(x, panel["prune_seconds"], bottom=panel["train_seconds"], color=colors, width=0.7, **pruning_style)
        _whiskers(ax, x, panel["seconds"], panel["seconds_min"], panel["seconds_max"])
        ax.set_ylim(0, max(panel["seconds_max"].max(), 1e-9) * 1.12)
        ax.set_ylabel("seconds per trial")
        ax.set_title(f"{model} / {dataset}: time per trial", fontsize=9)

        ax = axes[r, 1]
        passes = panel["prune_passes"]
        ax.bar(x, passes.where(passes > 0), color=faces, edgecolor=colors, linewidth=1, width=0.7)
        ax.set_yscale("log")
        ax.set_ylim(0.5, max(passes.max(), 1) * 3)
        ax.set_xlim(-0.6, len(x) - 0.4)  # bars of 0 are not drawn and would not widen the axis
        for xi, value in zip(x, passes):
            # Magnitude and random score without the network: a log axis cannot draw 0, so say it.
            ax.annotate(f"{value:,.0f}", (xi, max(value, 0.5)), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7)
        ax.set_ylabel("passes per trial")
        ax.set_title("pruning: forward/backward passes\n(0: scored without running the network)", fontsize=9)

        ax = axes[r, 2]
        ax.bar(x, panel["prune_seconds"].clip(lower=1e-4), color=colors, width=0.7, **pruning_style)
        _whiskers(ax, x, panel["prune_seconds"].clip(lower=1e-4), panel["prune_seconds_min"].clip(lower=1e-4),
                  panel["prune_seconds_max"].clip(lower=1e-4))
        ax.set_yscale("log")
        ax.set_ylabel("pruning seconds per trial")
        ax.set_title("pruning time per trial", fontsize=9)
        for axis in axes[r]:
            axis.set_xticks(x, labels=labels, rotation=30, ha="right")
            axis.grid(axis="x", visible=False)
    fig.legend(handles=[Patch(facecolor="0.4", label="training"),
                        Patch(facecolor="0.4", label="pruning", **pruning_style),
                        Patch(facecolor="white", edgecolor="0.4", label="ablation trials (apart)"),
                        Line2D([], [], color="0.2", marker="_", linestyle="-", label="min-max over trials")],
               loc="outside lower center", ncols=4, frameon=False)
    fig.suptitle("Cost per trial: median over trials (bar) and min-max (whisker); x N = pruning iterations;\n"
                 "diverged trials included. Totals (GPU-hours) are in cost.csv and the summary.", fontsize=10)
    return fig


def _whiskers(ax, x, middle, low, high) -> None:
    ax.errorbar(x, middle, yerr=[middle - low, high - middle], fmt="none", ecolor="0.2", elinewidth=0.8, capsize=2)


@FIGURES.register("cost")
def cost_figure(results: Results, out_dir: Path, report: Report,
                options: FigureOptions = FigureOptions()) -> List[Path]:
    cost = tables.cost_table(results.trials)
    out_dir.mkdir(parents=True, exist_ok=True)
    table_path = out_dir / "cost.csv"
    cost.to_csv(table_path, index=False)
    return render(draw_cost, (cost, tables.panels(cost)), out_dir, "cost") + [table_path]
