"""The Parquet results store, on real files: round trips, idempotent rewrites, damaged files."""
from __future__ import annotations

import datetime as dt
import math
import os

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from results_store import SCHEMAS, TABLES, ResultsStore, StoreError, read_table

STARTED = dt.datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)
FINISHED = dt.datetime(2025, 3, 1, 13, 30, 0, tzinfo=dt.timezone.utc)


def trial_row(trial_id: str = "a1b2c3d4e5f60718", **overrides):
    row = dict(
        trial_id=trial_id, sweep="fig6", model="vgg16_bn", dataset="cifar10", algorithm="synflow",
        log10_compression=1.5, compression=10 ** 1.5, seed=2, iterations=100, schedule="exponential",
        scope="global", prune_mode="eval", levels=0, examples_per_class=10, prunable_params=14715584,
        prunable_layers=14, remaining_params=465178, density=465178 / 14715584, collapsed=False,
        prune_passes=100, prune_seconds=12.25, dense_flops=313_000_000, remaining_flops=21_000_000,
        epochs=2, final_top1=0.9134, final_top5=0.9978, best_top1=0.9151, final_test_loss=0.312,
        train_seconds=3600.5, status="completed", error=None, started_at=STARTED, finished_at=FINISHED,
        host="node-3", device="NVIDIA H100", precision="bf16", restarts=1, resumed_from_epoch=1,
        cpus=4.0, gpus=0.25, torch_version="2.15.0",
        project_version="0.1.0", config='{"seed":2}',
    )
    row.update(overrides)
    return row


def epoch_rows(n: int = 2, base_loss: float = 2.0):
    return [dict(epoch=e, train_loss=base_loss / e, test_loss=base_loss / e + 0.1, top1=0.4 + 0.1 * e,
                 top5=0.8 + 0.05 * e, lr=0.1 / e, seconds=30.0 + e) for e in range(1, n + 1)]


def layer_rows():
    return [
        dict(layer_index=0, layer="features.0", param="features.0.weight", kind="conv", size=1728,
             remaining=1200, density=1200 / 1728, score_sum=4.5),
        dict(layer_index=1, layer="classifier", param="classifier.weight", kind="linear", size=5120,
             remaining=0, density=0.0, score_sum=None),
    ]


@pytest.fixture
def store(tmp_path):
    return ResultsStore(tmp_path / "results")


def test_round_trip_of_all_three_tables(store):
    store.write_trial(trial_row(), epoch_rows(), layer_rows())

    trials = store.read("trials")
    assert len(trials) == 1
    got = trials.iloc[0]
    expected = trial_row()
    for column in SCHEMAS["trials"].names:
        value = got[column]
        want = expected[column]
        if want is None:
            assert pd.isna(value), column
        elif isinstance(want, dt.datetime):
            assert value.to_pydatetime() == want, column
        else:
            assert value == want, column
    assert list(trials.columns) == SCHEMAS["trials"].names

    epochs = store.read("epochs")
    assert epochs["trial_id"].tolist() == ["a1b2c3d4e5f60718"] * 2
    assert epochs.drop(columns="trial_id").to_dict("records") == epoch_rows()

    layers = store.read("layers")
    assert layers["layer"].tolist() == ["features.0", "classifier"]
    assert layers["remaining"].tolist() == [1200, 0]
    assert layers["score_sum"].iloc[0] == 4.5 and math.isnan(layers["score_sum"].iloc[1])


def test_every_file_carries_the_fixed_schema(store, tmp_path):
    store.write_trial(trial_row("t1", final_top1=None, final_top5=None, best_top1=None,
                                final_test_loss=None, epochs=0, device=None), [], layer_rows())
    store.write_trial(trial_row("t2"), epoch_rows(), layer_rows())
    for table in TABLES:
        for path in (tmp_path / "results" / table).glob("*.parquet"):
            assert pq.read_schema(path).equals(SCHEMAS[table], check_metadata=False), path


def test_writing_a_trial_twice_keeps_one_row_with_the_latest_values(store, tmp_path):
    store.write_trial(trial_row(final_top1=0.5), epoch_rows(3), layer_rows())
    store.write_trial(trial_row(final_top1=0.75), epoch_rows(2), layer_rows()[:1])

    trials = store.read("trials")
    assert trials["final_top1"].tolist() == [0.75]
    assert store.read("epochs")["epoch"].tolist() == [1, 2]
    assert store.read("layers")["layer"].tolist() == ["features.0"]
    # A prune-only rewrite removes the earlier epochs instead of keeping stale ones.
    store.write_trial(trial_row(epochs=0, final_top1=None), [], layer_rows())
    assert store.read("epochs").empty
    assert sorted(os.listdir(tmp_path / "results" / "trials")) == ["a1b2c3d4e5f60718.parquet"]


