"""Compaction: merging finished per-trial files into a few large Parquet files per table.

A group of trials is compacted into one part per table with one uuid:
``trials/compacted/part-<uuid>.parquet``, ``epochs/compacted/part-<uuid>.parquet``
and ``layers/compacted/part-<uuid>.parquet`` (pandas reads a table
directory's subdirectories too, so ``pd.read_parquet("results/trials")`` sees
them). A group holds at most `rows_per_part` rows in every table.

Each group is one journaled change (see journal.py): the parts are written
hidden, the journal names them and the per-trial files they replace, the
per-trial files are deleted (trials files first), the parts are renamed
visible (trials part last) and the journal is removed. A crash at any point
leaves a store whose next `finished_ids`, `has_trial`, `read` or `compact`
finishes the change; no reader ever sees a trial's rows twice.

Only trials whose per-trial files were all readable at listing time are
compacted, so a sweep may keep writing other trials meanwhile. Compactions
(and evictions, below) of a local store are serialised by a lock file; on an
object store run one compaction at a time.

Evicting a trial from its group (when `write_trial` rewrites a compacted trial)
rewrites the group without it, as the same kind of journaled change.
"""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Set, Tuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from results_store.files import join, one_line
from results_store.journal import (PREFIX, apply, exclusive, journal_names, new_journal, read_journal,
                                   write_journal)
from results_store.scan import Scan, TrialFiles, quarantine_group, quarantine_trial, read_ids, scan
from results_store.schema import COMPACTED, SCHEMAS, TABLES, conform, to_parquet_bytes

if TYPE_CHECKING:
    from results_store.store import ResultsStore

DEFAULT_ROWS_PER_PART = 1_000_000
STALE_SECONDS = 3600.0  # hidden leftovers of a crashed writer older than this are removed by compact()
PUBLISH_ORDER = ("epochs", "layers", "trials")  # the trials part, which makes a group count, goes last


@dataclass
class CompactionReport:
    """What one `compact()` did."""

    trials: int = 0  # trials moved from per-trial files into new parts
    parts: List[Tuple[str, int]] = field(default_factory=list)  # (path relative to the store, rows)
    seconds: float = 0.0
    already_compacted: int = 0  # trials that were in parts before
    evicted: int = 0  # duplicate copies removed from older parts
    skipped: List[str] = field(default_factory=list)  # trials left as per-trial files, and why
    removed_leftovers: int = 0

    def lines(self) -> List[str]:
        groups = len([p for p, _ in self.parts if p.startswith("trials/")])
        head = (f"compacted {self.trials} trials into {groups} group(s) of parts in {self.seconds:.1f} s"
                if self.trials else f"nothing to compact ({self.seconds:.1f} s)")
        lines = [head + f"; {self.already_compacted} trials were already compacted"]
        lines += [f"  {path}  {rows} rows" for path, rows in self.parts]
        if self.evicted:
            lines.append(f"removed {self.evicted} duplicate copies of trials from older parts")
        if self.removed_leftovers:
            lines.append(f"removed {self.removed_leftovers} hidden leftover file(s) of crashed writers")
        lines += [f"left as per-trial files: {reason}" for reason in self.skipped]
        return lines


def compact(store: "ResultsStore", rows_per_part: int = DEFAULT_ROWS_PER_PART) -> CompactionReport:
    if isinstance(rows_per_part, bool) or not isinstance(rows_per_part, int) or rows_per_part < 1:
        raise ValueError(f"rows_per_part must be a positive integer, got {rows_per_part!r}")
    started = time.perf_counter()
    report = CompactionReport()
    with exclusive(store):
        state = scan(store)  # rolls forward every journal first, and moves aside what is unreadable
        report.removed_leftovers = _remove_leftovers(store)
        done = state.per_trial_done()
        drops: Dict[str, Set[str]] = {}
        seen: Set[str] = set()
        for group in sorted(state.groups.ids):
            for trial_id in state.groups.ids[group]:
                if trial_id in done or trial_id in seen:  # a rewrite raced a compaction: the newer copy stays
                    drops.setdefault(group, set()).add(trial_id)
                seen.add(trial_id)
        if drops:
            report.evicted = evict(store, drops)
        report.already_compacted = len(seen - done)
        for batch in _batches(sorted(done), state, rows_per_part):
            _compact_batch(store, batch, state, report)
    report.seconds = time.perf_counter() - started
    return report


def _batches(ids: List[str], state: Scan, rows_per_part: int) -> Iterable[List[str]]:
    batch: List[str] = []
    totals = dict.fromkeys(TABLES, 0)
    for trial_id in ids:
        rows = {t: max(state.files[trial_id].rows(t), t == "trials") for t in TABLES}
        if batch and any(totals[t] + rows[t] > rows_per_part for t in TABLES):
            yield batch
            batch, totals = [], dict.fromkeys(TABLES, 0)
        batch.append(trial_id)
        totals = {t: totals[t] + rows[t] for t in TABLES}
    if batch:
        yield batch


def _read_whole(store: "ResultsStore", table: str, path: str) -> Tuple[Optional[pa.Table], Optional[str]]:
    """A file's rows with the table's schema; (None, None) when it vanished, (None, why) when unreadable."""
    try:
        with store._fs.open_input_file(path) as f:
            data = pq.ParquetFile(f).read(use_threads=False)
    except FileNotFoundError:
        return None, None
    except (OSError, pa.ArrowException) as exc:
        return None, f"unreadable ({one_line(exc)})"
    return conform(table, data)


