"""Compaction journals: how a multi-file change of the store is made crash-safe.

A change that removes some files and publishes others (compaction, or
evicting a trial from a compacted group) first writes every new file under a
hidden name (pandas and pyarrow skip names starting with "."), then writes a
journal ``<store>/_compaction-<uuid>.json`` naming the files to delete (in
phases: the trials files first, so a trial stops counting as finished before
its other rows go) and the hidden files to rename visible (the trials part
last, so a group counts only once all its parts are visible). Applying the
journal deletes, then renames, then removes the journal. Every step is
idempotent, so any process that finds a journal can finish the change: the
store's operations that decide what is done call `roll_forward` first.

At no moment are a trial's rows visible twice: the old files are gone before
the new ones appear. In between, the trials of the change are briefly absent.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional

import pyarrow as pa

from results_store.files import StoreError, join, one_line

try:  # POSIX advisory locks serialise compactions on a local store; object stores rely on one compactor
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from results_store.store import ResultsStore

PREFIX = "_compaction-"
SUFFIX = ".json"
LOCK_NAME = "_compaction.lock"
VERSION = 1


def journal_names(store: "ResultsStore") -> List[str]:
    """Base names of the journals at the store's root, oldest first by name."""
    infos = store._listdir(store._root)
    return sorted(i.base_name for i in infos if i.base_name.startswith(PREFIX) and i.base_name.endswith(SUFFIX))


def write_journal(store: "ResultsStore", name: str, journal: Dict[str, Any]) -> None:
    store._put(join(store._root, name), json.dumps(journal, indent=1).encode())


def new_journal(kind: str, parts: Dict[str, List[str]], delete: List[List[str]],
                publish: List[List[str]]) -> Dict[str, Any]:
    return {"version": VERSION, "kind": kind, "created": dt.datetime.now(dt.timezone.utc).isoformat(),
            "parts": parts, "delete": delete, "publish": publish}


def _valid(journal: Any) -> bool:
    return (isinstance(journal, dict) and journal.get("version") == VERSION
            and isinstance(journal.get("delete"), list) and isinstance(journal.get("publish"), list)
            and all(isinstance(phase, list) and all(isinstance(p, str) for p in phase) for phase in journal["delete"])
            and all(isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
                    for pair in journal["publish"]))


def apply(store: "ResultsStore", name: str, journal: Dict[str, Any]) -> None:
    """Finish the change a journal describes; safe to run again, or in two processes at once."""
    path = join(store._root, name)
    for phase in journal["delete"]:
        store._map(lambda rel: store._delete(store._abs(rel)), phase)
    if not store._is_file(path):
        return  # another process finished this change (and may since have changed the store again)
    for hidden, visible in journal["publish"]:
        try:
            store._move(store._abs(hidden), store._abs(visible))
        except FileNotFoundError:
            pass  # already renamed, by this or another process
    store._delete(path)


def read_journal(store: "ResultsStore", name: str) -> Optional[Dict[str, Any]]:
    """A journal's contents; None when it is gone (another process finished it) or was moved aside as unreadable."""
    path = join(store._root, name)
    try:
        with store._fs.open_input_stream(path) as stream:
            raw = stream.read()
    except FileNotFoundError:
        return None
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(f"store {store.location}: cannot read {name}: {one_line(exc)}") from None
    try:
        journal = json.loads(raw.decode())
    except ValueError:
        journal = None
    if not _valid(journal):
        store._move_aside(path, "not a compaction journal this version can apply", True)
        return None
    return journal


def roll_forward(store: "ResultsStore") -> int:
    """Finish every change left half-done by a crashed (or still running) process; the number of journals applied."""
    applied = 0
    for name in journal_names(store):
        journal = read_journal(store, name)
        if journal is not None:
            apply(store, name, journal)
            applied += 1
    return applied


@contextlib.contextmanager
def exclusive(store: "ResultsStore") -> Iterator[None]:
    """Hold the store's compaction lock (local stores; released by the OS if the process dies)."""
    if not store._local or fcntl is None:
        yield
        return
    store._mkdir(store._root)
    fd = os.open(os.path.join(store._root, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
