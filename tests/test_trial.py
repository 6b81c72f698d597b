"""One trial through real Ray Tune: learning, resume after a failure, masks under training, IMP, divergence."""
import copy
from ray import tune

import pandas as pd
import pytest
import torch

from trainables import data
from trainables.models import build_model
from trainables.initial_prune import initial_model
from trainables.pruning import prune_model
from trainables.specs import DataSpec, ModelSpec, PruneSpec, TrainSpec, TrialSpec
from fault_injection import trial_failing_once
from trainables.checkpoints import TrialCheckpoints
from trainables.imp import imp_prune
from trainables.record import trial_row
from trainables.trial import run_trial


def digits_spec(algorithm="synflow", log10=0.0, epochs=5, seed=0, **train):
    levels = 2 if algorithm == "imp" else 0
    return TrialSpec(ModelSpec("mlp"), DataSpec("digits"), PruneSpec(algorithm, log10, levels=levels),
                     TrainSpec(**{"epochs": epochs, "lr": 0.1, "batch_size": 64, "weight_decay": 5e-4, **train}), seed=seed)


def fit(tmp_path, param_space, max_failures=0, name="t", trainable=run_trial):

    param_space = {"checkpoint_root": str(tmp_path / "checkpoints"), **param_space}
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=param_space,
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name=name, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=max_failures)),
    )
    return tuner.fit()


@pytest.mark.slow
def test_dense_mlp_reaches_90_percent_on_digits_through_ray_tune(ray_session, tmp_path):
    spec = digits_spec(epochs=20)
    store = tmp_path / "store"
    results = fit(tmp_path, {"spec": spec.to_dict(), "store": str(store), "sweep": "learn"})
    result = results[0]
    assert result.error is None
    assert result.metrics["epoch"] == 20
    assert result.metrics["top1"] >= 0.90
    trials = pd.read_parquet(store / "trials")
    assert trials.trial_id.tolist() == [spec.trial_id]
    assert trials.status.tolist() == ["completed"]
    assert trials.final_top1.iloc[0] == pytest.approx(result.metrics["top1"])
    epochs = pd.read_parquet(store / "epochs")
    assert epochs.epoch.tolist() == list(range(1, 21))
    layers = pd.read_parquet(store / "layers")
    assert layers.remaining.sum() == trials.remaining_params.iloc[0] == 17400


@pytest.mark.slow
def test_failed_trial_resumes_at_next_epoch_without_repruning_and_matches_an_uninterrupted_run(ray_session, tmp_path):
    spec = digits_spec(algorithm="snip", log10=1.0, epochs=6)
    marker = tmp_path / "failed-once"

    # Two runs of the same trial, one failing once after epoch 3: each in its own checkpoint root.
    results = [fit(tmp_path, {"spec": spec.to_dict(), "fail_marker": str(marker), "fail_after_epoch": after,
                              "checkpoint_root": str(tmp_path / f"checkpoints-{after}")},
                   max_failures=1, trainable=trial_failing_once, name=f"t{after}")[0] for after in (3, None)]
    resumed, clean = results
    assert marker.read_text() == "3"  # the failure really happened
    assert resumed.error is None and clean.error is None
    assert resumed.metrics["resumed_from_epoch"] == 3 and resumed.metrics["restarts"] == 1
    assert clean.metrics["resumed_from_epoch"] == 0 and clean.metrics["restarts"] == 0
    epochs_reported = resumed.metrics_dataframe["epoch"].tolist()
    assert epochs_reported[-3:] == [4, 5, 6] and epochs_reported.count(4) == 1
    # Every report, before and after the restart, carries the one prune's own timing: it never pruned again.
    assert resumed.metrics_dataframe["prune_seconds"].nunique() == 1
    for key in ("train_loss", "test_loss", "top1", "top5", "remaining_params"):
        assert resumed.metrics[key] == clean.metrics[key], key


@pytest.mark.slow
def test_imp_levels_are_checkpointed_and_resume_mid_level_with_identical_results(ray_session, tmp_path):

    spec = digits_spec(algorithm="imp", log10=1.0, epochs=2)
    marker = tmp_path / "failed-once"
    resumed, clean = [fit(tmp_path, {"spec": spec.to_dict(), "fail_marker": str(marker), "fail_in_phase": "imp level 2",
                                     "fail_after_epoch": after, "checkpoint_root": str(tmp_path / f"checkpoints-{after}")},
                          max_failures=1, trainable=trial_failing_once, name=f"t{after}")[0] for after in (1, None)]
    assert marker.read_text() == "1"  # failed after IMP's level 2, epoch 1: mid-pruning
    assert resumed.error is None and clean.error is None
    assert resumed.metrics["restarts"] == 1 and clean.metrics["restarts"] == 0
    imp_reports = resumed.metrics_dataframe.dropna(subset=["imp_level"])
    # level 1 epochs 1-2, level 2 epoch 1, then (after the restart) level 2 epoch 2 only: nothing redone
    assert list(zip(imp_reports.imp_level, imp_reports.imp_epoch)) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    for key in ("train_loss", "test_loss", "top1", "top5", "remaining_params"):
        assert resumed.metrics[key] == clean.metrics[key], key


