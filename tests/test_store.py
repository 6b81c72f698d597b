"""The Parquet results store, on real files: round trips, idempotent rewrites, damaged files."""
from __future__ import annotations

import ast
import datetime as dt
import errno
import math
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from results_store import (SCHEMAS, TABLES, ResultsStore, StoreError, grid_trial_ids, read_table, record_grid,
                           recorded_sweeps)

STARTED = dt.datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)
FINISHED = dt.datetime(2025, 3, 1, 13, 30, 0, tzinfo=dt.timezone.utc)


def trial_row(trial_id: str = "a1b2c3d4e5f60718", **overrides):
    row = dict(
        trial_id=trial_id, sweep="fig6", model="vgg16_bn", dataset="cifar10", num_classes=10, algorithm="synflow",
        log10_compression=1.5, compression=10 ** 1.5, seed=2, iterations=100, schedule="exponential",
        scope="global", prune_mode="eval", levels=0, examples_per_class=10, ablation="none", prunable_params=14715584,
        prunable_layers=14, remaining_params=465178, effective_remaining_params=465001, density=465178 / 14715584, collapsed=False,
        prune_passes=100, imp_trained_examples=None, prune_seconds=12.25, dense_flops=313_000_000, remaining_flops=21_000_000,
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
    with pytest.raises(StoreError, match="cannot delete trials/a1b2c3d4e5f60718.parquet: ") as raised:
        store.write_trial(trial_row(), epoch_rows(), layer_rows())
    assert (raised.value.errno, raised.value.fatal) == (errno.ENOTDIR, False)


def test_check_writable_creates_the_store_and_its_tables_and_leaves_no_probe_behind(tmp_path):
    store = ResultsStore(tmp_path / "new" / "results")
    store.check_writable()
    assert sorted(os.listdir(tmp_path / "new" / "results")) == ["epochs", "layers", "trials"]
    for table in TABLES:
        assert os.listdir(tmp_path / "new" / "results" / table) == []
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
    everything = store.files.fs.get_file_info(pafs.FileSelector("bucket/results", recursive=True))
    objects = sorted(i.path for i in everything if i.type == pafs.FileType.File)
    assert objects == [f"bucket/results/{table}/{t}.parquet" for table in ("epochs", "layers", "trials")
                       for t in ("t1", "t2")]  # one object per trial and table, no temp or probe objects
    trials = store.read("trials").sort_values("trial_id")
    assert trials["final_top1"].tolist() == [0.6, 0.9134]
    assert store.finished_ids() == {"t1", "t2"}
    assert len(store.read("layers")) == 4


# ----------------------------------------------------------------- knowing what is done, quarantine

STAMP = r"\d{8}T\d{6}Z"


def write_trials(store, ids, epochs=2):
    for trial_id in ids:
        store.write_trial(trial_row(trial_id, epochs=epochs), epoch_rows(epochs), layer_rows())


def damage(path, how):
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "zero bytes": b"", "garbage": b"not parquet " * 40}[how])


def ids_in(directory):
    return sorted(pd.read_parquet(directory)["trial_id"].unique())


@pytest.mark.parametrize("how", ["truncated", "zero bytes", "garbage"])
@pytest.mark.parametrize("table", TABLES)
def test_an_unreadable_file_in_any_table_makes_its_trial_not_done_and_is_moved_aside(store, tmp_path, table, how):
    root = tmp_path / "results"
    write_trials(store, ["good", "bad"])
    store.write_trial(trial_row("pruned", epochs=0, final_top1=None), [], layer_rows())  # no epochs file at all
    damage(root / table / "bad.parquet", how)

    assert store.finished_ids() == {"good", "pruned"}

    assert len(store.quarantined) == 3
    by_file = {line.split(" to ")[0].split()[-1]: line for line in store.quarantined}
    assert re.fullmatch(rf"moved unreadable {table}/bad\.parquet to _quarantine/{table}/bad\.parquet\.{STAMP} "
                        r"\(unreadable \(.+\)\)", by_file[f"{table}/bad.parquet"])
    for other in set(TABLES) - {table}:
        assert re.fullmatch(rf"moved {other}/bad\.parquet to _quarantine/{other}/bad\.parquet\.{STAMP} "
                            rf"\(trial bad has an unreadable {table} file\)", by_file[f"{other}/bad.parquet"])
    for t in TABLES:
        assert [p.name.split(".parquet.")[0] for p in (root / "_quarantine" / t).iterdir()] == ["bad"]
    # pandas and the store now see only the trials that are done, and the quarantine is invisible to pandas.
    assert ids_in(root / "trials") == ["good", "pruned"]
    assert ids_in(root / "epochs") == ["good"]
    assert ids_in(root / "layers") == ["good", "pruned"]
    assert store.read("trials")["trial_id"].tolist() == ["good", "pruned"] and store.problems == []
    # A rerun writes a fresh consistent set: the trial is done once.
    write_trials(store, ["bad"])
    assert ResultsStore(root).finished_ids() == {"good", "bad", "pruned"}
    assert sorted(pd.read_parquet(root / "trials")["trial_id"]) == ["bad", "good", "pruned"]
    assert len(pd.read_parquet(root / "epochs")) == 4


