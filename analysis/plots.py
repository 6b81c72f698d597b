"""The paper's figures, drawn from a results store.

    python -m analysis.plots --store results/ --out figures/ [--only accuracy,cost]

Each figure is written as PNG and PDF. The numbers come from `analysis.tables`
(pure pandas); this module only draws them. Drawing uses matplotlib's
object-oriented `Figure` (Agg canvas, no pyplot state), so it works headless
and inside other programs. Partial data is normal while a sweep runs: every
figure draws what exists and reports what is missing, one line each.
"""
from __future__ import annotations

import argparse
import functools
import math
import sys
import textwrap
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from analysis import tables
from analysis.load import Results, default_settings, load_results
from analysis.style import DENSE_COLOR, algorithm_color, algorithm_order, format_ratio
from results_store import StoreError
from trainables.registry import Registry, UnknownNameError

Report = Callable[[str], None]
FigureMaker = Callable[[Results, Path, Report], List[Path]]
FIGURES: Registry[FigureMaker] = Registry("figure")

ZOOM_MAX_LOG10 = 1.5
PANEL_SIZE = (4.3, 3.4)
DENSITY_CMAP = ListedColormap(matplotlib.colormaps["YlGnBu"](np.linspace(0.3, 1.0, 256)), name="density")
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D")

STYLE = {
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5, "axes.titlesize": 10,
    "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8, "legend.fontsize": 8,
    "pdf.fonttype": 42,
}


def styled(draw: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw under this module's style without changing matplotlib's global settings for the caller."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs) -> Figure:
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)
    return wrapper


# --------------------------------------------------------------------- helpers

