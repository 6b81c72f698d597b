"""The sweep's promise under faults nobody chose: every grid point lands in the store exactly once, with the
metrics of an uninterrupted run, whatever is killed and whenever.

Each driver here starts its own local Ray (the default a user gets), so a SIGKILL of the driver takes its
trials down with it at whatever point they were: loading, pruning, mid-epoch, mid-checkpoint write,
mid-store write. Kill moments are drawn at random over what is left of the sweep's trials, counted from the
moment that driver's first trial starts (Ray's own start, before it, is most of a run here and holds no trial),
from a seeded generator (the seed is in the test id, so a failure can be replayed). A fault counts only when it
lands: a driver killed while alive and before the store holds every trial, a worker killed while it trains a
trial that has checkpointed an epoch and has no rows yet. A draw that would miss (the run was quicker than
estimated) is replayed from a copy of the store and checkpoints taken before that driver started, with a new
draw over what the missed run measured was left.
"""
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pandas as pd
import pytest

from processes import descendants
from results_store import ResultsStore
from trainables.checkpoints import TrialCheckpoints

# Above 1x: six trials that each prune (at 1x the three would be one shared dense trial).
GRID = ["--models", "mlp", "--algorithms", "synflow,magnitude,snip", "--log10-compressions", "1,2", "--seeds", "0",
        "--epochs", "4", "--batch-size", "32", "--num-cpus", "2"]
GRID_TRIALS, GRID_EPOCHS = 6, 4
METRICS = ["train_loss", "test_loss", "top1", "top5", "lr"]
FAULT_SEEDS = [int(s) for s in os.environ.get("FAULT_SEEDS", "0,1,2").split(",")]
ENV = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
POLL = 0.02  # seconds between looks at a running driver
MAX_DRAWS = 4  # draws of one fault before the test gives up on it landing


def command(tmp, *extra):
    return [sys.executable, "-m", "orchestrator.sweep", *GRID, "--store", str(tmp / "store"),
            "--storage-path", str(tmp / "ray"), *extra]


def start(tmp, *extra):
    return subprocess.Popen(command(tmp, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)


def run(tmp, *extra, timeout=300):
    return subprocess.run(command(tmp, *extra), capture_output=True, text=True, env=ENV, timeout=timeout)


def kill_driver(driver: subprocess.Popen) -> None:
    """SIGKILL the driver (its local Ray goes with it), then make sure nothing of its session survives."""
    survivors = [p.pid for p in descendants(driver.pid)]
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


@dataclass
class Timeline:
    """When things happened in one driver's run, in seconds from its start."""

    first_worker: float = math.inf  # a trial's worker process exists
    all_stored: float = math.inf  # the store holds every trial of the grid
    exited: float = math.inf


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The grid run once, uninterrupted: its rows, and when its trials started and were all stored."""
    tmp = tmp_path_factory.mktemp("reference")
    driver = launch(tmp)
    timeline = Timeline()
    began = time.time()
    while driver.poll() is None:
        now = time.time() - began
        if timeline.first_worker == math.inf and workers(driver.pid):
            timeline.first_worker = now
        if timeline.all_stored == math.inf and len(finished(tmp)) == GRID_TRIALS:
            timeline.all_stored = now
        time.sleep(POLL)
    timeline.exited = time.time() - began
    assert driver.returncode == 0, output(driver)[-3000:]
    trials, epochs = stored(tmp)
    assert len(trials) == GRID_TRIALS and len(epochs) == GRID_TRIALS * GRID_EPOCHS
    assert timeline.first_worker < timeline.all_stored < math.inf
    return trials, epochs, timeline, tmp


def launch(tmp, *extra):
    """A driver whose output goes to files (nothing reads a pipe while the test polls)."""
    logs = tmp / "driver-logs"
    logs.mkdir(exist_ok=True)
    n = len(list(logs.glob("*.err")))
    with open(logs / f"{n:02d}.out", "w") as out, open(logs / f"{n:02d}.err", "w") as err:
        driver = subprocess.Popen(command(tmp, *extra), stdout=out, stderr=err, env=ENV, start_new_session=True)
    driver.log = logs / f"{n:02d}.err"
    return driver


def output(driver) -> str:
    return driver.log.read_text(errors="replace")


def finished(tmp) -> set:
    """Trials with rows in the store: its trials file is written last, after the epochs and layers."""
    return {p.stem for p in (tmp / "store" / "trials").glob("*.parquet")}


def workers(pid: int):
    """(pid, trial id) of each Tune worker below `pid` running a trial: Tune runs it in a directory named by the id."""
    found = []
    for worker, _, cmd in descendants(pid):
        if cmd.startswith("ray::ImplicitFunc.train"):
            try:
                found.append((worker, os.path.basename(os.readlink(f"/proc/{worker}/cwd"))))
            except OSError:
                continue
    return found


def wait_gone(pid: int, timeout: float = 30) -> None:
    """Until `pid` is dead (gone, or a zombie nobody reaped yet): nothing it was writing can change after this."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except OSError:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} still alive {timeout}s after SIGKILL")


