"""The data behind each figure and table: pure pandas, no drawing.

Every function takes store frames (as read by `analysis.load`) and returns a
DataFrame whose rows are exactly what gets drawn or printed, so tests check
numbers, not pixels. Accuracies come out in percent; the store keeps fractions.
"""
from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

import numpy as np
import pandas as pd

from analysis import stats
from analysis.load import (ablation_of, default_settings, most_common_iterations, restrict_to_common_training,
                           with_default_prune_settings)
from analysis.style import algorithm_order
from common.vocabulary import (ABLATIONS, DEFAULT_ABLATION, DEFAULT_SCOPE, DENSE_ABLATION, DENSE_ALGORITHM,
                               WEIGHT_KINDS)

PANEL = ["model", "dataset"]
ACCURACY_COLUMNS = ["top1_mean", "top1_min", "top1_max", "top1_std", "top1_ci", "top1_ci_low", "top1_ci_high",
                    "trials"]


def trained(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials whose accuracy means something: completed, with a final top-1."""
    return trials[(trials["status"] == "completed") & trials["final_top1"].notna()]


def panels(frame: pd.DataFrame) -> List[Tuple[str, str]]:
    """The (model, dataset) pairs that have rows in `frame`, by dataset then model: what a figure draws."""
    if frame.empty:
        return []
    return sorted(set(zip(frame["model"], frame["dataset"])), key=lambda pair: (pair[1], pair[0]))


def missing_panels(all_trials: pd.DataFrame, drawn: pd.DataFrame) -> List[Tuple[str, str]]:
    """Pairs (model, dataset) of the selected trials with no row in `drawn`: each is reported, never drawn empty."""
    have = set(panels(drawn))
    return [pair for pair in panels(all_trials) if pair not in have]


def accuracy_curves(trials: pd.DataFrame, by: Sequence[str] = ("algorithm",)) -> pd.DataFrame:
    """Top-1 (%) per (model, dataset, *by, compression): mean, min, max, std and 95% interval over seeds.

    `top1_ci` is the half-width of the 95% Student-t interval of the mean
    (t(0.975, n - 1) * std / sqrt(n)); `top1_ci_low`/`top1_ci_high` are
    mean -/+ that, clipped to [0, 100] (an accuracy's range), and NaN below
    `stats.MIN_SEEDS_FOR_INTERVAL` seeds. Only trained trials count; `trials`
    is used as given, so restrict it (e.g. `default_settings`) before calling.
    """
    keys = [*PANEL, *by, "log10_compression"]
    done = trained(trials)
    done = done.assign(top1=done["final_top1"] * 100.0, **({"ablation": ablation_of(done)} if "ablation" in by else {}))
    if done.empty:
        return pd.DataFrame(columns=[*keys, "compression", *ACCURACY_COLUMNS])
    curves = done.groupby(keys, sort=True)["top1"].agg(
        top1_mean="mean", top1_min="min", top1_max="max", top1_std="std", trials="size").reset_index()
    curves.insert(len(keys), "compression", 10.0 ** curves["log10_compression"])
    half = stats.half_widths(curves["top1_std"], curves["trials"])
    curves = curves.assign(top1_ci=half, top1_ci_low=(curves["top1_mean"] - half).clip(lower=0.0),
                           top1_ci_high=(curves["top1_mean"] + half).clip(upper=100.0))
    return curves[[*keys, "compression", *ACCURACY_COLUMNS]]


def dense_reference(trials: pd.DataFrame) -> pd.DataFrame:
    """Mean top-1 (%) of the unpruned (compression 1) trained trials per (model, dataset)."""
    dense = trained(trials)
    dense = dense[dense["log10_compression"] == 0]
    if dense.empty:
        return pd.DataFrame(columns=[*PANEL, "top1_mean", "trials"])
    return dense.groupby(PANEL, sort=True)["final_top1"].agg(
        top1_mean=lambda s: s.mean() * 100.0, trials="size").reset_index()


def coverage_gaps(curves: pd.DataFrame, line: str = "algorithm") -> List[str]:
    """Per panel, the compressions some line lacks that another line of the panel has."""
    notes = []
    for (model, dataset), panel in curves.groupby(PANEL, sort=True):
        tested = set(panel["log10_compression"])
        for name, rows in panel.groupby(line, sort=True):
            absent = sorted(tested - set(rows["log10_compression"]))
            if absent:
                ratios = ", ".join(f"10^{x:g}" for x in absent)
                notes.append(f"({model}, {dataset}): {name} has no trained trials at {ratios}")
    return notes


def layer_density_profiles(trials: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """Mean fraction of weights remaining per conv/linear layer, per (model, dataset, algorithm, compression).

    `position` numbers the conv/linear layers 0, 1, ... in forward order
    (the store's `layer_index` also counts opt-in bias/batch-norm entries).
    `zero_seeds` counts trials in which the layer kept nothing.
    """
    keys = [*PANEL, "algorithm", "log10_compression", "position"]
    columns = [*keys, "layer", "size", "density_mean", "density_min", "density_max", "zero_seeds", "trials"]
    weights = layers[layers["kind"].isin(WEIGHT_KINDS)]
    merged = weights.merge(trials[["trial_id", *PANEL, "algorithm", "log10_compression", "seed"]], on="trial_id")
    if merged.empty:
        return pd.DataFrame(columns=columns)
    merged = merged.assign(
        position=merged.groupby("trial_id")["layer_index"].rank(method="dense").astype(int) - 1,
        is_zero=merged["remaining"] == 0,
    )
    profiles = merged.groupby(keys, sort=True).agg(
        layer=("layer", "first"), size=("size", "first"), density_mean=("density", "mean"),
        density_min=("density", "min"), density_max=("density", "max"), zero_seeds=("is_zero", "sum"), trials=("density", "size"),
    ).reset_index()
    return profiles[columns]


def critical_compression(trials: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, algorithm): the largest tested compression at which no trial collapsed.

    Definition: among the compressions tested for the group, the largest rho
    such that every trial (every seed) at rho kept at least one weight in every
    prunable layer. Training status does not matter: collapse is decided at
    pruning. `first_collapse` is the smallest tested rho with any collapsed
    trial; it can lie below `critical` if collapse is not monotone in rho.
    `censored` is True when nothing collapsed even at the largest tested rho,
    so the true critical compression is at least `critical`. `theoretical_max`
    is prunable_params / prunable_layers: the ratio that leaves one weight per
    layer on average, beyond which some layer must be empty.
    """
    columns = [*PANEL, "algorithm", "critical", "log10_critical", "first_collapse", "max_tested", "censored",
               "theoretical_max", "compressions", "trials"]
    if trials.empty:
        return pd.DataFrame(columns=columns)
    per_ratio = trials.groupby([*PANEL, "algorithm", "log10_compression"], sort=True).agg(
        intact=("collapsed", lambda s: not s.any()), trials=("collapsed", "size")).reset_index()
    rows = []
    for (model, dataset, algorithm), group in per_ratio.groupby([*PANEL, "algorithm"], sort=True):
        intact = group.loc[group["intact"], "log10_compression"]
        broken = group.loc[~group["intact"], "log10_compression"]
        panel = trials[(trials["model"] == model) & (trials["dataset"] == dataset)]
        theoretical = (panel["prunable_params"] / panel["prunable_layers"]).median()
        log10_critical = intact.max() if not intact.empty else np.nan
        rows.append(dict(
            model=model, dataset=dataset, algorithm=algorithm,
            critical=10.0 ** log10_critical, log10_critical=log10_critical,
            first_collapse=10.0 ** broken.min() if not broken.empty else np.nan,
            max_tested=10.0 ** group["log10_compression"].max(),
            censored=bool(broken.empty),
            theoretical_max=float(theoretical),
            compressions=len(group), trials=int(group["trials"].sum()),
        ))
    return _order_algorithms(pd.DataFrame(rows, columns=columns), also=PANEL)


def variant_trials(trials: pd.DataFrame, algorithms: Iterable[str], by: str) -> pd.DataFrame:
    """The trials of `algorithms` at the default settings in all but the column `by`: eval mode, global scope,
    exponential schedule, no ablation and the most common iteration count (whichever of these `by` is not),
    trained trials at their panel's most common number of epochs."""
    chosen = with_default_prune_settings(trials[trials["algorithm"].isin(list(algorithms))], except_for=by)
    if by != "iterations":
        iterations = most_common_iterations(chosen)
        chosen = chosen[chosen["iterations"] == chosen["algorithm"].map(iterations)]
    return restrict_to_common_training(chosen)


def variant_curves(trials: pd.DataFrame, algorithms: Iterable[str], by: str) -> pd.DataFrame:
    """Accuracy curves of `algorithms` split by one setting (`iterations` or `prune_mode`), others at default.

    The other pruning settings are held at the defaults of `default_settings`
    (eval mode, global scope, exponential schedule, the most common iteration
    count) except the one compared.
    """
    curves = accuracy_curves(variant_trials(trials, algorithms, by), by=("algorithm", by))
    curves.insert(len(PANEL) + 2, "variant",
                  [f"{a} x{v}" if by == "iterations" else f"{a} ({v})"
                   for a, v in zip(curves["algorithm"], curves[by])])
    return curves


def iterative_curves(trials: pd.DataFrame) -> pd.DataFrame:
    """Iterative SNIP and FORCE (every iteration count present) next to SynFlow at its usual iteration count."""
    snip = variant_curves(trials, ["snip", "force"], "iterations")
    synflow_default, _ = default_settings(trials[trials["algorithm"] == "synflow"])
    synflow = variant_curves(synflow_default, ["synflow"], "iterations")
    return pd.concat([c for c in (snip, synflow) if not c.empty] or [snip], ignore_index=True)


def budget_curves(trials: pd.DataFrame) -> pd.DataFrame:
    """Each algorithm run under several layer budgets (global, local, erk, er), one curve per budget: ERK-random
    beside random, for example. Other settings at their defaults."""
    if "scope" not in trials or trials.empty:
        return variant_curves(trials.iloc[:0], [], "scope")
    chosen = with_default_prune_settings(trials, except_for="scope")
    scopes = chosen.assign(scope=chosen["scope"].fillna(DEFAULT_SCOPE)).groupby("algorithm")["scope"].nunique()
    return variant_curves(trials.assign(scope=trials["scope"].fillna(DEFAULT_SCOPE)),
                          sorted(scopes[scopes > 1].index), "scope")


def prune_mode_curves(trials: pd.DataFrame) -> pd.DataFrame:
    """SNIP and GraSP scored with batch-norm in eval mode vs train mode."""
    return variant_curves(trials, ["snip", "grasp"], "prune_mode")


def conservation_pairs(trials: pd.DataFrame, layers: pd.DataFrame) -> Tuple[pd.DataFrame, List[str]]:
    """Per-layer score sums of a synflow trial and the other algorithms' trials at the same
    (model, dataset, compression, seed), and notes on the panels where no such match exists.

    The match with the most other algorithms wins, then the smallest
    compression, then the smallest seed. Only trials scored by their own
    algorithm count: a 1x point drawn from the shared dense trial carries the
    dense trial's (magnitude) scores, which would show every algorithm
    scoring alike.
    """
    columns = [*PANEL, "algorithm", "log10_compression", "seed", "trial_id", "position", "layer", "size",
               "score_sum", "abs_score", "score_per_weight"]
    scored = layers[layers["kind"].isin(WEIGHT_KINDS) & layers["score_sum"].notna()]
    own = trials["algorithm"] != DENSE_ALGORITHM
    if "shared_dense" in trials:
        own &= ~trials["shared_dense"].fillna(False).astype(bool)
    candidates = trials[own & trials["trial_id"].isin(set(scored["trial_id"]))]
    cell = [*PANEL, "log10_compression", "seed"]
    is_synflow = candidates["algorithm"] == "synflow"
    # Per (panel, compression, seed) that has a synflow trial: how many other algorithms scored there.
    others = candidates[~is_synflow].groupby(cell, sort=False)["algorithm"].nunique().rename("_others")
    matches = candidates.loc[is_synflow, cell].drop_duplicates().join(others, on=cell)
    matches = matches[matches["_others"] > 0].sort_values([*PANEL, "_others", "log10_compression", "seed"],
                                                          ascending=[True, True, False, True, True])
    best = matches.drop_duplicates(PANEL).set_index(PANEL)
    with_synflow = set(zip(candidates.loc[is_synflow, "model"], candidates.loc[is_synflow, "dataset"]))
    picked, notes = [], []
    for model, dataset in sorted(set(zip(candidates["model"], candidates["dataset"]))):
        if (model, dataset) not in with_synflow:
            notes.append(f"({model}, {dataset}): no synflow trial with layer scores")
        elif (model, dataset) not in best.index:
            notes.append(f"({model}, {dataset}): no other algorithm scored at a synflow trial's compression and seed")
        else:
            picked.append(best.loc[[(model, dataset)], ["log10_compression", "seed"]].reset_index())
    if not picked:
        return pd.DataFrame(columns=columns), notes
    same = candidates.merge(pd.concat(picked), on=cell)
    chosen = same.sort_values("trial_id", kind="stable").drop_duplicates([*PANEL, "algorithm"])
    merged = scored.merge(chosen[["trial_id", *PANEL, "algorithm", "log10_compression", "seed"]], on="trial_id")
    merged = merged.assign(
        position=merged.groupby("trial_id")["layer_index"].rank(method="dense").astype(int) - 1,
        abs_score=merged["score_sum"].abs(),
        score_per_weight=merged["score_sum"].abs() / merged["size"],
    )
    merged = _order_algorithms(merged.sort_values([*PANEL, "position"]), also=[*PANEL])
    return merged[columns].reset_index(drop=True), notes


def cost_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Cost per trial per (model, dataset, algorithm, iterations), the method's own trials apart from its ablations.

    Sums over trials would make an algorithm look dear only because more of
    its trials ran (ablations, extra seeds), so the comparable numbers are per
    trial: the median and the min-max of pruning, training and total seconds,
    and the median pruning passes. `gpu_hours` ((prune + train seconds) x GPUs
    / 3600) and `hours` (the same without the GPU share: all a CPU run shows)
    are totals, the bill of what ran. Diverged trials count: their time was spent.
    """
    keys = [*PANEL, "algorithm", "iterations", "ablations"]
    columns = [*keys, "trials", "prune_passes", "prune_seconds", "prune_seconds_min", "prune_seconds_max",
               "train_seconds", "train_seconds_min", "train_seconds_max", "seconds", "seconds_min", "seconds_max",
               "gpu_hours", "hours"]
    if trials.empty:
        return pd.DataFrame(columns=columns)
    trials = once_per_trial(trials)
    seconds = trials["prune_seconds"] + trials["train_seconds"]
    frame = trials.assign(ablations=ablation_of(trials) != DEFAULT_ABLATION, seconds=seconds,
                          gpu_hours=seconds * trials["gpus"] / 3600.0, hours=seconds / 3600.0)
    cost = frame.groupby(keys, sort=True).agg(
        trials=("trial_id", "size"), prune_passes=("prune_passes", "median"),
        prune_seconds=("prune_seconds", "median"), prune_seconds_min=("prune_seconds", "min"),
        prune_seconds_max=("prune_seconds", "max"), train_seconds=("train_seconds", "median"),
        train_seconds_min=("train_seconds", "min"), train_seconds_max=("train_seconds", "max"),
        seconds=("seconds", "median"), seconds_min=("seconds", "min"), seconds_max=("seconds", "max"),
        gpu_hours=("gpu_hours", "sum"), hours=("hours", "sum"),
    ).reset_index()
    return _order_algorithms(cost[columns], also=PANEL)


def once_per_trial(trials: pd.DataFrame) -> pd.DataFrame:
    """Each trial once: a shared dense trial, which stands as every algorithm's 1x row, is billed as itself."""
    if "shared_dense" not in trials or not trials["shared_dense"].any():
        return trials
    shared = trials[trials["shared_dense"].astype(bool)].drop_duplicates("trial_id")
    shared = shared.assign(algorithm=DENSE_ALGORITHM, iterations=1,
                           ablation=ablation_of(shared).map(lambda a: DENSE_ABLATION.get(a, a)))
    return pd.concat([trials[~trials["shared_dense"].astype(bool)], shared], ignore_index=True)


def learning_curves(trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, algorithm, compression, epoch): top-1 (%) and train loss, mean and min-max over seeds.

    Only trained trials (completed or diverged: a diverging curve is worth
    seeing); `trials` is used as given, so restrict it (`default_settings`) first.
    """
    keys = [*PANEL, "algorithm", "log10_compression", "epoch"]
    columns = [*keys, "compression", "top1_mean", "top1_min", "top1_max", "train_loss_mean", "train_loss_min",
               "train_loss_max", "trials"]
    runs = trials.loc[trials["epochs"] > 0, ["trial_id", *keys[:-1]]]
    # Millions of epoch rows: joined to their runs by integer codes, the runs' names attached per curve after.
    # (A shared dense trial is a run of several algorithms: its epochs join each of them.)
    ids = pd.Index(runs["trial_id"].unique())
    codes = ids.get_indexer(epochs["trial_id"])
    kept = codes >= 0
    rows = pd.DataFrame({"_trial": codes[kept], "epoch": epochs["epoch"].to_numpy()[kept],
                         "top1": epochs["top1"].to_numpy()[kept] * 100.0,
                         "train_loss": epochs["train_loss"].to_numpy()[kept]})
    curve = runs.groupby(keys[:-1], sort=True).ngroup()  # -1: a null key, which groupby leaves out
    runs_of = pd.DataFrame({"_trial": ids.get_indexer(runs["trial_id"]), "_curve": curve.to_numpy()})
    merged = rows.merge(runs_of[runs_of["_curve"] >= 0], on="_trial")
    if merged.empty:
        return pd.DataFrame(columns=columns)
    curves = merged.groupby(["_curve", "epoch"], sort=True).agg(
        top1_mean=("top1", "mean"), top1_min=("top1", "min"), top1_max=("top1", "max"),
        train_loss_mean=("train_loss", "mean"), train_loss_min=("train_loss", "min"),
        train_loss_max=("train_loss", "max"), trials=("_trial", "nunique"),
    ).reset_index()
    names = runs[keys[:-1]].assign(_curve=curve).drop_duplicates("_curve").set_index("_curve")
    curves = names.loc[curves["_curve"]].reset_index(drop=True).join(curves.drop(columns="_curve"))
    curves.insert(len(keys), "compression", 10.0 ** curves["log10_compression"])
    return _order_algorithms(curves[columns], also=PANEL)


def ablation_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """On the panels holding any ablation: every algorithm's trials at its default settings, under every ablation."""
    trials = trials.assign(ablation=ablation_of(trials))
    ablated = trials[trials["ablation"] != DEFAULT_ABLATION]
    panels_ = set(zip(ablated["model"], ablated["dataset"]))
    chosen = trials[[(m, d) in panels_ for m, d in zip(trials["model"], trials["dataset"])]]
    return variant_trials(chosen, chosen["algorithm"].unique(), "ablation")


def ablation_curves(trials: pd.DataFrame) -> pd.DataFrame:
    """Accuracy curves per (model, dataset, algorithm, ablation), on the panels holding any ablation but none.

    The other pruning settings are at their defaults, each algorithm at its
    most common iteration count, trained trials of a panel at its most
    common number of epochs (as `variant_curves`). "none" is the method
    itself, the reference each ablation is compared with.
    """
    curves = accuracy_curves(ablation_trials(trials), by=("algorithm", "ablation"))
    curves.insert(len(PANEL) + 2, "variant", [f"{a} ({v})" for a, v in zip(curves["algorithm"], curves["ablation"])])
    rank = {a: i for i, a in enumerate(ablation_order(curves["ablation"].unique()))}
    curves = curves.assign(_ablation=curves["ablation"].map(rank)).sort_values(
        [*PANEL, "_ablation", "log10_compression"], kind="stable").drop(columns="_ablation")
    return _order_algorithms(curves, also=PANEL)


def ablation_order(ablations: Iterable[str]) -> List[str]:
    """Known ablations in vocabulary order ("none" first), then any others alphabetically."""
    names = set(ablations)
    return [a for a in ABLATIONS if a in names] + sorted(names - set(ABLATIONS))


def effective_compression(trials: pd.DataFrame) -> pd.DataFrame:
    """Effective compression against nominal, per (model, dataset, algorithm, compression), over seeds.

    A trial's effective compression is prunable_params /
    effective_remaining_params: kept weights on no input-to-output path count
    as pruned. A trial that kept no such weight (0: the network is
    disconnected) has infinite effective compression; it is counted in
    `disconnected` and left out of the mean, min and max, which are over the
    `connected` trials (NaN when every trial is disconnected). Trials without
    the count (stores that predate it) are left out. `trials` is used as
    given: restrict it (e.g. `default_settings(..., same_training=False)`) first.
    """
    keys = [*PANEL, "algorithm", "log10_compression"]
    columns = [*keys, "compression", "effective_compression_mean", "effective_compression_min",
               "effective_compression_max", "trials", "connected", "disconnected"]
    if "effective_remaining_params" not in trials:
        return pd.DataFrame(columns=columns)
    measured = trials[trials["effective_remaining_params"].notna()]
    if measured.empty:
        return pd.DataFrame(columns=columns)
    effective = measured["effective_remaining_params"].astype(float)
    ratio = (measured["prunable_params"].astype(float) / effective.where(effective > 0))
    frame = measured.assign(_ratio=ratio, _disconnected=effective == 0)
    table = frame.groupby(keys, sort=True).agg(
        effective_compression_mean=("_ratio", "mean"), effective_compression_min=("_ratio", "min"),
        effective_compression_max=("_ratio", "max"), trials=("_ratio", "size"), connected=("_ratio", "count"),
        disconnected=("_disconnected", "sum"),
    ).reset_index()
    table.insert(len(keys), "compression", 10.0 ** table["log10_compression"])
    table["disconnected"] = table["disconnected"].astype(int)
    return _order_algorithms(table[columns], also=PANEL)


def _order_algorithms(frame: pd.DataFrame, also: Sequence[str] = ()) -> pd.DataFrame:
    """Sort rows by `also` columns, then algorithms in the fixed figure order (stable otherwise)."""
    rank = {a: i for i, a in enumerate(algorithm_order(frame["algorithm"].unique()))}
    keys = [*also, "_rank"]
    ordered = frame.assign(_rank=frame["algorithm"].map(rank)).sort_values(keys, kind="stable")
    return ordered.drop(columns="_rank").reset_index(drop=True)