def test_has_trial_uses_the_same_rule_and_moves_the_unreadable_trial_aside(store, tmp_path):
    root = tmp_path / "results"
    write_trials(store, ["good", "bad"])
    damage(root / "layers" / "bad.parquet", "truncated")
    assert store.has_trial("good") is True
    assert store.has_trial("bad") is False
    assert sorted(line.split()[1] if line.split()[1] != "unreadable" else line.split()[2]
                  for line in store.quarantined) == ["epochs/bad.parquet", "layers/bad.parquet", "trials/bad.parquet"]
    assert sorted(os.listdir(root / "trials")) == ["good.parquet"]
    assert store.has_trial("never-written") is False and store.has_trial("../escape") is False


def test_a_missing_file_makes_a_trial_not_done_but_moves_nothing(store, tmp_path):
    root = tmp_path / "results"
    write_trials(store, ["t1", "t2", "t3"])
    (root / "layers" / "t2.parquet").unlink()  # a layers file is always written for a stored trial
    (root / "trials" / "t3.parquet").unlink()  # a write that has not reached its commit marker yet
    assert store.finished_ids() == {"t1"}
    assert store.has_trial("t2") is False and store.has_trial("t3") is False
    assert store.quarantined == []
    assert sorted(os.listdir(root / "epochs")) == ["t1.parquet", "t2.parquet", "t3.parquet"]


def test_a_file_of_another_schema_or_row_count_is_not_a_finished_trial(store, tmp_path):
    root = tmp_path / "results"
    write_trials(store, ["good"])
    pq.write_table(pa.table({"trial_id": ["foreign"], "accuracy": [0.5]}), root / "trials" / "foreign.parquet")
    two_rows = pa.concat_tables([pq.read_table(root / "trials" / "good.parquet")] * 2)
    pq.write_table(two_rows.set_column(0, "trial_id", pa.array(["twice"] * 2)), root / "trials" / "twice.parquet")
    assert store.finished_ids() == {"good"}
    reasons = sorted(line.split(" (", 1)[1] for line in store.quarantined)
    assert reasons == ["holds 2 rows; a trial's trials file holds 1)",
                       "not a trials file (missing columns sweep, model, dataset, algorithm, log10_compression, "
                       "compression, seed, iterations, schedule, scope, prune_mode, levels, examples_per_class, "
                       "prunable_params, prunable_layers, remaining_params, density, collapsed, prune_passes, "
                       "prune_seconds, dense_flops, remaining_flops, epochs, train_seconds, status, started_at, "
                       "finished_at, host, cpus, gpus, torch_version, project_version, config; unexpected columns "
                       "accuracy))"]


def test_a_trial_without_layers_rows_is_refused(store):
    with pytest.raises(ValueError, match="trial t1 has no layers rows"):
        store.write_trial(trial_row("t1"), epoch_rows(), [])
    assert store.finished_ids() == set()


# ----------------------------------------------------------------- compaction

def make_store(root, ids, pruned=()):
    store = ResultsStore(root)
    write_trials(store, ids)
    for trial_id in pruned:
        store.write_trial(trial_row(trial_id, epochs=0, final_top1=None), [], layer_rows())
    return store


def assert_each_trial_once(root, ids, pruned=()):
    """pandas and a fresh store agree: every trial once, with exactly its rows."""
    everything = sorted([*ids, *pruned])
    fresh = ResultsStore(root)
    assert fresh.finished_ids() == set(everything)
    for frame in (pd.read_parquet(root / "trials"), fresh.read("trials")):
        assert sorted(frame["trial_id"]) == everything
    for frame in (pd.read_parquet(root / "epochs"), fresh.read("epochs")):
        assert sorted(frame["trial_id"]) == sorted([i for i in ids for _ in range(2)])
        assert not frame.duplicated(["trial_id", "epoch"]).any()
    for frame in (pd.read_parquet(root / "layers"), fresh.read("layers")):
        assert sorted(frame["trial_id"]) == sorted([i for i in everything for _ in range(2)])
    assert fresh.problems == [] and fresh.quarantined == []


