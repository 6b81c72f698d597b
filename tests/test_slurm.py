"""The Slurm launcher: the allocation read from Slurm's environment, and a real run through a fake `srun` that
runs its command on this machine, so a real Ray head starts, the sweep joins it with --address, and nothing of
that Ray is left afterwards. Every Ray process here has its own ports and temp dir and is stopped by pid."""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.slurm import _Signals, parse_args, requeue
from orchestrator.slurm_allocation import (SlurmError, auth_env, cpus_per_node, expand_counts, expand_nodelist,
                                           gpus_per_node, node_local_warnings, read_allocation)
from processes import alive, descendants


@pytest.mark.parametrize("text, hosts", [
    ("gpu[01-03,07],cpu5", ["gpu01", "gpu02", "gpu03", "gpu07", "cpu5"]),
    ("node7", ["node7"]),
    ("n[8-11]", ["n8", "n9", "n10", "n11"]),
    ("n[098-101]", ["n098", "n099", "n100", "n101"]),
    ("rack[1-2]-gpu[1,3]", ["rack1-gpu1", "rack1-gpu3", "rack2-gpu1", "rack2-gpu3"]),
    ("a,b[2-3].cluster", ["a", "b2.cluster", "b3.cluster"]),
])
def test_compressed_node_lists_expand_in_slurms_order(text, hosts):
    assert expand_nodelist(text) == hosts


@pytest.mark.parametrize("text, says", [
    ("gpu[01-03", "unbalanced '['"), ("gpu01]", "unbalanced ']'"), ("gpu[3-1]", "runs backwards"),
    ("gpu[a-b]", "range 'a-b'"), ("gpu1,,gpu2", "an empty name"), ("", "empty Slurm node list"),
    ("gpu[1-2],gpu2", "named twice"),
])
def test_a_bad_node_list_is_one_line_naming_it(text, says):
    with pytest.raises(SlurmError, match=re.escape(says)) as info:
        expand_nodelist(text)
    assert "\n" not in str(info.value) and (not text or repr(text) in str(info.value))


def test_per_node_counts_expand():
    assert expand_counts("72(x2),36") == [72, 72, 36]
    assert expand_counts("8") == [8]
    with pytest.raises(SlurmError, match="'72x2'"):
        expand_counts("72x2")


@pytest.mark.parametrize("env, gpus", [
    ({"SLURM_GPUS_ON_NODE": "4", "SLURM_GPUS_PER_NODE": "8"}, 4),  # what this node got wins
    ({"SLURM_GPUS_PER_NODE": "a100:2"}, 2),
    ({"SLURM_GPUS_PER_NODE": "a100:1,v100:2"}, 3),
    ({"SLURM_GPUS_PER_TASK": "2", "SLURM_NTASKS_PER_NODE": "2"}, 4),
    ({"SLURM_JOB_GPUS": "0,1,2"}, 3),
    ({"SLURM_JOB_GPUS": "0-3"}, 4),
    ({}, 0),
])
def test_gpus_per_node_from_slurm(env, gpus):
    assert gpus_per_node(env) == gpus


def test_a_bad_gpu_count_names_the_variable_and_value():
    with pytest.raises(SlurmError, match=r"\$SLURM_GPUS_PER_NODE 'a100:x'"):
        gpus_per_node({"SLURM_GPUS_PER_NODE": "a100:x"})
    with pytest.raises(SlurmError, match=r"\$SLURM_GPUS_ON_NODE 'four'"):
        gpus_per_node({"SLURM_GPUS_ON_NODE": "four"})


def test_cpus_per_node_from_slurm():
    assert cpus_per_node({"SLURM_CPUS_PER_TASK": "16", "SLURM_JOB_CPUS_PER_NODE": "64(x2)"}, 2) == [16, 16]
    assert cpus_per_node({"SLURM_JOB_CPUS_PER_NODE": "72(x2),36"}, 3) == [72, 72, 36]
    assert cpus_per_node({"SLURM_JOB_CPUS_PER_NODE": "72(x2)", "SLURM_CPUS_ON_NODE": "72"}, 3) == [72, 72, 72]
    assert cpus_per_node({}, 2) == [None, None]


