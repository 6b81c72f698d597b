"""Run a sweep inside a Slurm allocation: a Ray head on the first node, a worker on each other node, the sweep
joined to them with --address, and Ray stopped on every node when it ends.

    sbatch slurm/prune-sweep.sbatch --preset fig6 --store /shared/results --storage-path /shared/ray
    python -m orchestrator.slurm [--port 6379] [--join-timeout 300] -- <prune-sweep arguments>

Slurm has no `ray up`; this is Ray's documented Slurm recipe (`srun --nodes=1 --ntasks=1 -w NODE ray start ...
--block` per node) in Python, so it is testable and every way it ends is one line and the sweep's exit status.
The allocation is read from Slurm's environment only (`scontrol` may be absent on compute nodes).

Signals: SIGTERM or SIGHUP (preemption, `scancel`) is forwarded once to the sweep, which stops gracefully and
keeps its checkpoints; a requeued job (`--requeue`, `SLURM_RESTART_COUNT`) runs the same command and resumes.
SIGUSR1 is what the sbatch script asks Slurm to send shortly before the time limit: the sweep stops the same way,
then the job requeues itself (`scontrol requeue`), since a job that reaches its time limit is never requeued.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from common.cli import OneLineArgumentParser, positive_int
from orchestrator.slurm_allocation import Allocation, SlurmError, auth_env, node_local_warnings, read_allocation
from orchestrator.stops import EXIT_RAY_LOST

EXIT_BAD_INPUT = 2
DEFAULT_PORT = 6379
DEFAULT_JOIN_TIMEOUT = 300.0
STOP_WAIT = 30.0  # seconds each node's `ray start --block` gets to stop its processes before srun is killed


def _ray_executable() -> str:
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else "ray"


def head_ip(head: str) -> str:
    """The address the other nodes and the sweep reach the head at: Ray's own choice of IP when this is the head
    node (the batch step runs there), else the head's name resolved (never loopback: nobody else could reach it)."""
    if socket.gethostname().split(".")[0] == head.split(".")[0]:
        from ray._private.services import get_node_ip_address

        return get_node_ip_address()
    try:
        ip = socket.gethostbyname(head)
    except OSError as exc:
        raise SlurmError(f"cannot resolve the head node {head!r}: {exc}") from None
    if ip.startswith("127."):
        raise SlurmError(f"the head node {head!r} resolves to loopback {ip}; run this on {head} (the batch step does)")
    return ip


