"""The sweep's promise under faults nobody chose: every grid point lands in the store exactly once, with the
metrics of an uninterrupted run, whatever is killed and whenever.

Each driver here starts its own local Ray (the default a user gets), so a SIGKILL of the driver takes its
trials down with it at whatever point they were: loading, pruning, mid-epoch, mid-checkpoint write,
mid-store write. Kill moments are drawn at random over the length of an uninterrupted run, from a seeded
generator (the seed is in the test id, so a failure can be replayed).
"""
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from results_store import ResultsStore

GRID = ["--models", "mlp", "--algorithms", "synflow,magnitude,snip", "--log10-compressions", "0,1", "--seeds", "0",
        "--epochs", "4", "--batch-size", "32", "--num-cpus", "2"]
GRID_TRIALS, GRID_EPOCHS = 6, 4
METRICS = ["train_loss", "test_loss", "top1", "top5", "lr"]
FAULT_SEEDS = [int(s) for s in os.environ.get("FAULT_SEEDS", "0,1,2").split(",")]
ENV = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


def command(tmp, *extra):
    return [sys.executable, "-m", "orchestrator.sweep", *GRID, "--store", str(tmp / "store"),
            "--storage-path", str(tmp / "ray"), *extra]


def start(tmp, *extra):
    return subprocess.Popen(command(tmp, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)


def run(tmp, *extra, timeout=300):
    return subprocess.run(command(tmp, *extra), capture_output=True, text=True, env=ENV, timeout=timeout)


def descendants(pid: int):
    """(pid, command line) of every process below `pid`, from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append((int(entry), cmdline))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child[0])
    return found


def kill_driver(driver: subprocess.Popen) -> None:
    """SIGKILL the driver (its local Ray goes with it), then make sure nothing of its session survives."""
    survivors = [pid for pid, _ in descendants(driver.pid)]
    if driver.poll() is None:
        driver.send_signal(signal.SIGKILL)
    driver.communicate(timeout=60)
    for pid in survivors:  # normally gone already: Ray's processes share the driver's fate
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stored(tmp):
    store = tmp / "store"
    trials = pd.read_parquet(store / "trials") if (store / "trials").exists() else pd.DataFrame()
    epochs = pd.read_parquet(store / "epochs") if (store / "epochs").exists() else pd.DataFrame()
    return trials, epochs


def assert_exactly_once_with_reference_metrics(tmp, reference):
    trials, epochs = stored(tmp)
    ref_trials, ref_epochs = reference
    assert sorted(trials.trial_id) == sorted(ref_trials.trial_id)  # every grid point, each exactly once
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert len(epochs) == GRID_TRIALS * GRID_EPOCHS
    got = epochs.set_index(["trial_id", "epoch"]).sort_index()[METRICS]
    want = ref_epochs.set_index(["trial_id", "epoch"]).sort_index()[METRICS]
    pd.testing.assert_frame_equal(got, want, check_exact=True)  # bit-equal to an uninterrupted run, every epoch
    final = ["final_top1", "final_top5", "final_test_loss", "remaining_params", "status"]
    pd.testing.assert_frame_equal(trials.set_index("trial_id").sort_index()[final],
                                  ref_trials.set_index("trial_id").sort_index()[final], check_exact=True)
    layers = pd.read_parquet(tmp / "store" / "layers")
    assert not layers.duplicated(["trial_id", "layer_index"]).any() and layers.trial_id.nunique() == GRID_TRIALS


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The grid run once, uninterrupted: its rows, and how long a whole run takes here."""
    tmp = tmp_path_factory.mktemp("reference")
    began = time.time()
    out = run(tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    trials, epochs = stored(tmp)
    assert len(trials) == GRID_TRIALS and len(epochs) == GRID_TRIALS * GRID_EPOCHS
    return trials, epochs, time.time() - began, tmp


@pytest.mark.slow
@pytest.mark.parametrize("seed", FAULT_SEEDS)
def test_random_driver_kills_and_a_worker_kill_leave_every_trial_once_with_uninterrupted_metrics(reference, tmp_path,
                                                                                                  seed):
    ref_trials, ref_epochs, whole_run, _ = reference
    rng = random.Random(seed)
    moments = []
    for _ in range(3):  # three SIGKILLs of the driver, each at a random moment of a whole run's length
        moment = rng.uniform(0.5, whole_run)
        moments.append(round(moment, 2))
        driver = start(tmp_path)
        try:
            driver.wait(timeout=moment)
        except subprocess.TimeoutExpired:
            pass
        kill_driver(driver)

    # Then a trial's worker process, killed mid-training at a random moment: Tune retries it from its checkpoint.
    driver = start(tmp_path, "--max-failures", "3")
    deadline = time.time() + rng.uniform(0.5, whole_run / 2)
    killed = None
    while driver.poll() is None and killed is None:
        workers = [pid for pid, cmd in descendants(driver.pid) if cmd.startswith("ray::ImplicitFunc")]
        if workers and time.time() >= deadline:
            killed = rng.choice(workers)
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, f"kills at {moments}s: {err[-3000:]}"

    assert_exactly_once_with_reference_metrics(tmp_path, (ref_trials, ref_epochs))
    assert ResultsStore(tmp_path / "store").finished_ids() == set(ref_trials.trial_id)  # the next run has nothing to do


@pytest.mark.slow
def test_ctrl_c_twice_exits_non_zero_with_the_hint_then_the_same_command_completes(tmp_path):
    longer = ("--epochs", "6")  # long enough that the interrupt lands mid-sweep
    driver = start(tmp_path, *longer)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "ray" / "checkpoints").glob("*/state-*.pt")):
        time.sleep(0.1)
    driver.send_signal(signal.SIGINT)
    time.sleep(0.5)
    if driver.poll() is None:
        driver.send_signal(signal.SIGINT)
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == 130, err[-3000:]
    assert "interrupted" in err and "run the same command again" in err and "Traceback" not in err
    trials, _ = stored(tmp_path)
    assert len(trials) < GRID_TRIALS  # it really stopped mid-sweep
    done = run(tmp_path, *longer)
    assert done.returncode == 0, done.stderr[-3000:]
    trials, epochs = stored(tmp_path)
    assert len(trials) == GRID_TRIALS and trials.trial_id.is_unique
    assert len(epochs) == GRID_TRIALS * 6 and not epochs.duplicated(["trial_id", "epoch"]).any()


