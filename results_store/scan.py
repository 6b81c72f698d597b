"""Knowing what is done, without reading every file's data.

A trial is finished when its rows are readable in all three tables:

- per-trial files (``<table>/<trial_id>.parquet``): the trials file holds
  exactly one row, the layers file at least one, the epochs file is readable
  or absent (a prune-only trial has no epochs rows); only the Parquet footer
  of each file is read;
- a compacted group (``<table>/compacted/part-<uuid>.parquet`` for the three
  tables, one uuid): the trials part's trial_id column reads, and the epochs
  and layers parts' footers read with the right schema.

A per-trial file counts only if it holds its own trial: the trial_id
column's statistics in its footer (or the trial id the store writes there)
must be the id its name gives, so a trial's files copied under another
trial's names make neither trial done twice.

A file that exists but cannot be read, or holds another trial, is moved aside to
``<store>/_quarantine/<table>/<name>.<UTC timestamp>`` together with the rest
of its trial (or group), so a rerun writes a fresh, consistent set; each move
is one line in ``store.quarantined``. A file that is merely missing is never
moved: it may belong to a write or a compaction in progress.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

import pyarrow as pa
import pyarrow.parquet as pq

from common.storage import one_line
from results_store.files import StoreError, StoreFiles
from results_store.journal import journal_names, roll_forward
from results_store.schema import TABLES, footer_problem, trial_id_problem

OK, MISSING, BAD, FOREIGN = "ok", "missing", "bad", "foreign"  # FOREIGN: a readable file of another trial
ATTEMPTS = 5  # rescans when a compaction finished while we looked


@dataclass(frozen=True)
class Check:
    state: str
    rows: int = 0
    reason: str = ""


def _failure(files: StoreFiles, path: str, exc: BaseException) -> Check:
    """An I/O error: on a local disk the file is unreadable; on an object store it may be the network, so stop."""
    if files.local:
        return Check(BAD, reason=f"unreadable ({one_line(exc)})")
    raise StoreError(f"store {files.location}: cannot read {files.rel(path)}: {one_line(exc)}")


def check_footer(files: StoreFiles, table: str, path: str, size: Optional[int] = None,
                 trial_id: Optional[str] = None) -> Check:
    """Read one file's Parquet footer: its state, row count and, when bad, why. With `trial_id` (a per-trial
    file), a file whose footer shows rows of another trial is FOREIGN."""
    if size == 0:
        return Check(BAD, reason="unreadable (empty file, 0 bytes)")
    try:
        with files.fs.open_input_file(path) as f:
            metadata = pq.read_metadata(f)
    except FileNotFoundError:
        return Check(MISSING)
    except (ValueError, pa.ArrowInvalid) as exc:
        return Check(BAD, reason=f"unreadable ({one_line(exc)})")
    except (OSError, pa.ArrowException) as exc:
        return _failure(files, path, exc)
    problem = footer_problem(table, metadata)
    if problem:
        return Check(BAD, reason=problem)
    foreign = None if trial_id is None else trial_id_problem(metadata, trial_id)
    if foreign:
        return Check(FOREIGN, metadata.num_rows, foreign)
    return Check(OK, metadata.num_rows)


def read_ids(files: StoreFiles, path: str) -> Tuple[List[str], Check]:
    """The trial ids a compacted trials part holds, reading only its trial_id column."""
    try:
        with files.fs.open_input_file(path) as f:
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
        return [], _failure(files, path, exc)
    return ids, Check(OK, len(ids))


@dataclass
class TrialFiles:
    """One trial's per-trial files: where they are and what their footers say."""

    paths: Dict[str, str] = field(default_factory=dict)
    checks: Dict[str, Check] = field(default_factory=dict)

    def problems(self) -> Dict[str, Check]:
        """The files that stop this trial from counting (BAD or FOREIGN checks), by table."""
        bad = {t: c for t, c in self.checks.items() if c.state in (BAD, FOREIGN)}
        trials, layers = self.checks.get("trials"), self.checks.get("layers")
        if trials is not None and trials.state == OK and trials.rows != 1:
            bad["trials"] = Check(BAD, reason=f"holds {trials.rows} rows; a trial's trials file holds 1")
        if layers is not None and layers.state == OK and layers.rows == 0:
            bad["layers"] = Check(BAD, reason="holds no rows; a stored trial has at least one layer")
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


def check_trials(files: StoreFiles, paths: Dict[str, Dict[str, Tuple[str, Optional[int]]]]) -> Dict[str, TrialFiles]:
    """Footer checks of per-trial files given as {trial_id: {table: (path, size or None)}}, in threads."""
    tasks = [(trial_id, table, path, size) for trial_id, by_table in paths.items()
             for table, (path, size) in by_table.items()]
    checks = files.map(lambda task: check_footer(files, task[1], task[2], task[3], task[0]), tasks)
    found: Dict[str, TrialFiles] = {}
    for (trial_id, table, path, _), check in zip(tasks, checks):
        entry = found.setdefault(trial_id, TrialFiles())
        entry.paths[table] = path
        entry.checks[table] = check
    return found