class RayOnSlurm:
    """`ray start --block` on each node through srun, their output in `log_dir`, stopped by signalling srun."""

    def __init__(self, allocation: Allocation, port: int, env: Dict[str, str], log_dir: Path,
                 temp_dir: Optional[str], extra: Sequence[str]):
        self.allocation, self.port, self.env, self.log_dir = allocation, port, env, log_dir
        self.temp_dir, self.extra = temp_dir, list(extra)
        self.steps: Dict[str, subprocess.Popen] = {}
        self.ip = head_ip(allocation.nodes[0])
        self.address = f"{self.ip}:{port}"

    def _start(self, node: str, index: int, role: Sequence[str]) -> None:
        cpus = self.allocation.cpus[index]
        # --cpus-per-task again: Slurm 22.05 to 23.02 do not pass the batch script's on to a step, and Ray told N
        # CPUs by --num-cpus would then run its trials on the step's one.
        cmd = ["srun", "--nodes=1", "--ntasks=1", "-w", node, *([f"--cpus-per-task={cpus}"] if cpus is not None else []),
               _ray_executable(), "start", *role, "--block", f"--num-gpus={self.allocation.gpus}",
               "--disable-usage-stats"]
        if cpus is not None:
            cmd.append(f"--num-cpus={cpus}")
        if self.temp_dir:
            cmd.append(f"--temp-dir={self.temp_dir}")
        log = open(self.log_dir / f"{node}.log", "wb")
        with log:
            self.steps[node] = subprocess.Popen(cmd + self.extra, stdout=log, stderr=subprocess.STDOUT,
                                                env=self.env, start_new_session=True)

    def start_head(self) -> None:
        self._start(self.allocation.nodes[0], 0, ["--head", f"--port={self.port}", f"--node-ip-address={self.ip}",
                                                  "--include-dashboard=false"])

    def start_workers(self) -> None:
        for i, node in enumerate(self.allocation.nodes[1:], start=1):
            self._start(node, i, [f"--address={self.address}"])

    def exited(self) -> Optional[str]:
        """A line naming the first node whose `ray start` ended, if one did."""
        for node, step in self.steps.items():
            if step.poll() is not None:
                return (f"ray start on {node} ended with status {step.returncode}: "
                        f"{_last_line(self.log_dir / f'{node}.log')} (its output: {self.log_dir / node}.log)")
        return None

    def joined(self) -> Optional[List[str]]:
        """The nodes not yet in the cluster ([] when all are); None while the head's GCS does not answer."""
        from ray._raylet import GcsClient

        try:
            infos = list(GcsClient(address=self.address).get_all_node_info(timeout=5).values())
        except Exception:  # the GCS is still starting
            return None
        alive = [i for i in infos if i.state == 0]  # GcsNodeState.ALIVE
        if len(alive) >= len(self.allocation.nodes):
            return []
        names = {i.node_manager_hostname.split(".")[0] for i in alive} | {i.node_manager_address for i in alive}
        present = {self.allocation.nodes[0]} if self.ip in names else set()
        for node in self.allocation.nodes:
            try:
                if node.split(".")[0] in names or socket.gethostbyname(node) in names:
                    present.add(node)
            except OSError:
                pass
        return [node for node in self.allocation.nodes if node not in present]

    def stop(self) -> None:
        """SIGTERM to each srun (it passes it to `ray start --block`, which stops its node's processes), then
        SIGKILL to what is left after STOP_WAIT; workers first, the head last."""
        steps = list(self.steps.items())[::-1]
        for _, step in steps:
            if step.poll() is None:
                try:
                    os.killpg(step.pid, signal.SIGTERM)
                except OSError:
                    pass
        deadline = time.monotonic() + STOP_WAIT
        for _, step in steps:
            try:
                step.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(step.pid, signal.SIGKILL)
                except OSError:
                    pass
                step.wait()


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no output)"
    return lines[-1].strip()[:300] if lines else "(no output)"


# ----------------------------------------------------------------- the run

class _Signals:
    """Stop signals received; the first of each kind is forwarded to the sweep once it runs."""

    def __init__(self):
        self.received: List[int] = []
        self.sweep: Optional[subprocess.Popen] = None

    def handle(self, signum, frame) -> None:
        first = not self.received
        self.received.append(signum)
        if first and self.sweep is not None and self.sweep.poll() is None:
            self.forward()

    def forward(self) -> None:
        # The sweep's graceful stop is SIGTERM (or SIGHUP); SIGUSR1 (time limit near) and SIGINT mean the same here.
        sig = self.received[0] if self.received[0] in (signal.SIGTERM, signal.SIGHUP) else signal.SIGTERM
        try:
            os.kill(self.sweep.pid, sig)
        except OSError:
            pass

    @property
    def time_limit(self) -> bool:
        return bool(self.received) and self.received[0] == signal.SIGUSR1


