"""A per-trial file counts by the trial it holds, not by its name; compaction keeps one copy of a trial, never zero.

The planted-copy check is a function of a store location: tests/test_store_s3.py runs it on an S3 server too.
"""
from __future__ import annotations

import os
import re
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from results_store import TABLES, ResultsStore
from results_store.schema import TRIAL_ID_KEY
from test_store import STAMP, write_trials
from test_store_leases import assert_once


def plant(store, source, target, tables=TABLES):
    """Copy trial `source`'s per-trial files to trial `target`'s names, byte for byte."""
    files = store.files
    for table in tables:
        files.put(files.trial_path(table, target), files.read_bytes(files.trial_path(table, source)))


def planted_lines(quarantined, copy, holds):
    """The quarantine lines of a full planted copy: one a table, each naming the file and the trial it holds."""
    return sorted(line for line in quarantined
                  if re.fullmatch(rf"moved (trials|epochs|layers)/{copy}\.parquet to _quarantine/\1/{copy}\.parquet\."
                                  rf"{STAMP} \(holds trial {holds}, not {copy}\)", line))


# ----------------------------------------------------------------- checks shared with test_store_s3.py

def check_planted_copies(location):
    store = ResultsStore(location)
    write_trials(store, ["A", "C"])
    plant(store, "A", "B")

    with pytest.warns(UserWarning):
        trials = store.read("trials")  # before anything moved them: read skips the copies
    assert sorted(trials["trial_id"]) == ["A", "C"]
    assert sorted(store.problems) == [f"store {location}: skipped trials/B.parquet: holds trial A, not B"]

    first, second = ResultsStore(location), ResultsStore(location)
    first.compact()  # the sequence: two compactions after the copy
    second.compact()

    assert len(planted_lines(first.quarantined, "B", "A")) == 3 and len(first.quarantined) == 3
    assert second.quarantined == []
    assert ResultsStore(location).has_trial("A") and not ResultsStore(location).has_trial("B")
    assert_once(location, ["A", "C"])


def check_has_trial_refuses_a_planted_copy(location):
    store = ResultsStore(location)
    write_trials(store, ["A"])
    plant(store, "A", "B")
    assert store.has_trial("B") is False
    assert len(planted_lines(store.quarantined, "B", "A")) == 3
    assert store.has_trial("A") is True and store.finished_ids() == {"A"}


# ----------------------------------------------------------------- on a local disk

@pytest.fixture
def location(tmp_path):
    return str(tmp_path / "results")


def test_a_trials_files_copied_under_another_trials_names_count_once_through_two_compactions(location):
    check_planted_copies(location)


def test_has_trial_refuses_a_planted_copy_and_moves_it_aside(location):
    check_has_trial_refuses_a_planted_copy(location)


def test_a_planted_trials_file_over_a_real_trial_moves_the_real_trials_other_files_too(location):
    store = ResultsStore(location)
    write_trials(store, ["A", "B"])
    plant(store, "A", "B", tables=["trials"])  # B's epochs and layers are B's own

    assert store.finished_ids() == {"A"}

    lines = sorted(store.quarantined)
    assert len(lines) == 3
    assert re.fullmatch(rf"moved epochs/B\.parquet to _quarantine/epochs/B\.parquet\.{STAMP} "
                        r"\(trial B's trials file holds another trial\)", lines[0])
    assert re.fullmatch(rf"moved layers/B\.parquet to _quarantine/layers/B\.parquet\.{STAMP} "
                        r"\(trial B's trials file holds another trial\)", lines[1])
    assert re.fullmatch(rf"moved trials/B\.parquet to _quarantine/trials/B\.parquet\.{STAMP} "
                        r"\(holds trial A, not B\)", lines[2])
    write_trials(store, ["B"])  # the rerun
    assert_once(location, ["A", "B"])


def test_per_trial_files_name_their_trial_in_the_footer_and_parts_do_not(location):
    store = ResultsStore(location)
    write_trials(store, ["A"])
    for table in TABLES:
        metadata = pq.read_metadata(os.path.join(location, table, "A.parquet")).metadata
        assert metadata[TRIAL_ID_KEY] == b"A", table
    write_trials(store, ["B"])
    store.compact()
    for table in TABLES:
        [part] = os.listdir(os.path.join(location, table, "compacted"))
        assert TRIAL_ID_KEY not in pq.read_metadata(os.path.join(location, table, "compacted", part)).metadata


def rewrite(path, data, **options):
    """Write `data` to `path` as another tool would (pyarrow, keeping the table's own metadata)."""
    pq.write_table(data, path, **options)


def test_files_of_older_stores_without_the_footer_entry_are_checked_by_their_statistics(location):
    store = ResultsStore(location)
    write_trials(store, ["A", "C"])
    for table in TABLES:  # as the store wrote them before the footer named the trial
        for trial_id in ("A", "C"):
            path = os.path.join(location, table, f"{trial_id}.parquet")
            rewrite(path, pq.read_table(path).replace_schema_metadata(None))
            assert TRIAL_ID_KEY not in pq.read_metadata(path).metadata
    plant(store, "A", "B")

    assert store.finished_ids() == {"A", "C"}
    assert len(planted_lines(store.quarantined, "B", "A")) == 3


