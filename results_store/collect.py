"""Collecting checkpoints nobody will resume: trials already in the store, and trials no recorded grid holds.

A trial's checkpoints (``<storage path>/checkpoints/<trial_id>/``) are freed by
the trial once it is stored. Two kinds outlive that: a trial killed between its
store write and the cleanup, and a trial abandoned when its sweep's grid
changed (fewer seeds, other ratios), whose checkpoints no run will ever read.
The sweep records every grid it runs in the store before launching (sweeps.py),
so a checkpoint whose trial is in no recorded grid of this store, whose lease is
not held, and that nobody touched for `older_than` seconds is abandoned.

One storage path serves one store: checkpoints of a sweep writing to another
store would look abandoned here.

Kept masks (``<store>/masks/``, masks.py) of stored trials are kept; a mask
whose trial the store does not hold (its trial died between the two writes, or
its rows were removed), whose lease is free and that nobody touched for
`older_than` seconds is dropped: a trial writes its mask again before its rows.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Set

import pyarrow as pa
import pyarrow.fs as pafs

from common.locations import checkpoint_root
from common.storage import one_line
from results_store.files import StoreError, filesystem_for
from results_store.lease import holder_of
from results_store.masks import delete_masks, masks_sizes
from results_store.store import ResultsStore
from results_store.sweeps import grid_trial_ids, recorded_sweeps


@dataclass
class Collected:
    """What one collection freed (or, dry, would free)."""

    finished: List[str] = field(default_factory=list)  # trials already in the store
    abandoned: List[str] = field(default_factory=list)  # trials of no recorded grid
    freed_bytes: int = 0
    kept_unfinished: int = 0  # trials of a recorded grid, not yet stored: a rerun resumes them
    kept_recent: int = 0  # of no grid, but touched within `older_than`
    kept_running: int = 0  # leased: a sweep trains them now
    where: str = ""

    def lines(self, dry_run: bool = False) -> List[str]:
        verb = "would free" if dry_run else "freed"
        total = len(self.finished) + len(self.abandoned)
        lines = [f"{verb} the checkpoints of {total} trial(s) under {self.where} ({self.freed_bytes / 2**20:.1f} MiB): "
                 f"{len(self.finished)} already in the store, {len(self.abandoned)} in no grid recorded in the store"]
        kept = [(self.kept_unfinished, "unfinished trials of a recorded grid (the same command resumes them)"),
                (self.kept_running, "trials a sweep is training now"),
                (self.kept_recent, "trials of no recorded grid touched recently")]
        lines += [f"kept {n} {why}" for n, why in kept if n]
        return lines


def collect_checkpoints(store: ResultsStore, storage_path: str, older_than: float = 0.0,
                        dry_run: bool = False) -> Collected:
    """Free the checkpoints of trials in the store, and of trials in no recorded grid untouched for `older_than` s."""
    root = checkpoint_root(storage_path)
    try:
        fs, base = filesystem_for(root)
        infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise StoreError(f"cannot list checkpoints {root}: {one_line(exc)}") from None
    report = Collected(where=root)
    # "_ray_train": Ray Train's run directories of the trials on several workers, not a trial's checkpoints.
    directories = [i for i in infos if i.type == pafs.FileType.Directory and not i.base_name.startswith((".", "_"))]
    if not directories:
        return report
    finished = store.finished_ids() if store.exists() else set()
    in_grids: Set[str] = set()
    for name in (recorded_sweeps(store) if store.exists() else []):
        in_grids |= grid_trial_ids(store, name) or set()
    cutoff = time.time() - older_than
    for info in sorted(directories, key=lambda i: i.base_name):
        trial_id = info.base_name
        if trial_id not in finished and store.exists() and holder_of(store, f"trial-{trial_id}") is not None:
            report.kept_running += 1
            continue
        files = fs.get_file_info(pafs.FileSelector(info.path, recursive=True))
        size = sum(f.size or 0 for f in files if f.type == pafs.FileType.File)
        newest = max((f.mtime.timestamp() for f in files if f.mtime is not None), default=0.0)
        if trial_id in finished:
            report.finished.append(trial_id)
        elif trial_id in in_grids:
            report.kept_unfinished += 1
            continue
        elif newest > cutoff:
            report.kept_recent += 1
            continue
        else:
            report.abandoned.append(trial_id)
        report.freed_bytes += size
        if not dry_run:
            try:
                fs.delete_dir(info.path)
            except FileNotFoundError:
                pass
            except (OSError, pa.ArrowException) as exc:
                raise StoreError(f"cannot delete checkpoints {info.path}: {one_line(exc)}") from None
    return report


@dataclass
class CollectedMasks:
    """Masks one collection dropped (or, dry, would drop), and those it kept."""

    dropped: List[str] = field(default_factory=list)  # masks of trials the store does not hold
    freed_bytes: int = 0
    kept_stored: int = 0
    kept_running: int = 0  # leased: the trial writes its rows next
    kept_recent: int = 0

    def line(self, dry_run: bool = False) -> str:
        kept = [(self.kept_stored, "of stored trials"), (self.kept_running, "of trials a sweep is training now"),
                (self.kept_recent, "of unstored trials touched recently")]
        return (f"{'would drop' if dry_run else 'dropped'} the masks of {len(self.dropped)} trial(s) the store does "
                f"not hold ({self.freed_bytes / 2**20:.1f} MiB)"
                + "".join(f"; kept {n} {why}" for n, why in kept if n))


def collect_masks(store: ResultsStore, older_than: float = 0.0, dry_run: bool = False) -> CollectedMasks:
    """Drop the kept masks of trials the store does not hold, unleased and untouched for `older_than` s."""
    report = CollectedMasks()
    sizes = masks_sizes(store) if store.exists() else {}
    if not sizes:
        return report
    finished = store.finished_ids()
    cutoff = time.time() - older_than
    for trial_id, (size, modified) in sorted(sizes.items()):
        if trial_id in finished:
            report.kept_stored += 1
        elif holder_of(store, f"trial-{trial_id}") is not None:
            report.kept_running += 1
        elif modified > cutoff:
            report.kept_recent += 1
        elif store.has_trial(trial_id):  # stored since the listing: its lease was released after its rows
            report.kept_stored += 1
        else:
            report.dropped.append(trial_id)
            report.freed_bytes += size
            if not dry_run:
                delete_masks(store, trial_id)
    return report
