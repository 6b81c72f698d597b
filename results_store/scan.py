"""Knowing what is done, without reading every file's data.

A trial is finished when its rows are readable in all three tables:

- per-trial files (``<table>/<trial_id>.parquet``): the trials file holds
  exactly one row, the layers file at least one, the epochs file is readable
  or absent (a prune-only trial has no epochs rows); only the Parquet footer
  of each file is read;
- a compacted group (``<table>/compacted/part-<uuid>.parquet`` for the three
  tables, one uuid): the trials part's trial_id column reads, and the epochs
  and layers parts' footers read with the right schema.

A file that exists but cannot be read is moved aside to
``<store>/_quarantine/<table>/<name>.<UTC timestamp>`` together with the rest
of its trial (or group), so a rerun writes a fresh, consistent set; each move
is one line in ``store.quarantined``. A file that is merely missing is never
moved: it may belong to a write or a compaction in progress.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple

import pyarrow as pa
import pyarrow.parquet as pq

from results_store.files import StoreError, one_line
from results_store.journal import journal_names, roll_forward
from results_store.schema import TABLES, footer_problem

if TYPE_CHECKING:
    from results_store.store import ResultsStore

OK, MISSING, BAD = "ok", "missing", "bad"
ATTEMPTS = 5  # rescans when a compaction finished while we looked


@dataclass(frozen=True)
class Check:
    state: str
    rows: int = 0
    reason: str = ""


def _failure(store: "ResultsStore", path: str, exc: BaseException) -> Check:
    """An I/O error: on a local disk the file is unreadable; on an object store it may be the network, so stop."""
    if store._local:
        return Check(BAD, reason=f"unreadable ({one_line(exc)})")
    raise StoreError(f"store {store.location}: cannot read {store._rel(path)}: {one_line(exc)}")


def check_footer(store: "ResultsStore", table: str, path: str, size: Optional[int] = None) -> Check:
    """Read one file's Parquet footer: its state, row count and, when bad, why."""
    if size == 0:
        return Check(BAD, reason="unreadable (empty file, 0 bytes)")
    try:
        with store._fs.open_input_file(path) as f:
            metadata = pq.read_metadata(f)
    except FileNotFoundError:
        return Check(MISSING)
    except (ValueError, pa.ArrowInvalid) as exc:
        return Check(BAD, reason=f"unreadable ({one_line(exc)})")
    except (OSError, pa.ArrowException) as exc:
        return _failure(store, path, exc)
    problem = footer_problem(table, metadata)
    return Check(BAD, reason=problem) if problem else Check(OK, metadata.num_rows)


def read_ids(store: "ResultsStore", path: str) -> Tuple[List[str], Check]:
    """The trial ids a compacted trials part holds, reading only its trial_id column."""
    try:
        with store._fs.open_input_file(path) as f:
            parquet = pq.ParquetFile(f)
            problem = footer_problem("trials", parquet.metadata)
            if problem:
                return [], Check(BAD, reason=problem)
            ids = parquet.read(columns=["trial_id"], use_threads=False).column(0).to_pylist()
    except FileNotFoundError:
        return [], Check(MISSING)
    except (ValueError, pa.ArrowInvalid) as exc:
        return [], Check(BAD, reason=f"unreadable ({one_line(exc)})")
    except (OSError, pa.ArrowException) as exc:
        return [], _failure(store, path, exc)
    return ids, Check(OK, len(ids))


@dataclass
class TrialFiles:
    """One trial's per-trial files: where they are and what their footers say."""

    paths: Dict[str, str] = field(default_factory=dict)
    checks: Dict[str, Check] = field(default_factory=dict)

    def problems(self) -> Dict[str, str]:
        bad = {t: c.reason for t, c in self.checks.items() if c.state == BAD}
        trials, layers = self.checks.get("trials"), self.checks.get("layers")
        if trials is not None and trials.state == OK and trials.rows != 1:
            bad["trials"] = f"holds {trials.rows} rows; a trial's trials file holds 1"
        if layers is not None and layers.state == OK and layers.rows == 0:
            bad["layers"] = "holds no rows; a stored trial has at least one layer"
        return bad

    def state(self, table: str) -> str:
        check = self.checks.get(table)
        return MISSING if check is None else check.state

    def done(self) -> bool:
        return (not self.problems() and self.state("trials") == OK and self.state("layers") == OK
                and self.state("epochs") in (OK, MISSING))

    def rows(self, table: str) -> int:
        check = self.checks.get(table)
        return check.rows if check is not None and check.state == OK else 0


def check_trials(store: "ResultsStore", paths: Dict[str, Dict[str, Tuple[str, Optional[int]]]]) -> Dict[str, TrialFiles]:
    """Footer checks of per-trial files given as {trial_id: {table: (path, size or None)}}, in threads."""
    tasks = [(trial_id, table, path, size) for trial_id, by_table in paths.items()
             for table, (path, size) in by_table.items()]
    checks = store._map(lambda task: check_footer(store, task[1], task[2], task[3]), tasks)
    files: Dict[str, TrialFiles] = {}
    for (trial_id, table, path, _), check in zip(tasks, checks):
        entry = files.setdefault(trial_id, TrialFiles())
        entry.paths[table] = path
        entry.checks[table] = check
    return files


