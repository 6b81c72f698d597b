"""Shared drawing pieces of the figures: the figure registry, the house style, saving, axes, legends, bands.

Drawing uses matplotlib's object-oriented `Figure` (Agg canvas, no pyplot
state), so it works headless and inside other programs.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogLocator

from analysis.load import Results
from analysis.style import algorithm_color
from common.registry import Registry

Report = Callable[[str], None]
# What the accuracy band spans: the columns of `tables.accuracy_curves` it is drawn between, and its caption.
BANDS = {"range": ("top1_min", "top1_max", "band = min-max over seeds"),
         "ci": ("top1_ci_low", "top1_ci_high", "band = 95% t-interval of the mean (none below 3 seeds)")}


@dataclass(frozen=True)
class FigureOptions:
    """Choices from the command line that some figures follow (the others ignore them)."""
    band: str = "range"
    ratios: Tuple[float, ...] = ()  # log10 compressions of the learning curves (default: chosen from the store)

    def __post_init__(self) -> None:
        if self.band not in BANDS:
            raise ValueError(f"unknown band {self.band!r}; valid bands: {', '.join(BANDS)}")
        object.__setattr__(self, "ratios", tuple(self.ratios))


# (results, out_dir, report, options) -> the paths written; `options` has a default, FigureOptions().
FigureMaker = Callable[[Results, Path, Report, FigureOptions], List[Path]]
FIGURES: Registry[FigureMaker] = Registry("figure")

PANEL_SIZE = (4.3, 3.4)
CHANCE_COLOR = "#888888"
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

PNG_DPI = 150


def save(fig: Figure, out_dir: Path, name: str) -> List[Path]:
    """Write `name`.png and `name`.pdf; returns both paths.

    The constrained layout is worked out once, at the PNG's resolution, and both files are drawn with it: each
    savefig would otherwise lay the figure out again and draw it once more, unseen, to measure it (a sixth of
    a figure's time, measured). The PNG comes out byte for byte as when savefig laid it out itself.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    with matplotlib.rc_context(STYLE):  # pdf.fonttype is read when saving
        engine, dpi = fig.get_layout_engine(), fig.get_dpi()
        if engine is not None:
            fig.set_dpi(PNG_DPI)
            engine.execute(fig)
            fig.set_layout_engine("none")
            fig.set_dpi(dpi)
        try:
            fig.savefig(paths[0], dpi=PNG_DPI)
            fig.savefig(paths[1])
        finally:
            if engine is not None:
                fig.set_layout_engine(engine)
    return paths


# ------------------------------------------------------------------ rendering

# The futures of the figures being drawn by other processes, inside `rendering(jobs > 1)`; None: draw here.
_PENDING: contextvars.ContextVar[Optional[List[Future]]] = contextvars.ContextVar("pending_figures", default=None)
_POOL: contextvars.ContextVar[Optional[ProcessPoolExecutor]] = contextvars.ContextVar("figure_pool", default=None)


def render(draw: Callable[..., Figure], args: tuple, out_dir: Path, name: str) -> List[Path]:
    """`save(draw(*args), out_dir, name)`: here, or inside `rendering` in a worker process, the paths returned
    at once. `draw` is a module-level function and `args` the figure's own small tables, so they travel cheaply."""
    pending, pool = _PENDING.get(), _POOL.get()
    if pending is None or pool is None:
        return save(draw(*args), out_dir, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    pending.append(pool.submit(_draw_and_save, draw, args, out_dir, name))
    return [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]


def _draw_and_save(draw: Callable[..., Figure], args: tuple, out_dir: Path, name: str) -> List[Path]:
    return save(draw(*args), out_dir, name)


@contextlib.contextmanager
def rendering(jobs: int) -> Iterator[None]:
    """Within, `render` hands each figure to one of `jobs` worker processes while the caller goes on to the next
    figure's numbers (drawing, not the numbers, is where a large store's time goes); leaving waits for every
    file and raises the first error a worker met. With `jobs` <= 1 every figure is drawn here."""
    if jobs <= 1:
        yield
        return
    # forkserver: workers forked from a fresh process, not from this one (its Arrow threads do not survive a fork)
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(["analysis.drawing"])  # matplotlib and pandas, imported once
    pending: List[Future] = []
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context)
    tokens = (_PENDING.set(pending), _POOL.set(pool))
    try:
        yield
        for future in pending:
            future.result()
    finally:
        _PENDING.reset(tokens[0])
        _POOL.reset(tokens[1])
        pool.shutdown(wait=True, cancel_futures=True)


def slug(*parts: str) -> str:
    return "_".join(str(p).replace("/", "-").replace(" ", "-") for p in parts)


MIN_FIGURE_WIDTH = 8.0  # inches: a one-panel figure still has room for its title and legend


def figure_width(cols: int) -> float:
    return max(PANEL_SIZE[0] * cols, MIN_FIGURE_WIDTH)


def grid_figure(rows: int, cols: int, sharex: bool = False) -> Tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(figure_width(cols), PANEL_SIZE[1] * rows + 0.9), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=sharex)
    return fig, axes