def test_compaction_keeps_every_row_once_in_a_few_parts(tmp_path):
    root = tmp_path / "results"
    ids = [f"t{i}" for i in range(7)]
    store = make_store(root, ids, pruned=["p0"])

    report = store.compact(rows_per_part=6)  # epochs: 2 rows a trial, so at most 3 trials a group

    assert report.trials == 8 and report.already_compacted == 0
    groups = [path for path, _ in report.parts if path.startswith("trials/")]
    assert len(groups) == 3
    assert sum(rows for path, rows in report.parts if path.startswith("epochs/")) == 14
    assert all(rows <= 6 for _, rows in report.parts)
    for table in TABLES:
        assert [p.name for p in (root / table).iterdir()] == ["compacted"]
        assert len(os.listdir(root / table / "compacted")) == 3
    assert not any(name.startswith("_compaction-") for name in os.listdir(root))
    assert_each_trial_once(root, ids, ["p0"])
    assert all(store.has_trial(t) for t in [*ids, "p0"]) and not store.has_trial("t7")
    assert report.lines()[0].startswith("compacted 8 trials into 3 group(s) of parts in ")

    again = store.compact()
    assert again.trials == 0 and again.already_compacted == 8 and again.parts == []
    write_trials(store, ["t7", "t8"])
    assert store.compact().trials == 2
    assert_each_trial_once(root, [*ids, "t7", "t8"], ["p0"])


def test_rewriting_a_compacted_trial_replaces_it(tmp_path):
    root = tmp_path / "results"
    store = make_store(root, ["t1", "t2", "t3"])
    store.compact()
    store.write_trial(trial_row("t2", final_top1=0.25), epoch_rows(), layer_rows())
    trials = pd.read_parquet(root / "trials").set_index("trial_id")
    assert sorted(trials.index) == ["t1", "t2", "t3"]
    assert trials.loc["t2", "final_top1"] == 0.25 and trials.loc["t1", "final_top1"] == 0.9134
    assert (root / "trials" / "t2.parquet").is_file()
    assert_each_trial_once(root, ["t1", "t2", "t3"])


def test_a_trial_both_compacted_and_in_per_trial_files_is_kept_once_by_the_next_compaction(tmp_path):
    root = tmp_path / "results"
    store = make_store(root, ["t1", "t2"])
    saved = {table: (root / table / "t1.parquet").read_bytes() for table in TABLES}
    store.compact()
    for table in ("epochs", "layers", "trials"):  # as if a rewrite of t1 had raced the compaction
        (root / table / "t1.parquet").write_bytes(saved[table])
    assert len(pd.read_parquet(root / "trials")) == 3 and store.finished_ids() == {"t1", "t2"}

    report = store.compact()

    assert (report.evicted, report.trials, report.already_compacted) == (1, 1, 1)
    assert_each_trial_once(root, ["t1", "t2"])
    # Rewriting the only trial of a group removes the group.
    single = make_store(tmp_path / "single", ["s1"])
    single.compact()
    single.write_trial(trial_row("s1", final_top1=0.5), epoch_rows(), layer_rows())
    assert [os.listdir(tmp_path / "single" / t / "compacted") for t in TABLES] == [[], [], []]
    assert_each_trial_once(tmp_path / "single", ["s1"])


def test_compaction_leaves_unreadable_and_unfinished_trials_to_their_rules(tmp_path):
    root = tmp_path / "results"
    store = make_store(root, ["t1", "t2", "t3", "t4"])
    damage(root / "epochs" / "t2.parquet", "truncated")
    (root / "trials" / "t3.parquet").unlink()  # still being written

    report = store.compact()

    assert report.trials == 2
    assert ResultsStore(root).finished_ids() == {"t1", "t4"}
    assert sorted(os.listdir(root / "epochs")) == ["compacted", "t3.parquet"]
    assert sorted(os.listdir(root / "_quarantine" / "epochs"))[0].startswith("t2.parquet.")
    assert len(store.quarantined) == 3 and ids_in(root / "trials") == ["t1", "t4"]


