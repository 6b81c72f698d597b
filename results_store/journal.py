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
the new ones appear. In between, the trials of the change are briefly absent
(`hidden_trials` names them where nobody can finish the change: a read-only
copy of the store).
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any, Dict, List, Optional

from results_store.files import StoreFiles, join

PREFIX = "_compaction-"
SUFFIX = ".json"
VERSION = 1


def journal_names(files: StoreFiles) -> List[str]:
    """Base names of the journals at the store's root, oldest first by name."""
    infos = files.listdir(files.root)
    return sorted(i.base_name for i in infos if i.base_name.startswith(PREFIX) and i.base_name.endswith(SUFFIX))


def write_journal(files: StoreFiles, name: str, journal: Dict[str, Any]) -> None:
    files.put(join(files.root, name), json.dumps(journal, indent=1).encode())


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


def apply(files: StoreFiles, name: str, journal: Dict[str, Any]) -> None:
    """Finish the change a journal describes; safe to run again, or in two processes at once."""
    path = join(files.root, name)
    for phase in journal["delete"]:
        files.map(lambda rel: files.delete(files.path_of(rel)), phase)
    if not files.is_file(path):
        return  # another process finished this change (and may since have changed the store again)
    for hidden, visible in journal["publish"]:
        try:
            files.move(files.path_of(hidden), files.path_of(visible))
        except FileNotFoundError:
            pass  # already renamed, by this or another process
    files.delete(path)


def _parse(raw: bytes) -> Optional[Dict[str, Any]]:
    try:
        journal = json.loads(raw.decode())
    except ValueError:
        return None
    return journal if _valid(journal) else None


def load_journal(files: StoreFiles, name: str) -> Optional[Dict[str, Any]]:
    """A journal's contents; None when it is gone or is no journal this version can apply (changes nothing)."""
    return files.read_parsed(join(files.root, name), _parse)[1]


def read_journal(files: StoreFiles, name: str) -> Optional[Dict[str, Any]]:
    """A journal's contents; None when it is gone (another process finished it) or was moved aside as unreadable."""
    journal = load_journal(files, name)
    if journal is None and files.is_file(join(files.root, name)):
        files.move_aside(join(files.root, name), "not a compaction journal this version can apply", True)
    return journal


def roll_forward(files: StoreFiles) -> int:
    """Finish every change left half-done by a crashed (or still running) process; the number of journals applied."""
    applied = 0
    for name in journal_names(files):
        journal = read_journal(files, name)
        if journal is not None:
            apply(files, name, journal)
            applied += 1
    return applied


def hidden_trials(files: StoreFiles) -> List[str]:
    """Trials of unfinished changes that no visible file holds: their old files are deleted and their new parts
    not yet published. A store that can be written shows none once `roll_forward` ran; a read-only one may."""
    names = journal_names(files)
    if not names:
        return []
    per_trial = set(files.list_trial_files("trials"))
    missing = set()
    for name in names:
        journal = load_journal(files, name)
        if journal is None:
            continue
        old_parts = [rel for phase in journal["delete"] for rel in phase if rel.startswith("trials/compacted/")]
        if any(files.is_file(files.path_of(rel)) for rel in old_parts):
            continue  # an eviction whose old group is still there, holding these trials
        parts = journal.get("parts")
        for group, ids in (parts.items() if isinstance(parts, dict) else ()):
            if not isinstance(ids, list) or files.is_file(files.part_path("trials", str(group))):
                continue
            missing.update(i for i in ids if isinstance(i, str) and i not in per_trial)
    return sorted(missing)