@pytest.mark.slow
def test_masked_weights_stay_exactly_zero_through_momentum_and_weight_decay(ray_session, tmp_path):
    spec = digits_spec(algorithm="magnitude", log10=1.0, epochs=4, weight_decay=5e-3, momentum=0.9)
    result = fit(tmp_path, {"spec": spec.to_dict()})[0]
    assert result.error is None
    state = TrialCheckpoints(str(tmp_path / "checkpoints"), spec.trial_id).newest()  # after 3 epochs of training
    assert state["epoch"] == 3
    weights = state["trainer"]["model"]
    masks = state["trainer"]["masks"]
    nonzero = sum(int(torch.count_nonzero(weights[name])) for name in masks)
    assert nonzero == result.metrics["remaining_params"] == round(17400 / 10)
    # momentum buffers exist and are nonzero: the invariance is not vacuous
    assert any(float(s["momentum_buffer"].abs().sum()) > 0 for s in state["trainer"]["optimizer"]["state"].values())


@pytest.mark.slow
def test_prune_only_trial_of_data_free_algorithms_never_loads_the_dataset(ray_session, tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()

    specs = [TrialSpec(ModelSpec("vgg11_bn"), DataSpec("cifar100"), PruneSpec(alg, 1.0, iterations=2),
                       TrainSpec(epochs=0)).to_dict() for alg in ("synflow", "magnitude", "random")]
    results = fit(tmp_path, {"spec": tune.grid_search(specs), "data_dir": str(empty), "store": str(tmp_path / "store")})
    assert all(r.error is None for r in results)
    assert list(empty.iterdir()) == []
    trials = pd.read_parquet(tmp_path / "store" / "trials")
    assert sorted(trials.algorithm) == ["magnitude", "random", "synflow"]
    assert trials.final_top1.isna().all() and (trials.epochs == 0).all()
    assert (trials.remaining_params == (trials.prunable_params / 10).round()).all()


@pytest.mark.slow
def test_divergence_ends_the_trial_with_status_diverged(ray_session, tmp_path):
    spec = digits_spec(epochs=5, lr=1e30)
    result = fit(tmp_path, {"spec": spec.to_dict(), "store": str(tmp_path / "store")})[0]
    assert result.error is None
    assert result.metrics["status"] == "diverged"
    assert result.metrics["epoch"] < 5
    row = pd.read_parquet(tmp_path / "store" / "trials").iloc[0]
    assert row.status == "diverged" and "training loss became" in row.error


def test_imp_rewinds_surviving_weights_to_their_initial_values():
    spec = digits_spec(algorithm="imp", log10=1.0, epochs=2)
    model, info = initial_model(spec)
    initial = copy.deepcopy(model.state_dict())
    result = imp_prune(model, spec, info, "cpu")
    assert result.remaining_params == round(17400 / 10)
    after = model.state_dict()
    for name in result.masks.names:
        kept = result.masks.mask(name)
        assert torch.equal(after[name][kept], initial[name][kept]), name  # rewound, not trained values
        assert torch.count_nonzero(after[name][~kept]) == 0
    # The mask came from trained weights: it differs from magnitude pruning at initialization.
    at_init = prune_model(build_model("mlp", (1, 8, 8), 10, seed=0), "magnitude", 10.0, (1, 8, 8))
    assert any(not torch.equal(at_init.masks.mask(n), result.masks.mask(n)) for n in result.masks.names)
    assert result.prune_passes == 0  # magnitude scoring runs no network pass; the training is counted apart:
    assert result.trained_examples == 2 * 2 * len(data.load_tensors(DataSpec("digits"), "train")[1])
    # In the store: IMP's training in its own column, never counted as pruning passes; null for pruning at init.
    cpu = torch.device("cpu")
    row = trial_row({}, spec, result.summary(), [], "completed", 0.0, cpu, "fp32", 0.0, {"CPU": 1})
    assert (row["prune_passes"], row["imp_trained_examples"]) == (0, result.trained_examples)
    row = trial_row({}, digits_spec(algorithm="magnitude", log10=1.0), at_init.summary(), [], "completed", 0.0, cpu,
                    "fp32", 0.0, {"CPU": 1})
    assert row["imp_trained_examples"] is None


def test_every_algorithm_starts_from_the_same_initial_weights_at_one_seed():
    states = [initial_model(digits_spec(algorithm=a))[0].state_dict() for a in ("synflow", "snip", "random")]
    assert all(torch.equal(states[0][k], s[k]) for s in states[1:] for k in states[0])
    other_seed = initial_model(digits_spec(seed=1))[0].state_dict()
    assert any(not torch.equal(states[0][k], other_seed[k]) for k in other_seed)


@pytest.mark.parametrize("change,needle", [
    (lambda d: d["prune"].update(algorithm="snap"), "unknown algorithm 'snap'"),
    (lambda d: d["model"].update(name="vgg17"), "unknown model 'vgg17'"),
    (lambda d: d["train"].update(epochs=-3), r"epochs must be an integer in \[0, 10000\]"),
    (lambda d: d["prune"].update(log10_compression=-1), "log10_compression must be"),
])
def test_bad_trial_configs_raise_before_any_compute(change, needle):
    d = digits_spec().to_dict()
    change(d)
    with pytest.raises(ValueError, match=needle):
        TrialSpec.from_dict(d)
