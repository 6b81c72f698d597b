"""The Parquet results store: three tables of one file per trial.

Layout: ``<store>/<table>/<trial_id>.parquet`` for the tables ``trials``,
``epochs`` and ``layers``. One file per trial per table makes a rewrite of a
trial replace its rows instead of duplicating them, lets many workers write
without coordination, and keeps every table readable with nothing but pandas:
``pd.read_parquet("results/trials")``.

Every file is written with the fixed schema in `SCHEMAS`, so the files of a
table never drift in type. A write is atomic: on a local filesystem the table
is written to a hidden temp file in the same directory (pyarrow and pandas
skip names starting with "." or "_") and renamed over the target; on an object
store it is a single put of the final key. The ``trials`` file is written last
and is the commit marker: a trial counts as finished only once it exists.

This module must not import torch or ray: analysis machines read the store with
pandas and pyarrow alone.
"""
from __future__ import annotations

import datetime as dt
import math
import os
import re
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple, Union

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

TABLES = ("trials", "epochs", "layers")
TRIAL_STATUSES = ("completed", "diverged")
SUFFIX = ".parquet"
_UTC_MICROS = pa.timestamp("us", tz="UTC")
# Column names whose values are accuracies, stored as fractions in [0, 1].
_FRACTION_COLUMNS = ("final_top1", "final_top5", "best_top1", "top1", "top5")
_SAFE_TRIAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _field(name: str, type_: pa.DataType, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable)


SCHEMAS: Dict[str, pa.Schema] = {
    "trials": pa.schema([
        _field("trial_id", pa.string()),
        _field("sweep", pa.string()),
        _field("model", pa.string()),
        _field("dataset", pa.string()),
        _field("algorithm", pa.string()),
        _field("log10_compression", pa.float64()),
        _field("compression", pa.float64()),
        _field("seed", pa.int64()),
        _field("iterations", pa.int64()),
        _field("schedule", pa.string()),
        _field("scope", pa.string()),
        _field("prune_mode", pa.string()),
        _field("levels", pa.int64()),
        _field("examples_per_class", pa.int64()),
        _field("prunable_params", pa.int64()),
        _field("prunable_layers", pa.int64()),
        _field("remaining_params", pa.int64()),
        _field("density", pa.float64()),
        _field("collapsed", pa.bool_()),
        _field("prune_passes", pa.int64()),
        _field("prune_seconds", pa.float64()),
        _field("dense_flops", pa.int64()),
        _field("remaining_flops", pa.int64()),
        _field("epochs", pa.int64()),
        _field("final_top1", pa.float64(), nullable=True),
        _field("final_top5", pa.float64(), nullable=True),
        _field("best_top1", pa.float64(), nullable=True),
        _field("final_test_loss", pa.float64(), nullable=True),
        _field("train_seconds", pa.float64()),
        _field("status", pa.string()),
        _field("error", pa.string(), nullable=True),
        _field("started_at", _UTC_MICROS),
        _field("finished_at", _UTC_MICROS),
        _field("host", pa.string()),
        _field("device", pa.string(), nullable=True),
        _field("precision", pa.string(), nullable=True),
        _field("restarts", pa.int64(), nullable=True),
        _field("resumed_from_epoch", pa.int64(), nullable=True),
        _field("cpus", pa.float64()),
        _field("gpus", pa.float64()),
        _field("torch_version", pa.string()),
        _field("project_version", pa.string()),
        _field("config", pa.string()),
    ]),
    "epochs": pa.schema([
        _field("trial_id", pa.string()),
        _field("epoch", pa.int64()),
        _field("train_loss", pa.float64()),
        _field("test_loss", pa.float64(), nullable=True),
        _field("top1", pa.float64(), nullable=True),
        _field("top5", pa.float64(), nullable=True),
        _field("lr", pa.float64()),
        _field("seconds", pa.float64()),
    ]),
    "layers": pa.schema([
        _field("trial_id", pa.string()),
        _field("layer_index", pa.int64()),
        _field("layer", pa.string()),
        _field("param", pa.string()),
        _field("kind", pa.string()),
        _field("size", pa.int64()),
        _field("remaining", pa.int64()),
        _field("density", pa.float64()),
        _field("score_sum", pa.float64(), nullable=True),
    ]),
}


class StoreError(Exception):
    """A store that cannot be used as asked (absent, empty, not writable); one-line message."""


def filesystem_for(location: Union[str, "os.PathLike[str]"]) -> Tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a pyarrow URI (s3://, gs://, file://) or a local path, made absolute."""
    location = os.fspath(location)
    if _is_uri(location):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), os.path.abspath(location)


def check_writable(location: str, what: str) -> None:
    """Create `location` (a directory or URI) if needed and write and remove a probe file there."""
    try:
        fs, root = filesystem_for(location)
        probe = _join(root, f".probe-{uuid.uuid4().hex}")
        fs.create_dir(root, recursive=True)
        with fs.open_output_stream(probe) as stream:
            stream.write(b"probe")
        fs.delete_file(probe)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise StoreError(f"{what} {location} is not writable: {_one_line(exc)}") from None


