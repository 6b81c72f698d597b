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
from typing import Any, Dict, List, Optional, Sequence, Set

import pyarrow as pa

from common.storage import one_line
from results_store.files import StoreError, StoreFiles, join, store_files
from results_store.schema import SAFE_TRIAL_ID

SWEEPS = "_sweeps"


def record_grid(store: Any, name: str, trial_ids: Sequence[str], command: Sequence[str] = ()) -> str:
    """Write the sweep's trial ids (atomically) to a ResultsStore; returns the file's path relative to the store."""
    files = store_files(store)
    if not SAFE_TRIAL_ID.match(name or ""):
        raise ValueError(f"sweep name must be letters, digits, '_', '.', '-', got {name!r}")
    ids = sorted(set(trial_ids))
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    record = {"sweep": name, "recorded_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "trials": len(ids), "command": list(command), "trial_ids": ids}
    path = join(files.root, SWEEPS, name, f"{digest}.json")
    files.put(path, json.dumps(record, indent=0).encode())
    return files.rel(path)


def recorded_sweeps(store: Any) -> List[str]:
    """Names of the sweeps whose grids the store has recorded."""
    files = store_files(store)
    return sorted(i.base_name for i in files.listdir(join(files.root, SWEEPS))
                  if i.type == pa.fs.FileType.Directory and not i.base_name.startswith((".", "_")))


def grid_trial_ids(store: Any, name: str) -> Optional[Set[str]]:
    """The union of every grid recorded under `name`; None when none was (older stores, or another tool)."""
    files = store_files(store)
    records = [i for i in files.listdir(join(files.root, SWEEPS, name))
               if i.type == pa.fs.FileType.File and i.base_name.endswith(".json") and not i.base_name.startswith(".")]
    if not records:
        return None
    ids: Set[str] = set()
    for info in records:
        ids.update(_read(files, info.path)["trial_ids"])
    return ids


def _read(files: StoreFiles, path: str) -> Dict[str, Any]:
    try:
        raw = files.read_bytes(path)
        if raw is None:
            raise FileNotFoundError("removed while reading")
        record = json.loads(raw)
        ids = record["trial_ids"]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("trial_ids is not a list of strings")
        return record
    except (OSError, pa.ArrowException, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"store {files.location}: unreadable sweep record {files.rel(path)}: "
                         f"{one_line(exc)}") from None
