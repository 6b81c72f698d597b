"""Seed-paired comparisons with honest small-sample statistics: algorithm vs a reference, ablation vs `none`.

Every arm at one (model, dataset, compression, seed) pruned the same initial
weights, so the seed-by-seed difference of top-1 cancels the initialisation's
share of the spread. The rules a reader can rely on (each tested on
hand-computed data in tests/test_analysis_stats.py):

- every comparison carries its number of pairs, n;
- below `stats.MIN_SEEDS_FOR_INTERVAL` pairs there is no interval and no test;
- a difference that is the same in every pair has no spread to test: it is
  reported as identical, never as significant;
- each table is one family: its tested comparisons are corrected together with
  Holm-Bonferroni, and each interval is the t-interval at the level Holm held
  that comparison to, so a comparison is marked exactly when its interval
  excludes zero;
- a difference of accuracies lies in [-100, 100] percentage points, and so do
  the bounds printed for it.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from analysis import stats
from analysis.load import ablation_of
from analysis.style import algorithm_order
from analysis.tables import ablation_order
from common.vocabulary import DEFAULT_ABLATION

PANEL = ["model", "dataset"]
COLUMNS = ["pairs", "diff_mean", "diff_std", "identical", "p_value", "holm_p", "alpha", "diff_ci_low",
           "diff_ci_high", "significant", "arm_mean", "reference_mean", "family_size"]


def paired_comparisons(trials: pd.DataFrame, arm: str, reference: str, family: Sequence[str] = ()) -> pd.DataFrame:
    """Top-1 (%) of each value of column `arm` minus the `reference` value's, paired by seed.

    One row per (model, dataset, *family, arm, compression). A seed counts
    where both sides have a trained trial (several trials of one cell count as
    their mean). Holm's correction runs over each (model, dataset, *family)
    group: one printed table.
    """
    keys = [*PANEL, *family]
    columns = [*keys, arm, "reference", "log10_compression", "compression", *COLUMNS]
    done = trials[(trials["status"] == "completed") & trials["final_top1"].notna()]
    done = done.assign(top1=done["final_top1"] * 100.0, ablation=ablation_of(done))
    if done.empty or reference not in set(done[arm]):
        return pd.DataFrame(columns=columns)
    cells = [*keys, "log10_compression", "seed"]
    wide = done.groupby([*cells, arm], sort=True)["top1"].mean().unstack(arm)
    rows = []
    for value in [v for v in wide.columns if v != reference]:
        both = wide[[value, reference]].dropna()
        for key, pair in both.groupby(level=list(range(len(cells) - 1)), sort=True):
            difference = (pair[value] - pair[reference]).round(9) + 0.0  # equal accuracies give 0, not 1e-14
            n = len(difference)
            mean = float(difference.mean())
            std = float(difference.std(ddof=1)) if n > 1 else math.nan
            rows.append({**dict(zip([*keys, "log10_compression"], key)), arm: value, "reference": reference,
                         "pairs": n, "diff_mean": mean, "diff_std": std,
                         "identical": bool(n > 1 and difference.nunique() == 1),
                         "p_value": stats.paired_t_p_value(mean, std, n),
                         "arm_mean": float(pair[value].mean()), "reference_mean": float(pair[reference].mean())})
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows)
    frame["compression"] = 10.0 ** frame["log10_compression"]
    corrected = []
    for _, group in frame.groupby(keys, sort=True):
        adjusted, rejected, levels = stats.holm(group["p_value"].to_numpy())
        bounds = [stats.interval_at(m, s, n, a)
                  for m, s, n, a in zip(group["diff_mean"], group["diff_std"], group["pairs"], levels)]
        corrected.append(group.assign(
            holm_p=adjusted, alpha=levels, significant=rejected, family_size=int(np.sum(~np.isnan(levels))),
            diff_ci_low=[max(low, -100.0) for low, _ in bounds], diff_ci_high=[min(high, 100.0) for _, high in bounds]))
    frame = pd.concat(corrected, ignore_index=True)
    return _ordered(frame[columns], keys, arm)


def algorithm_differences(trials: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Each algorithm minus `reference`, per (model, dataset); one Holm family per panel.
    `trials` is used as given: restrict it (e.g. `default_settings`) first."""
    return paired_comparisons(trials, "algorithm", reference)


def ablation_differences(trials: pd.DataFrame) -> pd.DataFrame:
    """Each sanity-check ablation minus the method's own mask (`none`), per (model, dataset, algorithm).

    One Holm family per (model, dataset, algorithm): the sanity checks of one
    method. An algorithm whose accuracy survives shuffle or reinit (no
    significant drop) is not using its per-weight scores (Frankle et al.,
    ICLR 2021). `trials` should hold each algorithm's default settings with
    every ablation (as `tables.ablation_curves` chooses them).
    """
    return paired_comparisons(trials.assign(ablation=ablation_of(trials)), "ablation", DEFAULT_ABLATION,
                              family=("algorithm",))


def _ordered(frame: pd.DataFrame, keys: Sequence[str], arm: str) -> pd.DataFrame:
    order = algorithm_order if arm == "algorithm" else ablation_order
    rank = {a: i for i, a in enumerate(order(frame[arm].unique()))}
    algorithms = {a: i for i, a in enumerate(algorithm_order(frame["algorithm"].unique()))} \
        if "algorithm" in keys else {}
    frame = frame.assign(_rank=frame[arm].map(rank),
                         _algorithm=frame["algorithm"].map(algorithms) if algorithms else 0)
    sort = [*PANEL, *(["_algorithm"] if algorithms else []), "_rank", "log10_compression"]
    return frame.sort_values(sort, kind="stable").drop(columns=["_rank", "_algorithm"]).reset_index(drop=True)