def test_pandas_reads_the_table_directories_directly(store, tmp_path):
    store.write_trial(trial_row("t1", algorithm="snip", final_top1=0.8), epoch_rows(), layer_rows())
    store.write_trial(trial_row("t2", algorithm="synflow", final_top1=None, device=None), epoch_rows(),
                      layer_rows())

    trials = pd.read_parquet(tmp_path / "results" / "trials").sort_values("trial_id")
    assert trials["algorithm"].tolist() == ["snip", "synflow"]
    assert trials["final_top1"].iloc[0] == 0.8 and pd.isna(trials["final_top1"].iloc[1])
    assert len(pd.read_parquet(tmp_path / "results" / "epochs")) == 4
    assert len(pd.read_parquet(tmp_path / "results" / "layers")) == 4
    assert read_table(tmp_path / "results", "trials").sort_values("trial_id")["trial_id"].tolist() == ["t1", "t2"]


def test_damaged_and_foreign_files_are_skipped_and_named(store, tmp_path):
    store.write_trial(trial_row("good"), epoch_rows(), layer_rows())
    store.write_trial(trial_row("cut"), epoch_rows(), layer_rows())
    trials_dir = tmp_path / "results" / "trials"
    data = (trials_dir / "cut.parquet").read_bytes()
    (trials_dir / "cut.parquet").write_bytes(data[: len(data) // 2])
    pq.write_table(pa.table({"trial_id": ["foreign"], "accuracy": [0.5]}), trials_dir / "foreign.parquet")
    (trials_dir / "notes.txt").write_text("not parquet")

    with pytest.warns(UserWarning) as warned:
        trials = store.read("trials")

    assert trials["trial_id"].tolist() == ["good"]
    assert len(store.problems) == 3
    problems = "\n".join(store.problems)
    assert "trials/cut.parquet: unreadable" in problems
    assert "trials/foreign.parquet: not a trials file" in problems and "accuracy" in problems
    assert "trials/notes.txt: not a .parquet file" in problems
    assert sorted(str(w.message) for w in warned) == sorted(store.problems)


def test_a_column_of_the_wrong_type_in_a_file_is_reported(store, tmp_path):
    store.write_trial(trial_row("good"), epoch_rows(), layer_rows())
    bad = pq.read_table(tmp_path / "results" / "trials" / "good.parquet")
    bad = bad.set_column(bad.schema.get_field_index("seed"), "seed", pa.array(["two"]))
    pq.write_table(bad, tmp_path / "results" / "trials" / "drifted.parquet")

    with pytest.warns(UserWarning):
        trials = store.read("trials")
    assert trials["trial_id"].tolist() == ["good"]
    assert store.problems == [f"store {store}: skipped trials/drifted.parquet: "
                              "not a trials file (seed is string, expected int64)"]


def test_temp_files_left_by_a_crash_are_not_read(store, tmp_path):
    store.write_trial(trial_row("done"), epoch_rows(), layer_rows())
    trials_dir = tmp_path / "results" / "trials"
    # A worker killed mid-write leaves its half-written temp file behind.
    data = (trials_dir / "done.parquet").read_bytes()
    (trials_dir / ".tmp-crashed-1234abcd.parquet").write_bytes(data[:100])

    assert store.read("trials")["trial_id"].tolist() == ["done"]
    assert store.problems == []
    assert store.finished_ids() == {"done"}
    assert pd.read_parquet(trials_dir)["trial_id"].tolist() == ["done"]


def test_finished_ids_come_from_trials_files_only(store, tmp_path):
    store.write_trial(trial_row("t1"), epoch_rows(), layer_rows())
    store.write_trial(trial_row("t2"), epoch_rows(), layer_rows())
    # A crash after the epochs file and before the trials file: not finished.
    (tmp_path / "results" / "trials" / "t2.parquet").unlink()
    assert store.finished_ids() == {"t1"}
    assert ResultsStore(tmp_path / "elsewhere").finished_ids() == set()


def test_unknown_and_missing_columns_are_refused_by_name(store):
    with pytest.raises(ValueError, match="unknown column.*top1_percent"):
        store.write_trial(trial_row(top1_percent=91.3), [], [])
    row = trial_row()
    del row["prune_seconds"]
    with pytest.raises(ValueError, match="missing required column.*prune_seconds"):
        store.write_trial(row, [], [])
    with pytest.raises(ValueError, match="unknown column.*accuracy"):
        store.write_trial(trial_row(), [dict(epoch_rows(1)[0], accuracy=0.5)], [])
    with pytest.raises(ValueError, match="missing required column.*remaining"):
        store.write_trial(trial_row(), [], [{k: v for k, v in layer_rows()[0].items() if k != "remaining"}])
    assert store.finished_ids() == set()


def test_values_of_the_wrong_kind_are_refused(store):
    with pytest.raises(ValueError, match="'seed'"):
        store.write_trial(trial_row(seed="two"), [], [])
    with pytest.raises(ValueError, match="'collapsed'"):
        store.write_trial(trial_row(collapsed="no"), [], [])
    with pytest.raises(ValueError, match="fraction in \\[0, 1\\], got 91.3"):
        store.write_trial(trial_row(final_top1=91.3), [], [])
    with pytest.raises(ValueError, match="naive datetime"):
        store.write_trial(trial_row(started_at=dt.datetime(2025, 1, 1)), [], [])
    with pytest.raises(ValueError, match="unknown trial status 'running'; valid statuses: completed, diverged"):
        store.write_trial(trial_row(status="running"), [], [])
    with pytest.raises(ValueError, match="trial_id"):
        store.write_trial(trial_row(trial_id="../escape"), [], [])
    with pytest.raises(ValueError, match="trial_id 'other'"):
        store.write_trial(trial_row(), [dict(epoch_rows(1)[0], trial_id="other")], [])


def test_nullable_columns_may_be_left_out(store):
    row = {k: v for k, v in trial_row().items()
           if k not in ("final_top1", "final_top5", "best_top1", "final_test_loss", "error", "device")}
    store.write_trial(dict(row, epochs=0, finished_at=FINISHED.timestamp()), [], layer_rows())
    got = store.read("trials").iloc[0]
    assert pd.isna(got["final_top1"]) and pd.isna(got["error"]) and pd.isna(got["device"])
    assert got["finished_at"].to_pydatetime() == FINISHED


def test_a_refused_rewrite_leaves_the_earlier_trial_intact(store):
    store.write_trial(trial_row(final_top1=0.5), epoch_rows(), layer_rows())
    with pytest.raises(ValueError):
        store.write_trial(trial_row(final_top1=0.6), epoch_rows(), [dict(layer_rows()[0], size="big")])
    assert store.finished_ids() == {"a1b2c3d4e5f60718"}
    assert store.read("trials")["final_top1"].tolist() == [0.5]
    assert len(store.read("layers")) == 2


def test_absent_tables_read_as_empty_frames_with_the_schema_columns(tmp_path):
    store = ResultsStore(tmp_path / "nothing-here")
    for table in TABLES:
        frame = store.read(table)
        assert frame.empty and list(frame.columns) == SCHEMAS[table].names
    assert not store.exists()
    with pytest.raises(ValueError, match="unknown table 'trial'; valid tables: trials, epochs, layers"):
        store.read("trial")


def test_a_path_under_a_regular_file_is_not_writable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    store = ResultsStore(blocker / "results")
    with pytest.raises(StoreError, match=f"store {blocker / 'results'} is not writable: "):
        store.check_writable()
    with pytest.raises(StoreError, match="cannot write"):
        store.write_trial(trial_row(), epoch_rows(), layer_rows())


def test_check_writable_creates_the_store_and_leaves_nothing_behind(tmp_path):
    store = ResultsStore(tmp_path / "new" / "results")
    store.check_writable()
    assert os.listdir(tmp_path / "new" / "results") == []
    assert str(store) == str(tmp_path / "new" / "results")


def test_file_uri_stores_read_and_write(tmp_path):
    uri = (tmp_path / "results").as_uri()
    store = ResultsStore(uri)
    assert str(store) == uri
    store.check_writable()
    store.write_trial(trial_row(), epoch_rows(), layer_rows())
    assert (tmp_path / "results" / "trials" / "a1b2c3d4e5f60718.parquet").is_file()
    assert ResultsStore(tmp_path / "results").finished_ids() == {"a1b2c3d4e5f60718"}
    assert read_table(uri, "epochs")["epoch"].tolist() == [1, 2]


def test_object_store_path_writes_single_objects():
    # Arrow's in-memory filesystem ("mock://") is not local, so this takes the object-store branch.
    store = ResultsStore("mock:///bucket/results")
    store.check_writable()
    store.write_trial(trial_row("t1", final_top1=0.5), epoch_rows(), layer_rows())
    store.write_trial(trial_row("t1", final_top1=0.6), epoch_rows(), layer_rows())
    store.write_trial(trial_row("t2"), epoch_rows(), layer_rows())
    everything = store._fs.get_file_info(pafs.FileSelector("bucket/results", recursive=True))
    objects = sorted(i.path for i in everything if i.type == pafs.FileType.File)
    assert objects == [f"bucket/results/{table}/{t}.parquet" for table in ("epochs", "layers", "trials")
                       for t in ("t1", "t2")]  # one object per trial and table, no temp or probe objects
    trials = store.read("trials").sort_values("trial_id")
    assert trials["final_top1"].tolist() == [0.6, 0.9134]
    assert store.finished_ids() == {"t1", "t2"}
    assert len(store.read("layers")) == 4
