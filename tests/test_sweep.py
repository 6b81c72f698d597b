"""The sweep CLI on real Ray clusters: store rows, skipping, extending, driver kill + resume, node loss."""
import datetime as dt
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pandas as pd
import pytest

from analysis.load import load_results
from analysis.select import Selection
from results_store import ResultsStore, grid_trial_ids

RAY = str(pathlib.Path(sys.executable).with_name("ray"))
# Token auth for every process of the test clusters (Ray enables it on the head once ~/.ray/auth_token exists).
CLUSTER_ENV = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_DEDUP_LOGS": "0"}
SLOW_TRIALS = ["--models", "vgg11_bn", "--datasets", "synthetic", "--algorithms", "magnitude",
               "--epochs", "5", "--lr", "0.01", "--batch-size", "64"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A real Ray cluster started with `ray start`, torn down by killing only its own processes."""

    def __init__(self, head_cpus: int):
        self.temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths are length-limited
        self.port = free_port()
        subprocess.run([RAY, "get-auth-token", "--generate"], env=CLUSTER_ENV, capture_output=True)
        subprocess.run([RAY, "start", "--head", f"--port={self.port}", f"--num-cpus={head_cpus}",
                        f"--temp-dir={self.temp_dir}", "--include-dashboard=false", "--disable-usage-stats"],
                       env=CLUSTER_ENV, check=True, capture_output=True)
        self.address = f"127.0.0.1:{self.port}"

    def add_node(self, cpus: int) -> int:
        manager_port = free_port()
        subprocess.run([RAY, "start", f"--address={self.address}", f"--num-cpus={cpus}",
                        f"--node-manager-port={manager_port}", "--disable-usage-stats"],
                       env=CLUSTER_ENV, check=True, capture_output=True)
        return manager_port

    def kill_raylet(self, manager_port: int) -> None:
        pids = subprocess.run(["pgrep", "-f", f"raylet.*node_manager_port={manager_port}"], capture_output=True,
                              text=True).stdout.split()
        assert pids, "the second node's raylet is not running"
        for pid in pids:
            os.kill(int(pid), signal.SIGKILL)

    def stop(self) -> None:
        subprocess.run(["pkill", "-9", "-f", self.temp_dir])


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(head_cpus=2)
    yield c
    c.stop()


def sweep(*args, wait=True, **kwargs):
    cmd = [sys.executable, "-m", "orchestrator.sweep", *args]
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, env=CLUSTER_ENV, timeout=600, **kwargs)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CLUSTER_ENV, **kwargs)


def small(tmp_path, *extra):
    return ["--models", "mlp", "--algorithms", "synflow,magnitude,snip", "--log10-compressions", "0,1",
            "--seeds", "0", "--epochs", "2", "--store", str(tmp_path / "store"),
            "--storage-path", str(tmp_path / "ray"), *extra]


def checkpointed_unfinished(tmp_path, max_epoch: int = 10**9) -> set:
    """Trials not yet in the store whose newest checkpoint (the project's own, by trial id) is a training one at
    an epoch of at most `max_epoch`."""
    import torch

    store = ResultsStore(tmp_path / "store")
    done = store.finished_ids() if store.exists() else set()
    found = set()
    for d in (tmp_path / "ray" / "checkpoints").glob("*"):
        states = sorted(d.glob("state-*.pt"))
        if d.name in done or not states:
            continue
        try:
            state = torch.load(states[-1], weights_only=True)
        except Exception:  # being written or just replaced: look again next time
            continue
        if state.get("phase") == "training" and 1 <= state["epoch"] <= max_epoch:
            found.add(d.name)
    return found


def wait_until(predicate, timeout=240, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_sweep_lands_every_trial_once_skips_done_ones_and_extends(cluster, tmp_path, capsys):
    out = sweep(*small(tmp_path), "--address", cluster.address)
    assert out.returncode == 0, out.stderr[-3000:]
    # 3 algorithms x {1x, 10x}: at 1x the three train one network, so 4 trials
    assert "4/4 trials in the store (4 completed, 0 diverged; 0 errored, not stored)" in out.stdout
    assert "store: " + str(tmp_path / "store") in out.stdout
    assert "done, " in out.stderr and "running" in out.stderr  # progress lines
    trials = pd.read_parquet(tmp_path / "store" / "trials")
    assert len(trials) == 4 and trials.trial_id.is_unique
    assert sorted(trials.algorithm.unique()) == ["dense", "magnitude", "snip", "synflow"]
    dense = trials[trials.algorithm == "dense"].iloc[0]
    assert dense.log10_compression == 0 and dense.remaining_params == dense.prunable_params == 17_400
    assert len(pd.read_parquet(tmp_path / "store" / "epochs")) == 8
    assert (pd.read_parquet(tmp_path / "store" / "layers").groupby("trial_id").size() == 3).all()
    assert list((tmp_path / "ray" / "checkpoints").iterdir()) == []  # finished trials' checkpoints are freed

    plan = json.loads(dry_run(capsys, *small(tmp_path), "--json"))
    assert (plan["trials"], plan["done"], plan["to_run"]) == (4, 4, 0)
    again = sweep(*small(tmp_path), "--address", cluster.address)
    assert again.returncode == 0 and "0 to run" in again.stdout and "nothing to run" in again.stdout
    assert len(pd.read_parquet(tmp_path / "store" / "trials")) == 4

    extended = small(tmp_path)
    extended[extended.index("--seeds") + 1] = "0,1"
    plan = json.loads(dry_run(capsys, *extended, "--json"))
    assert (plan["trials"], plan["done"], plan["to_run"]) == (8, 4, 4)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "store" / "trials").iterdir()}
    out = sweep(*extended, "--address", cluster.address)
    assert out.returncode == 0, out.stderr[-3000:]
    trials = pd.read_parquet(tmp_path / "store" / "trials")
    assert len(trials) == 8 and trials.trial_id.is_unique and sorted(trials.seed.unique()) == [0, 1]
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "store" / "trials").iterdir()}
    assert all(after[name] == mtime for name, mtime in before.items())  # the first 4 were not rerun

    # A sweep records its grid before it runs, so the analysis selects it with the trials others ran first.
    # (with each algorithm's own 1x id, which the dense trials stand for: an older store holds those)
    recorded = grid_trial_ids(ResultsStore(tmp_path / "store"), "quickstart")
    assert set(trials["trial_id"]) <= recorded and len(recorded - set(trials["trial_id"])) == 3 * 2
    seed_one = small(tmp_path, "--name", "seed-one")
    seed_one[seed_one.index("--seeds") + 1] = "1"
    dry_run(capsys, *seed_one)
    assert grid_trial_ids(ResultsStore(tmp_path / "store"), "seed-one") is None  # a dry run records nothing
    out = sweep(*seed_one, "--address", cluster.address)
    assert out.returncode == 0 and "nothing to run" in out.stdout
    selected = load_results(tmp_path / "store", Selection(sweep="seed-one")).trials
    # each algorithm's 10x trial, and its 1x point drawn from the one dense trial
    assert len(selected) == 6 and set(selected["seed"]) == {1} and set(selected["sweep"]) == {"quickstart"}
    assert selected["shared_dense"].sum() == 3 and selected.loc[selected["shared_dense"], "trial_id"].nunique() == 1


@pytest.mark.slow
def test_losing_a_node_mid_sweep_resumes_its_trials_from_checkpoints(tmp_path):
    two_nodes = Cluster(head_cpus=1)
    try:
        node_port = two_nodes.add_node(cpus=1)
        args = [*SLOW_TRIALS, "--models", "resnet20", "--epochs", "6", "--log10-compressions", "0,1", "--seeds", "0",
                "--store", str(tmp_path / "store"), "--storage-path", str(tmp_path / "ray"),
                "--address", two_nodes.address]
        driver = sweep(*args, wait=False)
        # With one CPU per node, two checkpointed unfinished trials means one of them runs on the second node.
        # (--models and --epochs come after SLOW_TRIALS' own, and argparse keeps the last.)
        wait_until(lambda: len(checkpointed_unfinished(tmp_path, 3)) >= 2, what="two trials running with checkpoints")
        two_nodes.kill_raylet(node_port)
        stdout, stderr = driver.communicate(timeout=600)
        assert driver.returncode == 0, stderr[-3000:]
        trials = pd.read_parquet(tmp_path / "store" / "trials")
        assert len(trials) == 2 and trials.trial_id.is_unique and (trials.status == "completed").all()
        assert (trials.restarts >= 1).sum() >= 1
        restarted = trials[trials.restarts >= 1]
        assert (restarted.resumed_from_epoch >= 1).all()  # from a checkpoint, not from epoch 0
        epochs = pd.read_parquet(tmp_path / "store" / "epochs")
        assert len(epochs) == 2 * 6 and not epochs.duplicated(["trial_id", "epoch"]).any()
    finally:
        two_nodes.stop()


@pytest.mark.parametrize("args,needle", [
    (["--preset", "fig7"], "unknown preset 'fig7' (did you mean 'fig6'?); valid presets: baselines-2024, "
                           "effective-sparsity, fig1, fig6, imagenet, iterative, iterative-snip, layer-collapse, "
                           "quickstart, sanity-checks, train-mode"),
    (["--models", "vgg17"], "unknown model 'vgg17' (did you mean 'vgg19'?); valid models: "),
    (["--algorithms", "synflow,snap"], "unknown algorithm 'snap' (did you mean 'snip'?); valid algorithms: "),
    (["--datasets", "svhn"], "unknown dataset 'svhn'; valid datasets: "),
    (["--log10-compressions", "0:3:1:1"], "bad log10 compressions '0:3:1:1'"),
    (["--log10-compressions=-1,2"], "log10_compression must be a finite number in [0, 12]"),
    (["--log10-compressions", "-1,2"], "argument --log10-compressions: expected one argument"),
    (["--max-concurrent", "0"], "--max-concurrent must be >= 1 and <= 100000, got 0"),
    (["--num-cpus", "0"], "--num-cpus must be >= 1 and <= 100000, got 0"),
    (["--cpus-per-trial", "nan"], "--cpus-per-trial must be > 0 and <= 4096, got nan"),
    (["--max-failures", "-1"], "--max-failures must be >= 0 and <= 1000, got -1"),
    (["--seeds", "0:2000000000"], "seeds '0:2000000000' gives 2,000,000,001 values, more than 10,000"),
    (["--seeds", "4294967296"], "bad seeds '4294967296'; seeds are integers in [0, 4294967295]"),
    (["--log10-compressions", "0:1:1e-9"], "log10 compressions '0:1:1e-9' gives 1,000,000,000 values, more than 10,000"),
    (["--log10-compressions", "1e308"], "log10_compression must be a finite number in [0, 12]"),
    (["--log10-compressions", "inf"], "bad log10 compressions 'inf'"),
    (["--iterations", "99999999999"], "iterations must be an integer in [1, 10000], got 99999999999"),
    (["--seeds", "0:100", "--log10-compressions", "0:4:0.001", "--models", "mlp,conv"],
     "the grid has 4,041,010 trials, more than 100,000"),
    (["--name", "../../x"], "bad --name '../../x'"),
    (["--levels", "2"], "--levels 2 applies only to algorithm imp, which this sweep does not run"),
    (["--algorithms", "imp", "--levels", "0"], "--levels must be an integer in [1, 100], got 0"),
    (["--algorithms", "imp", "--iterations", "5"], "--iterations 5 does not apply to imp"),
    (["--models", ","], "--models ',' names nothing"),
    (["--seeds", "a,b"], "bad seeds 'a,b'"),
    (["--epochs", "-2"], "epochs must be an integer in [0, 10000]"),
    (["--algorithms", "synflow,imp", "--workers-per-trial", "2", "--dry-run"],
     "imp trains between its cuts on one worker: run it in a sweep of its own without --workers-per-trial"),
    (["--models", "mlp", "--batch-size", "63", "--workers-per-trial", "2"],
     "batch 63 does not split evenly over 2 workers: choose a --batch-size divisible by 2"),
    (["--address", "127.0.0.1:1"], "cannot reach a Ray cluster at --address 127.0.0.1:1"),
    (["--address", "nonsense"], "bad --address 'nonsense'"),
    (["--store", "/etc/hostname/results"], "store /etc/hostname/results is not writable"),
    (["--models", "mlp", "--log10-compressions", "0,4.5"],
     "log10 compression 4.5 is above what mlp/digits allows: it has 17,400 prunable weights, so the largest "
     "meaningful log10 compression is 4.24"),
])
def test_bad_input_is_one_line_with_exit_code_2(args, needle, tmp_path, capsys):
    from orchestrator.sweep import main

    where = [] if "--store" in args else ["--store", str(tmp_path / "store")]
    try:  # in this process: the CLI's own parsing and checks, without a torch import per case
        code = main([*args, *where, "--storage-path", str(tmp_path / "ray")])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert needle in err


def test_bad_input_from_the_real_command_line_is_one_line_with_exit_code_2(tmp_path):
    out = sweep("--seeds", "0:2000000000", "--store", str(tmp_path / "store"), "--storage-path", str(tmp_path / "ray"))
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert "seeds '0:2000000000' gives 2,000,000,001 values" in out.stderr


def test_unwritable_storage_path_is_one_line_with_exit_code_2(tmp_path):
    out = sweep("--store", str(tmp_path / "store"), "--storage-path", "/etc/hostname/ray")
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert "--storage-path /etc/hostname/ray/checkpoints is not writable" in out.stderr


def test_a_missing_dataset_fails_once_before_launch_naming_it_and_the_directory(tmp_path):
    out = sweep("--models", "vgg11_bn", "--datasets", "cifar10", "--algorithms", "synflow", "--seeds", "0",
                "--log10-compressions", "1", "--epochs", "1", "--store", str(tmp_path / "store"),
                "--storage-path", str(tmp_path / "ray"), "--data-dir", str(tmp_path / "data"))
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert "dataset 'cifar10' not found in " + str(tmp_path / "data") in out.stderr
    launched = [p for p in (tmp_path / "ray").rglob("*") if p.name != "checkpoints"] if (tmp_path / "ray").exists() else []
    assert launched == []  # no Tune run directory, no checkpoint: nothing was launched


def test_trials_get_an_absolute_data_dir_whatever_the_working_directory(tmp_path, monkeypatch):
    from orchestrator.sweep import build_parser, data_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PRUNE_SWEEP_DATA", raising=False)
    assert data_dir(build_parser().parse_args([])) == str(tmp_path / "data")
    assert data_dir(build_parser().parse_args(["--data-dir", "d"])) == str(tmp_path / "d")
    monkeypatch.setenv("PRUNE_SWEEP_DATA", "/srv/datasets")
    assert data_dir(build_parser().parse_args([])) == "/srv/datasets"


def dry_run(capsys, *args) -> str:
    """The sweep's --dry-run output, run in this process (a plan starts no Ray and needs no fresh interpreter)."""
    from orchestrator.sweep import main

    capsys.readouterr()
    assert main([*args, "--dry-run"]) == 0
    return capsys.readouterr().out


def test_dry_run_reports_counts_resources_and_prune_passes(tmp_path, capsys):
    plan = json.loads(dry_run(capsys, "--preset", "fig6", "--json", "--store", str(tmp_path / "store")))
    # At 1x the 5 algorithms train one network per (pair, seed): 180 trials become 36.
    assert (plan["trials"], plan["to_run"], plan["done"], plan["trials_without_sharing"]) == (2196, 2196, 0, 2340)
    asks = {json.dumps(r["per_trial"], sort_keys=True): r["trials"] for r in plan["resources"]}
    assert asks == {'{"CPU": 1.0, "GPU": 0.25}': 1098, '{"CPU": 1.0, "GPU": 0.5}': 915, '{"CPU": 1.0, "GPU": 1.0}': 183}
    # per (pair, seed, compression > 1): synflow 100 rounds x 1 + snip 10*C examples + grasp 2 x 10*C, C = 10, 100,
    # 200; the dense trials score nothing
    assert plan["prune_passes"] == 4 * 3 * 12 * sum(100 + 10 * c + 2 * 10 * c for c in (10, 100, 200))
    assert [p["recipe_source"] for p in plan["pairs"]] == ["the paper's recipe"] * 12
    text = dry_run(capsys, "--store", str(tmp_path / "store"))
    assert "sweep quickstart: 118 trials, 0 already in" in text and "118 to run" in text
    assert "140 trials before sharing, 118 after (6 dense trials stand for every algorithm's 1x; 22 saved)" in text
    assert "synflow x100 [shuffle]" in text and "synflow x100 [layerwise_random]" in text
    assert "mlp/digits (17,400 prunable weights): 15 epochs, batch 64, lr 0.1" in text
    assert "dataset digits: ready" in text
    cpu_only = json.loads(dry_run(capsys, "--json", "--gpus-per-trial", "0", "--store", str(tmp_path / "store")))
    assert cpu_only["resources"] == [{"per_trial": {"CPU": 1.0}, "trials": 118}]


def test_the_plans_bill_counts_epochs_flops_and_disk_and_names_where_time_comes_from(tmp_path, capsys):
    from orchestrator.cost import TRAIN_PASSES, pair_facts

    plan = json.loads(dry_run(capsys, "--preset", "fig1", "--json", "--num-cpus", "2",
                              "--store", str(tmp_path / "store")))
    bill = plan["bill"]
    assert bill["trial_epochs"] == 183 * 160
    vgg = pair_facts("vgg16_bn", "cifar100")
    epoch = 2 * vgg.dense_macs * (TRAIN_PASSES * 50_000 + 10_000)  # train + evaluate, 2 FLOPs a multiply-add
    scoring = 3 * 12 * (100 + 1000 + 2 * 1000) * TRAIN_PASSES * 2 * vgg.dense_macs
    assert bill["training_flops"] == pytest.approx(183 * 160 * epoch + scoring)
    assert bill["resources"] == {"where": "this machine", "cpus": 2.0, "gpus": 0.0, "device": "cpu",
                                 "concurrent_trials": 2}
    # No finished trial in a new store: vgg16_bn's CPU throughput comes from the shipped benchmark table.
    [source] = bill["throughput_sources"]
    assert source["source"].startswith("the shipped benchmark table (benchmarks/")
    assert bill["trials_timed"] == 183 and bill["wall_hours"] > 24 * 30  # months on 2 CPU cores
    text = dry_run(capsys, "--preset", "fig1", "--num-cpus", "2", "--store", str(tmp_path / "store"))
    assert "compute: 29,280 trial-epochs" in text and "masked training saves no time" in text
    assert "warning: this machine has no GPU: on its CPUs this sweep would take ~" in text and " days;" in text
    assert "disk: ~" in text and "of checkpoints at peak" in text


def test_the_bill_times_trials_from_this_stores_own_finished_trials(tmp_path, capsys):
    from test_store import layer_rows, trial_row

    store = ResultsStore(tmp_path / "store")
    for i, seconds in enumerate((10.0, 20.0, 30.0)):  # 2, 4 and 6 s an epoch on this machine's CPU
        started = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
        finished = started + dt.timedelta(seconds=seconds + 12.25 + 1.0)  # + 12.25 s pruning, 1 s besides
        store.write_trial(trial_row(f"{i:016x}", model="mlp", dataset="digits", epochs=5, train_seconds=seconds,
                                    prune_seconds=12.25, device="cpu", started_at=started, finished_at=finished),
                          [], layer_rows())
    plan = json.loads(dry_run(capsys, "--json", "--models", "mlp", "--algorithms", "magnitude", "--seeds", "0",
                              "--log10-compressions", "1", "--num-cpus", "2", "--store", str(tmp_path / "store")))
    [source] = plan["bill"]["throughput_sources"]
    assert source == {"model": "mlp", "dataset": "digits", "seconds_per_epoch": 4.0,
                      "source": "median of 3 finished mlp/digits trial(s) on cpu in this store, 1.00 s a trial "
                                "besides"}
    # the quickstart recipe: 15 epochs; magnitude's pruning has no scoring pass
    assert plan["bill"]["device_hours"] == pytest.approx((15 * 4.0 + 1.0) / 3600)


def test_a_store_written_before_dense_sharing_reruns_none_of_its_1x_trials(tmp_path, capsys):
    """Its 1x trials have the algorithms' own ids; any of them is the dense trial done."""
    from orchestrator.grid import PRESETS
    from test_store import layer_rows, trial_row

    store = ResultsStore(tmp_path / "store")
    own = PRESETS["quickstart"].own_trials()
    for t in own:  # the whole quickstart as a store written before the change holds it
        store.write_trial(trial_row(t.trial_id, model=t.model.name, dataset="digits", algorithm=t.prune.algorithm,
                                    log10_compression=t.prune.log10_compression, seed=t.seed), [], layer_rows())
    plan = json.loads(dry_run(capsys, "--json", "--store", str(tmp_path / "store")))
    assert (plan["trials"], plan["done"], plan["to_run"]) == (118, 118, 0)
    assert plan["shared_dense_done_as_older_trials"] == 6


def test_a_sweep_with_every_axis_given_is_not_named_after_the_preset(tmp_path, capsys):
    axes = ["--models", "mlp", "--datasets", "digits", "--algorithms", "random", "--log10-compressions", "1",
            "--seeds", "0:1"]
    plan = json.loads(dry_run(capsys, *axes, "--json", "--store", str(tmp_path / "store")))
    assert plan["sweep"].startswith("custom-") and plan["seeds"] == [0, 1]
    assert "every grid axis was given on the command line" in plan["named"]
    assert plan["pairs"][0]["recipe_source"] == "the quickstart preset's recipe"
    assert json.loads(dry_run(capsys, *axes, "--json", "--store", str(tmp_path / "s")))["sweep"] == plan["sweep"]
    named = json.loads(dry_run(capsys, *axes, "--name", "mine", "--json", "--store", str(tmp_path / "store")))
    assert named["sweep"] == "mine" and named["pairs"][0]["recipe_source"] == "the quickstart preset's recipe"
    some = json.loads(dry_run(capsys, "--seeds", "0", "--json", "--store", str(tmp_path / "store")))
    assert some["sweep"] == "quickstart" and some["named"] == "the quickstart preset with --seeds from the command line"


@pytest.mark.slow
@pytest.mark.parametrize("args,needle", [
    (["--gpus-per-trial", "1"], "each trial asks for 1 CPU, 1 GPU, but no node of this cluster can ever offer that "
                                "(largest node: 2 CPU, 0 GPU)"),
    (["--cpus-per-trial", "64"], "each trial asks for 64 CPU, 0 GPU, but no node of this cluster can ever offer that"),
])
def test_impossible_resource_asks_stop_at_once_with_one_line(args, needle, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-m", "orchestrator.sweep", *small(tmp_path), "--num-cpus", "2", *args],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().count("\n") == 0 and needle in out.stderr
    assert not (tmp_path / "store" / "trials").exists() or not any((tmp_path / "store" / "trials").iterdir())


def test_asks_are_checked_against_the_nodes_the_autoscaler_can_still_add(tmp_path):
    from orchestrator.cluster import ClusterError, autoscaler_node_types, check_feasible

    config = tmp_path / "ray_bootstrap_config.yaml"
    config.write_text("available_node_types:\n"
                      "  head: {resources: {CPU: 0}, max_workers: 0, node_config: {}}\n"
                      "  gpu_worker: {resources: {CPU: 48, GPU: 4}, max_workers: 8, node_config: {}}\n")
    types = autoscaler_node_types(str(config))
    assert types == [{"CPU": 48.0, "GPU": 4.0}]  # the head type adds no node
    head_only = [{"CPU": 8.0}]
    check_feasible([{"CPU": 1.0, "GPU": 0.25}], head_only + types)  # a GPU worker can still come up
    with pytest.raises(ClusterError, match="asks for 1 CPU, 8 GPU.*largest node: 48 CPU, 4 GPU"):
        check_feasible([{"CPU": 1.0, "GPU": 8.0}], head_only + types)
    with pytest.raises(ClusterError, match="asks for 1 CPU, 0.25 GPU"):
        check_feasible([{"CPU": 1.0, "GPU": 0.25}], head_only)