def test_a_damaged_compacted_part_moves_its_whole_group_aside(tmp_path):
    root = tmp_path / "results"
    store = make_store(root, ["t1", "t2", "t3", "t4"])
    store.compact(rows_per_part=4)  # two groups of two
    first = sorted(os.listdir(root / "layers" / "compacted"))[0]
    in_first = sorted(pd.read_parquet(root / "layers" / "compacted" / first)["trial_id"].unique())
    damage(root / "layers" / "compacted" / first, "garbage")

    fresh = ResultsStore(root)
    kept = {"t1", "t2", "t3", "t4"} - set(in_first)
    assert fresh.finished_ids() == kept
    assert len(fresh.quarantined) == 3
    assert re.fullmatch(rf"moved unreadable layers/compacted/{first} to _quarantine/layers/{first}\.{STAMP} "
                        r"\(compacted group part-\w+: its layers part is unreadable \(.+\)\)",
                        [line for line in fresh.quarantined if "unreadable" in line.split(" to ")[0]][0])
    assert ids_in(root / "trials") == sorted(kept) and ids_in(root / "epochs") == sorted(kept)
    assert not fresh.has_trial(in_first[0])
    write_trials(fresh, in_first)  # the rerun
    assert_each_trial_once(root, ["t1", "t2", "t3", "t4"])


def test_a_lone_part_without_its_trials_part_is_moved_aside(tmp_path):
    root = tmp_path / "results"
    store = make_store(root, ["t1", "t2"])
    store.compact()
    part = os.listdir(root / "trials" / "compacted")[0]
    (root / "trials" / "compacted" / part).unlink()
    assert store.finished_ids() == set()
    assert sorted(line.split(" to ")[0] for line in store.quarantined) == [
        f"moved epochs/compacted/{part}", f"moved layers/compacted/{part}"]
    write_trials(store, ["t1", "t2"])
    assert_each_trial_once(root, ["t1", "t2"])


class Crash(BaseException):
    """The process dies here (a BaseException: nothing in the store catches it)."""


def crash_at(store, step):
    """Make the store's `step`-th change (a put, create, delete or move of `store.files`) kill it; returns the
    log of changes made."""
    log, died = [], []
    files = store.files
    files.map = lambda fn, items: [fn(item) for item in items]  # one change at a time: a deterministic order
    for name in ("put", "create", "delete", "move"):
        def change(*args, _real=getattr(files, name), _name=name):
            if len(log) == step:  # and every change after it: a dead process makes none (a lease's release)
                died.append(died[0] if died else f"{_name} {files.rel(args[0])}")
                raise Crash(died[0])
            log.append(f"{_name} {files.rel(args[0])}")
            return _real(*args)
        setattr(files, name, change)
    return log


def data_changes(log):
    """The log without the changes of lease files (_leases/)."""
    return [entry for entry in log if " _leases/" not in entry]


def crashed_copy(template, root, step, change):
    """A copy of the store `template` at `root` in which `change(store)` was killed at its `step`-th change."""
    shutil.copytree(template, root)
    store = ResultsStore(root)
    crash_at(store, step)
    with pytest.raises(Crash):
        change(store)
    return root


def assert_no_row_twice(root):
    for table, key in (("trials", []), ("epochs", ["epoch"]), ("layers", ["layer_index"])):
        frame = pd.read_parquet(root / table)
        if len(frame):
            assert not frame.duplicated(["trial_id", *key]).any(), table


def test_compaction_killed_at_every_step_recovers_with_every_trial_once(tmp_path):
    ids, pruned = ["t1", "t2", "t3"], ["p0"]
    template = tmp_path / "template"
    make_store(template, ids, pruned)
    probe = tmp_path / "probe"
    shutil.copytree(template, probe)
    store = ResultsStore(probe)
    log = crash_at(store, -1)
    store.compact(rows_per_part=4)  # two groups: p0, t1 and t2, t3
    kinds = [entry.split()[0] for entry in data_changes(log)]
    assert kinds.count("move") == 6 and kinds.count("put") == 8  # 3 parts + 1 journal a group
    # The lease: its lock file, the lease, a renewal before each group's journal, the release.
    assert [e for e in log if " _leases/" in e] == ["create _leases/.lock", "create _leases/compaction.json",
                                                   "put _leases/compaction.json", "put _leases/compaction.json",
                                                   "delete _leases/compaction.json"]

    for step, interrupted in enumerate(log):
        root = crashed_copy(template, tmp_path / f"crash-{step}", step, lambda s: s.compact(rows_per_part=4))
        try:
            assert_no_row_twice(root)  # what pandas sees at the moment of the crash
            assert_each_trial_once(root, ids, pruned)  # a fresh store finishes the journal first
            assert not [n for n in os.listdir(root) if n.startswith("_compaction-")]
            ResultsStore(root).compact(rows_per_part=4)
            assert_each_trial_once(root, ids, pruned)
            assert os.listdir(root / "trials") == ["compacted"]
        except AssertionError as exc:
            raise AssertionError(f"killed before step {step} ({interrupted}): {exc}") from None