def test_the_allocation_and_a_requeue_are_read_from_the_environment():
    allocation = read_allocation({"SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "gpu[1-2]", "SLURM_GPUS_ON_NODE": "8",
                                  "SLURM_CPUS_ON_NODE": "96", "SLURM_RESTART_COUNT": "2"})
    assert (allocation.nodes, allocation.gpus, allocation.cpus, allocation.restart_count) == (
        ["gpu1", "gpu2"], 8, [96, 96], 2)
    assert allocation.describe() == "slurm job 77: 2 node(s) (gpu1, gpu2), 8 GPU(s) and 96 CPU(s) per node"


def test_node_local_store_or_storage_path_is_warned_about_in_one_line_each():
    lines = node_local_warnings(["--store", "/tmp/results", "--storage-path=/dev/shm/ray"], {}, cwd="/home/me")
    assert len(lines) == 2 and "--store /tmp/results looks node-local" in lines[0] and "/dev/shm" in lines[1]
    assert node_local_warnings(["--store", "/shared/r", "--storage-path", "s3://b/ray"], {}, cwd="/home/me") == []
    # the defaults are relative: node-local when the job runs in a node-local directory ($TMPDIR here)
    assert len(node_local_warnings([], {"TMPDIR": "/work/job5"}, cwd="/work/job5/w")) == 2


def test_auth_is_token_mode_for_every_process_with_one_shared_token(tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "home", lambda: tmp_path)  # no ~/.ray/auth_token
    made = auth_env({})
    assert made["RAY_AUTH_MODE"] == "token" and len(made["RAY_AUTH_TOKEN"]) == 64
    assert auth_env({})["RAY_AUTH_TOKEN"] != made["RAY_AUTH_TOKEN"]  # a new one per job when none exists
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("abc\n")
    assert auth_env({})["RAY_AUTH_TOKEN"] == "abc"  # the usual token, so `ray status` still works
    (tmp_path / "t").write_text("from-path")
    assert auth_env({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "t")})["RAY_AUTH_TOKEN"] == "from-path"
    assert auth_env({"RAY_AUTH_TOKEN": "env"})["RAY_AUTH_TOKEN"] == "env"
    assert auth_env({"RAY_AUTH_MODE": "disabled"}) == {"RAY_AUTH_MODE": "disabled"}


def test_launcher_arguments_and_the_sweeps_are_split_at_the_double_dash():
    args = parse_args(["--port", "6390", "--", "--preset", "fig6", "--port", "1"])
    assert args.port == 6390 and args.sweep_args == ["--preset", "fig6", "--port", "1"]


