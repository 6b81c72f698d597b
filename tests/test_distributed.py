"""A trial on several Ray Train workers (DDP, gloo on CPU) through a real sweep on real local Ray."""
import glob
import os
import pathlib
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from trainables.data.batches import shard_positions

ROOT = pathlib.Path(__file__).resolve().parents[1]
TRIAL = ["--models", "mlp", "--datasets", "digits", "--algorithms", "synflow", "--log10-compressions", "1",
         "--seeds", "0", "--num-cpus", "2", "--keep-checkpoints", "--keep-masks"]


def sweep(tmp: pathlib.Path, *extra: str, env=None) -> subprocess.Popen:
    env = {k: v for k, v in (env or os.environ).items() if k != "RAY_ADDRESS"}
    # Ray Train's controller takes one worker report per health check (every 2 s by default): a floor of 2 s an
    # epoch, which only these 0.1 s epochs notice. The local Ray this sweep starts passes it to the controller.
    env.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    return subprocess.Popen([sys.executable, "-m", "orchestrator.sweep", *TRIAL, "--store", str(tmp / "store"),
                             "--storage-path", str(tmp / "ray"), *extra], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> None:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]


def final_checkpoint(tmp: pathlib.Path) -> dict:
    [path] = glob.glob(str(tmp / "ray" / "checkpoints" / "*" / "state-*.pt"))[-1:]
    return torch.load(sorted(glob.glob(str(pathlib.Path(path).parent / "state-*.pt")))[-1], weights_only=True)


def test_shards_cover_each_global_batch_once_and_every_rank_steps_equally():
    for count, batch in [(1437, 64), (11, 4), (9, 2)]:
        ranks = [shard_positions(count, batch, False, (r, 2)) for r in range(2)]
        assert len(ranks[0]) == len(ranks[1])
        assert all(len(a) == len(b) > 0 for a, b in zip(*ranks))
        seen = torch.cat([torch.stack(pair, 1).flatten() for pair in zip(*ranks)])
        assert seen[:count].tolist() == list(range(count))  # the one-worker order, global batch by global batch
        assert len(seen) - count == count % 2  # padded by at most world - 1, from the order's head
    with pytest.raises(ValueError, match="split evenly"):
        shard_positions(10, 5, False, (0, 2))