def test_a_read_after_a_crash_between_deleting_and_publishing_sees_every_trial(tmp_path):
    root = tmp_path / "results"
    make_store(root, ["t1", "t2"])
    store = ResultsStore(root)
    # After the lease (its lock file and itself), the 3 hidden parts, the lease's renewal, the journal and the
    # 6 per-trial deletes.
    log = crash_at(store, 2 + 3 + 1 + 1 + 6)
    with pytest.raises(Crash, match="move epochs/compacted/.part-"):
        store.compact()
    assert log[-1].startswith("delete layers/") and len(log) == 13
    assert pd.read_parquet(root / "trials").empty  # absent for a moment, never twice
    assert sorted(ResultsStore(root).read("trials")["trial_id"]) == ["t1", "t2"]  # read rolls forward
    assert sorted(pd.read_parquet(root / "trials")["trial_id"]) == ["t1", "t2"]


def test_rewriting_a_compacted_trial_killed_at_every_step_never_doubles_a_row(tmp_path):
    template = tmp_path / "template"
    make_store(template, ["t1", "t2", "t3"]).compact()
    probe = tmp_path / "probe"
    shutil.copytree(template, probe)
    store = ResultsStore(probe)
    log = crash_at(store, -1)
    store.write_trial(trial_row("t2", final_top1=0.25), epoch_rows(), layer_rows())
    # new parts, journal, 3 deletes, 3 moves, journal, trial files; and the lease, its renewal, its release
    assert len(data_changes(log)) == 3 + 1 + 3 + 3 + 1 + 1 + 3 and len(log) == 15 + 3

    for step, interrupted in enumerate(log):
        root = crashed_copy(template, tmp_path / f"crash-{step}", step,
                            lambda s: s.write_trial(trial_row("t2", final_top1=0.25), epoch_rows(), layer_rows()))
        assert_no_row_twice(root)
        fresh = ResultsStore(root)
        assert fresh.finished_ids() in ({"t1", "t3"}, {"t1", "t2", "t3"}), interrupted
        assert_no_row_twice(root)
        fresh.write_trial(trial_row("t2", final_top1=0.25), epoch_rows(), layer_rows())  # the trial reruns
        assert_each_trial_once(root, ["t1", "t2", "t3"])
        assert ResultsStore(root).read("trials").set_index("trial_id").loc["t2", "final_top1"] == 0.25


def test_an_unreadable_journal_is_moved_aside_and_leftovers_of_crashed_writers_are_removed(tmp_path):
    root = tmp_path / "results"
    store = make_store(root, ["t1"])
    (root / "_compaction-0123.json").write_text('{"version": 1, "delete": [')
    (root / "trials" / "compacted").mkdir()
    old, new = root / "trials" / "compacted" / ".part-old.parquet", root / "epochs" / ".tmp-1234-t9.parquet"
    old.write_bytes(b"x")
    new.write_bytes(b"x")
    os.utime(old, (1e9, 1e9))
    report = store.compact()
    assert report.trials == 1 and report.removed_leftovers == 1
    assert not old.exists() and new.exists()
    assert len(store.quarantined) == 1
    assert re.fullmatch(rf"moved unreadable _compaction-0123\.json to _quarantine/_compaction-0123\.json\.{STAMP} "
                        r"\(not a compaction journal this version can apply\)", store.quarantined[0])


# ----------------------------------------------------------------- reading, writability, object stores, CLI

def test_read_some_columns_from_per_trial_files_and_parts(tmp_path):
    root = tmp_path / "results"
    store = make_store(root, ["t1", "t2"])
    store.compact()
    store.write_trial(trial_row("t3", final_top1=0.5), epoch_rows(3), layer_rows())

    epochs = store.read("epochs", columns=["top1", "trial_id"])
    assert list(epochs.columns) == ["top1", "trial_id"]
    assert sorted(zip(epochs["trial_id"], epochs["top1"])) == sorted(
        [(t, r["top1"]) for t in ("t1", "t2") for r in epoch_rows()] + [("t3", r["top1"]) for r in epoch_rows(3)])
    trials = read_table(root, "trials", columns=["trial_id", "final_top1"])
    assert sorted(trials.itertuples(index=False)) == [("t1", 0.9134), ("t2", 0.9134), ("t3", 0.5)]
    assert list(store.read("layers", ["score_sum"]).columns) == ["score_sum"]
    assert list(ResultsStore(tmp_path / "absent").read("trials", ["seed"]).columns) == ["seed"]
    with pytest.raises(ValueError, match="unknown epochs column.*accuracy; valid columns: trial_id, epoch"):
        store.read("epochs", ["trial_id", "accuracy"])


