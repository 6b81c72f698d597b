"""--log-to tensorboard,mlflow,wandb: each trial's run is named for it, holds its description, and holds exactly the
store's epoch rows, read back from each tracker's own files through a real sweep."""
import json
import os
import pathlib
import struct
import subprocess
import sys

import pandas as pd
import pytest

from orchestrator import sweep as sweep_cli
from orchestrator.grid import PRESETS
from orchestrator.trackers import EPOCH_METRICS, run_name, tracker_config
from trainables.specs import DataSpec, ModelSpec, PruneSpec, TrialSpec

METRICS = [m for m in EPOCH_METRICS if m != "epoch"]


def spec(algorithm="synflow", log10=2.0, seed=0, **prune):
    return TrialSpec(ModelSpec("vgg16_bn"), DataSpec("cifar100"), PruneSpec(algorithm, log10, **prune), seed=seed)


def test_a_run_is_named_for_its_trial_with_its_non_default_settings_appended():
    assert run_name(spec()) == "vgg16_bn-cifar100-synflow-1e2-s0"
    assert run_name(spec("snip", 0.25, seed=2)) == "vgg16_bn-cifar100-snip-1e0.25-s2"
    assert run_name(spec("snip", 3, iterations=10, scope="erk", mode="train", ablation="shuffle")) == \
        "vgg16_bn-cifar100-snip-1e3-s0-erk-x10-train-shuffle"
    assert run_name(spec("synflow", 1, iterations=1)) == "vgg16_bn-cifar100-synflow-1e1-s0-x1"  # 100 is its default
    assert run_name(spec("imp", 1, levels=3)) == "vgg16_bn-cifar100-imp-1e1-s0-levels3"
    config = tracker_config(spec("snip", 3, iterations=10), "fig1")
    assert config["name"] == "vgg16_bn-cifar100-snip-1e3-s0-x10" and config["sweep"] == "fig1"
    assert config["compression"] == 1000.0 and config["iterations"] == 10 and config["trial_id"] == spec(
        "snip", 3, iterations=10).trial_id
    assert all(isinstance(v, (str, int, float)) for v in config.values())  # every tracker takes flat scalars


@pytest.mark.parametrize("preset", PRESETS.names())
def test_no_two_trials_of_a_preset_share_a_run_name(preset):
    trials = PRESETS[preset].trials()
    dense = [t.shared_dense() for t in trials if t.shared_dense() is not None]  # what the sweep runs instead
    specs = {t.trial_id: t for t in [*trials, *dense]}
    names = [run_name(t) for t in specs.values()]
    assert len(set(names)) == len(names)


def one_line_error(capsys, argv):
    code = sweep_cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    return err