def _is_uri(location: str) -> bool:
    return "://" in location


def _join(*parts: str) -> str:
    return "/".join(p.rstrip("/") if i == 0 else p.strip("/") for i, p in enumerate(parts))


def _to_utc_timestamp(column: str, value: Any) -> Optional[dt.datetime]:
    """Accept an aware datetime or POSIX seconds; a naive datetime is ambiguous, so it is refused."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"column {column!r}: expected a timezone-aware datetime or POSIX seconds, got {value!r}")
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(float(value), tz=dt.timezone.utc)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            raise ValueError(
                f"column {column!r}: naive datetime {value!r}; pass a timezone-aware datetime "
                "(e.g. datetime.now(timezone.utc)) or POSIX seconds"
            )
        return value.astimezone(dt.timezone.utc)
    raise ValueError(f"column {column!r}: expected a timezone-aware datetime or POSIX seconds, got {value!r}")


def _build_table(table: str, rows: List[Dict[str, Any]]) -> pa.Table:
    """Rows -> a table with exactly `SCHEMAS[table]`; every problem is a ValueError naming the column."""
    schema = SCHEMAS[table]
    names = set(schema.names)
    for i, row in enumerate(rows):
        unknown = sorted(set(row) - names)
        if unknown:
            raise ValueError(
                f"{table} row {i}: unknown column(s) {', '.join(unknown)}; valid columns: {', '.join(schema.names)}"
            )
        missing = sorted(f.name for f in schema if not f.nullable and row.get(f.name) is None)
        if missing:
            raise ValueError(f"{table} row {i}: missing required column(s) {', '.join(missing)}")
    arrays = []
    for f in schema:
        values = [row.get(f.name) for row in rows]
        if pa.types.is_timestamp(f.type):
            values = [_to_utc_timestamp(f.name, v) for v in values]
        elif pa.types.is_integer(f.type) or pa.types.is_floating(f.type):
            bad = [v for v in values if isinstance(v, bool)]
            if bad:
                raise ValueError(f"{table} column {f.name!r}: expected a number, got bool {bad[0]!r}")
        try:
            arrays.append(pa.array(values, type=f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
            raise ValueError(f"{table} column {f.name!r} ({f.type}): {exc}") from None
        if f.name in _FRACTION_COLUMNS:
            out_of_range = [v for v in values if v is not None and not math.isnan(v) and not 0.0 <= v <= 1.0]
            if out_of_range:
                raise ValueError(
                    f"{table} column {f.name!r}: accuracy must be a fraction in [0, 1], got {out_of_range[0]!r}"
                )
    return pa.Table.from_arrays(arrays, schema=schema)


class ResultsStore:
    """A results store at a local path or a pyarrow filesystem URI (file://, s3://, gs://, ...)."""

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

    def __str__(self) -> str:
        return self.location

    def __repr__(self) -> str:
        return f"ResultsStore({self.location!r})"

    def table_path(self, table: str) -> str:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; valid tables: {', '.join(TABLES)}")
        return _join(self._root, table)

    # ----------------------------------------------------------------- writing

    def check_writable(self) -> None:
        """Fail early, before a sweep spends hours, if results could not be saved."""
        check_writable(self.location, "store")

    def write_trial(self, trial: Dict[str, Any], epochs: Iterable[Dict[str, Any]],
                    layers: Iterable[Dict[str, Any]]) -> None:
        """Write one trial's rows to the three tables, replacing any earlier write of it.

        The trials file is removed first and written last, so a crash between
        the writes leaves the trial unfinished (it reruns) rather than finished
        with stale epochs or layers.
        """
        trial_id = trial.get("trial_id")
        if not isinstance(trial_id, str) or not _SAFE_TRIAL_ID.match(trial_id):
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
            children[table] = _build_table(table, filled)
        trials_table = _build_table("trials", [trial])

        self._delete_if_exists(self._file_path("trials", trial_id))
        for table in ("epochs", "layers"):
            if children[table].num_rows:
                self._write_file(table, trial_id, children[table])
            else:
                self._delete_if_exists(self._file_path(table, trial_id))
        self._write_file("trials", trial_id, trials_table)

    def _file_path(self, table: str, trial_id: str) -> str:
        return _join(self.table_path(table), trial_id + SUFFIX)

    def _write_file(self, table: str, trial_id: str, data: pa.Table) -> None:
        directory = self.table_path(table)
        target = self._file_path(table, trial_id)
        try:
            if directory not in self._made_dirs:
                self._fs.create_dir(directory, recursive=True)
                self._made_dirs.add(directory)
            if self._local:
                temp = _join(directory, f".tmp-{trial_id}-{uuid.uuid4().hex[:8]}{SUFFIX}")
                try:
                    pq.write_table(data, temp, filesystem=self._fs)
                    self._fs.move(temp, target)  # rename(2): atomic replace on POSIX
                except BaseException:
                    self._delete_if_exists(temp)
                    raise
            else:
                # Serialise first, then one put: a failed write never closes (and so publishes) a partial object.
                buffer = pa.BufferOutputStream()
                pq.write_table(data, buffer)
                with self._fs.open_output_stream(target) as stream:
                    stream.write(buffer.getvalue())
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"store {self.location}: cannot write {table}/{trial_id}{SUFFIX}: "
                             f"{_one_line(exc)}") from None

    def _delete_if_exists(self, path: str) -> None:
        try:
            self._fs.delete_file(path)
        except FileNotFoundError:
            pass
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"store {self.location}: cannot write {path}: {_one_line(exc)}") from None

    # ----------------------------------------------------------------- reading

    def exists(self) -> bool:
        """Whether the store's root directory exists (an object-store prefix may exist only implicitly)."""
        try:
            return self._fs.get_file_info(self._root).type == pafs.FileType.Directory
        except (OSError, pa.ArrowException):
            return False

    def _list(self, table: str) -> List[pafs.FileInfo]:
        """Visible files of a table, sorted by name; hidden ('.', '_') files are in-flight temps or metadata."""
        selector = pafs.FileSelector(self.table_path(table), allow_not_found=True, recursive=False)
        try:
            infos = self._fs.get_file_info(selector)
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"store {self.location}: cannot list {table}: {_one_line(exc)}") from None
        visible = [i for i in infos if i.type == pafs.FileType.File and not i.base_name.startswith((".", "_"))]
        return sorted(visible, key=lambda i: i.base_name)

    def has_trial(self, trial_id: str) -> bool:
        """Whether this one trial is finished (its trials file exists): one stat, no listing."""
        try:
            info = self._fs.get_file_info(_join(self.table_path("trials"), trial_id + SUFFIX))
        except (OSError, pa.ArrowException):
            return False
        return info.type == pafs.FileType.File

    def finished_ids(self) -> Set[str]:
        """Trials whose commit marker (the trials file) exists; from the listing alone."""
        return {i.base_name[: -len(SUFFIX)] for i in self._list("trials") if i.base_name.endswith(SUFFIX)}

    def read(self, table: str) -> pd.DataFrame:
        """The whole table as a DataFrame; unreadable or foreign files are skipped and named in `problems`."""
        files = self._list(table)  # validates the table name
        schema = SCHEMAS[table]
        workers = 1 if self._local or len(files) < 8 else 16  # object stores: hide per-request latency
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(lambda info: self._read_file(table, info), files))
        tables = []
        for info, (data, problem) in zip(files, results):
            if problem is not None:
                message = f"store {self.location}: skipped {table}/{info.base_name}: {problem}"
                self.problems.append(message)
                warnings.warn(message, stacklevel=2)
            elif data is not None:
                tables.append(data)
        combined = pa.concat_tables(tables) if tables else schema.empty_table()
        return combined.to_pandas()

    def _read_file(self, table: str, info: pafs.FileInfo) -> Tuple[Optional[pa.Table], Optional[str]]:
        if not info.base_name.endswith(SUFFIX):
            return None, f"not a {SUFFIX} file"
        try:
            data = pq.read_table(info.path, filesystem=self._fs)
        except (OSError, pa.ArrowException) as exc:
            return None, f"unreadable ({_one_line(exc)})"
        return _conform(table, data)


