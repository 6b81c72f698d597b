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
compacted, so a sweep may keep writing other trials meanwhile. A compaction
holds the store's "compaction" lease (see lease.py), on local disks and object
stores alike, renews it in a heartbeat and once more before each journal, and
stops if it lost it; another compaction meanwhile fails with `LeaseHeld`
before changing anything.

Evicting a trial from its group (when `write_trial` rewrites a compacted trial)
rewrites the group without it, as the same kind of journaled change, under
the same lease: the writer waits up to $PRUNE_SWEEP_LEASE_WAIT seconds (default
900) for a running compaction rather than fail the trial.

Every copy of a trial but one is dropped: a trial in per-trial files and in a
group keeps its per-trial copy (the newer), one in several groups keeps the
first group's, and a group holding a trial twice (written before files were
checked against their names) is rewritten with its first copy. Never zero.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Set, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from common.storage import one_line
from results_store.files import StoreFiles, join
from results_store.journal import PREFIX, apply, journal_names, new_journal, read_journal, write_journal
from results_store.lease import Heartbeat, Lease, LeaseHeld, acquire, default_holder, holder_of
from results_store.scan import BAD, Check, Scan, TrialFiles, quarantine_group, quarantine_trial, read_ids, scan
from results_store.schema import COMPACTED, SCHEMAS, TABLES, conform, to_parquet_bytes

DEFAULT_ROWS_PER_PART = 1_000_000
STALE_SECONDS = 3600.0  # hidden leftovers of a crashed writer older than this are removed by compact()
PUBLISH_ORDER = ("epochs", "layers", "trials")  # the trials part, which makes a group count, goes last
COMPACTION_LEASE = "compaction"
KEYS = {"trials": ["trial_id"], "epochs": ["trial_id", "epoch"], "layers": ["trial_id", "layer_index"]}
POLL_SECONDS = 1.0


def eviction_wait() -> float:
    """Seconds a rewrite of a compacted trial waits for a running compaction: $PRUNE_SWEEP_LEASE_WAIT, default 900."""
    text = os.environ.get("PRUNE_SWEEP_LEASE_WAIT", "900")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ValueError(f"PRUNE_SWEEP_LEASE_WAIT must be >= 0 seconds, got {text!r}")
    return value


def compaction_holder() -> str:
    """host:pid, and the thread's name off the main thread: two threads' compactions must not share a lease."""
    thread = threading.current_thread()
    return default_holder() if thread is threading.main_thread() else f"{default_holder()}/{thread.name}"


@contextlib.contextmanager
def compaction_lease(files: StoreFiles, wait: float = 0.0, doing: str = "") -> Iterator[Lease]:
    """Hold the store's compaction lease, renewed by a heartbeat; LeaseHeld when another holder keeps it fresh
    for `wait` seconds. `doing` names the change in that message ("" for a compaction)."""
    deadline = time.monotonic() + wait
    vanished = 0
    while True:
        lease = acquire(files, COMPACTION_LEASE, compaction_holder())
        if lease is not None:
            break
        info = holder_of(files, COMPACTION_LEASE)
        if info is None:
            vanished += 1  # released between our look and our try, or lost to a racer on an object store
            if vanished < 3:
                continue
            holder = "another process"
        else:
            holder = f"another compaction ({info.describe()})"
        if time.monotonic() >= deadline:
            if doing:
                raise LeaseHeld(f"store {files.location}: cannot {doing}: {holder} held the store for {wait:.0f} s "
                                f"($PRUNE_SWEEP_LEASE_WAIT); run it again once that compaction has finished", info)
            raise LeaseHeld(f"store {files.location}: {holder} is running on this store; wait for it to finish", info)
        time.sleep(max(0.0, min(POLL_SECONDS, deadline - time.monotonic())))
    with lease, Heartbeat(lease):
        yield lease


def commit(files: StoreFiles, name: str, journal: Dict, lease: Optional[Lease]) -> None:
    """Write a change's journal and apply it, if this process still holds the compaction lease."""
    if lease is not None and not lease.renew():
        info = holder_of(files, COMPACTION_LEASE)
        whose = f"now {info.describe()}" if info else "deleted"
        raise LeaseHeld(f"store {files.location}: this compaction lost its lease ({whose}) and stopped before "
                        f"its next change; run compact again", info)
    write_journal(files, name, journal)
    apply(files, name, journal)


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


