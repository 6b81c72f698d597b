"""Do two algorithms keep the same weights? Jaccard overlap |A∩B| / |A∪B| of their kept masks.

Masks are kept by sweeps run with `--keep-masks` (`results_store.masks`). Two
trials are compared when they prune the same network: same (model, dataset,
training recipe, seed, log10 compression). Per layer and over the whole
network (every prunable parameter both masks hold), per seed, then averaged
over the seeds both algorithms have (n). Two independent random masks of
densities a and b overlap a·b / (a + b − a·b) in expectation (d / (2 − d) at
equal density): the `chance` column, what "no agreement" looks like.

The headline view uses the default pruning settings (`analysis.load.default_settings`),
so one variant per algorithm; a variant whose settings differ from the
defaults (iterations, scope, mode, schedule, ablation, levels, scoring examples) is labelled by them.

Numbers are pandas and numpy on packed bits (popcounts), no torch; the figure
imports matplotlib (through `analysis.drawing`) only when it is drawn, since
the summary uses the numbers alone.
"""
from __future__ import annotations

import itertools
import json
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from analysis.load import Results, default_settings
from analysis.shared import training_keys
from analysis.style import algorithm_order, format_ratio
from common.vocabulary import DEFAULT_PRUNE_SETTINGS, default_iterations
from results_store import ResultsStore, masked_trial_ids, read_packed_masks

# The trials whose masks are compared: the same network, pruned to the same ratio.
GROUP = ["model", "dataset", "recipe", "seed", "log10_compression"]
PAIR = ["variant_a", "variant_b"]
SETTING_LABELS = {"prune_mode": "{} mode", "scope": "{} scope", "schedule": "{} schedule", "ablation": "{}"}
NO_MASKS = "mask_overlap: the store keeps no masks; run the sweep with --keep-masks to compare them"


def variant_label(row, usual_examples: Optional[int] = None) -> str:
    """The algorithm and each of its settings that is not the default: 'snip', 'synflow x10 (local scope)';
    scoring examples per class when they differ from `usual_examples`, IMP's levels always."""
    label = str(row["algorithm"])
    iterations = row.get("iterations")
    if _given(iterations) and int(iterations) != default_iterations(label):
        label += f" x{int(iterations)}"
    extra = [SETTING_LABELS[c].format(row[c]) for c, default in DEFAULT_PRUNE_SETTINGS.items()
             if _given(row.get(c)) and row[c] != default]
    if _given(row.get("levels")) and int(row["levels"]) > 0:
        extra.append(f"{int(row['levels'])} levels")
    examples = row.get("examples_per_class")
    if usual_examples is not None and _given(examples) and int(examples) != usual_examples:
        extra.append(f"{int(examples)} examples/class")
    return label + (f" ({', '.join(extra)})" if extra else "")


def _given(value) -> bool:
    return value is not None and not pd.isna(value)


def recipe_label(key: str) -> str:
    """A training recipe at a glance: 'prune only', '15 epochs'."""
    try:
        train = json.loads(key)
    except ValueError:
        return key
    if not isinstance(train, dict):
        return key
    epochs = int(train.get("epochs", 0))
    return "prune only" if epochs == 0 else f"{epochs} epoch{'s' if epochs != 1 else ''}"


@dataclass
class Overlaps:
    """Seed-averaged overlaps of each pair of variants (`network`, `layers`), and what was left out."""

    network: pd.DataFrame  # GROUP less seed, PAIR, jaccard_mean/min/max, n, chance, density_a, density_b
    layers: pd.DataFrame  # ... per layer_index, param, size
    settings: str = ""
    notes: List[str] = field(default_factory=list)
    order: List[str] = field(default_factory=list)  # the variants, by algorithm in the figures' fixed order

    @property
    def empty(self) -> bool:
        return self.network.empty


def compared_trials(results: Results) -> Tuple[pd.DataFrame, str, List[str]]:
    """The default-settings trials whose masks the store keeps, labelled; notes on what lacks a mask."""
    trials = results.trials
    masked = masked_trial_ids(ResultsStore(results.location))
    if trials.empty or not masked:
        return trials.iloc[0:0], "", []
    selected, settings = default_settings(trials, same_training=False)
    notes = []
    lacking = selected.loc[~selected["trial_id"].isin(masked), "trial_id"].nunique()
    if lacking:
        notes.append(f"mask_overlap: {lacking} trial(s) keep no mask (stored by a run without --keep-masks); left "
                     f"out")
    selected = selected[selected["trial_id"].isin(masked)]
    if selected.empty:
        return selected, settings, notes
    usual = (selected.groupby("algorithm")["examples_per_class"].agg(lambda s: int(s.mode().min()))
             if "examples_per_class" in selected else pd.Series(dtype="int64"))
    selected = selected.assign(recipe=training_keys(selected).map(recipe_label),
                               variant=[variant_label(r, usual.get(r["algorithm"])) for _, r in selected.iterrows()])
    return selected, settings, notes