def test_a_table_directory_that_cannot_be_written_fails_the_writability_check(tmp_path):
    root = tmp_path / "results"
    root.mkdir()
    (root / "epochs").mkdir()
    if os.geteuid() == 0:  # root ignores permissions: a regular file where the directory should be
        (root / "trials").write_text("not a directory")
    else:
        (root / "trials").mkdir()
        (root / "trials").chmod(0o500)
    store = ResultsStore(root)
    try:
        with pytest.raises(StoreError) as raised:
            store.check_writable()
    finally:
        if (root / "trials").is_dir():
            (root / "trials").chmod(0o700)
    message = str(raised.value)
    assert message.startswith(f"store {root}: table directory {root}/trials is not writable: ")
    assert "\n" not in message


def test_object_store_compaction(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNE_SWEEP_LEASE_SETTLE", "0")  # one in-memory filesystem, one process: no contender
    store = ResultsStore("mock:///bucket/results")
    for trial_id in ("t1", "t2", "t3"):
        store.write_trial(trial_row(trial_id), epoch_rows(), layer_rows())
    report = store.compact()
    assert report.trials == 3
    everything = store.files.fs.get_file_info(pafs.FileSelector("bucket/results", recursive=True))
    objects = sorted(i.path.split("/", 2)[2] for i in everything if i.type == pafs.FileType.File)
    assert [o.rsplit("/", 1)[0] for o in objects] == ["epochs/compacted", "layers/compacted", "trials/compacted"]
    assert store.finished_ids() == {"t1", "t2", "t3"} and store.has_trial("t2")
    assert sorted(store.read("trials")["trial_id"]) == ["t1", "t2", "t3"] and len(store.read("epochs")) == 6


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args):
    return subprocess.run([sys.executable, "-m", "results_store", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_compact_command_prints_what_it_did_and_fails_in_one_line(tmp_path):
    root = tmp_path / "results"
    make_store(root, ["t1", "t2"])
    run = cli("compact", root)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert re.fullmatch(r"compacted 2 trials into 1 group\(s\) of parts in \d+\.\d s; 0 trials were already compacted",
                        lines[0])
    assert [re.sub(r"part-\w+", "part-X", line) for line in lines[1:]] == [
        "  trials/compacted/part-X.parquet  2 rows", "  epochs/compacted/part-X.parquet  4 rows",
        "  layers/compacted/part-X.parquet  4 rows"]
    assert_each_trial_once(root, ["t1", "t2"])
    assert (run.stderr, cli("compact", tmp_path / "absent").stderr) == ("", f"error: store {tmp_path / 'absent'} does not exist\n")


@pytest.mark.parametrize("args, error", [
    (["compact", "{root}", "--rows-per-part", "0"], "error: argument --rows-per-part: expected a positive integer, got '0'"),
    (["compact"], "error: the following arguments are required: STORE"),
    ([], "error: the following arguments are required: COMMAND"),
    (["merge", "{root}"], "error: argument COMMAND: invalid choice: 'merge' (choose from "),
])
def test_compact_command_refuses_bad_input_in_one_line(tmp_path, capsys, args, error):
    from results_store.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main([a.format(root=tmp_path) for a in args])
    captured = capsys.readouterr()
    assert (exited.value.code, captured.out) == (2, "")
    assert captured.err.startswith(error) and captured.err.endswith("\n") and captured.err.count("\n") == 1


def test_a_sweeps_grid_is_recorded_once_per_distinct_grid_and_read_as_their_union(store):
    assert grid_trial_ids(store, "fig1") is None and recorded_sweeps(store) == []
    first = record_grid(store, "fig1", ["b", "a", "a"], ["--preset", "fig1"])
    assert record_grid(store, "fig1", ["a", "b"]) == first  # the same grid again: the same file, rewritten
    record_grid(store, "fig1", ["a", "b", "c"])               # extended with a seed: one more file
    record_grid(store, "other", ["z"])
    assert grid_trial_ids(store, "fig1") == {"a", "b", "c"} and recorded_sweeps(store) == ["fig1", "other"]
    store.write_trial(trial_row(), epoch_rows(), layer_rows())
    assert len(pd.read_parquet(os.path.join(store.location, "trials"))) == 1  # the records are no table's files
    with pytest.raises(ValueError, match="sweep name must be"):
        record_grid(store, "../x", ["a"])
    with open(os.path.join(store.location, first), "w") as f:
        f.write("{not json")
    with pytest.raises(StoreError, match="unreadable sweep record _sweeps/fig1/"):
        grid_trial_ids(store, "fig1")


# ----------------------------------------------------------------- the modules' chain

# Each module of results_store may import only the ones before it, and no private name of any of them.
STORE_CHAIN = ["schema", "files", "sweeps", "lease", "journal", "scan", "compaction", "store", "masks", "collect",
               "__init__", "__main__"]
# (module, function) that may import torch inside its body, when called: it hands torch tensors to torch users.
LAZY_TORCH = {("masks", "read_masks")}


def store_imports(tree):
    """(line, imported module, names taken from it or None) for every import in a module's syntax tree."""
    found = []
    for node in ast.walk(tree):  # every import, also under `if TYPE_CHECKING:` or inside a function
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:  # relative: from . import x, from .x import y
                target = "results_store" + (f".{target}" if target else "")
            found.append((node.lineno, target, [alias.name for alias in node.names]))
    return found


def lazy_import_lines(tree, functions):
    """Lines of the imports inside the bodies of the named top-level functions."""
    return {node.lineno for fn in tree.body if isinstance(fn, ast.FunctionDef) and fn.name in functions
            for node in ast.walk(fn) if isinstance(node, (ast.Import, ast.ImportFrom))}


def chain_violations(chain, sources, lazy_torch=frozenset()):
    """What breaks the chain in {module: source}: imports of torch or ray (torch allowed only inside the
    `lazy_torch` (module, function)s), of a module not below, of a private name."""
    wrong = []
    for rank, module in enumerate(chain):
        tree = ast.parse(sources[module])
        module_objects = set()
        lazy = lazy_import_lines(tree, {fn for m, fn in lazy_torch if m == module})
        for line, target, names in store_imports(tree):
            where = f"{module}.py:{line}"
            parts = target.split(".")
            if parts[0] in ("torch", "ray") and not (parts[0] == "torch" and line in lazy):
                wrong.append(f"{where} imports {target}")
            if parts[0] != "results_store":
                continue
            if len(parts) == 1 and names is not None:  # from results_store import compaction: submodules
                imported = [(n, None) for n in names]
                module_objects.update(names)
            else:
                other = parts[1] if len(parts) > 1 else "__init__"
                imported = [(other, n) for n in (names or [None])]
            for other, name in imported:
                if other not in chain or chain.index(other) >= rank:
                    wrong.append(f"{where} imports {other}, not below {module}")
                if name is not None and name.startswith("_"):
                    wrong.append(f"{where} imports {other}.{name}")
        for node in ast.walk(tree):  # compaction._batches through a module object is a private import too
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in module_objects
                    and node.attr.startswith("_")):
                wrong.append(f"{module}.py:{node.lineno} uses {node.value.id}.{node.attr}")
    return wrong


def test_the_store_modules_form_a_chain_without_private_imports():
    package = os.path.join(REPO, "results_store")
    present = sorted(name[:-3] for name in os.listdir(package) if name.endswith(".py"))
    assert present == sorted(STORE_CHAIN), "a new module of results_store takes its place in STORE_CHAIN"
    sources = {}
    for module in STORE_CHAIN:
        with open(os.path.join(package, f"{module}.py")) as f:
            sources[module] = f.read()
    assert chain_violations(STORE_CHAIN, sources, LAZY_TORCH) == []


def test_the_chain_check_finds_each_kind_of_violation():
    sources = {
        "low": "import torch\nfrom results_store.low2 import helper\n",
        "low2": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from results_store.high import High\n"
                 "from results_store.low import _private\n"),
        "high": "from results_store import low\nfrom . import low2\nlow._hidden()\nlow.public()\n",
    }
    assert sorted(chain_violations(["low", "low2", "high"], sources)) == [
        "high.py:3 uses low._hidden", "low.py:1 imports torch", "low.py:2 imports low2, not below low",
        "low2.py:3 imports high, not below low2", "low2.py:4 imports low._private"]
    lazy = {"low": "def tensors():\n    import torch\n\n\ndef other():\n    import torch\n    import ray\n"}
    assert chain_violations(["low"], lazy, {("low", "tensors")}) == ["low.py:6 imports torch", "low.py:7 imports ray"]