@pytest.mark.slow
def test_corrupted_store_files_are_named_moved_aside_and_their_trials_rerun(reference, tmp_path):
    ref_trials, ref_epochs, _, ref_dir = reference
    shutil.copytree(ref_dir / "store", tmp_path / "store")
    ids = sorted(ref_trials.trial_id)
    for table, trial_id in zip(("trials", "epochs", "layers"), ids):
        path = tmp_path / "store" / table / f"{trial_id}.parquet"
        path.write_bytes(path.read_bytes()[:100])  # truncated, as a crash of the disk or a careless copy leaves it
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "store" / "trials").glob("*.parquet")}
    out = run(tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    for table, trial_id in zip(("trials", "epochs", "layers"), ids):
        assert f"{table}/{trial_id}.parquet" in out.stderr  # named
    assert "6 trials, 3 already in" in out.stdout and "3 to run" in out.stdout
    assert_exactly_once_with_reference_metrics(tmp_path, (ref_trials, ref_epochs))
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "store" / "trials").glob("*.parquet")}
    untouched = [name for name in before if name[:-8] not in ids[:3]]
    assert all(after[name] == before[name] for name in untouched)  # the readable trials were not rerun
    assert ResultsStore(tmp_path / "store").finished_ids() == set(ids)


@pytest.mark.slow
def test_two_overlapping_sweeps_on_one_machine_both_complete_with_no_trial_twice(tmp_path):
    longer = ("--epochs", "6")
    first = start(tmp_path, *longer)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "ray" / "checkpoints").glob("*/state-*.pt")):
        time.sleep(0.1)
    # The same grid again while the first runs (same store, same storage path), plus one more seed of its own.
    second = start(tmp_path, *longer, "--seeds", "0,1")
    out1, err1 = first.communicate(timeout=300)
    out2, err2 = second.communicate(timeout=300)
    assert first.returncode == 0, err1[-3000:]
    assert second.returncode == 0, err2[-3000:]
    assert "sweep quickstart: 12 trials, " in out2 and "nothing to run" not in out2
    trials, epochs = stored(tmp_path)
    assert len(trials) == 2 * GRID_TRIALS and trials.trial_id.is_unique
    assert len(epochs) == 2 * GRID_TRIALS * 6 and not epochs.duplicated(["trial_id", "epoch"]).any()
    runs = [p.name for p in (tmp_path / "ray").iterdir() if p.name != "checkpoints"]
    assert len(runs) == len(set(runs)) == 2  # one Tune run directory each
    assert list((tmp_path / "ray" / "checkpoints").iterdir()) == []


def test_re_running_a_finished_sweep_starts_no_trial(reference, tmp_path):
    _, _, _, ref_dir = reference
    shutil.copytree(ref_dir / "store", tmp_path / "store")
    began = time.time()
    out = run(tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"all {GRID_TRIALS} trials already in the store; nothing to run" in out.stdout
    assert not (tmp_path / "ray").exists() or not [p for p in (tmp_path / "ray").iterdir() if p.name != "checkpoints"]
    print(f"no-op re-run took {time.time() - began:.1f}s")