@dataclass
class Groups:
    """Compacted groups: the readable ones with their ids and row counts, the damaged ones, orphaned parts."""

    ids: Dict[str, List[str]] = field(default_factory=dict)
    rows: Dict[str, Dict[str, int]] = field(default_factory=dict)
    broken: Dict[str, Tuple[str, str]] = field(default_factory=dict)  # group -> (table of the bad part, reason)
    orphans: List[Tuple[str, str]] = field(default_factory=list)  # (table, group): parts with no trials part

    def finished(self) -> Set[str]:
        return {trial_id for ids in self.ids.values() for trial_id in ids}


def scan_groups(files: StoreFiles) -> Groups:
    """Every compacted group's state. The trials part is listed first: it is published last and removed first."""
    listed = {table: files.list_parts(table) for table in TABLES}

    def one(group: str):
        ids, check = read_ids(files, listed["trials"][group].path)
        if check.state == MISSING:
            return None  # removed since the listing (evicted or moved aside by another process)
        if check.state == BAD:
            return ("trials", f"its trials part is {check.reason}")
        rows = {"trials": len(ids)}
        for table in ("epochs", "layers"):
            part = check_footer(files, table, files.part_path(table, group))
            if part.state != OK:
                return (table, f"its {table} part is {part.reason or 'missing'}")
            rows[table] = part.rows
        return ids, rows

    groups = Groups()
    for group, outcome in zip(sorted(listed["trials"]), files.map(one, sorted(listed["trials"]))):
        if outcome is None:
            continue
        if isinstance(outcome[0], str):
            groups.broken[group] = outcome
        else:
            groups.ids[group], groups.rows[group] = outcome
    orphaned = sorted({(t, g) for t in ("epochs", "layers") for g in listed[t] if g not in listed["trials"]})
    if (orphaned or any(reason.endswith(" missing") for _, reason in groups.broken.values())) and journal_names(files):
        # A change is in flight: a missing or lone part may be its doing. Decide nothing about those now.
        groups.broken = {g: b for g, b in groups.broken.items() if not b[1].endswith(" missing")}
        orphaned = []
    for group in [g for g, (_, reason) in groups.broken.items() if reason.endswith(" missing")]:
        if not files.is_file(files.part_path("trials", group)):
            del groups.broken[group]  # the whole group went away meanwhile
    groups.orphans = [(t, g) for t, g in orphaned if not files.is_file(files.part_path("trials", g))]
    return groups


@dataclass
class Scan:
    files: Dict[str, TrialFiles]
    groups: Groups

    def per_trial_done(self) -> Set[str]:
        return {trial_id for trial_id, found in self.files.items() if found.done()}

    def finished(self) -> Set[str]:
        return self.per_trial_done() | self.groups.finished()


def scan(files: StoreFiles) -> Scan:
    """Roll forward any journal, check every per-trial footer and every group, move aside what is unreadable."""
    for attempt in range(ATTEMPTS):
        roll_forward(files)
        paths: Dict[str, Dict[str, Tuple[str, Optional[int]]]] = {}
        for table in TABLES:  # trials first: written last by write_trial, so listed before its other files
            for trial_id, info in files.list_trial_files(table).items():
                paths.setdefault(trial_id, {})[table] = (info.path, info.size)
        found = check_trials(files, paths)
        # A compaction that began while we looked may have deleted per-trial files whose group is not yet
        # visible: its journal exists until the group is. Seeing none here means the groups listed next are
        # complete for every trial we missed.
        if attempt + 1 < ATTEMPTS and journal_names(files):
            continue
        groups = scan_groups(files)
        break
    result = Scan(found, groups)
    quarantine(files, result)
    return result


def quarantine(files: StoreFiles, result: Scan) -> None:
    for trial_id, found in sorted(result.files.items()):
        bad = found.problems()
        if bad:
            quarantine_trial(files, trial_id, found.paths, bad)
    for group, (table, reason) in sorted(result.groups.broken.items()):
        quarantine_group(files, group, table, reason)
    for table, group in result.groups.orphans:
        files.move_aside(files.part_path(table, group), f"compacted group {group} has no trials part", False)


def quarantine_trial(files: StoreFiles, trial_id: str, paths: Dict[str, str], bad: Dict[str, Check]) -> None:
    """Move aside a trial's per-trial files, the trials file first (it stops counting as finished at once)."""
    unreadable = [t for t in TABLES if t in bad and bad[t].state != FOREIGN]
    foreign = [t for t in TABLES if t in bad and bad[t].state == FOREIGN]
    why = (f"trial {trial_id} has an unreadable {' and '.join(unreadable)} file" if unreadable
           else f"trial {trial_id}'s {' and '.join(foreign)} {'files hold' if len(foreign) > 1 else 'file holds'} "
                "another trial")
    for table in TABLES:
        if table in paths:
            if table in bad:
                files.move_aside(paths[table], bad[table].reason, bad[table].state != FOREIGN)
            else:
                files.move_aside(paths[table], why, False)


def quarantine_group(files: StoreFiles, group: str, bad_table: str, reason: str) -> None:
    for table in TABLES:
        path = files.part_path(table, group)
        if table == bad_table:
            files.move_aside(path, f"compacted group {group}: {reason}", True)
        else:
            files.move_aside(path, f"compacted group {group}: {reason}; its trials are not done", False)