# ----------------------------------------------------------------- storage errors, a read-only store

def mount(*args):
    return subprocess.run(["mount", *map(str, args)], capture_output=True, text=True, timeout=60)


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs at tmp_path/disk (256 KiB unless the test says `size`); skipped where mount is not permitted."""
    disk = tmp_path / "disk"
    disk.mkdir()

    def mounted(size="256k"):
        try:
            result = mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", disk)
        except FileNotFoundError:
            pytest.skip("no mount command here: a real full or read-only disk cannot be made")
        if result.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here ({result.stderr.strip() or result.returncode}): "
                        "a real full or read-only disk needs root with CAP_SYS_ADMIN")
        state["mounted"] = True
        return disk

    state = {"mounted": False}
    try:
        yield mounted
    finally:
        if state["mounted"] and subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def read_only(disk):
    result = mount("-o", "remount,ro", disk)
    assert result.returncode == 0, result.stderr


def fill(disk):
    """Write a file until the disk is full."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_a_full_disk_fails_the_write_with_enospc_in_one_line(tmpfs):
    disk = tmpfs()
    root = disk / "results"
    store = make_store(root, ["t1"])
    fill(disk)

    with pytest.raises(StoreError) as raised:
        store.write_trial(trial_row("t2"), epoch_rows(), layer_rows())

    error = raised.value
    assert (error.errno, error.fatal) == (errno.ENOSPC, True)
    assert re.fullmatch(rf"store {root}: cannot write epochs/t2\.parquet: \[Errno 28\] .*No space left on device",
                        str(error))
    assert [p.name for p in (root / "epochs").iterdir()] == ["t1.parquet"]  # no temp file left behind
    assert store.finished_ids() == {"t1"}
    with pytest.raises(StoreError) as probed:
        store.check_writable()
    assert (probed.value.errno, probed.value.fatal) == (errno.ENOSPC, True)
    assert str(probed.value).startswith(f"store {root} is not writable: [Errno 28] ")


