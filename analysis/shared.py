"""Each algorithm's 1x point, drawn from the one dense trial the sweep ran for all of them.

At compression 1 every prune-at-init algorithm trains the same network (see
`TrialSpec.shared_dense`), so a sweep runs it once as an algorithm `dense`
trial. Here that trial becomes each algorithm variant's 1x row for the seeds
the variant has, marked `shared_dense`, keeping the dense trial's id (its
epochs and layers join as before). A variant's own 1x trial, as stores written
before the sharing hold, is kept as it is and also serves variants that lack one
(any prune-at-init 1x trial trains that same network). `reinit` draws new
weights, so its 1x point comes from a reinit dense trial only.

Pure pandas: the analysis imports no torch.
"""
from __future__ import annotations

import json
from typing import List, Tuple

import pandas as pd

from common.vocabulary import DENSE_ABLATION, DENSE_ALGORITHM, OWN_DENSE_TRIAL

# What makes an algorithm variant a line of its own in the figures (and its 1x row its own).
VARIANT_COLUMNS = ["algorithm", "iterations", "prune_mode", "schedule", "scope", "ablation", "levels",
                   "examples_per_class"]
NETWORK_COLUMNS = ["model", "dataset", "_training", "seed", "_dense"]


def training_keys(trials: pd.DataFrame) -> pd.Series:
    """The training recipe of each trial (from its stored description), so 1x points join only their own recipe;
    a row without a readable description falls back to its epoch count."""
    def key(config, epochs) -> str:
        try:
            train = json.loads(config).get("train") if isinstance(config, str) else None
        except ValueError:
            train = None
        return json.dumps(train, sort_keys=True) if train else f"epochs={epochs}"

    configs = trials["config"] if "config" in trials else pd.Series(None, index=trials.index, dtype=object)
    return pd.Series([key(c, e) for c, e in zip(configs, trials["epochs"])], index=trials.index, dtype=object)


def dense_kind(ablation: pd.Series) -> pd.Series:
    return ablation.fillna("none").map(lambda a: DENSE_ABLATION.get(a, a))


def share_dense_trials(trials: pd.DataFrame) -> Tuple[pd.DataFrame, List[str]]:
    """`trials` with each variant's missing 1x rows filled from the dense trial of its network; notes on what was
    shared. A dense trial that filled at least one variant's row is replaced by those rows."""
    if trials.empty or "log10_compression" not in trials:
        return trials.assign(shared_dense=False), []
    frame = trials.assign(_training=training_keys(trials), _dense=dense_kind(trials.get("ablation", pd.Series(
        "none", index=trials.index))), shared_dense=False)
    at_one = frame["log10_compression"] == 0
    eligible = at_one & ~frame["algorithm"].isin(OWN_DENSE_TRIAL)
    if not eligible.any():
        return trials.assign(shared_dense=False), []
    variants = frame[~frame["algorithm"].isin([DENSE_ALGORITHM, *OWN_DENSE_TRIAL])]
    keys = ["model", "dataset", "_training", *[c for c in VARIANT_COLUMNS if c in frame], "_dense"]
    wanted = variants[[*keys, "seed"]].drop_duplicates()
    own = variants.loc[variants["log10_compression"] == 0, [*keys, "seed"]].drop_duplicates().assign(_own=True)
    wanted = wanted.merge(own, on=[*keys, "seed"], how="left")
    wanted = wanted[wanted["_own"].isna()].drop(columns="_own")
    if wanted.empty:
        return trials.assign(shared_dense=False), []
    # Any 1x trial of the network serves; the variant's own algorithm's first (what an older store ran for it),
    # then the dense trial, then the lowest id, so the choice is the same on every read.
    taken = [c for c in VARIANT_COLUMNS if c in frame]
    sources = frame[eligible].rename(columns={c: f"_source_{c}" for c in taken})
    copies = wanted.merge(sources, on=NETWORK_COLUMNS, how="inner")
    if copies.empty:
        return trials.assign(shared_dense=False), []
    copies["_rank"] = [0 if a == b else (1 if b == DENSE_ALGORITHM else 2)
                       for a, b in zip(copies["algorithm"], copies["_source_algorithm"])]
    copies = copies.sort_values(["_rank", "trial_id"]).drop_duplicates([*keys, "seed"])
    copies = copies.assign(shared_dense=True)[frame.columns]
    used = set(copies["trial_id"])
    kept = frame[~((frame["algorithm"] == DENSE_ALGORITHM) & frame["trial_id"].isin(used))]
    out = pd.concat([kept, copies], ignore_index=True).drop(columns=["_training", "_dense"])
    variants_filled = copies[taken].drop_duplicates().shape[0]
    notes = [f"1x: {len(copies)} point(s) of {variants_filled} algorithm variant(s) drawn from {len(used)} trial(s) "
             f"of the same network (at 1x every prune-at-init algorithm trains the unpruned network; the sweep "
             f"runs it once)"]
    return out, notes
