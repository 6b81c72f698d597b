"""Choosing what to read: one sweep's grid, some models, datasets, algorithms, ablations or seeds.

The same selection serves `prune-sweep-plots`, `prune-sweep-summary` and pandas
users (`load_results(store, Selection(sweep="fig1"))`). A sweep is the trials of
its recorded grid (results_store.sweeps), including trials another sweep
computed first; a store that predates the records falls back to the `sweep`
column and says so. A name the store does not hold, or a selection that leaves
nothing, is a `SelectionError`: one line, exit status 2 on the command line.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace
from typing import Callable, Optional, Sequence, Tuple

import pandas as pd

from common.axes import parse_names, parse_seeds
from common.vocabulary import OWN_DENSE_TRIAL
from results_store import ResultsStore, StoreError, grid_trial_ids, recorded_sweeps


class SelectionError(StoreError):
    """A selection naming what the store does not hold, or leaving no trial."""


# option -> the trials column it filters
FILTER_COLUMNS = {"models": "model", "datasets": "dataset", "algorithms": "algorithm", "ablations": "ablation",
                  "seeds": "seed"}
# The filters that pick algorithm variants, which a shared dense trial serves at 1x.
VARIANT_FILTERS = ("algorithms", "ablations")


@dataclass(frozen=True)
class Selection:
    """Which trials to read; empty means all. Values must exist in the store (a typo is an error, not a blank)."""
    sweep: Optional[str] = None
    models: Tuple[str, ...] = ()
    datasets: Tuple[str, ...] = ()
    algorithms: Tuple[str, ...] = ()
    ablations: Tuple[str, ...] = ()
    seeds: Tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for option in FILTER_COLUMNS:
            value = getattr(self, option)
            if isinstance(value, (str, int)):  # Selection(models="mlp") means ("mlp",)
                object.__setattr__(self, option, (value,))
            else:
                object.__setattr__(self, option, tuple(value))

    def is_everything(self) -> bool:
        return self == Selection()

    def describe(self) -> str:
        """'sweep quickstart; models mlp; seeds 0, 1' (empty when everything is selected)."""
        parts = [f"sweep {self.sweep}"] if self.sweep else []
        parts += [f"{f.name} {', '.join(map(str, getattr(self, f.name)))}" for f in fields(self)
                  if f.name in FILTER_COLUMNS and getattr(self, f.name)]
        return "; ".join(parts)


def select_trials(trials: pd.DataFrame, store: ResultsStore, selection: Selection,
                  report: Callable[[str], None] = lambda line: None, keep_dense: bool = False) -> pd.DataFrame:
    """The rows of `trials` the selection keeps; SelectionError when a name is unknown or nothing is left.

    With `keep_dense`, 1x trials of prune-at-init algorithms pass the algorithm and ablation filters: they train
    the network every selected algorithm has at 1x (analysis.shared), and `keep_selected_variants` filters after.
    """
    if selection.sweep:
        trials = _sweep_trials(trials, store, selection.sweep, report)
    dense = ((trials["log10_compression"] == 0) & ~trials["algorithm"].isin(OWN_DENSE_TRIAL)
             if keep_dense else pd.Series(False, index=trials.index))
    keep = pd.Series(True, index=trials.index)
    for option, column in FILTER_COLUMNS.items():
        wanted = getattr(selection, option)
        if not wanted:
            continue
        present = set(trials[column].tolist())  # each name is checked alone: a typo is named as such
        unknown = [w for w in wanted if w not in present]
        if unknown:
            have = ", ".join(map(str, sorted(present))) or "none"
            where = f" of sweep {selection.sweep}" if selection.sweep else ""
            raise SelectionError(f"--{option} {', '.join(map(str, unknown))}: not among the trials{where} in "
                                 f"{store} ({option}: {have})")
        keep &= trials[column].isin(wanted) | (dense if option in VARIANT_FILTERS else False)
    trials = trials[keep]
    if trials.empty:
        raise SelectionError(f"no trial in {store} matches {selection.describe()}")
    return trials


def keep_selected_variants(trials: pd.DataFrame, selection: Selection, store: ResultsStore) -> pd.DataFrame:
    """The algorithm and ablation filters again, once the 1x trials kept for sharing have served."""
    keep = pd.Series(True, index=trials.index)
    for option in VARIANT_FILTERS:
        wanted = getattr(selection, option)
        if wanted:
            keep &= trials[FILTER_COLUMNS[option]].isin(wanted)
    if not keep.any():
        raise SelectionError(f"no trial in {store} matches {selection.describe()}")
    return trials[keep]


def _sweep_trials(trials: pd.DataFrame, store: ResultsStore, name: str, report: Callable[[str], None]) -> pd.DataFrame:
    ids = grid_trial_ids(store, name)
    if ids is not None:
        chosen = trials[trials["trial_id"].isin(ids)]
        missing = len(ids) - len(chosen)
        report(f"sweep {name}: {len(chosen)} of its {len(ids)} grid trials are in the store"
               + (f" ({missing} not yet)" if missing else ""))
        if chosen.empty:
            raise SelectionError(f"sweep {name} recorded {len(ids)} trials, none of them in {store} yet")
        return chosen
    chosen = trials[trials["sweep"] == name]
    if chosen.empty:
        names = sorted(set(recorded_sweeps(store)) | set(trials["sweep"].tolist()))
        raise SelectionError(f"unknown sweep {name!r} in {store}; sweeps: {', '.join(names) or 'none'}")
    report(f"sweep {name}: the store has no recorded grid for it (written before sweeps recorded their grids), "
           f"so it is selected by the trials' sweep column: {len(chosen)} trials, without any it shares with "
           f"a sweep that ran them first")
    return chosen


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    """The selection options every analysis command takes."""
    group = parser.add_argument_group("selection (default: every trial in the store)")
    group.add_argument("--sweep", help="the trials of this sweep's grid, including those another sweep ran first")
    group.add_argument("--models", help="comma-separated model names")
    group.add_argument("--datasets", help="comma-separated dataset names")
    group.add_argument("--algorithms", help="comma-separated algorithm names")
    group.add_argument("--ablations", help="comma-separated ablations (none = each method's own mask)")
    group.add_argument("--seeds", help="a list 0,1,2 or a range 0:2 (both ends included)")


def selection_from_args(args: argparse.Namespace) -> Selection:
    """A Selection from parsed options; ValueError (one line) for a malformed list."""
    values = {option: parse_names(getattr(args, option), option) for option in FILTER_COLUMNS
              if option != "seeds" and getattr(args, option) is not None}
    if args.seeds is not None:
        values["seeds"] = parse_seeds(args.seeds)
    return replace(Selection(sweep=args.sweep), **values)


def keep_rows(frame: pd.DataFrame, trial_ids: Sequence[str]) -> pd.DataFrame:
    """The rows of an epochs or layers frame that belong to the selected trials."""
    return frame[frame["trial_id"].isin(set(trial_ids))]

