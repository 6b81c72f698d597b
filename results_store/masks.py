"""Kept masks: each trial's final keep-mask, bit-packed, beside the store's tables.

    <store>/masks/<trial_id>.parquet     one row per prunable parameter, in forward order

Columns: trial_id, layer_index, param, shape (list of int64), size, remaining,
and mask: the flattened (C order) boolean mask as `numpy.packbits` bytes (big
bit order, zero padding). A sweep run with `--keep-masks` writes the file from
the trial, before its rows, so a stored trial's row implies its mask. The
directory is no table: compaction and the scans never touch it, and pandas
reads it on its own (``pd.read_parquet("results/masks")``).

`read_masks` gives {param: torch.bool tensor} and imports torch only when
called; `read_mask_arrays` and `read_packed_masks` are its numpy forms for the
analysis, which runs without torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Set, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from results_store.files import StoreError, StoreFiles, join, store_files, storage_error
from results_store.schema import SAFE_TRIAL_ID, SUFFIX, TRIAL_ID_KEY, trial_id_problem

MASKS = "masks"
MASK_SCHEMA = pa.schema([
    pa.field("trial_id", pa.string(), nullable=False),
    pa.field("layer_index", pa.int64(), nullable=False),
    pa.field("param", pa.string(), nullable=False),
    pa.field("shape", pa.list_(pa.int64()), nullable=False),
    pa.field("size", pa.int64(), nullable=False),
    pa.field("remaining", pa.int64(), nullable=False),
    pa.field("mask", pa.binary(), nullable=False),
])
# Packed bits of a sparse mask still compress (a 10x mask holds about 0.47 bits of information per weight).
COMPRESSION = "zstd"


class MissingMasks(StoreError):
    """The store keeps no mask for this trial (it ran without --keep-masks)."""


@dataclass(frozen=True)
class PackedMask:
    """One parameter's keep-mask: its place in forward order, its shape, and its bits packed 8 to a byte."""

    layer_index: int
    param: str
    shape: Tuple[int, ...]
    remaining: int
    bits: np.ndarray  # uint8, ceil(size / 8) bytes

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @staticmethod
    def of(layer_index: int, param: str, mask: np.ndarray) -> "PackedMask":
        """Pack a boolean array (any shape; flattened in C order)."""
        flat = np.ascontiguousarray(mask, dtype=bool).reshape(-1)
        return PackedMask(int(layer_index), str(param), tuple(int(s) for s in mask.shape), int(flat.sum()),
                          np.packbits(flat))

    def unpacked(self) -> np.ndarray:
        """The boolean mask in its parameter's shape."""
        return np.unpackbits(self.bits, count=self.size).astype(bool).reshape(self.shape)


def masks_path(files: StoreFiles, trial_id: str) -> str:
    """<store>/masks/<trial_id>.parquet."""
    if not isinstance(trial_id, str) or not SAFE_TRIAL_ID.match(trial_id):
        raise ValueError(f"bad trial id {trial_id!r}: letters, digits, '_', '.', '-', not starting with '.' or '_'")
    return join(files.root, MASKS, trial_id + SUFFIX)


def masks_bytes(trial_id: str, layers: Sequence[PackedMask]) -> bytes:
    """One trial's masks as a Parquet file whose footer names the trial (statistics on every column but the bits)."""
    if not layers:
        raise ValueError(f"trial {trial_id} has no prunable parameter to keep a mask of")
    table = pa.Table.from_pydict({
        "trial_id": [trial_id] * len(layers), "layer_index": [m.layer_index for m in layers],
        "param": [m.param for m in layers], "shape": [list(m.shape) for m in layers],
        "size": [m.size for m in layers], "remaining": [m.remaining for m in layers],
        "mask": [m.bits.tobytes() for m in layers]}, schema=MASK_SCHEMA)
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, MASK_SCHEMA, compression=COMPRESSION, use_dictionary=["trial_id", "param"],
                          write_statistics=["trial_id", "layer_index", "param", "size", "remaining"]) as writer:
        writer.write_table(table)
        writer.add_key_value_metadata({TRIAL_ID_KEY: trial_id.encode()})
    return sink.getvalue().to_pybytes()


