"""The Parquet results store: three tables, each a directory pandas reads directly.

Layout (``pd.read_parquet("results/trials")`` reads a table at every moment)::

    <store>/<table>/<trial_id>.parquet                 one file per trial per table, as trials finish
    <store>/<table>/compacted/part-<uuid>.parquet      many trials per file, after `compact()`
    <store>/_compaction-<uuid>.json                    a compaction in flight (see journal.py)
    <store>/_leases/<name>.json                        who holds a lease, e.g. "compaction" (see lease.py)
    <store>/_quarantine/<table>/<name>.<UTC time>      unreadable files moved aside (see scan.py)

for the tables ``trials``, ``epochs`` and ``layers``. One file per trial per
table makes a rewrite of a trial replace its rows instead of duplicating them
and lets many workers write without coordination. Names starting with "." or
"_" are skipped by pandas and pyarrow: temp files, hidden parts, journals, the
quarantine.

Every file is written with the fixed schema in `SCHEMAS`. A write is atomic:
on a local filesystem to a hidden temp file in the same directory, renamed
over the target; on an object store a single put of the final key. The
``trials`` file is written last and is the commit marker; each per-trial
file's footer names its trial. A trial counts as finished once its rows are
readable in all three tables, from files that hold that trial (scan.py).

`ResultsStore` is the top of the store's chain of modules (files.py): it
composes a `StoreFiles` (``store.files``, every file operation) with the
journal, scan and compaction functions below it.

This module must not import torch or ray: analysis machines read the store with
pandas and pyarrow alone.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from common.storage import one_line
from results_store import compaction
from results_store.files import (StoreError, StoreFiles, check_writable, join, probe_directory, storage_error,
                                 visible_file)
from results_store.journal import hidden_trials, journal_names, roll_forward
from results_store.scan import ATTEMPTS, OK, Scan, check_trials, quarantine, quarantine_trial, scan, scan_groups
from results_store.schema import (COMPACTED, SAFE_TRIAL_ID, SCHEMAS, SUFFIX, TABLES, TRIAL_STATUSES, build_table,
                                  check_columns, conform, footer_problem, to_parquet_bytes, trial_id_problem)


class ResultsStore:
    """A results store at a local path or a pyarrow filesystem URI (file://, s3://, gs://, ...).

    `problems` collects files `read` skipped; `quarantined` one line per file moved aside as unreadable.
    `files` is its StoreFiles: the store's paths and the only way its files change.
    """

    def __init__(self, uri: Union[str, "os.PathLike[str]"]) -> None:
        self.files = StoreFiles(uri)
        self.location = self.files.location
        self.problems: List[str] = []

    @property
    def quarantined(self) -> List[str]:
        return self.files.quarantined

    def __str__(self) -> str:
        return self.location

    def __repr__(self) -> str:
        return f"ResultsStore({self.location!r})"

    def table_path(self, table: str) -> str:
        return self.files.table_path(table)

    # ----------------------------------------------------------------- writing

    def check_writable(self) -> None:
        """Fail early, before a sweep spends hours, if results could not be saved: the root and every table."""
        check_writable(self.location, "store")
        for table in TABLES:
            try:
                probe_directory(self.files.fs, self.table_path(table))
            except (OSError, ValueError, pa.ArrowException) as exc:
                raise storage_error(f"store {self.location}: table directory {join(self.location, table)} "
                                    f"is not writable", exc) from None

    def write_trial(self, trial: Dict[str, Any], epochs: Iterable[Dict[str, Any]],
                    layers: Iterable[Dict[str, Any]]) -> None:
        """Write one trial's rows to the three tables, replacing any earlier write of it.

        The trials file is removed first and written last, so a crash between
        the writes leaves the trial unfinished (it reruns) rather than finished
        with stale epochs or layers. A trial already compacted is first taken
        out of its group (the group is rewritten without it), under the
        compaction lease: this waits for a running compaction, up to
        $PRUNE_SWEEP_LEASE_WAIT seconds (default 900), then raises LeaseHeld.
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

        files = self.files
        roll_forward(files)
        if compaction.groups_holding(files, trial_id):
            with compaction.compaction_lease(files, compaction.eviction_wait(),
                                             f"rewrite compacted trial {trial_id}") as lease:
                holding = compaction.groups_holding(files, trial_id)
                compaction.evict(files, {group: {trial_id} for group in holding}, lease)
        files.delete(files.trial_path("trials", trial_id))
        for table in ("epochs", "layers"):
            if children[table].num_rows:
                files.put(files.trial_path(table, trial_id), to_parquet_bytes(children[table], trial_id))
            else:
                files.delete(files.trial_path(table, trial_id))
        files.put(files.trial_path("trials", trial_id), to_parquet_bytes(trials_table, trial_id))

    def compact(self, rows_per_part: int = compaction.DEFAULT_ROWS_PER_PART) -> "compaction.CompactionReport":
        """Merge finished per-trial files into parts of at most `rows_per_part` rows per table (see compaction.py).

        Holds the store's compaction lease; LeaseHeld, with nothing changed, when another process holds it.
        """
        return compaction.compact(self.files, rows_per_part)

    # ----------------------------------------------------------------- knowing what is done

    def exists(self) -> bool:
        """Whether the store's root directory exists (an object-store prefix may exist only implicitly)."""
        try:
            return self.files.fs.get_file_info(self.files.root).type == pafs.FileType.Directory
        except (OSError, pa.ArrowException):
            return False

    def has_trial(self, trial_id: str) -> bool:
        """Whether this one trial is finished: its per-trial footers, or a readable compacted group holding it."""
        if not isinstance(trial_id, str) or not SAFE_TRIAL_ID.match(trial_id):
            return False
        files = self.files
        for attempt in range(ATTEMPTS):
            roll_forward(files)
            paths = {table: (files.trial_path(table, trial_id), None) for table in TABLES}
            found = check_trials(files, {trial_id: paths})[trial_id]
            bad = found.problems()
            if bad:
                quarantine_trial(files, trial_id, found.paths, bad)
                return False
            if found.state("trials") == OK:
                return found.done()
            if attempt + 1 < ATTEMPTS and journal_names(files):
                continue  # a compaction is moving files: look again once it is through
            break
        groups = scan_groups(files)
        quarantine(files, Scan({}, groups))
        return trial_id in groups.finished()

    def finished_ids(self) -> Set[str]:
        """Trials whose rows are readable in all three tables; unreadable files are moved aside (`quarantined`)."""
        return scan(self.files).finished()

    def per_trial_count(self) -> int:
        """How many trials have a per-trial trials file (listing one directory, reading none): what a compaction
        would gain."""
        return len(self.files.list_trial_files("trials"))

    # ----------------------------------------------------------------- reading

    def read(self, table: str, columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
        """The whole table (or some `columns` of it) as a DataFrame: per-trial files and compacted parts.

        Unreadable or foreign files are skipped, named in `problems` and warned about, and so are trials an
        unfinished compaction hides from a store this process cannot change.
        """
        files = self.files
        self.table_path(table)  # validates the name
        wanted = check_columns(table, columns)
        try:
            roll_forward(files)
        except StoreError as exc:  # a read-only copy of a store: read what is visible, which is never doubled
            self._problem(self._unfinished_change(exc))
        # Parts before per-trial files: a compaction deletes per-trial files before its parts appear, so a
        # trial's rows can be missed for a moment but never read twice.
        parts = [i for i in files.listdir(join(self.table_path(table), COMPACTED)) if visible_file(i)]
        listed = parts + files.list_table(table)
        big = {i.path for i in parts}
        results = files.map(lambda info: self._read_file(table, info, wanted, info.path in big), listed)
        tables = []
        for info, (data, problem) in zip(listed, results):
            if problem is not None:
                self._problem(f"store {self.location}: skipped {files.rel(info.path)}: {problem}")
            elif data is not None:
                tables.append(data)
        if not tables:
            return SCHEMAS[table].empty_table().select(wanted).to_pandas()
        return pa.concat_tables(tables).to_pandas()

    def _unfinished_change(self, exc: StoreError) -> str:
        """The problem line for a journal this process cannot apply: how many trials it hides, and what to do."""
        try:
            hidden = hidden_trials(self.files)
        except StoreError:
            hidden = []
        if not hidden:
            return f"{exc}; reading what is visible"
        cause = os.strerror(exc.errno) if exc.errno else str(exc).replace(f"store {self.location}: ", "", 1)
        return (f"store {self.location}: {len(hidden)} trial(s) of an unfinished compaction are not readable "
                f"(e.g. {hidden[0]}), and this process cannot finish it ({cause}); "
                f"run `prune-sweep-store compact {self.location}` with write access")

    def _read_file(self, table: str, info: pafs.FileInfo, columns: List[str],
                   big: bool) -> Tuple[Optional[pa.Table], Optional[str]]:
        if not info.base_name.endswith(SUFFIX):
            return None, f"not a {SUFFIX} file"
        try:
            with self.files.fs.open_input_file(info.path) as f:
                parquet = pq.ParquetFile(f)
                problem = footer_problem(table, parquet.metadata)
                if not problem and not big:
                    problem = trial_id_problem(parquet.metadata, info.base_name[: -len(SUFFIX)])
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


def read_table(uri: Union[str, "os.PathLike[str]"], table: str, columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """One table of the store at `uri` as a DataFrame (problems are warned about)."""
    return ResultsStore(uri).read(table, columns)
