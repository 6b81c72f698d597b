"""The project's own trial checkpoints: whole or absent, newest first, and never a way to run code."""
import os
import pickle

import pytest
import torch

from trainables.checkpoints import KEEP, TrialCheckpoints, rng_state, set_rng_state
from trainables.specs import DataSpec, ModelSpec, PruneSpec, TrainSpec, TrialSpec
from trainables.trial import run_trial


class Payload:
    """A pickle that runs a command when loaded without weights_only: what an attacker would plant."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(directory, step, marker):
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"state-{step:09d}.pt", "wb") as f:
        pickle.dump({"step": step, "phase": "training", "payload": Payload(marker)}, f)


def test_newest_whole_checkpoint_wins_and_only_the_newest_few_are_kept(tmp_path):
    checkpoints = TrialCheckpoints(str(tmp_path), "t1")
    for step in range(1, 5):
        checkpoints.save({"step": step, "phase": "training", "weights": torch.full((3,), float(step))})
    assert sorted(p.name for p in (tmp_path / "t1").iterdir()) == [f"state-{s:09d}.pt" for s in range(5 - KEEP, 5)]
    assert checkpoints.newest()["step"] == 4
    (tmp_path / "t1" / "state-000000004.pt").write_bytes(b"\x80\x02half a file")  # a write cut short elsewhere
    state = TrialCheckpoints(str(tmp_path), "t1").newest()
    assert state["step"] == 3 and torch.equal(state["weights"], torch.full((3,), 3.0))
    checkpoints.delete_all()
    assert not (tmp_path / "t1").exists() and TrialCheckpoints(str(tmp_path), "t1").newest() is None


def test_a_planted_pickle_payload_is_never_executed_and_the_one_before_is_used(tmp_path):
    checkpoints = TrialCheckpoints(str(tmp_path), "t1")
    checkpoints.save({"step": 1, "phase": "training", "weights": torch.ones(2)})
    marker = tmp_path / "pwned"
    plant(tmp_path / "t1", 2, marker)
    with pytest.raises(Exception):  # the control: unsafe loading would run it
        torch.load(tmp_path / "t1" / "state-000000002.pt", weights_only=True)
    state = checkpoints.newest()
    assert not marker.exists()
    assert state["step"] == 1 and "state-000000002.pt" in checkpoints.skipped[0]


def test_rng_state_round_trips_through_a_weights_only_load(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    saved = rng_state()
    checkpoints = TrialCheckpoints(str(tmp_path), "t")
    checkpoints.save({"step": 1, "rng": saved})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(checkpoints.newest()["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


@pytest.mark.slow
def test_a_trial_resuming_next_to_a_planted_payload_does_not_run_it_and_finishes(ray_session, tmp_path):
    from ray import tune

    spec = TrialSpec(ModelSpec("mlp"), DataSpec("digits"), PruneSpec("magnitude", 1.0),
                     TrainSpec(epochs=2, batch_size=64), seed=0)
    marker = tmp_path / "pwned"
    plant(tmp_path / "checkpoints" / spec.trial_id, 999, marker)
    tuner = tune.Tuner(tune.with_resources(run_trial, {"cpu": 1}),
                       param_space={"spec": spec.to_dict(), "checkpoint_root": str(tmp_path / "checkpoints"),
                                    "store": str(tmp_path / "store")},
                       run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name="p", verbose=0))
    result = tuner.fit()[0]
    assert result.error is None and result.metrics["status"] == "completed" and result.metrics["epoch"] == 2
    assert not marker.exists()
    assert result.metrics["restarts"] == 0  # the planted file was not taken for progress


@pytest.mark.slow
def test_a_deterministic_error_fails_the_trial_once_without_retries(ray_session, tmp_path):
    from ray import tune

    bad = TrialSpec(ModelSpec("mlp"), DataSpec("digits"), PruneSpec("magnitude", 1.0), TrainSpec(epochs=1)).to_dict()
    bad["prune"]["algorithm"] = "snap"  # past the plan's checks, as a hand-edited config would be
    tuner = tune.Tuner(tune.with_resources(run_trial, {"cpu": 1}),
                       param_space={"spec": bad, "checkpoint_root": str(tmp_path / "checkpoints")},
                       run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name="d", verbose=0,
                                                 failure_config=tune.FailureConfig(max_failures=3)))
    result = tuner.fit()[0]
    assert result.error is None and result.metrics["status"] == "failed"
    assert "unknown algorithm 'snap'" in result.metrics["error"]
    assert len(result.metrics_dataframe) == 1  # one attempt, one report: no retries