def write_masks(store: Any, trial_id: str, layers: Sequence[PackedMask]) -> None:
    """Atomically write (or replace) a trial's masks: one put, through the store's files."""
    files = store_files(store)
    files.put(masks_path(files, trial_id), masks_bytes(trial_id, sorted(layers, key=lambda m: m.layer_index)))


def masked_trial_ids(store: Any) -> Set[str]:
    """The trials whose masks the store keeps (listing one directory, reading no file)."""
    return set(masks_sizes(store))


def has_masks(store: Any, trial_id: str) -> bool:
    files = store_files(store)
    return files.is_file(masks_path(files, trial_id))


def read_packed_masks(store: Any, trial_id: str) -> List[PackedMask]:
    """A trial's masks, packed, in forward order; MissingMasks when none is kept, StoreError when the file is
    not a whole mask file of this trial."""
    files = store_files(store)
    path = masks_path(files, trial_id)
    where = f"store {files.location}: {files.rel(path)}"
    try:
        with files.fs.open_input_file(path) as f:
            parquet = pq.ParquetFile(f)
            held = trial_id_problem(parquet.metadata, trial_id)
            table = parquet.read()
    except FileNotFoundError:
        raise MissingMasks(f"store {files.location} keeps no mask of trial {trial_id} (run the sweep with "
                           f"--keep-masks)") from None
    except (OSError, pa.ArrowException) as exc:
        raise storage_error(f"{where} is unreadable", exc) from None
    if held:
        raise StoreError(f"{where} {held}")
    missing = [name for name in MASK_SCHEMA.names if name not in table.column_names]
    if missing:
        raise StoreError(f"{where} is not a mask file (no column {missing[0]})")
    layers = [PackedMask(int(r["layer_index"]), r["param"], tuple(int(s) for s in r["shape"]), int(r["remaining"]),
                         np.frombuffer(r["mask"], dtype=np.uint8)) for r in table.to_pylist()]
    for stored_size, layer in zip(table.column("size").to_pylist(), layers):
        problem = _bits_problem(layer, int(stored_size))
        if problem:
            raise StoreError(f"{where}: {layer.param} {problem}")
    return sorted(layers, key=lambda m: m.layer_index)


def _bits_problem(layer: PackedMask, stored_size: int) -> str:
    """What is wrong with a read mask's bits (its byte count, padding, or kept count against its row), or ''."""
    if stored_size != layer.size:
        return f"has size {stored_size} but shape {layer.shape}"
    if len(layer.bits) != (layer.size + 7) // 8:
        return f"has {len(layer.bits)} mask bytes for {layer.size} weights"
    pad = 8 * len(layer.bits) - layer.size
    if pad and int(layer.bits[-1]) & ((1 << pad) - 1):
        return "has bits set past its last weight"
    kept = int(np.bitwise_count(layer.bits).sum())
    if kept != layer.remaining:
        return f"keeps {kept} weights but its row says {layer.remaining}"
    return ""


def read_mask_arrays(store: Any, trial_id: str) -> Dict[str, np.ndarray]:
    """{param: numpy bool array in the parameter's shape}, in forward order; no torch needed."""
    return {m.param: m.unpacked() for m in read_packed_masks(store, trial_id)}


def read_masks(store: Any, trial_id: str) -> Dict[str, Any]:
    """{param: torch.bool tensor in the parameter's shape}, in forward order (what the trial trained with).

    The one import of torch in the store, and only when called: the store and the analysis import without it.
    """
    import torch

    return {name: torch.from_numpy(array) for name, array in read_mask_arrays(store, trial_id).items()}


def delete_masks(store: Any, trial_id: str) -> None:
    files = store_files(store)
    files.delete(masks_path(files, trial_id))


def masks_sizes(store: Any) -> Dict[str, Tuple[int, float]]:
    """{trial_id: (bytes, modified POSIX seconds)} of every kept mask file."""
    files = store_files(store)
    found = {}
    for info in files.listdir(join(files.root, MASKS)):
        if info.base_name.endswith(SUFFIX) and not info.base_name.startswith((".", "_")):
            found[info.base_name[: -len(SUFFIX)]] = (int(info.size or 0),
                                                      info.mtime.timestamp() if info.mtime is not None else 0.0)
    return found

