"""A store's filesystem, paths and one-line errors, and every operation on its files.

The store's modules form a chain; each uses only the ones before it, and none
imports another's private names (tests/test_store.py checks this)::

    schema -> files -> sweeps -> lease -> journal -> scan -> compaction -> store -> masks -> collect

Every change to a store goes through `StoreFiles.put`, `create`, `delete` or
`move` (tests inject crashes there), and every failed storage operation becomes
a one-line `StoreError` that keeps the OSError's errno.
"""
from __future__ import annotations

import datetime as dt
import errno as errnos
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple, TypeVar, Union

import pyarrow as pa
import pyarrow.fs as pafs

from common.storage import one_line
from results_store.schema import COMPACTED, SUFFIX, TABLES

T = TypeVar("T")
R = TypeVar("R")
QUARANTINE = "_quarantine"
LOCAL_THREADS = max(1, min(4, os.cpu_count() or 1))
REMOTE_THREADS = 16  # object stores: hide per-request latency
# Storage that refuses every write: retrying cannot help, so a sweep should stop at once.
FATAL_ERRNOS = frozenset({errnos.ENOSPC, errnos.EDQUOT, errnos.EROFS, errnos.EACCES, errnos.EPERM})
# The same, said in words by object stores (which give no errno) and by some filesystems.
FATAL_TEXT = re.compile(r"access[ _]?denied|read-only file system|no space left|quota exceeded|disk quota", re.I)
ERRNO_TEXT = re.compile(r"\[errno (\d+)\]", re.I)
# link(2) refused by a filesystem that has no hard links (FAT, some FUSE and SMB mounts).
NO_HARD_LINKS = frozenset({errnos.EPERM, errnos.ENOTSUP, errnos.EOPNOTSUPP, errnos.EMLINK})


class StoreError(Exception):
    """A store that cannot be used as asked (absent, empty, not writable); one-line message.

    `errno` is the OSError's errno when a storage operation failed with one (ENOSPC, EROFS, ...), else None.
    """

    def __init__(self, message: str, errno: Optional[int] = None, fatal: bool = False) -> None:
        super().__init__(message)
        self.errno = errno
        self._refused = fatal

    @property
    def fatal(self) -> bool:
        """The storage is full, over quota, read-only or forbids us: retrying cannot help, stop the sweep."""
        return self._refused or self.errno in FATAL_ERRNOS


def storage_error(message: str, exc: BaseException) -> StoreError:
    """`message: <the cause's first line>` as a StoreError keeping the cause's errno (pyarrow sets it locally)."""
    text = str(exc)
    code = exc.errno if isinstance(exc, OSError) and isinstance(exc.errno, int) else None
    if code is None:
        found = ERRNO_TEXT.search(text)
        code = int(found.group(1)) if found else None
    return StoreError(f"{message}: {one_line(exc)}", code, bool(FATAL_TEXT.search(text)))


def filesystem_for(location: Union[str, "os.PathLike[str]"]) -> Tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a pyarrow URI (s3://, gs://, file://) or a local path, made absolute."""
    location = os.fspath(location)
    if is_uri(location):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), os.path.abspath(location)


def probe_directory(fs: pafs.FileSystem, directory: str) -> None:
    """Create `directory` if needed and write and remove a hidden probe file there; OSError etc. when that fails."""
    probe = join(directory, f".probe-{uuid.uuid4().hex}")
    fs.create_dir(directory, recursive=True)
    with fs.open_output_stream(probe) as stream:
        stream.write(b"probe")
    fs.delete_file(probe)


def check_writable(location: str, what: str) -> None:
    """Create `location` (a directory or URI) if needed and write and remove a probe file there."""
    try:
        fs, root = filesystem_for(location)
        probe_directory(fs, root)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise storage_error(f"{what} {location} is not writable", exc) from None


def is_uri(location: str) -> bool:
    return "://" in location


def join(*parts: str) -> str:
    return "/".join(p.rstrip("/") if i == 0 else p.strip("/") for i, p in enumerate(parts))


def visible_file(info: pafs.FileInfo) -> bool:
    """A file pandas and pyarrow read as part of a table (not hidden, not "_"-prefixed)."""
    return info.type == pafs.FileType.File and not info.base_name.startswith((".", "_"))