@pytest.mark.slow
def test_two_workers_land_once_with_one_workers_masks_and_accuracy(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    runs = [sweep(two, "--epochs", "3", "--workers-per-trial", "2")]
    finish(runs[0])
    finish(sweep(one, "--epochs", "3"))
    trials2, trials1 = (pd.read_parquet(d / "store" / "trials") for d in (two, one))
    assert len(trials2) == 1 and trials2.status.tolist() == ["completed"]
    assert trials2.trial_id.tolist() == trials1.trial_id.tolist()  # workers are no part of the description
    assert trials2.remaining_params.item() == round(trials2.prunable_params.item() / 10)
    layers2, layers1 = (pd.read_parquet(d / "store" / "layers").sort_values("layer_index") for d in (two, one))
    assert layers2.remaining.tolist() == layers1.remaining.tolist()
    assert sorted(pd.read_parquet(two / "store" / "epochs").epoch) == [1, 2, 3]
    assert list((two / "ray" / "checkpoints" / "_ray_train").iterdir()) == []  # Train's run directory freed
    # Same masks: from inside (each rank's digest, gathered by rank 0) and against the one-worker trial's.
    state2, state1 = final_checkpoint(two), final_checkpoint(one)
    assert len(state2["mask_hashes"]) == 2 and len(set(state2["mask_hashes"])) == 1
    masks2 = state2["trainer"]["masks"]
    for name, mask in masks2.items():
        assert torch.equal(mask.bool(), state1["trainer"]["masks"][name].bool())
        weight = state2["trainer"]["model"][name]
        assert (weight[~mask.bool()] == 0).all()  # pruned weights stay exactly zero through DDP training
    assert int(sum(m.bool().sum() for m in masks2.values())) == trials2.remaining_params.item()
    # Rank r takes positions r, r+2, ... of each global batch of the same (seed, epoch) order, and DDP averages
    # the two halves' gradients: the steps are the one-worker steps on the same examples, up to float summation
    # order and the one example the odd-sized epoch repeats to pad it. 2 points of top-1 (9 of the 450 test
    # digits) bounds that; a wrong shard (each rank a whole epoch, or the lr scaled) moves it by more.
    gap = abs(trials2.final_top1.item() - trials1.final_top1.item())
    print(f"final top-1: 2 workers {trials2.final_top1.item():.4f}, 1 worker {trials1.final_top1.item():.4f}")
    assert gap <= 0.02


def train_workers(marker: str):
    """Pids of this test's Ray Train workers (their environment carries `marker`)."""
    pids = []
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"RayTrainWorker" in (proc / "cmdline").read_bytes() and marker.encode() in (proc / "environ").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
def test_a_killed_worker_restarts_the_trial_from_its_checkpoint_on_every_rank(tmp_path):
    marker = f"PRUNE_TEST_DISTRIBUTED={tmp_path}"
    env = dict(os.environ, PRUNE_TEST_DISTRIBUTED=str(tmp_path))
    run = sweep(tmp_path, "--epochs", "40", "--workers-per-trial", "2", env=env)
    killed = None
    deadline = time.time() + 300
    while killed is None and time.time() < deadline and run.poll() is None:
        steps = glob.glob(str(tmp_path / "ray" / "checkpoints" / "*" / "state-*.pt"))
        if any(int(pathlib.Path(s).stem.split("-")[1]) >= 3 for s in steps):  # epoch 2 checkpointed (step 1: pruned)
            pids = train_workers(marker)
            if pids:
                killed = pids[-1]
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    assert killed is not None, "no worker found to kill before the trial ended"
    finish(run)
    trials = pd.read_parquet(tmp_path / "store" / "trials")
    assert len(trials) == 1 and trials.status.tolist() == ["completed"]
    assert trials.restarts.item() >= 1 and trials.resumed_from_epoch.item() >= 2
    epochs = pd.read_parquet(tmp_path / "store" / "epochs")
    assert sorted(epochs.epoch) == list(range(1, 41))
    assert list((tmp_path / "ray" / "checkpoints" / "_ray_train").iterdir()) == []  # each attempt's, failed too
    state = final_checkpoint(tmp_path)
    assert len(set(state["mask_hashes"])) == 1


def test_rank_0_checkpoints_only_while_the_trial_holds_its_lease(tmp_path):
    """Rank 0 runs in a Train worker, away from the Tune function's heartbeat: it reads the lease from the store
    before each save, so a trial taken over by another sweep never gets a second writer of its checkpoints."""
    from types import SimpleNamespace

    from results_store import ResultsStore
    from results_store.lease import acquire
    from trainables import trial
    from trainables.checkpoints import TrialCheckpoints
    from trainables.distributed import LeaseWatch

    store = ResultsStore(str(tmp_path / "store"))
    ours = acquire(store, "trial-abc", ttl=0.3)
    checkpoints = TrialCheckpoints(str(tmp_path / "checkpoints"), "abc")
    setting = SimpleNamespace(spec=SimpleNamespace(trial_id="abc"), checkpoints=checkpoints,
                              heartbeat=LeaseWatch(str(tmp_path / "store"), "trial-abc", ours.token))
    trial.save(setting, {"step": 1})
    assert checkpoints.newest()["step"] == 1
    time.sleep(0.4)  # our lease goes stale unrenewed: nobody else holds it, so saving goes on
    trial.save(setting, {"step": 2})
    assert checkpoints.newest()["step"] == 2
    assert acquire(store, "trial-abc", holder="another-host:1", ttl=60) is not None  # another sweep takes it over
    with pytest.raises(trial.LeaseLost, match="lost the lease of trial abc: another sweep took it over"):
        trial.save(setting, {"step": 3})
    assert checkpoints.newest()["step"] == 2
    assert not LeaseWatch(None, "trial-abc", ours.token).lost.is_set()  # no store: nothing to watch


def test_tidying_up_leaves_ray_trains_run_directories_alone(tmp_path):
    from results_store import ResultsStore
    from results_store.collect import collect_checkpoints

    run_dir = tmp_path / "ray" / "checkpoints" / "_ray_train" / "e17772fcdeacd624-2ead8a"
    run_dir.mkdir(parents=True)  # a running trial's, on several workers
    (tmp_path / "ray" / "checkpoints" / "0123456789abcdef").mkdir()  # an abandoned trial's, empty
    report = collect_checkpoints(ResultsStore(str(tmp_path / "store")), str(tmp_path / "ray"))
    assert report.abandoned == ["0123456789abcdef"] and run_dir.is_dir()


def test_the_plan_says_how_each_trial_is_spread_over_workers(tmp_path, capsys):
    from orchestrator.sweep import main

    where = ["--store", str(tmp_path / "store"), "--storage-path", str(tmp_path / "ray")]
    assert main(["--preset", "imagenet", "--dry-run", *where]) == 0
    out = capsys.readouterr().out
    assert "183 trials ask for {'CPU': 64.0, 'GPU': 8.0} each: 8 DDP workers a trial (nccl, one GPU each)" in out
    assert main(["--models", "mlp", "--workers-per-trial", "2", "--gpus-per-trial", "0", "--dry-run", *where]) == 0
    assert "trials ask for {'CPU': 2.0} each: 2 DDP workers a trial (gloo)" in capsys.readouterr().out
