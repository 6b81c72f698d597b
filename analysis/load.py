"""Reading a store for analysis, and the 'default settings' every headline figure restricts to.

Imports pandas and the store only: analysis runs where torch and ray are not installed.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import pandas as pd

from common.vocabulary import (DEFAULT_ABLATION, DEFAULT_PRUNE_MODE, DEFAULT_PRUNE_SETTINGS, DEFAULT_SCHEDULE,
                               DEFAULT_SCOPE, default_iterations)
from analysis.select import Selection, keep_rows, keep_selected_variants, select_trials
from analysis.shared import share_dense_trials
from results_store import TABLES, ResultsStore, StoreError

# Columns newer than some stores: {table: {column: value for rows (or whole files) written before it}}.
# A null or absent ablation is the method itself; a null effective count was never measured.
LATER_COLUMNS: Dict[str, Dict[str, object]] = {
    "trials": {"ablation": DEFAULT_ABLATION, "effective_remaining_params": None, "num_classes": None},
    "layers": {"effective_remaining": None},
}


@dataclass
class Results:
    location: str
    trials: pd.DataFrame
    epochs: pd.DataFrame
    layers: pd.DataFrame
    problems: List[str] = field(default_factory=list)
    selection: str = ""  # what was selected ("sweep fig1; seeds 0, 1"), empty for the whole store
    notes: List[str] = field(default_factory=list)  # how the selection was made

    def problem_lines(self) -> List[str]:
        """What the store could not read, one line each, to print before anything drawn or tabled without it."""
        return [f"warning: the store could not read everything: {problem}" for problem in self.problems]


def load_results(uri: Union[str, "os.PathLike[str]"], selection: Optional[Selection] = None,
                 columns: Optional[Mapping[str, Sequence[str]]] = None) -> Results:
    """The three tables, restricted to `selection` (analysis.select); StoreError (one line) when the store is
    absent or holds no readable trial, SelectionError when the selection names what it lacks or keeps nothing.

    `columns` ({table: [column, ...]}) reads only those columns of a table, as stored (every file is still
    opened, so one the store cannot read is named in `problems`): 20,000 trials have millions of epoch rows.
    """
    store = ResultsStore(uri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skipped files are kept in store.problems instead
        frames: Dict[str, pd.DataFrame] = {table: store.read(table, (columns or {}).get(table)) for table in TABLES}
    if frames["trials"].empty:
        if not store.exists():
            raise StoreError(f"store {store} does not exist")
        skipped = f" ({len(store.problems)} unreadable file(s) skipped)" if store.problems else ""
        raise StoreError(f"store {store} has no finished trials yet{skipped}")
    frames = {table: frame if (columns or {}).get(table) is not None else with_later_columns(table, frame)
              for table, frame in frames.items()}  # a table read in part comes as stored
    notes: List[str] = []
    selecting = selection is not None and not selection.is_everything()
    trials = frames["trials"]
    if selecting:  # 1x trials of any algorithm stay until they have served as the selected algorithms' 1x points
        trials = select_trials(trials, store, selection, notes.append, keep_dense=True)
    trials, shared = share_dense_trials(trials)
    notes += shared
    if selecting:
        trials = keep_selected_variants(trials, selection, store)
        frames = {"trials": trials, **{table: keep_rows(frames[table], trials["trial_id"])
                                       for table in ("epochs", "layers")}}
    frames["trials"] = trials
    return Results(str(store), frames["trials"], frames["epochs"], frames["layers"], list(store.problems),
                   selection.describe() if selection is not None else "", notes)


def with_later_columns(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the columns older stores lack added, and their nulls filled where a null means the default.

    A missing count column is added as float NaN, the dtype pandas gives a
    nullable integer column that holds nulls.
    """
    later = LATER_COLUMNS.get(table, {})
    if not any(column not in frame or (value is not None and frame[column].isna().any())
               for column, value in later.items()):
        return frame
    frame = frame.copy()
    for column, value in later.items():
        if column not in frame:
            frame[column] = pd.Series(value if value is not None else float("nan"), index=frame.index,
                                      dtype=object if isinstance(value, str) else "float64")
        elif value is not None:
            frame[column] = frame[column].fillna(value)
    return frame


