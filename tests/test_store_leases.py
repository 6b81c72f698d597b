"""Leases on a store, and compaction under its lease, on a real local disk.

The checks are functions of a store location, run as tests by LeaseChecks: tests/test_store_s3.py subclasses it to
run the same ones on an S3 server.
"""
from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from results_store import (CompactionReport, Heartbeat, LeaseHeld, ResultsStore, StoreError, StoreFiles, acquire,
                           holder_of)
from results_store.lease import LEASES, LeaseInfo, default_holder, lease_path, lease_ttl, settle_delay
from test_store import REPO, epoch_rows, layer_rows, trial_row, write_trials

CLOCK = r"(\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d UTC"


def wait_until(condition, what, limit=60.0):
    """Poll `condition` until it holds (a wait, not a timing assertion: the limit only ends a hung test)."""
    deadline = time.monotonic() + limit
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"still waiting for {what} after {limit:.0f} s"
        time.sleep(0.05)


def snapshot(store):
    """Every file under the store with its bytes: what "changed nothing" compares."""
    files = store.files
    infos = files.fs.get_file_info(pafs.FileSelector(files.root, recursive=True, allow_not_found=True))
    return {files.rel(i.path): files.read_bytes(i.path) for i in infos if i.type == pafs.FileType.File}


def lease_files(store):
    files = store.files
    return sorted(i.base_name for i in files.listdir(f"{files.root}/{LEASES}")
                  if i.type == pafs.FileType.File and not i.base_name.startswith("."))


def assert_once(location, ids):
    """A fresh store and a plain pyarrow read of the table directories agree: every trial once, all its rows."""
    fresh = ResultsStore(location)
    assert fresh.finished_ids() == set(ids)
    files = fresh.files
    for table, rows in (("trials", 1), ("epochs", 2), ("layers", 2)):
        expected = sorted(i for i in ids for _ in range(rows))
        assert sorted(fresh.read(table)["trial_id"]) == expected, table
        plain = pq.read_table(files.table_path(table), filesystem=files.fs, columns=["trial_id"])
        assert sorted(plain.column(0).to_pylist()) == expected, table  # what pandas sees
    assert fresh.problems == [] and fresh.quarantined == []


# ----------------------------------------------------------------- checks shared with test_store_s3.py

def check_lease_cycle(location):
    store = ResultsStore(location)
    lease = acquire(store, "trial-abc", holder="host-a:1", ttl=30)
    assert lease is not None and (lease.name, lease.holder) == ("trial-abc", "host-a:1")
    info = holder_of(store, "trial-abc")
    assert (info.name, info.holder, info.token, info.ttl) == ("trial-abc", "host-a:1", lease.token, 30.0)
    assert info.fresh() and info.acquired_at == info.renewed_at
    assert lease_files(store) == ["trial-abc.json"]

    assert acquire(store, "trial-abc", holder="host-b:2", ttl=30) is None
    assert holder_of(store, "trial-abc") == info  # the refused contender wrote nothing
    assert lease.renew() is True
    renewed = holder_of(store, "trial-abc")
    assert renewed.token == lease.token and renewed.renewed_at >= info.renewed_at

    again = acquire(store, "trial-abc", holder="host-a:1", ttl=30)  # the same holder string: a restarted worker
    assert again is not None and again.token != lease.token
    assert lease.renew() is False
    lease.release()  # no longer ours: the newer lease stays
    assert holder_of(store, "trial-abc").token == again.token
    again.release()
    assert holder_of(store, "trial-abc") is None and lease_files(store) == []

    with acquire(store, "compaction", holder="host-c:3", ttl=30) as held:
        assert holder_of(store, "compaction").token == held.token
    assert holder_of(store, "compaction") is None and lease_files(store) == []


def check_takeover_of_stale_and_unreadable_leases(location, short_ttl):
    store = ResultsStore(location)
    old = acquire(store, "trial-x", holder="host-a:1", ttl=short_ttl)
    assert old is not None
    wait_until(lambda: holder_of(store, "trial-x") is None, "the lease to go stale")
    assert not LeaseInfo.parse(store.files.read_bytes(lease_path(store.files, "trial-x"))).fresh()

    new = acquire(store, "trial-x", holder="host-b:2", ttl=30)
    assert new is not None and holder_of(store, "trial-x").holder == "host-b:2"
    assert old.renew() is False
    old.release()
    assert holder_of(store, "trial-x").token == new.token
    new.release()

    store.files.put(lease_path(store.files, "trial-x"), b'{"name": "trial-x", "holder": ')  # a torn record
    assert holder_of(store, "trial-x") is None
    taken = acquire(store, "trial-x", holder="host-c:3", ttl=30)
    assert taken is not None and holder_of(store, "trial-x").holder == "host-c:3"
    taken.release()


def check_heartbeat(location, ttl):
    store = ResultsStore(location)
    lease = acquire(store, "trial-hb", holder="host-a:1", ttl=ttl)
    with Heartbeat(lease, interval=ttl / 10) as heartbeat:
        wait_until(lambda: holder_of(store, "trial-hb").renewed_at > lease.acquired_at, "a renewal")
        assert not heartbeat.lost.is_set()
        # Its own holder string takes it over (on an object store a renewal in flight may win a round: retry).
        taken = wait_until(lambda: acquire(store, "trial-hb", holder="host-a:1", ttl=ttl), "the takeover")
        assert heartbeat.lost.wait(60)
    assert holder_of(store, "trial-hb").token == taken.token
    taken.release()