def compact(files: StoreFiles, rows_per_part: int = DEFAULT_ROWS_PER_PART) -> CompactionReport:
    """Merge finished per-trial files into parts, holding the compaction lease; LeaseHeld, with nothing changed,
    when another holder has it."""
    if isinstance(rows_per_part, bool) or not isinstance(rows_per_part, int) or rows_per_part < 1:
        raise ValueError(f"rows_per_part must be a positive integer, got {rows_per_part!r}")
    started = time.perf_counter()
    report = CompactionReport()
    with compaction_lease(files) as lease:
        state = scan(files)  # rolls forward every journal first, and moves aside what is unreadable
        report.removed_leftovers = _remove_leftovers(files)
        done = state.per_trial_done()
        drops: Dict[str, Set[str]] = {}
        twice: Set[str] = set()
        seen: Set[str] = set()
        for group in sorted(state.groups.ids):
            ids = state.groups.ids[group]
            for trial_id in dict.fromkeys(ids):
                if trial_id in done or trial_id in seen:  # a rewrite raced a compaction: the newer copy stays
                    drops.setdefault(group, set()).add(trial_id)
                seen.add(trial_id)
            if any(n > 1 and i not in drops.get(group, ()) for i, n in Counter(ids).items()):
                twice.add(group)
        if drops or twice:
            report.evicted = evict(files, drops, lease, twice)
        report.already_compacted = len(seen - done)
        for batch in _batches(sorted(done), state, rows_per_part):
            _compact_batch(files, batch, state, report, lease)
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


def _read_whole(files: StoreFiles, table: str, path: str) -> Tuple[Optional[pa.Table], Optional[str]]:
    """A file's rows with the table's schema; (None, None) when it vanished, (None, why) when unreadable."""
    try:
        with files.fs.open_input_file(path) as f:
            data = pq.ParquetFile(f).read(use_threads=False)
    except FileNotFoundError:
        return None, None
    except (OSError, pa.ArrowException) as exc:
        return None, f"unreadable ({one_line(exc)})"
    return conform(table, data)


def _compact_batch(files: StoreFiles, batch: List[str], state: Scan, report: CompactionReport,
                   lease: Optional[Lease]) -> None:
    def read_trial(trial_id: str):
        found: TrialFiles = state.files[trial_id]
        out, bad = {}, {}
        for table in TABLES:
            if table not in found.paths:
                out[table] = SCHEMAS[table].empty_table()  # epochs of a prune-only trial
                continue
            data, problem = _read_whole(files, table, found.paths[table])
            if problem:
                bad[table] = problem
            elif data is None:
                return trial_id, None, {"": "its files changed during compaction"}
            else:
                out[table] = data
        return trial_id, (None if bad else out), bad

    kept: List[str] = []
    tables: Dict[str, List[pa.Table]] = {t: [] for t in TABLES}
    for trial_id, data, bad in files.map(read_trial, batch):
        if data is None:
            if "" in bad or not files.local:  # a rewrite in progress, or perhaps the network: try again later
                report.skipped.append(f"{trial_id}: {'; '.join(bad.values())}")
            else:  # the footer was fine but the data is not: the same rule as an unreadable footer
                quarantine_trial(files, trial_id, state.files[trial_id].paths,
                                 {t: Check(BAD, reason=reason) for t, reason in bad.items()})
            continue
        kept.append(trial_id)
        for table in TABLES:
            tables[table].append(data[table])
    if not kept:
        return
    group = f"part-{uuid.uuid4().hex}"
    merged = {t: pa.concat_tables(tables[t]) for t in TABLES}
    publish = write_hidden_parts(files, group, merged)
    delete = [[files.rel(state.files[i].paths[t]) for i in kept if t in state.files[i].paths] for t in TABLES]
    name = f"{PREFIX}{group[len('part-'):]}.json"
    commit(files, name, new_journal("compact", {group: kept}, delete, publish), lease)
    report.trials += len(kept)
    report.parts += [(files.rel(files.part_path(t, group)), merged[t].num_rows) for t in TABLES]