def variant_order(trials: pd.DataFrame) -> List[str]:
    """Variants by algorithm (the figures' fixed order), then by label."""
    rank = {a: i for i, a in enumerate(algorithm_order(trials["algorithm"].unique()))}
    pairs = trials[["algorithm", "variant"]].drop_duplicates()
    return [v for _, v in sorted(zip(pairs["algorithm"].map(rank), pairs["variant"]))]


def seed_overlaps(store: ResultsStore, trials: pd.DataFrame) -> pd.DataFrame:
    """Per seed, pair of variants and layer: sizes, kept counts, |A∩B| and |A∪B| (layer_index -1: the network)."""
    order = {v: i for i, v in enumerate(variant_order(trials))} if not trials.empty else {}
    rows: List[Dict] = []
    for key, group in (trials.groupby(GROUP, sort=True) if not trials.empty else ()):
        group = group.sort_values("trial_id").drop_duplicates("variant")
        if len(group) < 2:
            continue
        masks = {t: {m.param: m for m in read_packed_masks(store, t)} for t in group["trial_id"].unique()}
        members = sorted(zip(group["variant"], group["trial_id"]), key=lambda vt: order[vt[0]])
        for (va, ta), (vb, tb) in itertools.combinations(members, 2):
            a, b = masks[ta], masks[tb]
            total = {"layer_index": -1, "param": "(network)", "size": 0, "kept_a": 0, "kept_b": 0,
                     "intersection": 0, "union": 0}
            for name in [n for n in a if n in b]:
                ma, mb = a[name], b[name]
                if ma.shape != mb.shape:
                    raise ValueError(f"mask_overlap: {name} is {ma.shape} in trial {ta} but {mb.shape} in {tb}")
                both = int(np.bitwise_count(ma.bits & mb.bits).sum())
                layer = {"layer_index": ma.layer_index, "param": name, "size": ma.size, "kept_a": ma.remaining,
                         "kept_b": mb.remaining, "intersection": both,
                         "union": ma.remaining + mb.remaining - both}
                rows.append({**dict(zip(GROUP, key)), "variant_a": va, "variant_b": vb, **layer})
                for column in ("size", "kept_a", "kept_b", "intersection", "union"):
                    total[column] += layer[column]
            rows.append({**dict(zip(GROUP, key)), "variant_a": va, "variant_b": vb, **total})
    columns = [*GROUP, *PAIR, "layer_index", "param", "size", "kept_a", "kept_b", "intersection", "union"]
    frame = pd.DataFrame(rows, columns=columns)
    union = frame["union"].astype(float)
    frame["jaccard"] = (frame["intersection"] / union.where(union > 0)).astype(float)  # both layers empty: undefined
    density_a, density_b = frame["kept_a"] / frame["size"], frame["kept_b"] / frame["size"]
    either = density_a + density_b - density_a * density_b
    frame["chance"] = (density_a * density_b / either.where(either > 0)).astype(float)
    frame["density_a"], frame["density_b"] = density_a, density_b
    return frame


