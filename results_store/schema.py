"""The three tables' fixed schemas, building a table from rows, and matching a file to its table and trial.

The bottom of the store's chain (see files.py). Imports pyarrow only: no torch, no ray, no pandas.
"""
from __future__ import annotations

import base64
import datetime as dt
import math
import re
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import pyarrow as pa
import pyarrow.parquet as pq

TABLES = ("trials", "epochs", "layers")
TRIAL_STATUSES = ("completed", "diverged")
SUFFIX = ".parquet"
# The directory, inside each table directory, that holds compacted parts (see compaction.py).
COMPACTED = "compacted"
_UTC_MICROS = pa.timestamp("us", tz="UTC")
# Column names whose values are accuracies, stored as fractions in [0, 1].
_FRACTION_COLUMNS = ("final_top1", "final_top5", "best_top1", "top1", "top5")
SAFE_TRIAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# A per-trial file's footer names its trial here (files written before this key have only statistics).
TRIAL_ID_KEY = b"prune_sweep.trial_id"


def _field(name: str, type_: pa.DataType, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable)


SCHEMAS: Dict[str, pa.Schema] = {
    "trials": pa.schema([
        _field("trial_id", pa.string()),
        _field("sweep", pa.string()),
        _field("model", pa.string()),
        _field("dataset", pa.string()),
        _field("num_classes", pa.int64(), nullable=True),  # null in stores written before 2026-12-01
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
        _field("ablation", pa.string(), nullable=True),  # null in stores written before ablations: "none"
        _field("prunable_params", pa.int64()),
        _field("prunable_layers", pa.int64()),
        _field("remaining_params", pa.int64()),
        _field("effective_remaining_params", pa.int64(), nullable=True),
        _field("density", pa.float64()),
        _field("collapsed", pa.bool_()),
        _field("prune_passes", pa.int64()),
        _field("imp_trained_examples", pa.int64(), nullable=True),
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
        _field("effective_remaining", pa.int64(), nullable=True),
    ]),
}


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


def build_table(table: str, rows: List[Dict[str, Any]]) -> pa.Table:
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


def check_columns(table: str, columns: Optional[Sequence[str]]) -> List[str]:
    """The columns to read, in the caller's order (all of them for None); unknown names are a ValueError."""
    names = SCHEMAS[table].names
    if columns is None:
        return list(names)
    if isinstance(columns, str):
        columns = [columns]
    unknown = [c for c in columns if c not in names]
    if unknown:
        raise ValueError(f"unknown {table} column(s) {', '.join(map(str, unknown))}; valid columns: {', '.join(names)}")
    return list(dict.fromkeys(columns))


def schema_problem(table: str, file_schema: pa.Schema) -> Optional[str]:
    """None when a file with `file_schema` holds rows of `table` (absent nullable columns are allowed), else why not."""
    schema = SCHEMAS[table]
    if file_schema.equals(schema):
        return None
    present = {f.name: f for f in file_schema}
    unexpected = sorted(set(present) - set(schema.names))
    missing = [f.name for f in schema if f.name not in present and not f.nullable]
    wrong_type = [f"{f.name} is {present[f.name].type}, expected {f.type}"
                  for f in schema if f.name in present and present[f.name].type != f.type]
    if not (unexpected or missing or wrong_type):
        return None
    reasons = []
    if missing:
        reasons.append("missing columns " + ", ".join(missing))
    if unexpected:
        reasons.append("unexpected columns " + ", ".join(unexpected))
    reasons.extend(wrong_type)
    return f"not a {table} file ({'; '.join(reasons)})"


# Footer verdicts by (table, serialized Arrow schema): every file the store writes carries the same bytes.
_VERDICTS: Dict[Tuple[str, bytes], Optional[str]] = {}


