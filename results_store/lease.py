"""Leases: one process at a time does a thing to a shared store (trains one trial, compacts it).

A lease is the file ``<store>/_leases/<name>.json`` holding its name, holder
("host:pid"), a random token, when it was acquired and last renewed (wall
clock, UTC seconds) and its ttl. It is fresh while ``renewed_at + ttl`` is in
the future; its holder renews it (a `Heartbeat` does, every ttl/4) and deletes
it on release. A stale lease (its holder died, or was paused longer than its
ttl), one whose holder process on this host is gone, or an unreadable one may be taken over by anyone; a fresh one only by its
own holder string (a restarted worker), which leaves the older `Lease` handle
lost.

Local filesystems: every read-decide-write step on a lease runs under an
flock of ``<store>/_leases/.lock`` where the filesystem grants one (released
by the OS when a process dies, so it never sticks). A lease is created with link(2) of a complete temp file,
which fails when the name exists: it appears once, whole, for one process. A
takeover first renames the old file aside and checks it renamed the very file
it judged stale (it puts back any other), then creates exclusively.

Object stores have no exclusive create, so: write, wait, verify. Check the
lease is absent or stale, put a record with a fresh token, wait
``PRUNE_SWEEP_LEASE_SETTLE`` seconds (default 2), read it back, and hold the
lease only if the token is still ours. The last writer wins, and S3 and its
kin read their own writes. This holds while no contender takes longer than
the settle delay between its check and its put.

Assumptions: the hosts' clocks agree within a few seconds (well under the
ttl); a holder paused for longer than its ttl (a stopped VM, a debugger) has
lost the lease and learns so at its next `renew()`, so work that must not
overlap calls `renew()` before each step it cannot take back.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import json
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Tuple

import pyarrow as pa

from results_store.files import StoreError, StoreFiles, join, storage_error, store_files

try:  # POSIX advisory locks make each local read-decide-write on a lease atomic
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LEASES = "_leases"
LOCK = ".lock"
SAFE_LEASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
NO_LOCKS = frozenset({errno.ENOLCK, errno.ENOTSUP, errno.EOPNOTSUPP})  # flock refused by the filesystem


class LeaseHeld(StoreError):
    """Another holder's fresh lease stops this change; `info` says whose it is (None if it went meanwhile)."""

    def __init__(self, message: str, info: Optional["LeaseInfo"] = None) -> None:
        super().__init__(message)
        self.info = info


def _seconds(variable: str, default: str, allow_zero: bool) -> float:
    text = os.environ.get(variable, default)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{variable} must be a number of seconds, got {text!r}") from None
    if not (value >= 0 if allow_zero else value > 0) or value == float("inf"):
        raise ValueError(f"{variable} must be {'>= 0' if allow_zero else '> 0'} seconds, got {text!r}")
    return value


def lease_ttl() -> float:
    """Seconds a lease stays fresh without renewal: $PRUNE_SWEEP_LEASE_TTL, default 120."""
    return _seconds("PRUNE_SWEEP_LEASE_TTL", "120", allow_zero=False)


def settle_delay() -> float:
    """Seconds an object-store acquire waits before reading its record back: $PRUNE_SWEEP_LEASE_SETTLE, default 2."""
    return _seconds("PRUNE_SWEEP_LEASE_SETTLE", "2", allow_zero=True)


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _clock(seconds: float, now: float) -> str:
    moment = dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    same_day = moment.date() == dt.datetime.fromtimestamp(now, dt.timezone.utc).date()
    return moment.strftime("%H:%M:%S UTC" if same_day else "%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class LeaseInfo:
    """What a lease file says."""

    name: str
    holder: str
    token: str
    acquired_at: float
    renewed_at: float
    ttl: float

    def fresh(self, now: Optional[float] = None) -> bool:
        return self.renewed_at + self.ttl > (time.time() if now is None else now)

    def holder_gone(self) -> bool:
        """Whether the holder ran on this host (its holder string starts "host:pid") in a process that no longer
        exists: then its lease is dead at once, not after its ttl (a killed sweep's rerun on the same machine
        would otherwise wait minutes). Assumes one pid namespace per hostname."""
        host, _, rest = self.holder.partition(":")
        pid = re.match(r"\d+", rest)
        if host != socket.gethostname() or pid is None:
            return False
        pid = pid.group(0)
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except OSError:  # exists, another user's
            return False
        return _zombie(int(pid))

    def live(self, now: Optional[float] = None) -> bool:
        """Fresh, and its holder not known to be gone."""
        return self.fresh(now) and not self.holder_gone()

    def describe(self, now: Optional[float] = None) -> str:
        now = time.time() if now is None else now
        text = (f"held by {self.holder} since {_clock(self.acquired_at, now)}, "
                f"renewed {max(0.0, now - self.renewed_at):.0f} s ago")
        return text if self.fresh(now) else f"{text}, stale after {self.ttl:g} s"

    def to_bytes(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=0).encode()

    @staticmethod
    def parse(raw: bytes) -> Optional["LeaseInfo"]:
        """The lease a file holds; None when it is not one (unreadable: anyone may take it over)."""
        try:
            record = json.loads(raw.decode())
            info = LeaseInfo(**{f.name: record[f.name] for f in dataclasses.fields(LeaseInfo)})
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        texts = (info.name, info.holder, info.token)
        numbers = (info.acquired_at, info.renewed_at, info.ttl)
        if not (all(isinstance(t, str) for t in texts)
                and all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers)):
            return None
        return info


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not SAFE_LEASE_NAME.match(name):
        raise ValueError(f"lease name must be 1-200 letters, digits, '_', '.', '-' not starting with '.', '_' or "
                         f"'-', got {name!r}")


def lease_path(files: StoreFiles, name: str) -> str:
    return join(files.root, LEASES, name + ".json")