def checkpoints(tmp, trial_id):
    return TrialCheckpoints(str(tmp / "ray" / "checkpoints"), trial_id)


def trained_an_epoch(tmp, trial_id) -> bool:
    """A checkpoint after an epoch: the first (state-000000001.pt) is written right after the prune, at epoch 0."""
    return any(int(p.stem.split("-")[1]) >= 2 for p in (tmp / "ray" / "checkpoints" / trial_id).glob("state-*.pt"))


class Sweep:
    """One grid's state under faults: a copy of it before each driver (to replay a missed draw), and what each
    trial's row must say about restarts, from the checkpoint its last start resumed (or not) from."""

    def __init__(self, tmp, trial_ids):
        self.tmp, self.trial_ids = tmp, set(trial_ids)
        self.expected = {}  # trial id -> (restarts, resumed_from_epoch)
        self.faults = []  # one line per draw: what it hit or why it missed

    def resume_points(self):
        """(restarts, resumed_from_epoch) the next start of each unfinished trial will record."""
        points = {}
        for trial_id in self.trial_ids - finished(self.tmp):
            state = checkpoints(self.tmp, trial_id).newest()
            points[trial_id] = (0, None) if state is None else (state["restarts"] + 1, state["epoch"])
        return points

    def save(self):
        shutil.rmtree(self.tmp / "before", ignore_errors=True)
        for part in ("store", "ray"):
            if (self.tmp / part).exists():
                shutil.copytree(self.tmp / part, self.tmp / "before" / part)

    def restore(self):
        for part in ("store", "ray"):
            shutil.rmtree(self.tmp / part, ignore_errors=True)
            if (self.tmp / "before" / part).exists():
                shutil.copytree(self.tmp / "before" / part, self.tmp / part)

    def record(self, points, done_before):
        for trial_id in finished(self.tmp) - done_before:
            self.expected[trial_id] = points[trial_id]

    def left(self, ref: Timeline) -> float:
        """What is left of the sweep's trials, from its first trial's start (Ray's start before it is ~90% of a
        run here, and a kill there hits no trial): a share of the uninterrupted run's trial time, an unfinished
        trial counted whole even when it has checkpoints, so this errs long."""
        share = len(self.trial_ids - finished(self.tmp)) / len(self.trial_ids)
        return (ref.all_stored - ref.first_worker) * share

    def kill_driver_mid_run(self, rng, left):
        """SIGKILL a driver at a moment drawn over `left` seconds after its first trial started; replay the draw
        until it lands."""
        self.save()
        for attempt in range(MAX_DRAWS):
            fraction = rng.random()
            moment = fraction * left
            points, done_before = self.resume_points(), finished(self.tmp)
            driver, started, all_stored = launch(self.tmp), None, math.inf
            while driver.poll() is None:
                now = time.time()
                if started is None and workers(driver.pid):
                    started = now
                if all_stored == math.inf and len(finished(self.tmp)) == len(self.trial_ids):
                    all_stored = now
                if started is not None and now - started >= moment:
                    break
                time.sleep(POLL)
            alive = driver.poll() is None
            kill_driver(driver)
            landed = alive and started is not None and len(finished(self.tmp)) < len(self.trial_ids)
            self.faults.append(f"driver kill at {fraction:.2f} of {left:.2f}s = {moment:.2f}s into the trials: "
                               + ("landed" if landed else "missed, the sweep had finished"))
            if landed:
                self.record(points, done_before)
                return
            if started is not None:  # what was left, as this run measured it
                left = 0.9 * (min(all_stored, time.time()) - started)
            self.restore()
        raise AssertionError(f"no driver kill landed in {MAX_DRAWS} draws: {self.faults}")

    def kill_a_worker_mid_trial(self, rng, left):
        """SIGKILL the worker of a trial that has checkpointed an epoch and has no rows, at the first such moment
        after one drawn over `left` seconds after the driver's first trial started, then let Tune retry it to the
        end. The killed trial and the checkpoint it must resume from; a draw that finds no such moment is
        replayed."""
        self.save()
        for attempt in range(MAX_DRAWS):
            fraction = rng.random()
            deadline = fraction * left
            points, done_before = self.resume_points(), finished(self.tmp)
            driver, began = launch(self.tmp, "--max-failures", "3"), None
            killed, last_chance = None, None
            while driver.poll() is None and killed is None:
                running = workers(driver.pid)
                if began is None and running:
                    began = time.time()
                for pid, trial_id in running:
                    if trial_id in finished(self.tmp) or not trained_an_epoch(self.tmp, trial_id):
                        continue  # between trials, or before its first epoch's checkpoint
                    last_chance = time.time() - began
                    if last_chance < deadline:
                        continue
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    wait_gone(pid)
                    state = checkpoints(self.tmp, trial_id).newest()
                    landed = trial_id not in finished(self.tmp) and state is not None and state["epoch"] >= 1
                    self.faults.append(f"worker kill of {trial_id} at {last_chance:.2f}s into the trials (drawn "
                                       f"{fraction:.2f} of {left:.2f}s): "
                                       + ("landed" if landed else "missed, it had just finished"))
                    if landed:
                        killed = trial_id, state
                        break
                time.sleep(POLL)
            if killed is not None:
                driver.wait(timeout=300)
                assert driver.returncode == 0, f"{self.faults}: {output(driver)[-3000:]}"
                self.record(points, done_before)
                trial_id, state = killed
                self.expected[trial_id] = (state["restarts"] + 1, state["epoch"])
                return trial_id, state
            self.faults.append(f"worker kill drawn at {fraction:.2f} of {left:.2f}s = {deadline:.2f}s into the "
                               f"trials: missed, no trial was mid-run after it")
            kill_driver(driver)
            left = 0.9 * last_chance if last_chance is not None else left
            self.restore()
        raise AssertionError(f"no worker kill landed in {MAX_DRAWS} draws: {self.faults}")


