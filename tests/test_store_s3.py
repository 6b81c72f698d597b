"""The store on an object store: a real S3 server (moto's) on this machine, reached through pyarrow's S3 client.

The store finds the server through AWS_ENDPOINT_URL (pyarrow honours it), as a sweep's workers would find a
private S3 endpoint; one test names it in the URI instead. Leases here use write-wait-verify, with a 1 s settle
delay instead of 2 s to keep the tests short.
"""
from __future__ import annotations

import logging
import uuid

import pyarrow.fs as pafs
import pytest

from results_store import ResultsStore
from test_store import epoch_rows, layer_rows, trial_row, write_trials
from test_store_content import check_has_trial_refuses_a_planted_copy, check_planted_copies
from test_store_leases import LeaseChecks, assert_once, snapshot

BUCKET = "prune-sweep-tests"
SETTLE = 1.0


@pytest.fixture(scope="module")
def s3_endpoint():
    """host:port of a moto S3 server with the bucket, and the environment that points AWS clients at it."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the dev extra: pip install -e .[dev]")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with pytest.MonkeyPatch.context() as env:
        for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                            ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_EC2_METADATA_DISABLED", "true")):
            env.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            env.delenv(name, raising=False)
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            env.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
            pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", region="us-east-1",
                              allow_bucket_creation=True).create_dir(BUCKET)
            yield f"{host}:{port}"
        finally:
            server.stop()


@pytest.fixture
def location(s3_endpoint, monkeypatch):
    """A fresh store prefix in the bucket (subprocesses inherit the environment)."""
    monkeypatch.setenv("PRUNE_SWEEP_LEASE_SETTLE", str(SETTLE))
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}/results"


def test_a_store_on_s3_writes_reads_and_knows_what_is_done(location):
    store = ResultsStore(location)
    assert not store.files.local
    store.check_writable()
    write_trials(store, ["t1", "t2"])
    store.write_trial(trial_row("t1", final_top1=0.5), epoch_rows(), layer_rows())  # a rewrite replaces it

    assert store.has_trial("t1") and store.has_trial("t2") and not store.has_trial("t3")
    assert store.per_trial_count() == 2
    assert sorted(snapshot(store)) == [f"{table}/{t}.parquet" for table in ("epochs", "layers", "trials")
                                       for t in ("t1", "t2")]  # one object a trial and table: no temp, no probe
    assert store.read("trials").set_index("trial_id").loc["t1", "final_top1"] == 0.5
    assert_once(location, ["t1", "t2"])

    report = store.compact()
    assert report.trials == 2 and store.per_trial_count() == 0
    assert sorted(name.rsplit("/", 1)[0] for name in snapshot(store)) == [
        "epochs/compacted", "layers/compacted", "trials/compacted"]  # and the lease is gone
    store.write_trial(trial_row("t2", final_top1=0.25), epoch_rows(), layer_rows())  # evicts t2 under the lease
    assert_once(location, ["t1", "t2"])
    assert ResultsStore(location).read("trials").set_index("trial_id").loc["t2", "final_top1"] == 0.25


def test_a_store_uri_may_name_its_endpoint(s3_endpoint, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    location = f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}/results?endpoint_override={s3_endpoint}&scheme=http"
    store = ResultsStore(location)
    write_trials(store, ["t1"])
    assert ResultsStore(location).finished_ids() == {"t1"}


class TestLeasesOnS3(LeaseChecks):
    short_ttl = SETTLE + 0.5
    heartbeat_ttl = 4.0


def test_a_trials_files_copied_under_another_trials_names_count_once_through_two_compactions(location):
    check_planted_copies(location)


def test_has_trial_refuses_a_planted_copy_and_moves_it_aside(location):
    check_has_trial_refuses_a_planted_copy(location)


@pytest.mark.slow
def test_a_sweep_on_s3_with_the_endpoint_in_the_uri_query_keeps_the_query_last_on_every_path(s3_endpoint, monkeypatch):
    """Before, `--storage-path s3://...?endpoint_override=...` had `/checkpoints` appended after the query."""
    import os
    import subprocess
    import sys

    from results_store import read_table

    monkeypatch.setenv("PRUNE_SWEEP_LEASE_SETTLE", "0.5")
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the query says where the server is
    prefix = f"{BUCKET}/{uuid.uuid4().hex[:12]}"
    query = f"?endpoint_override={s3_endpoint}&scheme=http"
    store, storage = f"s3://{prefix}/results{query}", f"s3://{prefix}/ray{query}"
    cmd = [sys.executable, "-m", "orchestrator.sweep", "--models", "mlp", "--algorithms", "magnitude",
           "--log10-compressions", "1", "--seeds", "0", "--epochs", "2", "--num-cpus", "2", "--keep-checkpoints",
           "--store", store, "--storage-path", storage]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"read_table('{store}', 'trials')" in done.stdout, done.stdout[-2000:]
    assert len(read_table(store, "trials")) == 1
    fs = pafs.S3FileSystem(endpoint_override=s3_endpoint, scheme="http", region="us-east-1")
    keys = [i.path for i in fs.get_file_info(pafs.FileSelector(prefix, recursive=True)) if i.type == pafs.FileType.File]
    checkpoints = [k for k in keys if k.startswith(f"{prefix}/ray/checkpoints/")]
    assert checkpoints and all(k.rsplit("/", 1)[1].startswith("state-") for k in checkpoints), keys
    assert not [k for k in keys if "endpoint_override" in k or "?" in k], keys