def check_one_winner_among_contenders(location, contenders=4, rounds=3):
    for round_ in range(rounds):
        barrier = threading.Barrier(contenders)

        def contend(i):
            store = ResultsStore(location)  # a store object of its own, as another process would have
            barrier.wait()
            return acquire(store, f"race-{round_}", holder=f"host-{i}:1", ttl=60)

        with ThreadPoolExecutor(contenders) as pool:
            won = [lease for lease in pool.map(contend, range(contenders)) if lease is not None]
        assert len(won) == 1, f"round {round_}: {len(won)} holders"
        assert holder_of(ResultsStore(location), f"race-{round_}").token == won[0].token


def check_held_compaction_changes_nothing(location):
    store = ResultsStore(location)
    write_trials(store, ["t1", "t2", "t3"])
    other = acquire(store, "compaction", holder="elsewhere:99", ttl=60)
    before = snapshot(store)

    with pytest.raises(LeaseHeld) as raised:
        store.compact()

    assert re.fullmatch(rf"store {re.escape(location)}: another compaction \(held by elsewhere:99 since {CLOCK}, "
                        r"renewed \d+ s ago\) is running on this store; wait for it to finish", str(raised.value))
    assert isinstance(raised.value, StoreError) and raised.value.info.holder == "elsewhere:99"
    assert not raised.value.fatal and raised.value.errno is None
    assert snapshot(store) == before
    other.release()
    report = store.compact()
    assert report.trials == 3 and lease_files(store) == []
    assert_once(location, ["t1", "t2", "t3"])


def check_compactions_started_together_in_threads(location, trials=12):
    ids = [f"t{i:02d}" for i in range(trials)]
    write_trials(ResultsStore(location), ids)
    barrier = threading.Barrier(2)

    def compact(_):
        store = ResultsStore(location)
        barrier.wait()
        try:
            return store.compact(rows_per_part=8)  # 4 trials a group: several journals each
        except LeaseHeld as exc:
            return exc

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(compact, range(2)))
    assert all(isinstance(o, (CompactionReport, LeaseHeld)) for o in outcomes), outcomes
    assert sum(o.trials for o in outcomes if isinstance(o, CompactionReport)) == trials
    assert_once(location, ids)


def check_compactions_started_together_in_processes(location, trials=12):
    ids = [f"t{i:02d}" for i in range(trials)]
    write_trials(ResultsStore(location), ids)
    command = [sys.executable, "-m", "results_store", "compact", location, "--rows-per-part", "8"]
    running = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    results = [(p.returncode, out, err) for p in running for out, err in [p.communicate(timeout=300)]]
    compacted = 0
    for code, out, err in results:
        assert code in (0, 2), err
        if code == 2:
            assert re.fullmatch(rf"error: store {re.escape(location)}: another compaction \(held by [^ ]+ since "
                                rf"{CLOCK}, renewed \d+ s ago\) is running on this store; wait for it to finish\n",
                                err), err
        elif out.startswith("compacted "):
            compacted += int(out.split()[1])
    assert compacted == trials, results
    assert_once(location, ids)


def check_a_rewrite_waits_for_a_running_compaction(location, monkeypatch):
    store = ResultsStore(location)
    write_trials(store, ["t1", "t2"])
    store.compact()
    other = acquire(store, "compaction", holder="elsewhere:99", ttl=60)
    before = snapshot(store)
    monkeypatch.setenv("PRUNE_SWEEP_LEASE_WAIT", "0")
    with pytest.raises(LeaseHeld) as raised:
        store.write_trial(trial_row("t1", final_top1=0.5), epoch_rows(), layer_rows())
    assert re.fullmatch(rf"store {re.escape(location)}: cannot rewrite compacted trial t1: another compaction "
                        rf"\(held by elsewhere:99 since {CLOCK}, renewed \d+ s ago\) held the store for 0 s "
                        r"\(\$PRUNE_SWEEP_LEASE_WAIT\); run it again once that compaction has finished",
                        str(raised.value))
    assert snapshot(store) == before

    monkeypatch.setenv("PRUNE_SWEEP_LEASE_WAIT", "300")
    with ThreadPoolExecutor(1) as pool:
        writing = pool.submit(store.write_trial, trial_row("t1", final_top1=0.5), epoch_rows(), layer_rows())
        time.sleep(0.5)
        assert not writing.done()  # it cannot finish while the other holder keeps the lease
        other.release()
        writing.result(timeout=300)
    assert_once(location, ["t1", "t2"])
    assert ResultsStore(location).read("trials").set_index("trial_id").loc["t1", "final_top1"] == 0.5


# ----------------------------------------------------------------- on a local disk

@pytest.fixture
def location(tmp_path):
    return str(tmp_path / "results")