def _conform(table: str, data: pa.Table) -> Tuple[Optional[pa.Table], Optional[str]]:
    """Match a file to the table's schema: same names and types; absent nullable columns become null."""
    schema = SCHEMAS[table]
    present = {f.name: f for f in data.schema}
    unexpected = sorted(set(present) - set(schema.names))
    missing = [f.name for f in schema if f.name not in present and not f.nullable]
    wrong_type = [f"{f.name} is {present[f.name].type}, expected {f.type}"
                  for f in schema if f.name in present and present[f.name].type != f.type]
    if unexpected or missing or wrong_type:
        reasons = []
        if missing:
            reasons.append("missing columns " + ", ".join(missing))
        if unexpected:
            reasons.append("unexpected columns " + ", ".join(unexpected))
        reasons.extend(wrong_type)
        return None, f"not a {table} file ({'; '.join(reasons)})"
    columns = []
    for f in schema:
        column = data.column(f.name) if f.name in present else pa.nulls(data.num_rows, f.type)
        if not f.nullable and column.null_count:
            return None, f"column {f.name} has {column.null_count} null value(s)"
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema), None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read_table(uri: Union[str, "os.PathLike[str]"], table: str) -> pd.DataFrame:
    """One table of the store at `uri` as a DataFrame (problems are warned about)."""
    return ResultsStore(uri).read(table)
