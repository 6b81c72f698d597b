"""A sweep nobody watches (a Slurm or Kubernetes batch job, for days): it never hangs, every stop signal is an
interruption that the same command resumes, a dead Ray or a full disk ends it at once with one line that says
what to do, and two sweeps over one grid train each trial once.

Every driver here is a real `python -m orchestrator.sweep` process with its own local Ray, killed or signalled
for real; disks are real tmpfs mounts filled for real (skipped where mounting is not permitted).
"""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from common.locations import join_location, split_query
from orchestrator.stops import EXIT_RAY_LOST, EXIT_STORAGE
from processes import alive, descendants
from orchestrator.tune_run import checkpoint_root

# Two pruned trials of the tiny mlp; long enough (epochs) that a signal or a kill lands mid-training.
GRID = ["--models", "mlp", "--algorithms", "magnitude", "--log10-compressions", "1,2", "--seeds", "0",
        "--batch-size", "32", "--num-cpus", "2"]
TRIALS = 2
LONG = 150  # epochs: about 8 s a trial here, so a signal or a kill lands mid-training
ENV = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


def command(tmp, epochs, *extra, store=None, storage=None):
    return [sys.executable, "-m", "orchestrator.sweep", *GRID, "--epochs", str(epochs),
            "--store", str(store or tmp / "store"), "--storage-path", str(storage or tmp / "ray"), *extra]


def start(cmd, env=None, prefix=()):
    return subprocess.Popen([*prefix, *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**ENV, **(env or {})}, start_new_session=True)


def wait_for_checkpoint(storage: Path, after: float = 0.0, timeout: float = 180) -> None:
    """Until some trial has written a checkpoint (newer than `after`): the sweep is mid-training."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        files = list((storage / "checkpoints").glob("*/state-*.pt"))
        if any(f.stat().st_mtime > after for f in files if f.exists()):
            return
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint under {storage} within {timeout} s")


def stored(store: Path):
    trials = pd.read_parquet(store / "trials") if (store / "trials").exists() else pd.DataFrame(columns=["trial_id"])
    epochs = pd.read_parquet(store / "epochs") if (store / "epochs").exists() else pd.DataFrame()
    return trials, epochs


def assert_complete_once(store: Path, epochs_per_trial: int) -> None:
    trials, epochs = stored(store)
    assert len(trials) == TRIALS and trials.trial_id.is_unique, trials
    assert len(epochs) == TRIALS * epochs_per_trial and not epochs.duplicated(["trial_id", "epoch"]).any()


def finish(proc, timeout=240):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


# ----------------------------------------------------------------- stop signals


@pytest.mark.slow
def test_sigterm_and_sighup_are_interruptions_that_the_same_command_resumes(tmp_path):
    epochs = LONG
    cmd = command(tmp_path, epochs)
    began = time.time()
    # `timeout` passes a SIGTERM it gets on to the driver's whole process group, Ray's processes too, as Slurm and
    # Kubernetes do; --preserve-status hands back the driver's own status. Then SIGTERM to the driver alone
    # (`kill -TERM <pid>`). Each time the run is mid-training. (SIGHUP takes the same path: the test below.)
    for how, sig in (("timeout", signal.SIGTERM), ("kill", signal.SIGTERM)):
        started = time.time()
        proc = start(cmd, prefix=("timeout", "--preserve-status", "600") if how == "timeout" else ())
        wait_for_checkpoint(tmp_path / "ray", after=started)
        proc.send_signal(sig)  # to `timeout`, which sends it on, or to the driver
        code, _, err = finish(proc)
        name = signal.Signals(sig).name
        assert code == 128 + sig, (how, name, err[-3000:])
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"interrupted ({name}):") and "run the same command again" in last, (how, err[-3000:])
        assert "Traceback" not in err and "SIGTERM received" not in err and "PC: @" not in err, err[-3000:]
        assert list((tmp_path / "ray" / "checkpoints").glob("*/state-*.pt")), "the checkpoints stay"
        trials, _ = stored(tmp_path / "store")
        assert len(trials) < TRIALS, "it really stopped mid-sweep"

    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_complete_once(tmp_path / "store", epochs)
    trials, _ = stored(tmp_path / "store")
    assert trials.restarts.min() >= 1  # resumed from their checkpoints, not started over
    print(f"three runs in {time.time() - began:.0f} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_before_ray_starts_is_an_interruption_too(tmp_path, sig):
    """SIGTERM or SIGHUP during planning (before ray.init) is the same interruption, not Python's silent death."""
    driver = start(command(tmp_path, 2) + ["--preset", "fig6", "--dry-run"],
                   env={"PRUNE_SWEEP_DATA": str(tmp_path / "no-data")})
    time.sleep(2.0)  # in the imports or the plan of 2,196 trials
    driver.send_signal(sig)
    code, _, err = finish(driver, timeout=60)
    if code == 0:
        pytest.skip("the dry run finished before the signal")
    assert code == 128 + sig, err[-2000:]
    assert f"interrupted ({signal.Signals(sig).name})" in err and "Traceback" not in err


