"""The Parquet results store: three tables, each a directory pandas reads directly.

Layout (``pd.read_parquet("results/trials")`` reads a table at every moment)::

    <store>/<table>/<trial_id>.parquet                 one file per trial per table, as trials finish
    <store>/<table>/compacted/part-<uuid>.parquet      many trials per file, after `compact()`
    <store>/_compaction-<uuid>.json                    a compaction in flight (see journal.py)
    <store>/_quarantine/<table>/<name>.<UTC time>      unreadable files moved aside (see scan.py)

for the tables ``trials``, ``epochs`` and ``layers``. One file per trial per
table makes a rewrite of a trial replace its rows instead of duplicating them
and lets many workers write without coordination. Names starting with "." or
"_" are skipped by pandas and pyarrow: temp files, hidden parts, journals, the
quarantine.

Every file is written with the fixed schema in `SCHEMAS`. A write is atomic:
on a local filesystem to a hidden temp file in the same directory, renamed
over the target; on an object store a single put of the final key. The
``trials`` file is written last and is the commit marker. A trial counts as
finished once its rows are readable in all three tables (scan.py).

This module must not import torch or ray: analysis machines read the store with
pandas and pyarrow alone.
"""
from __future__ import annotations

import datetime as dt
import os
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, TypeVar, Union

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from results_store import compaction
from results_store.files import StoreError, filesystem_for, join, one_line, probe_directory
from results_store.files import check_writable as _check_location
from results_store.journal import exclusive, journal_names, roll_forward
from results_store.scan import ATTEMPTS, OK, Scan, check_trials, quarantine, quarantine_trial, scan, scan_groups
from results_store.schema import (COMPACTED, SAFE_TRIAL_ID, SCHEMAS, SUFFIX, TABLES, TRIAL_STATUSES, build_table,
                                  check_columns, conform, footer_problem, to_parquet_bytes)

T = TypeVar("T")
R = TypeVar("R")
QUARANTINE = "_quarantine"
LOCAL_THREADS = max(1, min(4, os.cpu_count() or 1))
REMOTE_THREADS = 16  # object stores: hide per-request latency