def test_a_read_only_disk_fails_writes_and_compaction_with_erofs(tmpfs):
    disk = tmpfs()
    root = disk / "results"
    make_store(root, ["t1"])
    read_only(disk)
    store = ResultsStore(root)

    with pytest.raises(StoreError) as written:
        store.write_trial(trial_row("t2"), epoch_rows(), layer_rows())
    with pytest.raises(StoreError) as compacted:
        store.compact()
    with pytest.raises(StoreError) as probed:
        store.check_writable()

    for error in (written.value, compacted.value, probed.value):
        assert (error.errno, error.fatal) == (errno.EROFS, True), error
        assert "\n" not in str(error) and str(error).endswith("Read-only file system"), error
    assert str(written.value).startswith(f"store {root}: cannot delete trials/t2.parquet: [Errno 30] ")
    assert str(compacted.value).startswith(f"store {root}: cannot create _leases: [Errno 30] ")
    assert store.finished_ids() == {"t1"} and store.read("trials")["trial_id"].tolist() == ["t1"]


def test_storage_errors_without_an_errno_are_fatal_only_when_the_storage_refuses():
    assert StoreError("store s3://b/r: cannot write x: AWS Error ACCESS_DENIED during PutObject", fatal=True).fatal
    assert not StoreError("store s3://b/r: unreadable sweep record _sweeps/x.json: bad json").fatal
    assert StoreError("store /r: cannot write x", errno.EDQUOT).fatal and StoreError("x", errno.EPERM).fatal
    assert not StoreError("store /r: cannot write x", errno.EIO).fatal


def test_reading_a_read_only_store_whose_compaction_was_killed_names_the_trials_it_cannot_read(tmpfs):
    disk = tmpfs("16m")
    root = disk / "results"
    store = make_store(root, ["t1", "t2"])
    store.compact()
    write_trials(store, ["t3", "t4", "t5"])
    crashing = ResultsStore(root)
    # Killed after its lease, its 3 hidden parts, the renewal, the journal and all 9 per-trial deletes.
    crash_at(crashing, 1 + 3 + 1 + 1 + 9)
    with pytest.raises(Crash, match="move epochs/compacted/.part-"):
        crashing.compact()
    read_only(disk)
    reader = ResultsStore(root)

    with pytest.warns(UserWarning, match="3 trial"):
        trials = reader.read("trials")

    assert sorted(trials["trial_id"]) == ["t1", "t2"]  # what is visible, never doubled
    assert len(reader.problems) == 1
    assert re.fullmatch(
        rf"store {root}: 3 trial\(s\) of an unfinished compaction are not readable \(e\.g\. t3\), and this process "
        rf"cannot finish it \(Read-only file system\); run `prune-sweep-store compact {root}` with write access",
        reader.problems[0]), reader.problems[0]


def test_per_trial_count_counts_per_trial_trials_files_only(store, tmp_path):
    root = tmp_path / "results"
    write_trials(store, ["t1", "t2", "t3"])
    store.compact()
    write_trials(store, ["t4", "t5"])
    (root / "trials" / ".tmp-1234abcd-t6.parquet").write_bytes(b"x")
    (root / "trials" / "notes.txt").write_text("not parquet")
    (root / "epochs" / "t7.parquet").write_bytes((root / "epochs" / "t4.parquet").read_bytes())
    assert store.per_trial_count() == 2
    assert ResultsStore(tmp_path / "absent").per_trial_count() == 0