def test_outside_an_allocation_the_launcher_says_so_in_one_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    done = subprocess.run([sys.executable, "-m", "orchestrator.slurm", "--", "--dry-run"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: empty Slurm node list ($SLURM_JOB_NODELIST); run this inside an allocation (sbatch, salloc)"]


@pytest.mark.parametrize("sig, forwarded, time_limit", [(signal.SIGTERM, signal.SIGTERM, False),
                                                       (signal.SIGHUP, signal.SIGHUP, False),
                                                       (signal.SIGUSR1, signal.SIGTERM, True)])
def test_a_stop_signal_is_forwarded_once_to_the_sweep_as_its_graceful_stop(sig, forwarded, time_limit):
    sweep = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        signals = _Signals()
        signals.sweep = sweep
        signals.handle(sig, None)
        signals.handle(sig, None)  # a second one is not sent on: the sweep would stop less gracefully
        assert sweep.wait(timeout=10) == -forwarded
        assert signals.time_limit is time_limit
    finally:
        sweep.kill()


def test_near_the_time_limit_the_job_requeues_itself_with_scontrol(tmp_path, monkeypatch, capsys):
    (tmp_path / "scontrol").write_text(f'#!/bin/bash\necho "$*" > {tmp_path / "called"}\n')
    (tmp_path / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    requeue("4242")
    assert (tmp_path / "called").read_text().strip() == "requeue 4242"
    assert "requeueing job 4242 (scontrol requeue)" in capsys.readouterr().out
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    requeue("4242")
    assert "scontrol is not here to requeue job 4242: submit the same command again" in capsys.readouterr().out


# ----------------------------------------------------------------- a real run through a fake srun

FAKE_SRUN = """#!/bin/bash
# srun's own options are dropped and the command runs here, as srun would run it on the node named by -w.
echo "srun $*" >> "{log}"
while [ $# -gt 0 ]; do
    case "$1" in -w|-N|-n|--nodelist) shift 2 ;; -*) shift ;; *) break ;; esac
done
exec "$@"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Watched:
    """The launcher as a subprocess, with every process below it remembered while it runs (orphans included)."""

    def __init__(self, cmd, env):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     start_new_session=True)
        self.seen = {}
        self.done = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self):
        while not self.done.is_set():
            for p in descendants(self.proc.pid):
                self.seen[p.pid] = p
            time.sleep(0.2)

    def finish(self, timeout):
        try:
            out, err = self.proc.communicate(timeout=timeout)
        finally:
            self.done.set()
        return self.proc.returncode, out, err


def assert_nothing_left(seen, temp_dir):
    deadline = time.time() + 15
    while [p for p in seen.values() if alive(p.pid)] and time.time() < deadline:
        time.sleep(0.2)
    left = [p for p in seen.values() if alive(p.pid)]
    ours = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if temp_dir.encode() in f.read() and alive(int(entry)):
                    ours.append(int(entry))
        except (OSError, ValueError):
            continue
    for pid in [p.pid for p in left] + ours:  # leave the machine clean for the other tests, then fail
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    assert not left and not ours, (left, ours)


@pytest.mark.slow
def test_a_sweep_on_a_fake_allocation_runs_on_a_real_ray_head_and_a_requeue_retrains_nothing(tmp_path):
    began = time.time()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text(FAKE_SRUN.format(log=tmp_path / "srun.log"))
    srun.chmod(0o755)
    temp_dir = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's socket paths are length-limited
    port, client_port, agent_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and not k.startswith("SLURM_")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", SLURM_JOB_ID="4242", SLURM_JOB_NODELIST=socket.gethostname(),
               SLURM_CPUS_ON_NODE="2", SLURM_GPUS_ON_NODE="0", SLURM_SUBMIT_DIR=str(tmp_path))
    store, storage = tmp_path / "store", tmp_path / "ray"
    cmd = [sys.executable, "-m", "orchestrator.slurm", "--port", str(port), "--temp-dir", temp_dir,
           "--join-timeout", "120",
           "--ray-start-args", f"--ray-client-server-port={client_port} --dashboard-agent-listen-port={agent_port}",
           "--", "--models", "mlp", "--datasets", "digits", "--algorithms", "synflow,random",
           "--log10-compressions", "1", "--seeds", "0", "--epochs", "1",
           "--store", str(store), "--storage-path", str(storage)]
    watched = []
    try:
        first = Watched(cmd, env)
        watched.append(first)
        code, out, err = first.finish(timeout=240)
        assert code == 0, (out[-3000:], err[-3000:])
        assert_nothing_left(first.seen, temp_dir)
        assert any(p.name == "gcs_server" for p in first.seen.values()), "a real Ray head ran below the launcher"
        assert "slurm job 4242: 1 node(s)" in out and f":{port}: 1 node(s) joined" in out, out
        assert "requeue" not in out
        trials = pd.read_parquet(store / "trials")
        assert sorted(trials.algorithm) == ["random", "synflow"], trials
        calls = (tmp_path / "srun.log").read_text().splitlines()
        assert len(calls) == 1 and calls[0].startswith(f"srun --nodes=1 --ntasks=1 -w {socket.gethostname()} "
                                                       f"--cpus-per-task=2 ")
        assert "--head" in calls[0] and "--num-cpus=2" in calls[0] and "--num-gpus=0" in calls[0], calls
        # Each node's `ray start` output beside the job's own, on shared storage (node-local /tmp dies with the job).
        assert "Ray runtime started" in (tmp_path / "ray-slurm-4242" / f"{socket.gethostname()}.log").read_text()

        env["SLURM_RESTART_COUNT"] = "1"
        again = Watched(cmd, env)
        watched.append(again)
        code, out, err = again.finish(timeout=180)
        assert code == 0, (out[-3000:], err[-3000:])
        assert_nothing_left(again.seen, temp_dir)
        assert "requeue: restart 1 of job 4242" in out, out
        assert "already in the store; nothing to run" in out, out
        assert len(pd.read_parquet(store / "trials")) == 2
    finally:  # on a failure, leave the machine clean for the other tests: this test's own processes, by pid
        for w in watched:
            w.done.set()
            for pid in [w.proc.pid, *w.seen]:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
    print(f"two launches in {time.time() - began:.0f} s")