def averaged(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Mean, min and max Jaccard over seeds, with n = the seeds where it is defined."""
    keys = [c for c in GROUP if c != "seed"] + PAIR + ["layer_index", "param", "size"]
    if per_seed.empty:
        return pd.DataFrame(columns=[*keys, "jaccard_mean", "jaccard_min", "jaccard_max", "n", "chance",
                                     "density_a", "density_b"])
    out = per_seed.groupby(keys, sort=True, dropna=False).agg(
        jaccard_mean=("jaccard", "mean"), jaccard_min=("jaccard", "min"), jaccard_max=("jaccard", "max"),
        n=("jaccard", "count"), chance=("chance", "mean"), density_a=("density_a", "mean"),
        density_b=("density_b", "mean")).reset_index()
    out.insert(keys.index("log10_compression") + 1, "compression", 10.0 ** out["log10_compression"])
    return out


def mask_overlaps(results: Results) -> Overlaps:
    """Every default-settings pair's overlap, per layer and for the network, averaged over seeds."""
    trials, settings, notes = compared_trials(results)
    per_seed = seed_overlaps(ResultsStore(results.location), trials)
    table = averaged(per_seed)
    network = table[table["layer_index"] == -1].drop(columns=["layer_index", "param"]).reset_index(drop=True)
    layers = table[table["layer_index"] >= 0].reset_index(drop=True)
    return Overlaps(network, layers, settings, notes, variant_order(trials) if not trials.empty else [])


def pair_label(a: str, b: str) -> str:
    return f"{a} vs {b}"


# ------------------------------------------------------------------ the figure

def draw_overlap_heatmaps(panel: pd.DataFrame, order: Sequence[str], title: str):
    """One heatmap per compression: variant x variant, each cell the mean whole-network Jaccard and its n."""
    from analysis.drawing import PANEL_SIZE, STYLE  # matplotlib: only where a figure is drawn
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context({**STYLE, "axes.grid": False}):
        ratios = sorted(panel["log10_compression"].unique())
        cols = min(len(ratios), 3)
        rows = math.ceil(len(ratios) / cols)
        side = max(PANEL_SIZE[0], 0.75 * len(order) + 1.6)
        fig = Figure(figsize=(side * cols + 1.0, side * rows + 0.9), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        index = {v: i for i, v in enumerate(order)}
        image = None
        for i, ax in enumerate(axes.flat):
            if i >= len(ratios):
                ax.set_visible(False)
                continue
            cells = panel[panel["log10_compression"] == ratios[i]]
            grid = np.full((len(order), len(order)), np.nan)
            text = {}
            for r in cells.itertuples():
                a, b = index[r.variant_a], index[r.variant_b]
                grid[a, b] = grid[b, a] = r.jaccard_mean
                text[(a, b)] = text[(b, a)] = f"{jaccard_text(r.jaccard_mean)}\nn={r.n}"
            image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
            for (a, b), label in text.items():
                ax.text(b, a, label, ha="center", va="center", fontsize=7,
                        color="black" if grid[a, b] > 0.6 else "white")
            for k in range(len(order)):
                ax.text(k, k, "-", ha="center", va="center", fontsize=8, color="0.5")
            ax.set_xticks(range(len(order)), labels=order, rotation=45, ha="right")
            ax.set_yticks(range(len(order)), labels=order)
            ax.set_title(f"{format_ratio(10 ** ratios[i])} (two random masks: {jaccard_text(cells['chance'].mean())})")
        if image is not None:
            bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
            bar.set_label("Jaccard |A∩B| / |A∪B| of kept weights (mean over seeds)")
        fig.suptitle("\n".join(textwrap.wrap(title, int(fig.get_figwidth() * 13))), fontsize=10)
    return fig


def jaccard_text(value: float) -> str:
    """Two decimals, more where they would hide a difference: '1' only when exactly 1, '0.0043' near 0."""
    if value == 1.0:
        return "1"
    if value < 0.1:
        return f"{value:.2g}"
    text = f"{value:.2f}"
    return f"{value:.4f}" if text == "1.00" else text


def mask_overlap_figure(results: Results, out_dir: Path, report, options=None) -> List[Path]:
    """Heatmaps of whole-network mask overlap per (model, dataset[, recipe]), one panel per compression above
    1x, and `mask_overlap.csv` (every pair, ratio and layer). Skipped, with one line, when no masks are kept."""
    from analysis.drawing import render, slug

    overlaps = mask_overlaps(results)
    for note in overlaps.notes:
        report(note)
    if overlaps.empty:
        report(NO_MASKS if not masked_trial_ids(ResultsStore(results.location)) else
               "mask_overlap: no two algorithms kept masks of the same network, ratio and seed; figure not drawn")
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    table_path = out_dir / "mask_overlap.csv"
    pd.concat([overlaps.network.assign(layer_index=-1, param="(network)"), overlaps.layers],
              ignore_index=True).to_csv(table_path, index=False)
    written = [table_path]
    network = overlaps.network
    for (model, dataset, recipe), panel in network.groupby(["model", "dataset", "recipe"], sort=True):
        pruned = panel[panel["log10_compression"] > 0]
        if pruned.empty:
            report(f"mask_overlap: ({model}, {dataset}) has overlaps at 1x only (every mask keeps every weight); "
                   f"not drawn")
            continue
        several = network[(network["model"] == model) & (network["dataset"] == dataset)]["recipe"].nunique() > 1
        shown = set(pruned["variant_a"]) | set(pruned["variant_b"])
        order = [v for v in overlaps.order if v in shown]
        title = (f"{model} / {dataset}{f' ({recipe})' if several else ''}: overlap of the kept weights over the "
                 f"whole network, mean over n seeds (1x left out: every mask keeps every weight). "
                 f"Default settings: {overlaps.settings}")
        name = slug("mask_overlap", model, dataset, *([recipe] if several else []))
        written += render(draw_overlap_heatmaps, (pruned, order, title), out_dir, name)
    return written


def summary_rows(overlaps: Overlaps) -> Dict[Tuple[str, str, str], pd.DataFrame]:
    """{(model, dataset, recipe): rows of (pair, log10_compression, jaccard_mean, n)} for the summary's tables."""
    rank = {v: i for i, v in enumerate(overlaps.order)}
    network = overlaps.network.assign(pair=[pair_label(a, b) for a, b in zip(overlaps.network["variant_a"],
                                                                              overlaps.network["variant_b"])],
                                      _a=overlaps.network["variant_a"].map(rank),
                                      _b=overlaps.network["variant_b"].map(rank))
    network = network.sort_values(["_a", "_b", "log10_compression"]).drop(columns=["_a", "_b"])
    return {key: frame for key, frame in network.groupby(["model", "dataset", "recipe"], sort=True)}