def most_common_iterations(trials: pd.DataFrame) -> Dict[str, int]:
    """Per algorithm, the iteration count with the most trials; ties go to the algorithm's default, else the fewest."""
    chosen = {}
    for algorithm, group in trials.groupby("algorithm", sort=True):
        counts = group["iterations"].value_counts()
        tied = sorted(int(i) for i in counts[counts == counts.max()].index)
        default = default_iterations(str(algorithm))
        chosen[str(algorithm)] = default if default in tied else tied[0]
    return chosen


def most_common_epochs(trials: pd.DataFrame) -> Dict[Tuple[str, str], int]:
    """Per (model, dataset), the most common training length among trained trials; ties go to the longest."""
    trained = trials[(trials["status"] == "completed") & trials["final_top1"].notna()]
    chosen = {}
    for key, group in trained.groupby(["model", "dataset"], sort=True):
        counts = group["epochs"].value_counts()
        chosen[(str(key[0]), str(key[1]))] = int(max(counts[counts == counts.max()].index))
    return chosen


def default_settings(trials: pd.DataFrame, same_training: bool = True) -> Tuple[pd.DataFrame, str]:
    """The trials run with the default pruning settings, and a one-line description of the choice.

    Variants (train-mode scoring, local scope, linear schedules, other
    iteration counts) would otherwise be averaged into the headline curves.
    With `same_training`, trained trials of a (model, dataset) are also
    restricted to its most common number of epochs, so a short smoke-test run
    is not averaged with the full recipe; untrained trials are kept.
    """
    selected = with_default_prune_settings(trials)
    iterations = most_common_iterations(selected)
    wanted = selected["algorithm"].map(iterations)
    selected = selected[selected["iterations"] == wanted]
    text = (f"{DEFAULT_PRUNE_MODE}-mode scoring, {DEFAULT_SCOPE} scope, {DEFAULT_SCHEDULE} schedule, "
            "no ablation; iterations: " + ", ".join(f"{a} {n}" for a, n in iterations.items()))
    if same_training:
        epochs = most_common_epochs(selected)
        selected = restrict_to_common_training(selected)
        if len(set(epochs.values())) == 1:
            text += f"; {next(iter(epochs.values()))} epochs"
        elif epochs:
            text += "; most common epochs per panel"
    return selected, text


def with_default_prune_settings(trials: pd.DataFrame, except_for: str = "") -> pd.DataFrame:
    """The trials whose scoring mode, scope, schedule and ablation are the defaults (all but the column `except_for`).

    A column the frame lacks, or a null in it, counts as the default: stores
    written before a setting existed ran with its default.
    """
    keep = pd.Series(True, index=trials.index)
    for column, value in DEFAULT_PRUNE_SETTINGS.items():
        if column != except_for and column in trials:
            keep &= trials[column].fillna(value) == value
    return trials[keep]


def ablation_of(trials: pd.DataFrame) -> pd.Series:
    """Each trial's ablation, "none" where the column is absent or null."""
    if "ablation" not in trials:
        return pd.Series(DEFAULT_ABLATION, index=trials.index, dtype=object)
    return trials["ablation"].fillna(DEFAULT_ABLATION)


def restrict_to_common_training(trials: pd.DataFrame) -> pd.DataFrame:
    """Drop trained trials whose length differs from the most common one of their (model, dataset)."""
    epochs = most_common_epochs(trials)
    is_trained = trials["status"].eq("completed") & trials["final_top1"].notna()
    wanted = pd.Series([epochs.get((m, d), -1) for m, d in zip(trials["model"], trials["dataset"])],
                       index=trials.index, dtype="int64")
    return trials[~is_trained | (trials["epochs"] == wanted)]