def test_every_row_group_of_a_file_must_hold_its_trial(location):
    store = ResultsStore(location)
    write_trials(store, ["A", "B"], epochs=3)
    epochs = os.path.join(location, "epochs")
    mixed = pa.concat_tables([pq.read_table(f"{epochs}/B.parquet"), pq.read_table(f"{epochs}/A.parquet").slice(0, 1)])
    rewrite(f"{epochs}/B.parquet", mixed.replace_schema_metadata(None), row_group_size=2)
    assert pq.read_metadata(f"{epochs}/B.parquet").num_row_groups == 2

    assert store.finished_ids() == {"A"}
    assert [line.split(" (", 1)[1] for line in sorted(store.quarantined)][0] == "holds trials A to B, not B alone)"


def test_the_footer_entry_decides_only_where_statistics_cannot(location):
    store = ResultsStore(location)
    write_trials(store, ["A", "C"])
    trials = os.path.join(location, "trials")
    # No statistics: the footer entry says whose rows these are.
    for source, target in (("C", "C"), ("A", "B")):  # ParquetFile.read keeps the footer's entries
        rewrite(f"{trials}/{target}.parquet", pq.ParquetFile(f"{trials}/{source}.parquet").read(),
                write_statistics=False)
    # Neither statistics nor the entry: nothing tells, and the file counts by its name (E is E's, as it happens).
    write_trials(store, ["E"])
    rewrite(f"{trials}/E.parquet", pq.read_table(f"{trials}/E.parquet").replace_schema_metadata(None),
            write_statistics=False)
    plant(store, "A", "B", tables=["epochs", "layers"])
    # Statistics present: they decide, even where a tool kept a stale footer entry through read, change, write.
    stale = pq.ParquetFile(f"{trials}/A.parquet").read()  # keeps the footer's entries as schema metadata
    renamed = stale.set_column(0, "trial_id", pa.array(["D"]))
    assert renamed.schema.metadata[TRIAL_ID_KEY] == b"A"
    rewrite(f"{trials}/D.parquet", renamed)
    for table in ("epochs", "layers"):
        data = pq.read_table(os.path.join(location, table, "A.parquet"))
        rewrite(os.path.join(location, table, "D.parquet"),
                data.set_column(0, "trial_id", pa.array(["D"] * data.num_rows)))

    assert store.finished_ids() == {"A", "C", "D", "E"}
    assert len(planted_lines(store.quarantined, "B", "A")) == 3 and len(store.quarantined) == 3


def write_group(location, group, ids_by_table):
    """A compacted group written as an older store could have: each table's part from per-trial rows, as given."""
    for table, tables in ids_by_table.items():
        directory = os.path.join(location, table, "compacted")
        os.makedirs(directory, exist_ok=True)
        pq.write_table(pa.concat_tables(tables), os.path.join(directory, f"{group}.parquet"))


def per_trial_tables(location, trial_id):
    return {t: pq.read_table(os.path.join(location, t, f"{trial_id}.parquet")).replace_schema_metadata(None)
            for t in TABLES}


def test_a_group_holding_a_trial_twice_keeps_exactly_one_copy(location):
    store = ResultsStore(location)
    write_trials(store, ["A", "C"])
    a, c = per_trial_tables(location, "A"), per_trial_tables(location, "C")
    # What compacting a planted copy did before: A's rows twice in one group (once under the name B).
    write_group(location, f"part-{uuid.uuid4().hex}", {t: [a[t], c[t], a[t]] for t in TABLES})
    for table in TABLES:
        for trial_id in ("A", "C"):
            os.remove(os.path.join(location, table, f"{trial_id}.parquet"))
    assert sorted(pq.read_table(os.path.join(location, "trials"))["trial_id"].to_pylist()) == ["A", "A", "C"]
    assert store.finished_ids() == {"A", "C"}

    report = store.compact()
    again = store.compact()

    assert (report.evicted, report.trials, report.already_compacted) == (1, 0, 2)
    assert (again.evicted, again.already_compacted) == (0, 2)
    assert_once(location, ["A", "C"])
    assert ResultsStore(location).read("epochs").query("trial_id == 'A'")["epoch"].tolist() == [1, 2]


def test_two_groups_holding_a_trial_keep_exactly_one_copy(location):
    store = ResultsStore(location)
    write_trials(store, ["A", "C", "E"])
    a, c, e = (per_trial_tables(location, i) for i in ("A", "C", "E"))
    write_group(location, "part-1111", {t: [a[t], c[t]] for t in TABLES})
    write_group(location, "part-2222", {t: [a[t], e[t]] for t in TABLES})
    write_group(location, "part-3333", {t: [a[t]] for t in TABLES})
    for table in TABLES:
        for trial_id in ("A", "C", "E"):
            os.remove(os.path.join(location, table, f"{trial_id}.parquet"))

    report = store.compact()

    assert (report.evicted, report.already_compacted) == (2, 3)
    assert_once(location, ["A", "C", "E"])
    # part-1111 is kept whole; the other two groups lose their copy of A (a rewritten group gets a fresh random
    # name, which may sort anywhere: a test that took the first name failed whenever it began with "0")
    names = set(os.listdir(os.path.join(location, "trials", "compacted")))
    assert "part-1111.parquet" in names and not names & {"part-2222.parquet", "part-3333.parquet"}