def test_tracker_mistakes_are_one_line_before_anything_starts(tmp_path, capsys, monkeypatch):
    base = ["--store", str(tmp_path / "store"), "--storage-path", str(tmp_path / "ray")]
    err = one_line_error(capsys, ["--log-to", "tensorboard,mlfow", *base])
    assert "unknown tracker 'mlfow' in --log-to (did you mean 'mlflow'?); valid: tensorboard, mlflow, wandb" in err
    for tracker in ("mlflow", "wandb"):
        monkeypatch.setitem(sys.modules, tracker, None)  # as if not installed
        err = one_line_error(capsys, ["--log-to", f"tensorboard,{tracker}", *base])
        assert f"--log-to {tracker} needs the {tracker} package: pip install -e \".[{tracker}]\"" in err
        monkeypatch.delitem(sys.modules, tracker)
    for name in ("WANDB_API_KEY", "WANDB_MODE", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: never logged in to W&B
    err = one_line_error(capsys, ["--log-to", "wandb", *base])
    assert "--log-to wandb needs a W&B login: run `wandb login` or set WANDB_API_KEY; or set WANDB_MODE=offline" in err
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    err = one_line_error(capsys, ["--log-to", "mlflow", "--store", str(tmp_path / "store"),
                                  "--storage-path", "s3://bucket/ray"])
    assert "needs --mlflow-uri or $MLFLOW_TRACKING_URI" in err
    assert not (tmp_path / "store").exists() and not (tmp_path / "ray").exists()  # nothing ran, nothing written


def wandb_records(path: pathlib.Path):
    """The records of an offline run's .wandb file (W&B's LevelDB-style log: a 7-byte header, then 32 KiB blocks
    of chunks, each after a 7-byte header of crc32c, length, type 1 full / 2 first / 3 middle / 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            yield pb.Record.FromString(pending)


def read_wandb_run(run_dir: pathlib.Path):
    """(name, group, project, config, {epoch: row}) of one offline run."""
    (path,) = run_dir.glob("*.wandb")
    config, rows, run = {}, {}, None
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            config.update({i.key: json.loads(i.value_json) for i in run.config.update if i.key != "_wandb"})
        elif kind == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            rows[row["epoch"]] = row
    return run.display_name, run.run_group, run.project, config, rows


def read_tensorboard(directory: pathlib.Path):
    """({tag: {step: value}}, hparams) of one run's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(directory))
    acc.Reload()
    scalars = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    start = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    hparams = {k: (v.string_value if v.HasField("string_value") else v.number_value) for k, v in start.hparams.items()}
    return scalars, hparams


@pytest.mark.slow
def test_every_tracker_gets_each_trials_epoch_rows_under_its_name(tmp_path, monkeypatch):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "WANDB_", "MLFLOW_"))}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", MLFLOW_TRACKING_URI=f"file:{tmp_path / 'mlruns'}")
    storage = tmp_path / "ray"
    args = [sys.executable, "-m", "orchestrator.sweep", "--num-cpus", "2", "--models", "mlp", "--datasets", "digits",
            "--algorithms", "synflow,random", "--log10-compressions", "1", "--seeds", "0", "--epochs", "2",
            "--name", "tracked", "--store", str(tmp_path / "store"), "--storage-path", str(storage),
            "--log-to", "tensorboard,mlflow,wandb", "--wandb-project", "pat-tests"]
    out = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"live curves: tensorboard --logdir {storage}\n" in out.stderr  # where to look, before the trials run
    assert (f"live curves: MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri file:{tmp_path / 'mlruns'} "
            f"(the UI needs pip install mlflow); experiment tracked") in out.stderr
    assert f"upload with: wandb sync {storage}/wandb/offline-run-*\n" in out.stderr
    assert f"tracked: curves: tensorboard --logdir {storage}\n" in out.stdout  # and again at the end
    trials = pd.read_parquet(tmp_path / "store" / "trials").set_index("trial_id")
    epochs = pd.read_parquet(tmp_path / "store" / "epochs")
    names = {tid: f"mlp-digits-{t.algorithm}-1e1-s0" for tid, t in trials.iterrows()}
    assert sorted(names.values()) == ["mlp-digits-random-1e1-s0", "mlp-digits-synflow-1e1-s0"]
    stored = {tid: {int(r.epoch): r._asdict() for r in rows.itertuples()} for tid, rows in epochs.groupby("trial_id")}
    assert all(sorted(rows) == [1, 2] for rows in stored.values())

    # TensorBoard: <storage>/<Tune run>/<trial id>/<run name>/events.*, step = epoch.
    for tid, name in names.items():
        (run_dir,) = storage.glob(f"tracked-*/{tid}/{name}")
        scalars, hparams = read_tensorboard(run_dir)
        assert sorted(scalars) == sorted(f"ray/tune/{m}" for m in EPOCH_METRICS)
        for metric in METRICS:
            assert scalars[f"ray/tune/{metric}"] == pytest.approx(
                {e: row[metric] for e, row in stored[tid].items()}, rel=1e-6), metric  # float32 in the file
        assert hparams["trial_id"] == tid and hparams["name"] == name and hparams["sweep"] == "tracked"
        assert hparams["compression"] == 10.0 and hparams["epochs"] == 2

    # MLflow: experiment = the sweep, a run per trial, params = its description, step = epoch.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(names.values())
    for run in runs:
        params = run.data.params
        tid = params["trial_id"]
        assert params["name"] == run.info.run_name == names[tid] and params["sweep"] == "tracked"
        assert params["model"] == "mlp" and params["algorithm"] == trials.algorithm[tid] and params["seed"] == "0"
        assert not any("/" in v or "store" in k for k, v in params.items())  # the description, not paths
        assert sorted(run.data.metrics) == sorted(EPOCH_METRICS)
        for metric in METRICS:
            history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, metric)}
            assert history == pytest.approx({e: row[metric] for e, row in stored[tid].items()}), metric

    # W&B (offline): <storage>/wandb/offline-run-*, group = the sweep, every epoch's row.
    runs = [read_wandb_run(run_dir) for run_dir in storage.glob("wandb/offline-run-*")]
    assert sorted(run[0] for run in runs) == sorted(names.values())
    for display, group, project, config, rows in runs:
        tid = config["trial_id"]
        assert (display, group, project) == (names[tid], "tracked", "pat-tests")
        assert config["algorithm"] == trials.algorithm[tid] and config["sweep"] == "tracked"
        assert config["log10_compression"] == 1.0 and config["epochs"] == 2
        assert sorted(rows) == [1, 2]
        for epoch, row in rows.items():
            assert row["_step"] == epoch
            assert {m: row[m] for m in METRICS} == pytest.approx({m: stored[tid][epoch][m] for m in METRICS})