@pytest.mark.slow
@pytest.mark.parametrize("seed", FAULT_SEEDS)
def test_random_driver_kills_and_a_worker_kill_leave_every_trial_once_with_uninterrupted_metrics(reference, tmp_path,
                                                                                                  seed):
    ref_trials, ref_epochs, ref, _ = reference
    rng = random.Random(seed)
    sweep = Sweep(tmp_path, ref_trials.trial_id)
    for _ in range(3):  # three SIGKILLs of the driver, each at a random moment of what is left of its trials
        sweep.kill_driver_mid_run(rng, sweep.left(ref))
        assert 0 < len(sweep.trial_ids - finished(tmp_path)), sweep.faults  # the sweep was still unfinished

    # Then a trial's worker process, killed mid-training: Tune retries it, and it resumes from its checkpoint.
    killed, state = sweep.kill_a_worker_mid_trial(rng, sweep.left(ref))
    faults = sweep.faults
    assert [f.split(" at ")[0] for f in faults if f.endswith("landed")] == ["driver kill"] * 3 + [
        f"worker kill of {killed}"], faults

    assert_exactly_once_with_reference_metrics(tmp_path, (ref_trials, ref_epochs))
    assert ResultsStore(tmp_path / "store").finished_ids() == set(ref_trials.trial_id)  # the next run has nothing to do
    trials = pd.read_parquet(tmp_path / "store" / "trials").set_index("trial_id")
    assert state["epoch"] >= 1 and trials.restarts[killed] >= 1, faults  # a restart, from a checkpoint epoch
    # Every trial's restarts, exactly: one more than the checkpoint its last start resumed from had (0 for a fresh
    # start), and the epoch of that checkpoint.
    assert sorted(sweep.expected) == sorted(trials.index)
    for trial_id, (restarts, resumed_from) in sweep.expected.items():
        row = trials.loc[trial_id]
        assert row.restarts == restarts, (trial_id, row.restarts, restarts, faults)
        if restarts:
            assert row.resumed_from_epoch == resumed_from, (trial_id, row.resumed_from_epoch, resumed_from, faults)
    print("\n".join(faults))


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