def requeue(job_id: str) -> None:
    """A job stopped for its time limit is never requeued by Slurm itself: ask for it."""
    scontrol = shutil.which("scontrol")
    if not scontrol or job_id == "?":
        print(f"time limit near: the sweep stopped with its checkpoints; scontrol is not here to requeue job "
              f"{job_id}: submit the same command again", flush=True)
        return
    print(f"time limit near: the sweep stopped with its checkpoints; requeueing job {job_id} (scontrol requeue), "
          f"which continues from them", flush=True)
    sys.stdout.flush()
    subprocess.run([scontrol, "requeue", job_id], check=False)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    argv = list(argv)
    sweep_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = OneLineArgumentParser(prog="python -m orchestrator.slurm",
                                   description="Start Ray on every node of a Slurm allocation and run a sweep on it: "
                                               "python -m orchestrator.slurm -- <prune-sweep arguments>")
    parser.add_argument("--port", type=positive_int, default=DEFAULT_PORT, help="the head's GCS port")
    parser.add_argument("--join-timeout", type=float, default=DEFAULT_JOIN_TIMEOUT,
                        help="seconds every node has to join the head")
    parser.add_argument("--temp-dir", default=None, help="Ray's --temp-dir on every node (node-local; short)")
    parser.add_argument("--log-dir", default=None,
                        help="where each node's `ray start` output goes (default: ray-slurm-JOBID beside the job's "
                             "output, in $SLURM_SUBMIT_DIR: node-local /tmp is wiped at the job's end)")
    parser.add_argument("--ray-start-args", default="",
                        help="more arguments for every `ray start`, e.g. '--ray-client-server-port=10002'")
    args = parser.parse_args(own)
    if not args.join_timeout > 0:
        parser.error(f"--join-timeout must be > 0 seconds, got {args.join_timeout:g}")
    args.sweep_args = sweep_args
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        allocation = read_allocation(os.environ)
    except SlurmError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    print(allocation.describe(), flush=True)
    if allocation.restart_count:
        print(f"requeue: restart {allocation.restart_count} of job {allocation.job_id}; the sweep skips the trials "
              f"in the store and continues the others from their checkpoints", flush=True)
    for line in node_local_warnings(args.sweep_args, os.environ):
        print(line, file=sys.stderr, flush=True)

    # Before anything imports ray: this process's own GCS client (the join check) reads the mode and token too.
    os.environ.update(auth_env(os.environ))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # `ray start --block` drains its node for 30 s on SIGTERM (for Ray Serve); the sweep has stopped by then.
    env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
    log_dir = Path(args.log_dir or Path(os.environ.get("SLURM_SUBMIT_DIR", ".")) / f"ray-slurm-{allocation.job_id}")
    log_dir.mkdir(parents=True, exist_ok=True)

    signals = _Signals()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, signals.handle)
    try:
        ray = RayOnSlurm(allocation, args.port, env, log_dir, args.temp_dir, shlex.split(args.ray_start_args))
    except SlurmError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    status = EXIT_RAY_LOST
    try:
        status = _run(args, allocation, ray, env, signals)
    finally:
        ray.stop()
    if signals.time_limit and status != 0:
        requeue(allocation.job_id)
    return status


def _run(args, allocation: Allocation, ray: RayOnSlurm, env: Dict[str, str], signals: _Signals) -> int:
    ray.start_head()
    deadline = time.monotonic() + args.join_timeout
    workers_started = False
    while True:
        if signals.received:
            name = signal.Signals(signals.received[0]).name
            print(f"interrupted ({name}) before the sweep started: nothing ran; run the same command again",
                  file=sys.stderr, flush=True)
            return 128 + signals.received[0]
        problem = ray.exited()
        if problem:
            print(f"error: {problem}; run the same command again", file=sys.stderr, flush=True)
            return EXIT_RAY_LOST
        missing = ray.joined()
        if missing is not None and not workers_started:
            ray.start_workers()
            workers_started = True
        elif missing == []:
            break
        if time.monotonic() > deadline:
            what = ", ".join(missing) if missing is not None else f"the head {allocation.nodes[0]} ({ray.address})"
            print(f"error: not in the Ray cluster after {args.join_timeout:g} s: {what} (their `ray start` output: "
                  f"{ray.log_dir}); run the same command again", file=sys.stderr, flush=True)
            return EXIT_RAY_LOST
        time.sleep(1.0)
    print(f"ray cluster at {ray.address}: {len(allocation.nodes)} node(s) joined; `ray start` output in "
          f"{ray.log_dir}", flush=True)
    cmd = [sys.executable, "-m", "orchestrator.sweep", "--address", ray.address, *args.sweep_args]
    signals.sweep = subprocess.Popen(cmd, env=env, start_new_session=True)
    if signals.received:  # a signal between the loop above and Popen
        signals.forward()
    code = signals.sweep.wait()
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell reports it

if __name__ == "__main__":
    sys.exit(main())