class ResultsStore:
    """A results store at a local path or a pyarrow filesystem URI (file://, s3://, gs://, ...).

    `problems` collects files `read` skipped; `quarantined` one line per file moved aside as unreadable.
    """

    def __init__(self, uri: Union[str, "os.PathLike[str]"]) -> None:
        self.location = os.fspath(uri)
        try:
            self._fs, root = filesystem_for(self.location)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, OSError) as exc:
            raise StoreError(f"store {self.location} cannot be opened: {exc}") from None
        self._root = root.rstrip("/") or "/"
        self._local = isinstance(self._fs, pafs.LocalFileSystem)
        self._made_dirs: Set[str] = set()
        self.problems: List[str] = []
        self.quarantined: List[str] = []

    def __str__(self) -> str:
        return self.location

    def __repr__(self) -> str:
        return f"ResultsStore({self.location!r})"

    def table_path(self, table: str) -> str:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; valid tables: {', '.join(TABLES)}")
        return join(self._root, table)

    # ----------------------------------------------------------------- writing

    def check_writable(self) -> None:
        """Fail early, before a sweep spends hours, if results could not be saved: the root and every table."""
        _check_location(self.location, "store")
        for table in TABLES:
            try:
                probe_directory(self._fs, self.table_path(table))
            except (OSError, ValueError, pa.ArrowException) as exc:
                raise StoreError(f"store {self.location}: table directory {join(self.location, table)} "
                                 f"is not writable: {one_line(exc)}") from None

    def write_trial(self, trial: Dict[str, Any], epochs: Iterable[Dict[str, Any]],
                    layers: Iterable[Dict[str, Any]]) -> None:
        """Write one trial's rows to the three tables, replacing any earlier write of it.

        The trials file is removed first and written last, so a crash between
        the writes leaves the trial unfinished (it reruns) rather than finished
        with stale epochs or layers. A trial already compacted is first taken
        out of its group (the group is rewritten without it).
        """
        trial_id = trial.get("trial_id")
        if not isinstance(trial_id, str) or not SAFE_TRIAL_ID.match(trial_id):
            raise ValueError(
                f"trial_id must be a non-empty string of letters, digits, '_', '.', '-' "
                f"not starting with '.' or '_', got {trial_id!r}"
            )
        status = trial.get("status")
        if status not in TRIAL_STATUSES:
            raise ValueError(f"unknown trial status {status!r}; valid statuses: {', '.join(TRIAL_STATUSES)}")
        children = {}
        for table, rows in (("epochs", epochs), ("layers", layers)):
            filled = []
            for row in rows:
                if row.get("trial_id", trial_id) != trial_id:
                    raise ValueError(
                        f"{table} row has trial_id {row['trial_id']!r}, but the trial is {trial_id!r}"
                    )
                filled.append({**row, "trial_id": trial_id})
            children[table] = build_table(table, filled)
        trials_table = build_table("trials", [trial])
        if not children["layers"].num_rows:
            raise ValueError(f"trial {trial_id} has no layers rows; a stored trial has at least one prunable layer")

        roll_forward(self)
        if compaction.groups_holding(self, trial_id):
            with exclusive(self):
                holding = compaction.groups_holding(self, trial_id)
                compaction.evict(self, {group: {trial_id} for group in holding})
        self._delete(self._file_path("trials", trial_id))
        for table in ("epochs", "layers"):
            if children[table].num_rows:
                self._put(self._file_path(table, trial_id), to_parquet_bytes(children[table]))
            else:
                self._delete(self._file_path(table, trial_id))
        self._put(self._file_path("trials", trial_id), to_parquet_bytes(trials_table))

    def compact(self, rows_per_part: int = compaction.DEFAULT_ROWS_PER_PART) -> "compaction.CompactionReport":
        """Merge finished per-trial files into parts of at most `rows_per_part` rows per table (see compaction.py)."""
        return compaction.compact(self, rows_per_part)

    # ----------------------------------------------------------------- knowing what is done

    def exists(self) -> bool:
        """Whether the store's root directory exists (an object-store prefix may exist only implicitly)."""
        try:
            return self._fs.get_file_info(self._root).type == pafs.FileType.Directory
        except (OSError, pa.ArrowException):
            return False

    def has_trial(self, trial_id: str) -> bool:
        """Whether this one trial is finished: its per-trial footers, or a readable compacted group holding it."""
        if not isinstance(trial_id, str) or not SAFE_TRIAL_ID.match(trial_id):
            return False
        for attempt in range(ATTEMPTS):
            roll_forward(self)
            paths = {table: (self._file_path(table, trial_id), None) for table in TABLES}
            files = check_trials(self, {trial_id: paths})[trial_id]
            bad = files.problems()
            if bad:
                quarantine_trial(self, trial_id, files.paths, bad)
                return False
            if files.state("trials") == OK:
                return files.done()
            if attempt + 1 < ATTEMPTS and journal_names(self):
                continue  # a compaction is moving files: look again once it is through
            break
        groups = scan_groups(self)
        quarantine(self, Scan({}, groups))
        return trial_id in groups.finished()

    def finished_ids(self) -> Set[str]:
        """Trials whose rows are readable in all three tables; unreadable files are moved aside (`quarantined`)."""
        return scan(self).finished()

    # ----------------------------------------------------------------- reading

    def read(self, table: str, columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
        """The whole table (or some `columns` of it) as a DataFrame: per-trial files and compacted parts.

        Unreadable or foreign files are skipped, named in `problems` and warned about.
        """
        self.table_path(table)  # validates the name
        wanted = check_columns(table, columns)
        try:
            roll_forward(self)
        except StoreError as exc:  # a read-only copy of a store: read what is visible, which is never doubled
            self._problem(f"{exc}; reading what is visible")
        # Parts before per-trial files: a compaction deletes per-trial files before its parts appear, so a
        # trial's rows can be missed for a moment but never read twice.
        parts = [i for i in self._listdir(join(self.table_path(table), COMPACTED)) if _visible_file(i)]
        files = parts + self._list(table)
        big = {i.path for i in parts}
        results = self._map(lambda info: self._read_file(table, info, wanted, info.path in big), files)
        tables = []
        for info, (data, problem) in zip(files, results):
            if problem is not None:
                self._problem(f"store {self.location}: skipped {self._rel(info.path)}: {problem}")
            elif data is not None:
                tables.append(data)
        if not tables:
            return SCHEMAS[table].empty_table().select(wanted).to_pandas()
        return pa.concat_tables(tables).to_pandas()

    def _read_file(self, table: str, info: pafs.FileInfo, columns: List[str],
                   big: bool) -> Tuple[Optional[pa.Table], Optional[str]]:
        if not info.base_name.endswith(SUFFIX):
            return None, f"not a {SUFFIX} file"
        try:
            with self._fs.open_input_file(info.path) as f:
                parquet = pq.ParquetFile(f)
                problem = footer_problem(table, parquet.metadata)
                if problem:
                    return None, problem
                present = set(parquet.schema_arrow.names)
                data = parquet.read(columns=[c for c in columns if c in present], use_threads=big)
        except FileNotFoundError:
            return None, None  # compacted or rewritten since the listing
        except (OSError, pa.ArrowException) as exc:
            return None, f"unreadable ({one_line(exc)})"
        return conform(table, data, columns)

    def _problem(self, message: str) -> None:
        self.problems.append(message)
        warnings.warn(message, stacklevel=3)

    # ----------------------------------------------------------------- paths and file operations
    # Every change to the store goes through _put, _delete and _move (tests inject crashes there).

    def _file_path(self, table: str, trial_id: str) -> str:
        return join(self.table_path(table), trial_id + SUFFIX)

    def _part_path(self, table: str, group: str, hidden: bool = False) -> str:
        return join(self.table_path(table), COMPACTED, ("." if hidden else "") + group + SUFFIX)

    def _rel(self, path: str) -> str:
        prefix = self._root.rstrip("/") + "/"
        return path[len(prefix):] if path.startswith(prefix) else path

    def _abs(self, rel: str) -> str:
        return join(self._root, rel)

    def _mkdir(self, directory: str) -> None:
        if directory in self._made_dirs:
            return
        try:
            self._fs.create_dir(directory, recursive=True)
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"store {self.location}: cannot create {self._rel(directory)}: {one_line(exc)}") from None
        self._made_dirs.add(directory)

    def _put(self, path: str, data: bytes) -> None:
        """Atomically create or replace one file: temp file and rename locally, one put on object stores."""
        directory, name = path.rsplit("/", 1)
        try:
            self._mkdir(directory)
            if self._local:
                temp = join(directory, f".tmp-{uuid.uuid4().hex[:8]}-{name}")
                try:
                    with self._fs.open_output_stream(temp) as stream:
                        stream.write(data)
                    self._fs.move(temp, path)  # rename(2): atomic replace on POSIX
                except BaseException:
                    self._delete(temp)
                    raise
            else:
                with self._fs.open_output_stream(path) as stream:
                    stream.write(data)
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"store {self.location}: cannot write {self._rel(path)}: {one_line(exc)}") from None

    def _delete(self, path: str) -> None:
        try:
            self._fs.delete_file(path)
        except FileNotFoundError:
            pass
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"store {self.location}: cannot write {self._rel(path)}: {one_line(exc)}") from None

    def _move(self, source: str, target: str) -> None:
        """Rename (an atomic replace locally); FileNotFoundError when `source` is gone."""
        try:
            self._fs.move(source, target)
        except FileNotFoundError:
            raise
        except (OSError, pa.ArrowException) as exc:
            if not self._is_file(source):
                raise FileNotFoundError(source) from None
            raise StoreError(f"store {self.location}: cannot move {self._rel(source)} to {self._rel(target)}: "
                             f"{one_line(exc)}") from None

    def _move_aside(self, path: str, reason: str, unreadable: bool) -> None:
        """Move a file to <store>/_quarantine/<table>/<name>.<UTC timestamp> and record one line about it."""
        rel = self._rel(path)
        first, name = rel.split("/", 1)[0], rel.rsplit("/", 1)[-1]
        directory = join(self._root, QUARANTINE, first) if first in TABLES else join(self._root, QUARANTINE)
        target = join(directory, f"{name}.{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}")
        if self._is_file(target):
            target += f"-{uuid.uuid4().hex[:6]}"
        if not self._is_file(path):
            return
        self._mkdir(directory)
        try:
            self._move(path, target)
        except FileNotFoundError:
            return  # moved or replaced by another process meanwhile
        self.quarantined.append(f"moved {'unreadable ' if unreadable else ''}{rel} to {self._rel(target)} ({reason})")

    def _is_file(self, path: str) -> bool:
        try:
            return self._fs.get_file_info(path).type == pafs.FileType.File
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"store {self.location}: cannot read {self._rel(path)}: {one_line(exc)}") from None

    def _listdir(self, directory: str) -> List[pafs.FileInfo]:
        selector = pafs.FileSelector(directory, allow_not_found=True, recursive=False)
        try:
            return self._fs.get_file_info(selector)
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"store {self.location}: cannot list {self._rel(directory)}: {one_line(exc)}") from None

    def _list(self, table: str) -> List[pafs.FileInfo]:
        """Visible files of a table directory, sorted by name (not its compacted parts)."""
        return sorted((i for i in self._listdir(self.table_path(table)) if _visible_file(i)), key=lambda i: i.base_name)

    def _list_trial_files(self, table: str) -> Dict[str, pafs.FileInfo]:
        """Per-trial files of a table by trial id."""
        return {i.base_name[: -len(SUFFIX)]: i for i in self._list(table) if i.base_name.endswith(SUFFIX)}

    def _list_parts(self, table: str) -> Dict[str, pafs.FileInfo]:
        """Visible compacted parts of a table by group name ("part-<uuid>")."""
        infos = self._listdir(join(self.table_path(table), COMPACTED))
        return {i.base_name[: -len(SUFFIX)]: i for i in infos
                if _visible_file(i) and i.base_name.startswith("part-") and i.base_name.endswith(SUFFIX)}

    def _map(self, fn: Callable[[T], R], items: Iterable[T]) -> List[R]:
        """fn over items in threads (footers and small files: I/O and Arrow release the GIL)."""
        items = list(items)
        workers = min(len(items), LOCAL_THREADS if self._local else REMOTE_THREADS)
        if workers < 2:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(fn, items))


def _visible_file(info: pafs.FileInfo) -> bool:
    return info.type == pafs.FileType.File and not info.base_name.startswith((".", "_"))


def read_table(uri: Union[str, "os.PathLike[str]"], table: str, columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """One table of the store at `uri` as a DataFrame (problems are warned about)."""
    return ResultsStore(uri).read(table, columns)
