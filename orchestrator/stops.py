"""How a sweep stops when nobody watches it: a stop signal, a dead Ray, a full or read-only disk.

A batch job (Slurm, Kubernetes, `timeout`) must never hang and must always
end with one line that says what happened and what to do, and an exit status
a script can act on:

    0          every trial is in the store
    1          some trials failed (their errors are printed)
    2          bad input: arguments, store, cluster (nothing ran)
    74         a storage error (no space, read-only, no permission): free it, run the same command again
    75         Ray died or stopped answering: run the same command again
    128 + N    stopped by signal N (130 Ctrl-C / SIGINT, 143 SIGTERM, 129 SIGHUP): run the same command again

Every one of them keeps what is done: finished trials are in the store, and
every unfinished trial keeps its newest per-epoch checkpoint.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from typing import Callable, Iterator, List, Optional, Tuple

EXIT_STORAGE = 74  # EX_IOERR
EXIT_RAY_LOST = 75  # EX_TEMPFAIL: the same command again will do
STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)

_received: List[int] = []
_seen_below: List[int] = []  # this driver's descendants at the watchdog's last look: a dead GCS takes the raylet with
# it within a second or two, and its workers, orphaned, are then no longer below this driver


# ----------------------------------------------------------------- stop signals

def _on_stop_signal(signum, frame) -> None:
    """SIGTERM and SIGHUP do what Ctrl-C does: Tune's own handler ends the run gracefully, else KeyboardInterrupt."""
    _received.append(signum)
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not _on_stop_signal:
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def install_stop_handlers() -> None:
    """Make every stop signal an interruption. Called again after ray.init, which installs handlers of its own
    (a SIGTERM there ended the driver with status 134 and a C++ stack dump)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_stop_signal)


def interrupted_status() -> int:
    """128 + the stop signal received (SIGINT when none other was)."""
    return 128 + (_received[-1] if _received else signal.SIGINT)


def stop_signal_name() -> str:
    return signal.Signals(_received[-1]).name if _received else "SIGINT"


def interrupted_line(store: str) -> str:
    return (f"interrupted ({stop_signal_name()}): finished trials are in {store}; run the same command again "
            f"(or add --resume) to continue the others from their checkpoints")


# ----------------------------------------------------------------- a dead Ray

def _tcp_answers(address: str, timeout: float = 3.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def ray_checks() -> Tuple[List[Tuple[str, Callable[[], bool]]], List[Tuple[str, Callable[[], bool]]]]:
    """(checks whose failure is final at once, checks that must fail for a grace period): the processes of a
    local Ray this driver started, and the GCS and raylet ports of any cluster."""
    import ray

    node = ray._private.worker._global_node
    at_once, in_grace = [], []
    if node is None:
        return at_once, in_grace
    for kind, label in (("raylet", "raylet"), ("gcs_server", "GCS server")):
        for info in (getattr(node, "all_processes", None) or {}).get(kind, []):
            process = info.process
            at_once.append((f"the {label} (pid {process.pid}) of this sweep's local Ray",
                            lambda p=process: p.poll() is None))
    gcs = getattr(node, "gcs_address", None)
    if gcs:
        in_grace.append((f"the Ray GCS at {gcs}", lambda: _tcp_answers(gcs)))
    ip, port = getattr(node, "node_ip_address", None), getattr(node, "node_manager_port", None)
    if ip and port:
        in_grace.append((f"the raylet at {ip}:{port}", lambda: _tcp_answers(f"{ip}:{port}")))
    return at_once, in_grace


def lost_ray_message(what: str, store: str, grace: Optional[float]) -> str:
    how = "died" if grace is None else f"stopped answering for {grace:g} s"
    return (f"error: {what} {how}; finished trials are in {store} and unfinished ones keep their checkpoints: "
            f"run the same command again")


def watchdog_grace() -> float:
    value = float(os.environ.get("PRUNE_SWEEP_RAY_GRACE", "30"))
    if not value > 0:
        raise ValueError(f"PRUNE_SWEEP_RAY_GRACE must be > 0 seconds, got {value:g}")
    return value


def descendant_pids(pid: int) -> List[int]:
    """Every process below `pid` (Linux /proc; [] elsewhere)."""
    children = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _exit_ray_lost(message: str) -> None:
    """Print the line, stop what is left of a local Ray (a bounded wait), and exit: Tune would wait forever."""
    print(message, file=sys.stderr, flush=True)

    def kill_local_ray() -> None:
        import ray

        # Every process below this driver first, in one sweep (the raylet's agents and workers would outlive it,
        # orphaned), then Ray's own cleanup, which may block on a dead GCS.
        for pid in set(descendant_pids(os.getpid())) | set(_seen_below):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        node = ray._private.worker._global_node
        if node is not None and getattr(node, "all_processes", None):
            node.kill_all_processes(check_alive=False, allow_graceful=False)

    killer = threading.Thread(target=kill_local_ray, daemon=True)
    killer.start()
    killer.join(10.0)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(interrupted_status() if _received else EXIT_RAY_LOST)


@contextlib.contextmanager
def ray_watchdog(store: str, interval: float = 2.0, grace: Optional[float] = None,
                 on_lost: Callable[[str], None] = _exit_ray_lost) -> Iterator[None]:
    """While the block runs, check every `interval` s that Ray lives: a local raylet or GCS process that exited
    ends the sweep at once; a GCS or raylet port that refuses connections for `grace` s ends it too. Tune itself
    would print the same progress line forever (raylet) or Ray would exit 1 after a minute with no word of what
    to do (GCS)."""
    grace = watchdog_grace() if grace is None else grace
    at_once, in_grace = ray_checks()
    stop = threading.Event()

    def lost(message: str) -> None:
        # A stop signal sent to the whole process group (`timeout`, Slurm) kills Ray's processes too, maybe before
        # this driver's handler has run: then the signal is the cause, and the exit says so.
        time.sleep(1.5)
        on_lost(interrupted_line(store) if _received else message)

    def watch() -> None:
        failing_since = {}
        while not stop.wait(interval):
            if at_once:  # a local Ray: remember its processes while they are still below this driver
                _seen_below[:] = descendant_pids(os.getpid())
            for what, alive in at_once:
                if not stop.is_set() and not alive():
                    lost(lost_ray_message(what, store, None))
                    return
            now = time.monotonic()
            for what, answers in in_grace:
                if answers():
                    failing_since.pop(what, None)
                    continue
                since = failing_since.setdefault(what, now)
                if now - since >= grace and not stop.is_set():
                    lost(lost_ray_message(what, store, grace))
                    return

    thread = threading.Thread(target=watch, name="ray-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