# ----------------------------------------------------------------- a dead Ray


def kill_ray_process(driver, name: str) -> int:
    for pid, process_name, _ in descendants(driver.pid):
        if process_name == name[:15]:  # /proc's comm is cut at 15 characters
            os.kill(pid, signal.SIGKILL)
            return pid
    raise AssertionError(f"no {name} process below the driver {driver.pid}: {descendants(driver.pid)}")


@pytest.mark.slow
@pytest.mark.parametrize("process, named", [("raylet", "raylet"), ("gcs_server", "GCS server")])
def test_a_killed_raylet_or_gcs_ends_the_sweep_within_a_minute_then_the_same_command_finishes(tmp_path, process,
                                                                                               named):
    epochs = LONG
    cmd = command(tmp_path, epochs)
    driver = start(cmd)
    wait_for_checkpoint(tmp_path / "ray")
    killed_at = time.time()
    below = descendants(driver.pid)
    pid = kill_ray_process(driver, process)
    code, _, err = finish(driver, timeout=120)  # before: the progress line every 5 s, for ever
    took = time.time() - killed_at
    assert code == EXIT_RAY_LOST, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert f"the {named} (pid {pid}) of this sweep's local Ray died" in last, err[-3000:]
    assert "run the same command again" in last
    assert took < 60, took
    deadline = time.time() + 10  # SIGKILLed, a process with torch loaded takes a moment to exit
    while [p for p in below if alive(p.pid)] and time.time() < deadline:
        time.sleep(0.2)
    assert not [p for p in below if alive(p.pid)], "nothing of its Ray is left running"
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_complete_once(tmp_path / "store", epochs)


def test_the_watchdog_names_a_cluster_that_stops_answering_after_the_grace_period():
    """A remote cluster's GCS that refuses connections for the grace period ends the sweep (here: a closed port,
    with the lost-Ray action recorded instead of exiting)."""
    import socket

    import ray

    from orchestrator.stops import ray_watchdog

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # free once closed: nothing listens there

    class FakeNode:  # only the addresses the watchdog reads from ray's node object
        gcs_address = f"127.0.0.1:{closed}"
        node_ip_address, node_manager_port, all_processes = None, None, {}

    lost = []
    saved = ray._private.worker._global_node
    ray._private.worker._global_node = FakeNode()
    try:
        with ray_watchdog("results/", interval=0.1, grace=0.5, on_lost=lost.append):
            deadline = time.time() + 10
            while not lost and time.time() < deadline:
                time.sleep(0.05)
    finally:
        ray._private.worker._global_node = saved
    assert lost == [f"error: the Ray GCS at 127.0.0.1:{closed} stopped answering for 0.5 s; finished trials are in "
                    f"results/ and unfinished ones keep their checkpoints: run the same command again"]