def footer_problem(table: str, metadata: pq.FileMetaData) -> Optional[str]:
    """Whether a file's footer describes a file of `table`; reads nothing beyond the footer."""
    serialized = (metadata.metadata or {}).get(b"ARROW:schema")
    if serialized is None:
        return schema_problem(table, metadata.schema.to_arrow_schema())
    key = (table, serialized)
    if key not in _VERDICTS:
        try:
            file_schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(serialized)))
        except (ValueError, pa.ArrowException):
            file_schema = metadata.schema.to_arrow_schema()
        if len(_VERDICTS) > 256:
            _VERDICTS.clear()
        _VERDICTS[key] = schema_problem(table, file_schema)
    return _VERDICTS[key]


def conform(table: str, data: pa.Table, columns: Optional[List[str]] = None) -> Tuple[Optional[pa.Table], Optional[str]]:
    """Match rows read from a file to the table's schema (restricted to `columns`, in that order).

    Same names and types; absent nullable columns become null; a null in a required column is refused.
    """
    schema = SCHEMAS[table]
    columns = list(schema.names) if columns is None else columns
    target = pa.schema([schema.field(c) for c in columns])
    if data.schema.equals(target):
        # The fast path: a file the store wrote (required columns cannot hold nulls). Its footer's key-value
        # metadata (a per-trial file's trial id) must not travel into compacted parts.
        return data.replace_schema_metadata(None), None
    present = set(data.schema.names)
    out = []
    for f in target:
        column = data.column(f.name) if f.name in present else pa.nulls(data.num_rows, f.type)
        if column.type != f.type:
            return None, f"not a {table} file ({f.name} is {column.type}, expected {f.type})"
        if not f.nullable and column.null_count:
            return None, f"column {f.name} has {column.null_count} null value(s)"
        out.append(column)
    return pa.Table.from_arrays(out, schema=target), None


def trial_id_problem(metadata: pq.FileMetaData, trial_id: str) -> Optional[str]:
    """None when a per-trial file's footer shows it holds rows of `trial_id` only, else what it holds instead.

    The trial_id column's row-group statistics decide (min == max == the id in every row group): they
    describe the rows themselves, which every pyarrow writer records. The footer's TRIAL_ID_KEY entry decides
    only when they cannot (no statistics): it survives a read, change and write of the table by other tools,
    so it may name a trial the rows no longer hold. A file with no rows, or neither, holds no other trial.
    """
    held = _statistics_ids(metadata)
    if held is None:
        named = (metadata.metadata or {}).get(TRIAL_ID_KEY)
        held = None if named is None else {named.decode("utf-8", "replace")}
    if not held or held == {trial_id}:
        return None
    if len(held) == 1:
        return f"holds trial {next(iter(held))}, not {trial_id}"
    return f"holds trials {min(held)} to {max(held)}, not {trial_id} alone"


def _statistics_ids(metadata: pq.FileMetaData) -> Optional[Set[str]]:
    """The trial ids the trial_id column's statistics bound (min and max of every row group with rows); None
    when a row group with rows has none, or the file has no trial_id column."""
    if not metadata.num_row_groups:
        return set()
    first = metadata.row_group(0)
    column = next((j for j in range(first.num_columns) if first.column(j).path_in_schema == "trial_id"), None)
    if column is None:
        return None
    bounds: Set[str] = set()
    for i in range(metadata.num_row_groups):
        group = metadata.row_group(i)
        if group.num_rows == 0:
            continue
        statistics = group.column(column).statistics
        if statistics is None or not statistics.has_min_max:
            return None
        bounds.update((statistics.min, statistics.max))
    return bounds


def to_parquet_bytes(data: pa.Table, trial_id: Optional[str] = None) -> bytes:
    """A table serialised as one Parquet file (written to its destination in one piece); a per-trial file's
    footer names its `trial_id` under TRIAL_ID_KEY."""
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, data.schema) as writer:
        writer.write_table(data)
        if trial_id is not None:
            writer.add_key_value_metadata({TRIAL_ID_KEY: trial_id.encode()})
    return sink.getvalue().to_pybytes()
