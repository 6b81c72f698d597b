"""Which trials make up a sweep: each sweep run records its grid's trial ids in the store before it launches.

A trial is stored once, under the sweep that computed it first, so the `sweep`
column of `trials` misses every trial a sweep shares with an earlier one (a
preset re-run with more seeds, two presets that share a grid point). The
analysis selects a sweep by its recorded ids instead::

    <store>/_sweeps/<name>/<digest of the sorted ids>.json

One file per distinct grid run under that name: running the same grid again
rewrites the same file, and extending it (more seeds, more ratios) adds one, so
a sweep's trials are the union of its files. The "_" prefix keeps pandas and
pyarrow from reading the directory as a table.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Set

import pyarrow as pa

from results_store.files import StoreError, join, one_line
from results_store.schema import SAFE_TRIAL_ID

if TYPE_CHECKING:
    from results_store.store import ResultsStore

SWEEPS = "_sweeps"


def record_grid(store: "ResultsStore", name: str, trial_ids: Sequence[str], command: Sequence[str] = ()) -> str:
    """Write the sweep's trial ids (atomically); returns the file's path relative to the store."""
    if not SAFE_TRIAL_ID.match(name or ""):
        raise ValueError(f"sweep name must be letters, digits, '_', '.', '-', got {name!r}")
    ids = sorted(set(trial_ids))
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    record = {"sweep": name, "recorded_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "trials": len(ids), "command": list(command), "trial_ids": ids}
    path = join(store._root, SWEEPS, name, f"{digest}.json")
    store._put(path, json.dumps(record, indent=0).encode())
    return store._rel(path)


def recorded_sweeps(store: "ResultsStore") -> List[str]:
    """Names of the sweeps whose grids the store has recorded."""
    return sorted(i.base_name for i in store._listdir(join(store._root, SWEEPS))
                  if i.type == pa.fs.FileType.Directory and not i.base_name.startswith((".", "_")))


def grid_trial_ids(store: "ResultsStore", name: str) -> Optional[Set[str]]:
    """The union of every grid recorded under `name`; None when none was (older stores, or another tool)."""
    files = [i for i in store._listdir(join(store._root, SWEEPS, name))
             if i.type == pa.fs.FileType.File and i.base_name.endswith(".json") and not i.base_name.startswith(".")]
    if not files:
        return None
    ids: Set[str] = set()
    for info in files:
        ids.update(_read(store, info.path)["trial_ids"])
    return ids


def _read(store: "ResultsStore", path: str) -> Dict[str, Any]:
    try:
        with store._fs.open_input_stream(path) as stream:
            record = json.loads(stream.read())
        ids = record["trial_ids"]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("trial_ids is not a list of strings")
        return record
    except (OSError, pa.ArrowException, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"store {store.location}: unreadable sweep record {store._rel(path)}: "
                         f"{one_line(exc)}") from None