@dataclass
class Groups:
    """Compacted groups: the readable ones with their ids and row counts, the damaged ones, orphaned parts."""

    ids: Dict[str, List[str]] = field(default_factory=dict)
    rows: Dict[str, Dict[str, int]] = field(default_factory=dict)
    broken: Dict[str, Tuple[str, str]] = field(default_factory=dict)  # group -> (table of the bad part, reason)
    orphans: List[Tuple[str, str]] = field(default_factory=list)  # (table, group): parts with no trials part

    def finished(self) -> Set[str]:
        return {trial_id for ids in self.ids.values() for trial_id in ids}


def scan_groups(store: "ResultsStore") -> Groups:
    """Every compacted group's state. The trials part is listed first: it is published last and removed first."""
    listed = {table: store._list_parts(table) for table in TABLES}

    def one(group: str):
        ids, check = read_ids(store, listed["trials"][group].path)
        if check.state == MISSING:
            return None  # removed since the listing (evicted or moved aside by another process)
        if check.state == BAD:
            return ("trials", f"its trials part is {check.reason}")
        rows = {"trials": len(ids)}
        for table in ("epochs", "layers"):
            part = check_footer(store, table, store._part_path(table, group))
            if part.state != OK:
                return (table, f"its {table} part is {part.reason or 'missing'}")
            rows[table] = part.rows
        return ids, rows

    groups = Groups()
    for group, outcome in zip(sorted(listed["trials"]), store._map(one, sorted(listed["trials"]))):
        if outcome is None:
            continue
        if isinstance(outcome[0], str):
            groups.broken[group] = outcome
        else:
            groups.ids[group], groups.rows[group] = outcome
    orphaned = sorted({(t, g) for t in ("epochs", "layers") for g in listed[t] if g not in listed["trials"]})
    if (orphaned or any(reason.endswith(" missing") for _, reason in groups.broken.values())) and journal_names(store):
        # A change is in flight: a missing or lone part may be its doing. Decide nothing about those now.
        groups.broken = {g: b for g, b in groups.broken.items() if not b[1].endswith(" missing")}
        orphaned = []
    for group in [g for g, (_, reason) in groups.broken.items() if reason.endswith(" missing")]:
        if not store._is_file(store._part_path("trials", group)):
            del groups.broken[group]  # the whole group went away meanwhile
    groups.orphans = [(t, g) for t, g in orphaned if not store._is_file(store._part_path("trials", g))]
    return groups


@dataclass
class Scan:
    files: Dict[str, TrialFiles]
    groups: Groups

    def per_trial_done(self) -> Set[str]:
        return {trial_id for trial_id, files in self.files.items() if files.done()}

    def finished(self) -> Set[str]:
        return self.per_trial_done() | self.groups.finished()


def scan(store: "ResultsStore") -> Scan:
    """Roll forward any journal, check every per-trial footer and every group, move aside what is unreadable."""
    for attempt in range(ATTEMPTS):
        roll_forward(store)
        paths: Dict[str, Dict[str, Tuple[str, Optional[int]]]] = {}
        for table in TABLES:  # trials first: written last by write_trial, so listed before its other files
            for trial_id, info in store._list_trial_files(table).items():
                paths.setdefault(trial_id, {})[table] = (info.path, info.size)
        files = check_trials(store, paths)
        # A compaction that began while we looked may have deleted per-trial files whose group is not yet
        # visible: its journal exists until the group is. Seeing none here means the groups listed next are
        # complete for every trial we missed.
        if attempt + 1 < ATTEMPTS and journal_names(store):
            continue
        groups = scan_groups(store)
        break
    result = Scan(files, groups)
    quarantine(store, result)
    return result


def quarantine(store: "ResultsStore", result: Scan) -> None:
    for trial_id, files in sorted(result.files.items()):
        bad = files.problems()
        if bad:
            quarantine_trial(store, trial_id, files.paths, bad)
    for group, (table, reason) in sorted(result.groups.broken.items()):
        quarantine_group(store, group, table, reason)
    for table, group in result.groups.orphans:
        store._move_aside(store._part_path(table, group), f"compacted group {group} has no trials part", False)


def quarantine_trial(store: "ResultsStore", trial_id: str, paths: Dict[str, str], bad: Dict[str, str]) -> None:
    """Move aside a trial's per-trial files, the trials file first (it stops counting as finished at once)."""
    for table in TABLES:
        if table in paths:
            if table in bad:
                store._move_aside(paths[table], bad[table], True)
            else:
                store._move_aside(paths[table], f"trial {trial_id} has an unreadable {' and '.join(bad)} file", False)


def quarantine_group(store: "ResultsStore", group: str, bad_table: str, reason: str) -> None:
    for table in TABLES:
        path = store._part_path(table, group)
        if table == bad_table:
            store._move_aside(path, f"compacted group {group}: {reason}", True)
        else:
            store._move_aside(path, f"compacted group {group}: {reason}; its trials are not done", False)