def store_files(store: Any) -> "StoreFiles":
    """The StoreFiles of a ResultsStore (anything with a `files` attribute), or `store` itself."""
    if isinstance(store, StoreFiles):
        return store
    files = getattr(store, "files", None)
    if isinstance(files, StoreFiles):
        return files
    raise TypeError(f"expected a ResultsStore or StoreFiles, got {store!r}")


class StoreFiles:
    """One store's filesystem and root: its layout's paths and every read, listing and change of its files.

    Changes are atomic per file: locally a hidden temp file renamed over the target, on an object store one
    put. `quarantined` gets one line per file moved aside as unreadable.
    """

    def __init__(self, location: Union[str, "os.PathLike[str]"]) -> None:
        self.location = os.fspath(location)
        try:
            self.fs, root = filesystem_for(self.location)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, OSError) as exc:
            raise StoreError(f"store {self.location} cannot be opened: {one_line(exc)}") from None
        self.root = root.rstrip("/") or "/"
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.made_dirs: Set[str] = set()
        self.quarantined: List[str] = []

    def __repr__(self) -> str:
        return f"StoreFiles({self.location!r})"

    # ----------------------------------------------------------------- the layout

    def table_path(self, table: str) -> str:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; valid tables: {', '.join(TABLES)}")
        return join(self.root, table)

    def trial_path(self, table: str, trial_id: str) -> str:
        """<store>/<table>/<trial_id>.parquet: one trial's rows of one table."""
        return join(self.table_path(table), trial_id + SUFFIX)

    def part_path(self, table: str, group: str, hidden: bool = False) -> str:
        """<store>/<table>/compacted/[.]<group>.parquet: one compacted group's rows of one table."""
        return join(self.table_path(table), COMPACTED, ("." if hidden else "") + group + SUFFIX)

    def rel(self, path: str) -> str:
        """A path relative to the store's root, as messages and journals name it."""
        prefix = self.root.rstrip("/") + "/"
        return path[len(prefix):] if path.startswith(prefix) else path

    def path_of(self, rel: str) -> str:
        return join(self.root, rel)

    # ----------------------------------------------------------------- changes (the only ones)

    def mkdir(self, directory: str) -> None:
        if directory in self.made_dirs:
            return
        try:
            self.fs.create_dir(directory, recursive=True)
        except (OSError, pa.ArrowException) as exc:
            raise storage_error(f"store {self.location}: cannot create {self.rel(directory)}", exc) from None
        self.made_dirs.add(directory)

    def put(self, path: str, data: bytes) -> None:
        """Atomically create or replace one file: temp file and rename locally, one put on object stores."""
        directory, name = path.rsplit("/", 1)
        try:
            self.mkdir(directory)
            if self.local:
                temp = join(directory, f".tmp-{uuid.uuid4().hex[:8]}-{name}")
                try:
                    with self.fs.open_output_stream(temp) as stream:
                        stream.write(data)
                    self.fs.move(temp, path)  # rename(2): atomic replace on POSIX
                except BaseException:
                    self.delete(temp)
                    raise
            else:
                with self.fs.open_output_stream(path) as stream:
                    stream.write(data)
        except (OSError, pa.ArrowException) as exc:
            raise storage_error(f"store {self.location}: cannot write {self.rel(path)}", exc) from None

    def create(self, path: str, data: bytes) -> bool:
        """Create `path` holding `data` unless it exists; False when it does. Local filesystems only.

        A complete hidden temp file is hard-linked to `path` (link(2) fails when the name exists), so the file
        appears once, whole, and only for one of several processes racing to create it.
        """
        if not self.local:
            raise StoreError(f"store {self.location}: cannot create {self.rel(path)} exclusively on an object store")
        directory, name = path.rsplit("/", 1)
        self.mkdir(directory)
        temp = join(directory, f".tmp-{uuid.uuid4().hex[:8]}-{name}")
        try:
            with open(temp, "xb") as stream:
                stream.write(data)
            try:
                os.link(temp, path)
                return True
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in NO_HARD_LINKS:
                    raise
            finally:
                os.unlink(temp)
            # A filesystem without hard links: O_EXCL still creates once, but a reader may see it half-written
            # (leases are read and written under a lock there, so only an unlocked holder_of can).
            with open(path, "xb") as stream:
                stream.write(data)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            raise storage_error(f"store {self.location}: cannot write {self.rel(path)}", exc) from None

    def delete(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            pass
        except (OSError, pa.ArrowException) as exc:
            raise storage_error(f"store {self.location}: cannot delete {self.rel(path)}", exc) from None

    def move(self, source: str, target: str) -> None:
        """Rename (an atomic replace locally); FileNotFoundError when `source` is gone."""
        try:
            self.fs.move(source, target)
        except FileNotFoundError:
            raise
        except (OSError, pa.ArrowException) as exc:
            if not self.is_file(source):
                raise FileNotFoundError(source) from None
            raise storage_error(f"store {self.location}: cannot move {self.rel(source)} to {self.rel(target)}",
                                exc) from None

    def move_aside(self, path: str, reason: str, unreadable: bool) -> None:
        """Move a file to <store>/_quarantine/<table>/<name>.<UTC timestamp> and record one line about it."""
        rel = self.rel(path)
        first, name = rel.split("/", 1)[0], rel.rsplit("/", 1)[-1]
        directory = join(self.root, QUARANTINE, first) if first in TABLES else join(self.root, QUARANTINE)
        target = join(directory, f"{name}.{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}")
        if self.is_file(target):
            target += f"-{uuid.uuid4().hex[:6]}"
        if not self.is_file(path):
            return
        self.mkdir(directory)
        try:
            self.move(path, target)
        except FileNotFoundError:
            return  # moved or replaced by another process meanwhile
        self.quarantined.append(f"moved {'unreadable ' if unreadable else ''}{rel} to {self.rel(target)} ({reason})")

    # ----------------------------------------------------------------- reads and listings

    def is_file(self, path: str) -> bool:
        try:
            return self.fs.get_file_info(path).type == pafs.FileType.File
        except (OSError, pa.ArrowException) as exc:
            raise storage_error(f"store {self.location}: cannot read {self.rel(path)}", exc) from None

    def read_bytes(self, path: str) -> Optional[bytes]:
        """A small file's contents (a journal, a lease); None when it does not exist."""
        try:
            with self.fs.open_input_stream(path) as stream:
                return stream.read()
        except FileNotFoundError:
            return None
        except (OSError, pa.ArrowException) as exc:
            raise storage_error(f"store {self.location}: cannot read {self.rel(path)}", exc) from None

    def read_parsed(self, path: str, parse: Callable[[bytes], Optional[T]],
                    attempts: int = 3) -> Tuple[Optional[bytes], Optional[T]]:
        """A small record's (bytes, parse(bytes)), read again a moment later while it does not parse: a record
        being replaced can read torn on some object-store servers (moto's), and a torn journal or lease must
        not be taken for a broken one. (None, None) when it does not exist. Locally one read tells: files are
        replaced by rename."""
        attempts = 1 if self.local else attempts
        for attempt in range(attempts):
            raw = self.read_bytes(path)
            if raw is None:
                return None, None
            parsed = parse(raw)
            if parsed is not None or attempt + 1 == attempts:
                return raw, parsed
            time.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    def listdir(self, directory: str) -> List[pafs.FileInfo]:
        selector = pafs.FileSelector(directory, allow_not_found=True, recursive=False)
        try:
            return self.fs.get_file_info(selector)
        except (OSError, pa.ArrowException) as exc:
            raise storage_error(f"store {self.location}: cannot list {self.rel(directory)}", exc) from None

    def list_table(self, table: str) -> List[pafs.FileInfo]:
        """Visible files of a table directory, sorted by name (not its compacted parts)."""
        return sorted((i for i in self.listdir(self.table_path(table)) if visible_file(i)), key=lambda i: i.base_name)

    def list_trial_files(self, table: str) -> Dict[str, pafs.FileInfo]:
        """Per-trial files of a table by the trial id their names give."""
        return {i.base_name[: -len(SUFFIX)]: i for i in self.list_table(table) if i.base_name.endswith(SUFFIX)}

    def list_parts(self, table: str) -> Dict[str, pafs.FileInfo]:
        """Visible compacted parts of a table by group name ("part-<uuid>")."""
        infos = self.listdir(join(self.table_path(table), COMPACTED))
        return {i.base_name[: -len(SUFFIX)]: i for i in infos
                if visible_file(i) and i.base_name.startswith("part-") and i.base_name.endswith(SUFFIX)}

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> List[R]:
        """fn over items in threads (footers and small files: I/O and Arrow release the GIL)."""
        items = list(items)
        workers = min(len(items), LOCAL_THREADS if self.local else REMOTE_THREADS)
        if workers < 2:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(fn, items))