# ----------------------------------------------------------------- full and read-only disks


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here to fill a disk for real: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path) -> Path:
    """Fill the filesystem of `directory` to the last byte; the filler's path (delete it to free the space)."""
    filler = directory / "filler.bin"
    for path, chunk in ((filler, 65536), (directory / "filler-2.bin", 512)):  # then the last partial block
        with open(path, "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * chunk)
    return filler


@pytest.mark.slow
@pytest.mark.parametrize("full", ["store", "checkpoints"])
def test_a_full_disk_stops_the_sweep_at_once_naming_the_path_and_the_same_command_resumes(tmp_path, full):
    epochs = LONG
    disk = tmp_path / "disk"
    with tmpfs(disk, "64m"):
        store = disk / "store" if full == "store" else tmp_path / "store"
        storage = disk / "ray" if full == "checkpoints" else tmp_path / "ray"
        cmd = command(tmp_path, epochs, store=store, storage=storage)
        driver = start(cmd)
        wait_for_checkpoint(storage)
        began = time.time()
        filler = fill(disk)
        code, _, err = finish(driver, timeout=180)
        took = time.time() - began
        assert code == EXIT_STORAGE, err[-3000:]
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, err[-3000:]
        assert str(disk) in lines[0] and "No space left on device" in lines[0], lines
        assert "run the same command again" in lines[0] and "free space" in lines[0]
        assert err.count("Traceback") == 0, err[-3000:]
        assert took < 60, took  # before: every trial trained in full, then retried 4 times
        for extra in disk.glob("filler*.bin"):
            extra.unlink()
        del filler
        done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert_complete_once(store, epochs)


# ----------------------------------------------------------------- one computation per trial


def trained_epochs(storage: Path):
    """(trial id, epoch) of every epoch any Tune run trained, from the runs' own result logs."""
    seen = []
    for log in storage.glob("*/*/result.json"):
        for line in log.read_text().splitlines():
            result = json.loads(line)
            if result.get("status") in ("running", "completed") and result.get("epoch"):
                seen.append((result["spec_id"], result["epoch"]))
    return seen


@pytest.mark.slow
def test_two_sweeps_started_together_train_each_trial_once_and_a_killed_holder_is_taken_over(tmp_path):
    epochs = LONG
    env = {"PRUNE_SWEEP_LEASE_TTL": "6"}
    cmd = command(tmp_path, epochs)
    first, second = start(cmd, env), start(cmd, env)
    code1, _, err1 = finish(first)
    code2, _, err2 = finish(second)
    assert code1 == 0 and code2 == 0, (err1[-2000:], err2[-2000:])
    assert_complete_once(tmp_path / "store", epochs)
    trained = trained_epochs(tmp_path / "ray")
    assert len(trained) == len(set(trained)) == TRIALS * epochs, sorted(trained)  # no epoch computed twice

    # The holder SIGKILLed midway: the other sweep waits for its lease to go stale, takes it over and resumes.
    # Trials long enough that the holder still trains them when the waiter's Ray is up (about 20 s on 2 busy cores).
    epochs = 8 * LONG
    store2, ray2 = tmp_path / "store2", tmp_path / "ray2"
    cmd2 = command(tmp_path, epochs, store=store2, storage=ray2)
    holder = start(cmd2, env)
    wait_for_checkpoint(ray2)
    log = tmp_path / "waiter.err"
    with open(log, "w") as err_file:
        waiter = subprocess.Popen(cmd2, stdout=subprocess.PIPE, stderr=err_file, text=True, env={**ENV, **env},
                                  start_new_session=True)
        deadline = time.time() + 180
        while "another sweep is training" not in log.read_text() and time.time() < deadline:
            time.sleep(0.2)  # until the waiter has found both trials held and waits for them
        assert "another sweep is training" in log.read_text(), log.read_text()[-3000:]
        survivors = descendants(holder.pid)
        os.killpg(holder.pid, signal.SIGKILL)
        holder.communicate(timeout=60)
        for pid, _, _ in survivors:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        waiter.communicate(timeout=300)
    err = log.read_text()
    assert waiter.returncode == 0, err[-3000:]
    assert_complete_once(store2, epochs)
    trials, _ = stored(store2)
    assert trials.restarts.max() >= 1  # taken over from the dead holder's checkpoint, not started over


# ----------------------------------------------------------------- locations


def test_a_uri_query_stays_at_the_end_of_every_appended_path():
    uri = "s3://bucket/ray?endpoint_override=127.0.0.1:9000&scheme=http"
    assert checkpoint_root(uri) == "s3://bucket/ray/checkpoints?endpoint_override=127.0.0.1:9000&scheme=http"
    assert join_location("s3://bucket/results/?scheme=http", "trials") == "s3://bucket/results/trials?scheme=http"
    assert join_location("/data/results/", "trials", "x.parquet") == "/data/results/trials/x.parquet"
    assert split_query("/a?b") == ("/a?b", "")  # a local path's '?' is a character of its name
    from results_store import filesystem_for

    fs, path = filesystem_for(checkpoint_root(uri))
    assert path == "bucket/ray/checkpoints" and fs.type_name == "s3"


def test_the_read_hint_of_a_store_uri_with_a_query_is_one_pandas_can_run():
    from orchestrator.sweep import read_hint

    assert read_hint("results") == "pd.read_parquet('results/trials')"
    assert read_hint("s3://b/r?endpoint_override=h:1") == (
        "from results_store import read_table; read_table('s3://b/r?endpoint_override=h:1', 'trials')")


# ----------------------------------------------------------------- tidying up at the end


@pytest.mark.slow
def test_a_sweep_compacts_a_large_enough_store_and_frees_abandoned_checkpoints_and_gc_does_so_on_demand(tmp_path):
    from results_store import ResultsStore, record_grid

    checkpoints = tmp_path / "ray" / "checkpoints"
    old, recent = checkpoints / "0123456789abcdef", checkpoints / "fedcba9876543210"  # of a grid changed since
    for directory in (old, recent):
        directory.mkdir(parents=True)
        (directory / "state-000000001.pt").write_bytes(b"x" * 1000)
    two_hours_ago = time.time() - 7200
    os.utime(old / "state-000000001.pt", (two_hours_ago, two_hours_ago))

    done = subprocess.run(command(tmp_path, 2, "--compact-at", "2"), capture_output=True, text=True, env=ENV,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[quickstart] compacted 2 trials into 1 group(s) of parts" in done.stderr, done.stderr[-3000:]
    store = tmp_path / "store"
    assert not list((store / "trials").glob("*.parquet")) and len(list((store / "trials" / "compacted").glob("*")))
    assert len(pd.read_parquet(store / "trials")) == TRIALS
    assert ("[quickstart] freed the checkpoints of 1 trial(s) under " in done.stderr
            and "0 already in the store, 1 in no grid recorded in the store" in done.stderr), done.stderr[-3000:]
    assert not old.exists() and recent.exists()  # touched within the hour: perhaps another store's sweep

    wanted = checkpoints / "00000000000000aa"  # in a recorded grid, not yet run: a rerun resumes it
    (wanted).mkdir()
    (wanted / "state-000000001.pt").write_bytes(b"y")
    record_grid(ResultsStore(store), "other", ["00000000000000aa"])
    gc = [sys.executable, "-m", "results_store", "gc", str(store), "--storage-path", str(tmp_path / "ray")]
    dry = subprocess.run(gc + ["--dry-run"], capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[0].startswith("would free the checkpoints of 1 trial(s)"), dry.stdout
    assert "kept 1 unfinished trials of a recorded grid" in dry.stdout and recent.exists()
    freed = subprocess.run(gc, capture_output=True, text=True, timeout=120)
    assert freed.returncode == 0 and freed.stdout.startswith("freed the checkpoints of 1 trial(s)"), freed
    assert not recent.exists() and wanted.exists()
    kept = subprocess.run(gc + ["--dry-run"], capture_output=True, text=True, timeout=120)
    assert kept.stdout.startswith("would free the checkpoints of 0 trial(s)"), kept.stdout