def _read(files: StoreFiles, path: str) -> Tuple[Optional[bytes], Optional[LeaseInfo]]:
    return files.read_parsed(path, LeaseInfo.parse)


@contextlib.contextmanager
def _locked(files: StoreFiles) -> Iterator[None]:
    """Hold the store's lease lock (local filesystems; object stores rely on write-wait-verify instead).

    Where the filesystem refuses flock (NFS without its lock daemon) this holds nothing: link(2) still creates
    a lease once, and a takeover still checks it renamed the file it judged stale.
    """
    if not files.local or fcntl is None:
        yield
        return
    lock = join(files.root, LEASES, LOCK)
    try:
        try:
            fd = os.open(lock, os.O_RDONLY)
        except FileNotFoundError:
            files.create(lock, b"")  # False when another process made it first: either way it exists now
            fd = os.open(lock, os.O_RDONLY)
    except OSError as exc:
        raise storage_error(f"store {files.location}: cannot open {files.rel(lock)}", exc) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in NO_LOCKS:
                raise storage_error(f"store {files.location}: cannot lock {files.rel(lock)}", exc) from None
        yield
    finally:
        os.close(fd)


class Lease:
    """A lease this process holds: renew it within its ttl (a Heartbeat does), release it when done."""

    def __init__(self, files: StoreFiles, info: LeaseInfo) -> None:
        self.files = files
        self.name, self.token, self.holder, self.ttl = info.name, info.token, info.holder, info.ttl
        self.acquired_at = info.acquired_at
        self.path = lease_path(files, info.name)

    def __repr__(self) -> str:
        return f"Lease({self.name!r}, holder={self.holder!r}, store={self.files.location!r})"

    def renew(self) -> bool:
        """Rewrite renewed_at; False when the lease is no longer ours (taken over or deleted)."""
        with _locked(self.files):
            _, current = _read(self.files, self.path)
            if current is None or current.token != self.token:
                return False
            self.files.put(self.path, dataclasses.replace(current, renewed_at=time.time()).to_bytes())
        return True

    def release(self) -> None:
        """Delete the lease file, only if it is still ours."""
        with _locked(self.files):
            _, current = _read(self.files, self.path)
            if current is not None and current.token == self.token:
                self.files.delete(self.path)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def acquire(store: Any, name: str, holder: Optional[str] = None, ttl: Optional[float] = None) -> Optional[Lease]:
    """The lease `name` on a store (a ResultsStore or its StoreFiles), created or taken over when stale or
    unreadable; None when another holder's lease is fresh. The same holder string takes its own over."""
    files = store_files(store)
    _check_name(name)
    holder = default_holder() if holder is None else holder
    if not isinstance(holder, str) or not holder:
        raise ValueError(f"lease holder must be a non-empty string, got {holder!r}")
    ttl = lease_ttl() if ttl is None else ttl
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl < float("inf"):
        raise ValueError(f"lease ttl must be > 0 seconds, got {ttl!r}")
    now = time.time()
    info = LeaseInfo(name, holder, uuid.uuid4().hex, now, now, float(ttl))
    path = lease_path(files, name)
    held = _acquire_local(files, path, info) if files.local else _acquire_remote(files, path, info)
    return Lease(files, info) if held else None


def _zombie(pid: int) -> bool:
    """A process that has exited and waits for its parent to reap it (Linux /proc; False elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _takeable(current: Optional[LeaseInfo], holder: str) -> bool:
    return current is None or not current.live() or current.holder == holder


def _acquire_local(files: StoreFiles, path: str, info: LeaseInfo) -> bool:
    with _locked(files):
        raw, current = _read(files, path)
        if raw is not None:
            if not _takeable(current, info.holder):
                return False
            aside = join(files.root, LEASES, f".{info.name}.{info.token}.old")
            try:
                files.move(path, aside)
            except FileNotFoundError:
                pass  # released meanwhile
            else:
                moved = files.read_bytes(aside)
                if moved != raw and moved is not None:
                    # Not the file we judged (possible only where flock is not honoured): put it back, step away.
                    files.create(path, moved)
                    files.delete(aside)
                    return False
                files.delete(aside)
        return files.create(path, info.to_bytes())


def _acquire_remote(files: StoreFiles, path: str, info: LeaseInfo) -> bool:
    _, current = _read(files, path)
    if not _takeable(current, info.holder):
        return False
    files.put(path, info.to_bytes())
    time.sleep(settle_delay())
    _, now_there = _read(files, path)
    return now_there is not None and now_there.token == info.token


def holder_of(store: Any, name: str) -> Optional[LeaseInfo]:
    """The current live lease `name`; None when it is free, stale, unreadable or its holder's process is gone."""
    files = store_files(store)
    _check_name(name)
    _, current = _read(files, lease_path(files, name))
    return current if current is not None and current.live() else None


class Heartbeat:
    """Renew `lease` every `interval` seconds (ttl/4) in a daemon thread while the `with` block runs.

    `lost` is set when a renewal finds the lease no longer ours, or renewals fail for longer than its ttl.
    """

    def __init__(self, lease: Lease, interval: Optional[float] = None) -> None:
        interval = lease.ttl / 4 if interval is None else interval
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0:
            raise ValueError(f"heartbeat interval must be > 0 seconds, got {interval!r}")
        self.lease = lease
        self.interval = float(interval)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "Heartbeat":
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.lease.name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        last_renewed = time.monotonic()
        while not self._stop.wait(self.interval):
            try:
                if not self.lease.renew():
                    self.lost.set()
                    return
                last_renewed = time.monotonic()
            except (StoreError, OSError, pa.ArrowException):
                if time.monotonic() - last_renewed > self.lease.ttl:
                    self.lost.set()
                    return