class LeaseChecks:
    """The checks above as tests, once: each backend runs them in a `Test...` subclass of its own, with its own
    `location` fixture (this module's local directory, test_store_s3.py's S3 server) and timings."""
    short_ttl: float  # of a lease that should go stale while the test waits
    heartbeat_ttl: float  # of a lease a heartbeat renews every ttl / 10

    def test_a_lease_is_acquired_renewed_taken_over_by_its_holder_and_released(self, location):
        check_lease_cycle(location)

    def test_stale_and_unreadable_leases_are_taken_over(self, location):
        check_takeover_of_stale_and_unreadable_leases(location, short_ttl=self.short_ttl)

    def test_a_heartbeat_renews_its_lease_and_sees_it_lost(self, location):
        check_heartbeat(location, ttl=self.heartbeat_ttl)

    def test_one_of_several_contenders_gets_a_lease(self, location):
        check_one_winner_among_contenders(location)

    def test_a_compaction_while_another_holds_the_lease_fails_and_changes_nothing(self, location):
        check_held_compaction_changes_nothing(location)

    def test_two_compactions_started_together_in_threads_compact_each_trial_once(self, location):
        check_compactions_started_together_in_threads(location)

    @pytest.mark.slow
    def test_two_compaction_commands_started_together_compact_each_trial_once(self, location):
        check_compactions_started_together_in_processes(location)

    def test_a_rewrite_of_a_compacted_trial_waits_for_a_running_compaction(self, location, monkeypatch):
        check_a_rewrite_waits_for_a_running_compaction(location, monkeypatch)


class TestLeasesOnALocalDisk(LeaseChecks):
    short_ttl = 0.3
    heartbeat_ttl = 1.0


def test_a_lease_takes_a_results_store_or_its_files_and_safe_names_only(location):
    store = ResultsStore(location)
    with acquire(store.files, "trial-abc") as lease:
        assert lease.holder == default_holder() and lease.ttl == 120.0
        assert holder_of(StoreFiles(location), "trial-abc").token == lease.token
    for name in ("", "../escape", ".hidden", "_leases", "a/b", "x" * 201):
        with pytest.raises(ValueError, match="lease name must be"):
            acquire(store, name)
    with pytest.raises(ValueError, match="lease ttl must be > 0 seconds, got 0"):
        acquire(store, "trial-abc", ttl=0)
    with pytest.raises(TypeError, match="expected a ResultsStore or StoreFiles, got 'results'"):
        acquire("results", "trial-abc")


def test_lease_settings_come_from_the_environment_and_are_checked(monkeypatch):
    assert (lease_ttl(), settle_delay()) == (120.0, 2.0)
    monkeypatch.setenv("PRUNE_SWEEP_LEASE_TTL", "30")
    monkeypatch.setenv("PRUNE_SWEEP_LEASE_SETTLE", "0")
    assert (lease_ttl(), settle_delay()) == (30.0, 0.0)
    for value in ("0", "-5", "soon", "inf"):
        monkeypatch.setenv("PRUNE_SWEEP_LEASE_TTL", value)
        with pytest.raises(ValueError, match=f"PRUNE_SWEEP_LEASE_TTL must be .*, got '{value}'"):
            lease_ttl()


def test_a_lease_describes_its_holder():
    noon = 1_780_000_000.0  # 2026-05-28 20:26:40 UTC
    info = LeaseInfo("compaction", "node-3:4242", "t0ken", noon, noon + 55, 120.0)
    assert info.describe(now=noon + 60) == "held by node-3:4242 since 20:26:40 UTC, renewed 5 s ago"
    assert info.fresh(now=noon + 174) and not info.fresh(now=noon + 175)
    assert info.describe(now=noon + 86_400) == ("held by node-3:4242 since 2026-05-28 20:26:40 UTC, renewed 86345 s "
                                                "ago, stale after 120 s")
    assert LeaseInfo.parse(info.to_bytes()) == info and LeaseInfo.parse(b'{"name": 1}') is None


def test_a_lease_whose_holder_process_on_this_host_is_gone_is_taken_over_at_once(tmp_path):
    """A killed sweep's rerun on the same machine must not wait out the ttl (120 s by default) for every trial."""
    import socket
    import subprocess

    from results_store import ResultsStore
    from results_store.lease import acquire, holder_of

    store = ResultsStore(tmp_path / "store")
    holder_process = subprocess.Popen(["sleep", "60"])
    holder = f"{socket.gethostname()}:{holder_process.pid} sweep other"
    lease = acquire(store, "trial-abc", holder=holder, ttl=120)
    assert lease is not None and holder_of(store, "trial-abc").holder == holder
    assert acquire(store, "trial-abc", holder="me", ttl=120) is None  # alive: held
    holder_process.kill()
    holder_process.wait()
    assert holder_of(store, "trial-abc") is None
    taken = acquire(store, "trial-abc", holder="me", ttl=120)
    assert taken is not None and holder_of(store, "trial-abc").holder == "me"
    other_host = acquire(store, "trial-def", holder="elsewhere.example:1 sweep x", ttl=120)
    assert other_host is not None and acquire(store, "trial-def", holder="me", ttl=120) is None  # not ours to judge