def save(fig: Figure, out_dir: Path, name: str) -> List[Path]:
    """Write `name`.png and `name`.pdf; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    with matplotlib.rc_context(STYLE):  # pdf.fonttype is read when saving
        fig.savefig(paths[0], dpi=150)
        fig.savefig(paths[1])
    return paths


def slug(*parts: str) -> str:
    return "_".join(str(p).replace("/", "-").replace(" ", "-") for p in parts)


def grid_figure(rows: int, cols: int, sharex: bool = False) -> Tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(PANEL_SIZE[0] * cols, PANEL_SIZE[1] * rows + 0.9), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=sharex)
    return fig, axes


def mark_empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.45", fontsize=9,
            wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def log_compression_axis(ax) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, numticks=12))


def algorithm_legend(fig: Figure, algorithms: Sequence[str], extra: Sequence = ()) -> None:
    handles = [Line2D([], [], color=algorithm_color(a), marker="o", markersize=4, label=a) for a in algorithms]
    handles.extend(extra)
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8), frameon=False)


def band_plot(ax, rows: pd.DataFrame, color: str, label: Optional[str], linestyle: str = "-",
              marker: str = "o", band_alpha: float = 0.18) -> None:
    rows = rows.sort_values("compression")
    ax.fill_between(rows["compression"], rows["top1_min"], rows["top1_max"], color=color, alpha=band_alpha,
                    linewidth=0)
    ax.plot(rows["compression"], rows["top1_mean"], color=color, linestyle=linestyle, marker=marker,
            markersize=3, linewidth=1.4, label=label)


# -------------------------------------------------------------------- accuracy

@styled
def draw_accuracy(curves: pd.DataFrame, dense: pd.DataFrame, datasets: Sequence[str], models: Sequence[str],
                  caption: str) -> Figure:
    """Top-1 vs compression per (dataset row, model column), each panel with a zoom strip on 1x-31.6x below it.

    The zoom gets its own axes rather than an inset, so it can never hide a curve.
    """
    rows, cols = len(datasets), len(models)
    fig = Figure(figsize=(PANEL_SIZE[0] * cols, PANEL_SIZE[1] * 1.4 * rows + 0.9), layout="constrained")
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
                band_plot(ax, panel[panel["algorithm"] == algorithm], algorithm_color(algorithm), algorithm)
            if not reference.empty:
                ax.axhline(reference["top1_mean"].iloc[0], color=DENSE_COLOR, linestyle="--", linewidth=1)
            log_compression_axis(ax)
            ax.set_xlabel("compression ratio")
            ax.set_ylabel("top-1 accuracy (%)")
            _accuracy_zoom(zoom, panel, reference)
    dense_handle = Line2D([], [], color=DENSE_COLOR, linestyle="--", linewidth=1, label="dense (unpruned)")
    algorithm_legend(fig, algorithms, [dense_handle])
    wrapped = textwrap.fill(f"Default settings only: {caption}.", width=int(115 * len(models) / 2) + 20)
    fig.suptitle(f"Top-1 accuracy vs compression: mean over seeds, band = min-max.\n{wrapped}", fontsize=9)
    return fig


def _accuracy_zoom(zoom, panel: pd.DataFrame, reference: pd.DataFrame) -> None:
    """Compressions 1 to 10^1.5, where the best curves sit on top of each other.

    Its y range spans the better half of the algorithms, so the ones that drop
    early leave it at the bottom instead of flattening the rest.
    """
    near = panel[panel["log10_compression"] <= ZOOM_MAX_LOG10 + 1e-9]
    if near["log10_compression"].nunique() < 2:
        zoom.set_visible(False)
        return
    for algorithm in algorithm_order(near["algorithm"].unique()):
        band_plot(zoom, near[near["algorithm"] == algorithm], algorithm_color(algorithm), None, band_alpha=0.12)
    low = near.groupby("algorithm")["top1_mean"].min().median()
    high = near["top1_max"].max()
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
def accuracy_figure(results: Results, out_dir: Path, report: Report) -> List[Path]:
    selected, caption = default_settings(results.trials)
    curves = tables.accuracy_curves(selected)
    dense = tables.dense_reference(selected)
    left_out = len(tables.trained(results.trials)) - len(tables.trained(selected))
    if left_out:
        report(f"accuracy: {left_out} trained trial(s) with non-default settings left out "
               "(see the iterative figure)")
    for model, dataset in tables.missing_panels(results.trials, curves):
        report(f"accuracy: no trials for ({model}, {dataset})")
    for note in tables.coverage_gaps(curves):
        report(f"accuracy: {note}")
    if curves.empty:
        report("accuracy: no completed trials with a final accuracy; figure not drawn")
        return []
    datasets, models = tables.panel_grid(results.trials)
    return save(draw_accuracy(curves, dense, datasets, models, caption), out_dir, "accuracy")


# --------------------------------------------------------------- layer density

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
        ax.set_xlabel("layer (forward order, conv/linear)")
        ax.set_ylabel("fraction of weights remaining")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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


@FIGURES.register("layer_density")
def layer_density_figures(results: Results, out_dir: Path, report: Report) -> List[Path]:
    selected, _ = default_settings(results.trials, same_training=False)
    profiles = tables.layer_density_profiles(selected, results.layers)
    written: List[Path] = []
    for model, dataset in tables.missing_panels(results.trials, profiles):
        report(f"layer_density: no layer rows for ({model}, {dataset})")
    for (model, dataset), panel in profiles.groupby(tables.PANEL, sort=True):
        fig = draw_layer_density(panel, model, dataset)
        written += save(fig, out_dir, slug("layer_density", model, dataset))
    return written


# -------------------------------------------------------- critical compression

@styled
def draw_critical_compression(critical: pd.DataFrame, datasets: Sequence[str], models: Sequence[str]) -> Figure:
    """Bars (log y) of the largest uncollapsed compression; hatched where nothing collapsed (a lower bound)."""
    fig, axes = grid_figure(len(datasets), len(models))
    for r, dataset in enumerate(datasets):
        for c, model in enumerate(models):
            ax = axes[r, c]
            ax.set_title(f"{model} / {dataset}")
            panel = critical[(critical["model"] == model) & (critical["dataset"] == dataset)]
            if panel.empty:
                mark_empty(ax, "no pruned trials")
                continue
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
def critical_compression_figure(results: Results, out_dir: Path, report: Report) -> List[Path]:
    selected, _ = default_settings(results.trials, same_training=False)
    critical = tables.critical_compression(selected)
    for model, dataset in tables.missing_panels(results.trials, critical):
        report(f"critical_compression: no trials for ({model}, {dataset})")
    if critical.empty:
        return []
    for row in critical[critical["critical"].isna()].itertuples():
        report(f"critical_compression: ({row.model}, {row.dataset}) {row.algorithm} collapsed at every ratio tested")
    out_dir.mkdir(parents=True, exist_ok=True)
    table_path = out_dir / "critical_compression.csv"
    critical.to_csv(table_path, index=False)
    datasets, models = tables.panel_grid(results.trials)
    return save(draw_critical_compression(critical, datasets, models), out_dir, "critical_compression") + [table_path]


# -------------------------------------------------------------------- iterative

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
    sides = ((iterative, "iterations", "iterative SNIP vs SynFlow", "no snip or synflow trials"),
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
def iterative_figure(results: Results, out_dir: Path, report: Report) -> List[Path]:
    iterative = tables.iterative_curves(results.trials)
    modes = tables.prune_mode_curves(results.trials)
    existing = sorted(set(zip(iterative["model"], iterative["dataset"])) | set(zip(modes["model"], modes["dataset"])))
    if not existing:
        report("iterative: no trained snip, grasp or synflow trials; figure not drawn")
        return []
    compared = [p for p in existing if _has_variants(iterative, p, "iterations", "snip")
                or _has_variants(modes, p, "prune_mode")]
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
def conservation_figures(results: Results, out_dir: Path, report: Report) -> List[Path]:
    selected, _ = default_settings(results.trials, same_training=False)
    pairs, notes = tables.conservation_pairs(selected, results.layers)
    for note in notes:
        report(f"conservation: {note}")
    written: List[Path] = []
    for (model, dataset), panel in pairs.groupby(tables.PANEL, sort=True):
        written += save(draw_conservation(panel, model, dataset), out_dir, slug("conservation", model, dataset))
    if pairs.empty:
        report("conservation: no matching trials; figure not drawn")
    return written


# ------------------------------------------------------------------------- cost

@styled
def draw_cost(cost: pd.DataFrame) -> Figure:
    """Compute spent (pruning vs training), pruning passes, and seconds per trial, per algorithm variant."""
    fig, axes = grid_figure(1, 3)
    labels = [f"{a} x{i}" for a, i in zip(cost["algorithm"], cost["iterations"])]
    colors = [algorithm_color(a) for a in cost["algorithm"]]
    x = np.arange(len(cost))
    use_gpu = cost["gpu_hours"].sum() > 0
    prune = cost["prune_gpu_hours"] if use_gpu else cost["prune_hours"]
    train = cost["train_gpu_hours"] if use_gpu else cost["train_hours"]
    pruning_style = dict(alpha=0.45, hatch="//", edgecolor="white", linewidth=0)

    ax = axes[0, 0]
    ax.bar(x, train, color=colors, width=0.7)
    ax.bar(x, prune, bottom=train, color=colors, width=0.7, **pruning_style)
    for xi, total in zip(x, train + prune):
        ax.annotate(f"{total:.3g}", (xi, total), xytext=(0, 2), textcoords="offset points", ha="center",
                    va="bottom", fontsize=7)
    ax.set_ylim(0, max((train + prune).max(), 1e-9) * 1.12)
    ax.set_ylabel("GPU-hours, all trials" if use_gpu else "hours, all trials (no GPUs used)")
    ax.set_title("total compute spent")

    ax = axes[0, 1]
    passes = cost["prune_passes"]
    ax.bar(x, passes.where(passes > 0), color=colors, width=0.7)
    ax.set_yscale("log")
    ax.set_ylim(0.5, max(passes.max(), 1) * 3)
    ax.set_xlim(-0.6, len(x) - 0.4)  # bars of 0 are not drawn and would not widen the axis
    for xi, value in zip(x, passes):
        # Magnitude and random score without the network: a log axis cannot draw 0, so say it.
        ax.annotate(f"{value:,.0f}", (xi, max(value, 0.5)), xytext=(0, 2), textcoords="offset points",
                    ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("passes per trial (mean)")
    ax.set_title("pruning: forward/backward passes\n(0: scored without running the network)", fontsize=9)

    ax = axes[0, 2]
    ax.bar(x - 0.2, cost["prune_seconds"].clip(lower=1e-3), color=colors, width=0.4, **pruning_style)
    ax.bar(x + 0.2, cost["train_seconds"].clip(lower=1e-3), color=colors, width=0.4)
    ax.set_yscale("log")
    ax.set_ylabel("seconds per trial (mean)")
    ax.set_title("time per trial")

    for axis in axes.flat:
        axis.set_xticks(x, labels=labels, rotation=30, ha="right")
        axis.grid(axis="x", visible=False)
    fig.legend(handles=[Patch(facecolor="0.4", label="training"),
                        Patch(facecolor="0.4", label="pruning", **pruning_style)],
               loc="outside lower center", ncols=2, frameon=False)
    fig.suptitle("Cost per algorithm (x N = pruning iterations; diverged trials included)", fontsize=10)
    return fig


@FIGURES.register("cost")
def cost_figure(results: Results, out_dir: Path, report: Report) -> List[Path]:
    cost = tables.cost_table(results.trials)
    out_dir.mkdir(parents=True, exist_ok=True)
    table_path = out_dir / "cost.csv"
    cost.to_csv(table_path, index=False)
    return save(draw_cost(cost), out_dir, "cost") + [table_path]


# -------------------------------------------------------------------------- CLI

def parse_only(text: Optional[str]) -> List[str]:
    if not text:
        return FIGURES.names()
    return [FIGURES.check(name.strip()) for name in text.split(",") if name.strip()]


def draw_all(store: str, out_dir: Path, only: Iterable[str], report: Report = print) -> List[Path]:
    results = load_results(store)
    for problem in results.problems:
        report(f"warning: {problem}")
    written: List[Path] = []
    for name in only:
        paths = FIGURES[name](results, out_dir, report)
        written += paths
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.plots", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="results store: a directory or a pyarrow URI")
    parser.add_argument("--out", required=True, type=Path, help="directory for the PNG/PDF figures")
    parser.add_argument("--only", help=f"comma-separated figures (default all): {', '.join(FIGURES.names())}")
    args = parser.parse_args(argv)
    try:
        only = parse_only(args.only)
        written = draw_all(args.store, args.out, only)
    except (StoreError, UnknownNameError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write figures to {args.out}: {exc}", file=sys.stderr)
        return 2
    figures = sorted({p.stem for p in written if p.suffix == ".png"})
    print(f"wrote {len(figures)} figure(s) to {args.out}: {', '.join(figures) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
