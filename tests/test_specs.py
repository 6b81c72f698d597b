"""Trial descriptions: validation messages and ids that never drift."""
import pytest

from trainables.specs import DataSpec, ModelSpec, PruneSpec, TrainSpec, TrialSpec


def spec(**prune):
    return TrialSpec(ModelSpec("vgg16_bn"), DataSpec("cifar100"), PruneSpec(**{"algorithm": "synflow", **prune}),
                     TrainSpec(epochs=160, lr=0.1, weight_decay=1e-4, lr_drops=(60, 120)), seed=0)


def test_trial_ids_are_pinned():
    # If one of these changes, every existing store would re-run its trials: change ids only on purpose.
    assert spec(log10_compression=1.0).trial_id == PINNED["synflow_1"]
    assert spec(log10_compression=2.5, algorithm="snip").trial_id == PINNED["snip_2.5"]
    assert TrialSpec(ModelSpec("mlp"), DataSpec("digits"), PruneSpec("random", 0.0), seed=3).trial_id == PINNED["mlp"]


PINNED = {
    "synflow_1": "1cdea69a00460e5d",
    "snip_2.5": "4162eaedfe05a028",
    "mlp": "e85b44502476fa7f",
}


def test_id_ignores_spelling_and_resolves_defaults():
    assert spec(log10_compression=1).trial_id == spec(log10_compression=1.0000000001).trial_id
    assert spec(iterations=None).trial_id == spec(iterations=100).trial_id
    assert spec().prune.iterations == 100
    assert PruneSpec("snip").iterations == 1
    assert spec(log10_compression=1.0).trial_id != spec(log10_compression=1.25).trial_id


def test_round_trip_through_dict():
    s = spec(log10_compression=0.75, scope="local")
    assert TrialSpec.from_dict(s.to_dict()) == s
    assert TrialSpec.from_dict(s.to_dict()).trial_id == s.trial_id


@pytest.mark.parametrize("make,needle", [
    (lambda: ModelSpec("vgg17"), "unknown model 'vgg17'; valid models: "),
    (lambda: DataSpec("svhn"), "unknown dataset 'svhn'; valid datasets: "),
    (lambda: DataSpec("cifar10", num_classes=5), "only be set for dataset 'synthetic'"),
    (lambda: PruneSpec("snap"), "unknown algorithm 'snap'; valid algorithms: grasp, imp, magnitude, random, snip, synflow"),
    (lambda: PruneSpec("snip", -1), "log10_compression must be a finite number >= 0"),
    (lambda: PruneSpec("snip", iterations=0), "iterations must be >= 1, got 0"),
    (lambda: PruneSpec("snip", schedule="cosine"), "unknown schedule 'cosine'; valid schedules: exponential, linear"),
    (lambda: PruneSpec("snip", scope="layer"), "unknown scope 'layer'; valid scopes: global, local"),
    (lambda: PruneSpec("snip", mode="test"), "unknown prune mode 'test'; valid prune modes: eval, train"),
    (lambda: PruneSpec("imp"), "levels (imp) must be >= 1"),
    (lambda: PruneSpec("snip", levels=2), "levels is only for algorithm 'imp'"),
    (lambda: TrainSpec(epochs=-1), "epochs must be >= 0"),
    (lambda: TrainSpec(lr_drops=(120, 60)), "lr_drops must be increasing"),
    (lambda: TrainSpec(precision="fp8"), "unknown precision 'fp8'; valid precisions: auto, fp32, bf16"),
    (lambda: TrialSpec(ModelSpec("mlp"), DataSpec("digits"), PruneSpec("snip"), seed=-1), "seed must be an integer >= 0"),
])
def test_bad_descriptions_name_the_value_and_the_choices(make, needle):
    with pytest.raises(ValueError) as err:
        make()
    assert needle in str(err.value)