MAX_PANEL_COLUMNS = 3  # a flowing layout wraps after this many panels


@dataclass(frozen=True)
class PanelLayout:
    """Where each drawn (model, dataset) pair sits: dataset rows x model columns when the pairs fill that grid,
    otherwise the pairs in reading order, wrapped; no cell is ever left as an empty panel."""
    rows: int
    cols: int
    cells: Tuple[Tuple[Tuple[str, str], Tuple[int, int]], ...]  # ((model, dataset), (row, col))

    @staticmethod
    def of(pairs: Sequence[Tuple[str, str]]) -> "PanelLayout":
        pairs = sorted(set(pairs), key=lambda pair: (pair[1], pair[0]))
        datasets = sorted({d for _, d in pairs})
        models = sorted({m for m, _ in pairs})
        if len(pairs) == len(datasets) * len(models) and len(models) <= MAX_PANEL_COLUMNS + 1:
            return PanelLayout(len(datasets), len(models),
                               tuple(((m, d), (datasets.index(d), models.index(m))) for m, d in pairs))
        cols = min(len(pairs), MAX_PANEL_COLUMNS)
        return PanelLayout(max(1, math.ceil(len(pairs) / cols)), max(cols, 1),
                           tuple((pair, divmod(i, cols)) for i, pair in enumerate(pairs)))

    def hide_unused(self, axes: np.ndarray) -> None:
        used = {cell for _, cell in self.cells}
        for r in range(axes.shape[0]):
            for c in range(axes.shape[1]):
                if (r, c) not in used:
                    axes[r, c].set_visible(False)


def filled_panels(axes: np.ndarray, table: pd.DataFrame,
                  layout: PanelLayout) -> Iterator[Tuple[object, pd.DataFrame]]:
    """Each laid-out (model, dataset) axis, titled, with its rows of `table`; cells outside the layout are hidden."""
    layout.hide_unused(axes)
    for (model, dataset), (r, c) in layout.cells:
        ax = axes[r, c]
        ax.set_title(f"{model} / {dataset}")
        yield ax, table[(table["model"] == model) & (table["dataset"] == dataset)]


def chance_classes(trials: pd.DataFrame) -> pd.DataFrame:
    """What `chance_line` reads of the trials, each (model, dataset, classes) once: all a figure drawn in another
    process needs of them."""
    return trials[[c for c in ("model", "dataset", "num_classes") if c in trials]].drop_duplicates()


def chance_line(ax, trials: pd.DataFrame, model: str, dataset: str) -> bool:
    """A dotted line at chance top-1 (100 / classes) when the store records the class count; whether it drew."""
    if "num_classes" not in trials:
        return False
    classes = trials.loc[(trials["model"] == model) & (trials["dataset"] == dataset), "num_classes"].dropna()
    if classes.empty:
        return False
    ax.axhline(100.0 / float(classes.iloc[0]), color=CHANCE_COLOR, linestyle=":", linewidth=1, zorder=1)
    return True


def chance_handle() -> Line2D:
    return Line2D([], [], color=CHANCE_COLOR, linestyle=":", linewidth=1, label="chance (100 / classes)")


def log_compression_axis(ax) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, numticks=12))


def algorithm_legend(fig: Figure, algorithms: Sequence[str], extra: Sequence = ()) -> None:
    handles = [Line2D([], [], color=algorithm_color(a), marker="o", markersize=4, label=a) for a in algorithms]
    handles.extend(extra)
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8), frameon=False)


def band_plot(ax, rows: pd.DataFrame, color: str, label: Optional[str], linestyle: str = "-",
              marker: str = "o", band_alpha: float = 0.18, band: str = "range") -> None:
    """Mean top-1 against compression with a band between the columns `BANDS[band]` names.

    The band is clipped to [0, 100], an accuracy's range (the tables clip the interval too).
    """
    rows = rows.sort_values("compression")
    low, high, _ = BANDS[band]
    ax.fill_between(rows["compression"], rows[low].clip(0, 100), rows[high].clip(0, 100), color=color,
                    alpha=band_alpha, linewidth=0)
    ax.plot(rows["compression"], rows["top1_mean"], color=color, linestyle=linestyle, marker=marker,
            markersize=3, linewidth=1.4, label=label)


# -------------------------------------------------------------------- accuracy