def _compact_batch(store: "ResultsStore", batch: List[str], state: Scan, report: CompactionReport) -> None:
    def read_trial(trial_id: str):
        files: TrialFiles = state.files[trial_id]
        out, bad = {}, {}
        for table in TABLES:
            if table not in files.paths:
                out[table] = SCHEMAS[table].empty_table()  # epochs of a prune-only trial
                continue
            data, problem = _read_whole(store, table, files.paths[table])
            if problem:
                bad[table] = problem
            elif data is None:
                return trial_id, None, {"": "its files changed during compaction"}
            else:
                out[table] = data
        return trial_id, (None if bad else out), bad

    kept: List[str] = []
    tables: Dict[str, List[pa.Table]] = {t: [] for t in TABLES}
    for trial_id, data, bad in store._map(read_trial, batch):
        if data is None:
            if "" in bad or not store._local:  # a rewrite in progress, or perhaps the network: try again later
                report.skipped.append(f"{trial_id}: {'; '.join(bad.values())}")
            else:  # the footer was fine but the data is not: the same rule as an unreadable footer
                quarantine_trial(store, trial_id, state.files[trial_id].paths, bad)
            continue
        kept.append(trial_id)
        for table in TABLES:
            tables[table].append(data[table])
    if not kept:
        return
    group = f"part-{uuid.uuid4().hex}"
    merged = {t: pa.concat_tables(tables[t]) for t in TABLES}
    publish = write_hidden_parts(store, group, merged)
    delete = [[store._rel(state.files[i].paths[t]) for i in kept if t in state.files[i].paths] for t in TABLES]
    name = f"{PREFIX}{group[len('part-'):]}.json"
    journal = new_journal("compact", {group: kept}, delete, publish)
    write_journal(store, name, journal)
    apply(store, name, journal)
    report.trials += len(kept)
    report.parts += [(store._rel(store._part_path(t, group)), merged[t].num_rows) for t in TABLES]


def write_hidden_parts(store: "ResultsStore", group: str, merged: Dict[str, pa.Table]) -> List[List[str]]:
    """Write a group's parts under hidden names; the (hidden, visible) renames, in publishing order."""
    with ThreadPoolExecutor(max_workers=len(TABLES)) as pool:
        payloads = dict(zip(PUBLISH_ORDER, pool.map(lambda t: to_parquet_bytes(merged[t]), PUBLISH_ORDER)))
    publish = []
    for table in PUBLISH_ORDER:
        hidden = store._part_path(table, group, hidden=True)
        store._put(hidden, payloads[table])
        publish.append([store._rel(hidden), store._rel(store._part_path(table, group))])
    return publish


def groups_holding(store: "ResultsStore", trial_id: str) -> List[str]:
    """The compacted groups whose trials part lists `trial_id` (reads only trial_id columns)."""
    parts = store._list_parts("trials")
    found = store._map(lambda g: trial_id in read_ids(store, parts[g].path)[0], sorted(parts))
    return [g for g, holds in zip(sorted(parts), found) if holds]


def evict(store: "ResultsStore", drops: Dict[str, Set[str]]) -> int:
    """Rewrite each group without the given trials (journaled like a compaction); how many rows of trials went."""
    evicted = 0
    for group, ids in sorted(drops.items()):
        parts, bad = {}, None
        for table in TABLES:
            data, problem = _read_whole(store, table, store._part_path(table, group))
            if data is None:
                bad = (table, f"its {table} part is {problem or 'missing'}")
                break
            parts[table] = data
        if bad is not None:
            if parts or bad[0] != "trials":  # a damaged group, not one that vanished meanwhile
                quarantine_group(store, group, *bad)
            continue
        value_set = pa.array(sorted(ids), type=pa.string())
        kept = {t: parts[t].filter(pc.invert(pc.is_in(parts[t]["trial_id"], value_set=value_set))) for t in TABLES}
        evicted += parts["trials"].num_rows - kept["trials"].num_rows
        new_group = f"part-{uuid.uuid4().hex}"
        publish = write_hidden_parts(store, new_group, kept) if kept["trials"].num_rows else []
        old = [store._rel(store._part_path(t, group)) for t in TABLES]
        name = f"{PREFIX}{new_group[len('part-'):]}.json"
        journal = new_journal("evict", {new_group: kept["trials"]["trial_id"].to_pylist()} if publish else {},
                              [old[:1], old[1:]], publish)
        write_journal(store, name, journal)
        apply(store, name, journal)
    return evicted


def _remove_leftovers(store: "ResultsStore") -> int:
    """Hidden files that no journal names, older than STALE_SECONDS: parts and temps of writers that crashed."""
    named = set()
    for name in journal_names(store):
        journal = read_journal(store, name)
        if journal is not None:
            named.update(store._abs(hidden) for hidden, _ in journal["publish"])
    cutoff = time.time() - STALE_SECONDS
    removed = 0
    for directory in [store.table_path(t) for t in TABLES] + [join(store.table_path(t), COMPACTED) for t in TABLES]:
        for info in store._listdir(directory):
            if (info.type == pafs.FileType.File and info.base_name.startswith((".tmp-", ".part-"))
                    and info.path not in named and info.mtime is not None and info.mtime.timestamp() < cutoff):
                store._delete(info.path)
                removed += 1
    return removed