def write_hidden_parts(files: StoreFiles, group: str, merged: Dict[str, pa.Table]) -> List[List[str]]:
    """Write a group's parts under hidden names; the (hidden, visible) renames, in publishing order."""
    with ThreadPoolExecutor(max_workers=len(TABLES)) as pool:
        payloads = dict(zip(PUBLISH_ORDER, pool.map(lambda t: to_parquet_bytes(merged[t]), PUBLISH_ORDER)))
    publish = []
    for table in PUBLISH_ORDER:
        hidden = files.part_path(table, group, hidden=True)
        files.put(hidden, payloads[table])
        publish.append([files.rel(hidden), files.rel(files.part_path(table, group))])
    return publish


def groups_holding(files: StoreFiles, trial_id: str) -> List[str]:
    """The compacted groups whose trials part lists `trial_id` (reads only trial_id columns)."""
    parts = files.list_parts("trials")
    found = files.map(lambda g: trial_id in read_ids(files, parts[g].path)[0], sorted(parts))
    return [g for g, holds in zip(sorted(parts), found) if holds]


def first_copies(table: str, data: pa.Table) -> pa.Table:
    """Each key's first row (trial_id, and epoch or layer_index): one copy of a trial a group holds twice."""
    numbered = data.append_column("row_number", pa.array(np.arange(data.num_rows, dtype=np.int64)))
    first = numbered.group_by(KEYS[table], use_threads=False).aggregate([("row_number", "min")])
    rows = np.sort(first.column("row_number_min").to_numpy())
    return data.take(pa.array(rows))


def evict(files: StoreFiles, drops: Dict[str, Set[str]], lease: Optional[Lease] = None,
          twice: Iterable[str] = ()) -> int:
    """Rewrite each group without the given trials, and each group in `twice` with one copy of every trial
    (journaled like a compaction); how many rows of trials went."""
    evicted = 0
    twice = set(twice)
    for group in sorted(set(drops) | twice):
        ids = drops.get(group, set())
        parts, bad = {}, None
        for table in TABLES:
            data, problem = _read_whole(files, table, files.part_path(table, group))
            if data is None:
                bad = (table, f"its {table} part is {problem or 'missing'}")
                break
            parts[table] = data
        if bad is not None:
            if parts or bad[0] != "trials":  # a damaged group, not one that vanished meanwhile
                quarantine_group(files, group, *bad)
            continue
        value_set = pa.array(sorted(ids), type=pa.string())
        kept = {t: parts[t].filter(pc.invert(pc.is_in(parts[t]["trial_id"], value_set=value_set))) for t in TABLES}
        if group in twice:
            kept = {t: first_copies(t, kept[t]) for t in TABLES}
        evicted += parts["trials"].num_rows - kept["trials"].num_rows
        new_group = f"part-{uuid.uuid4().hex}"
        publish = write_hidden_parts(files, new_group, kept) if kept["trials"].num_rows else []
        old = [files.rel(files.part_path(t, group)) for t in TABLES]
        name = f"{PREFIX}{new_group[len('part-'):]}.json"
        journal = new_journal("evict", {new_group: kept["trials"]["trial_id"].to_pylist()} if publish else {},
                              [old[:1], old[1:]], publish)
        commit(files, name, journal, lease)
    return evicted


def _remove_leftovers(files: StoreFiles) -> int:
    """Hidden files that no journal names, older than STALE_SECONDS: parts and temps of writers that crashed."""
    named = set()
    for name in journal_names(files):
        journal = read_journal(files, name)
        if journal is not None:
            named.update(files.path_of(hidden) for hidden, _ in journal["publish"])
    cutoff = time.time() - STALE_SECONDS
    removed = 0
    for directory in [files.table_path(t) for t in TABLES] + [join(files.table_path(t), COMPACTED) for t in TABLES]:
        for info in files.listdir(directory):
            if (info.type == pafs.FileType.File and info.base_name.startswith((".tmp-", ".part-"))
                    and info.path not in named and info.mtime is not None and info.mtime.timestamp() < cutoff):
                files.delete(info.path)
                removed += 1
    return removed
