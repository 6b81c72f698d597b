"""Trial descriptions: validation messages, and ids that never drift."""
import dataclasses
import hashlib

import pytest

from orchestrator.grid import PRESETS
from trainables.specs import DataSpec, ModelSpec, PruneSpec, TrainSpec, TrialSpec


def spec(**prune):
    return TrialSpec(ModelSpec("vgg16_bn"), DataSpec("cifar100"), PruneSpec(**{"algorithm": "synflow", **prune}),
                     TrainSpec(epochs=160, lr=0.1, weight_decay=1e-4, lr_drops=(60, 120)), seed=0)


# If one of these changes, every existing store re-runs its trials: change ids only on purpose.
PINNED = {
    "synflow_1": "a23871c890b15c16",
    "snip_2.5": "de1a27efb3c04a2e",
    "mlp": "673f7e44577046ab",
    "quickstart_first": "32da026f74b019e9",
    "shuffle": "26ced4ed61126a87",
}
# The quickstart's shared dense trials (mlp and conv, seeds 0 and 1; and mlp's reinit ones), which stand for every
# algorithm's 1x trial, and the sha256 of the shared grid's 118 sorted ids.
PINNED_DENSE = {("mlp", 0, "none"): "a3badd32e7f74114", ("mlp", 1, "none"): "9b5f99f3caf1a983",
                ("conv", 0, "none"): "38ba48216ff6f6e6", ("conv", 1, "none"): "c85ecca483cf6835",
                ("mlp", 0, "reinit"): "b8898456b4d8dac8", ("mlp", 1, "reinit"): "52b139d305177c6e"}
PINNED_QUICKSTART_SHARED = "4500ce12d0012b04"
# sha256 of the quickstart preset's 100 sorted trial ids, joined by commas (first 16 hex digits): the grid as it was
# before ablations joined it (its trials with ablation none), so a store written then is still "done".
PINNED_QUICKSTART = "2d0a14d23e40f89d"
# The defaults the ids leave out. Changing one would silently change what a stored id means.
PINNED_DEFAULTS = {
    DataSpec: {"input_shape": None, "num_classes": None, "size": None},
    PruneSpec: {"log10_compression": 0.0, "iterations": None, "schedule": "exponential", "scope": "global",
                "mode": "eval", "prune_bias": False, "prune_batchnorm": False, "prune_residual": False,
                "prune_layernorm": False, "prune_embedding": False, "examples_per_class": 10, "levels": 0,
                "ablation": "none"},
    TrainSpec: {"epochs": 0, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "lr_drops": (),
                "lr_drop_factor": 0.1, "precision": "auto", "optimizer": "sgd", "lr_schedule": "multistep",
                "warmup_epochs": 0},
    TrialSpec: {"seed": 0},
}


def test_trial_ids_are_pinned():
    assert spec(log10_compression=1.0).trial_id == PINNED["synflow_1"]
    assert spec(log10_compression=2.5, algorithm="snip").trial_id == PINNED["snip_2.5"]
    assert TrialSpec(ModelSpec("mlp"), DataSpec("digits"), PruneSpec("random", 0.0), seed=3).trial_id == PINNED["mlp"]
    assert spec(log10_compression=1.0, ablation="shuffle").trial_id == PINNED["shuffle"]
    # Each trial with its own description: the grid as stores written before dense trials were shared hold it.
    quickstart = PRESETS["quickstart"].own_trials()
    assert quickstart[0].trial_id == PINNED["quickstart_first"]
    ids = sorted(t.trial_id for t in quickstart if t.prune.ablation == "none")
    assert len(ids) == 100 and len(quickstart) == 140  # + synflow's 4 ablations on mlp
    assert hashlib.sha256(",".join(ids).encode()).hexdigest()[:16] == PINNED_QUICKSTART


def test_shared_dense_ids_are_pinned_and_stand_for_every_algorithms_1x_trial():
    shared = PRESETS["quickstart"].trials()
    dense = {(t.model.name, t.seed, t.prune.ablation): t.trial_id for t in shared if t.prune.algorithm == "dense"}
    assert dense == PINNED_DENSE
    assert len(shared) == 140 - 22  # 22 of the 28 1x trials were the same 6 networks
    assert hashlib.sha256(",".join(sorted(t.trial_id for t in shared)).encode()).hexdigest()[:16] \
        == PINNED_QUICKSTART_SHARED
    # The trials above 1x keep their ids: they are the own grid's.
    own = {t.trial_id for t in PRESETS["quickstart"].own_trials() if t.prune.log10_compression > 0}
    assert own == {t.trial_id for t in shared if t.prune.algorithm != "dense"}
    # Every 1x trial of a prune-at-init algorithm maps to its network's dense trial; reinit to a reinit one.
    members = PRESETS["quickstart"].shared_dense_members()
    assert sorted(len(m) for m in members.values()) == [1, 1, 5, 5, 5 + 3, 5 + 3]  # conv; mlp + 3 ablations
    one_x = {t.trial_id: t for t in PRESETS["quickstart"].own_trials() if t.prune.log10_compression == 0}
    for dense_id, ids in members.items():
        networks = {(one_x[i].model.name, one_x[i].seed, one_x[i].prune.ablation == "reinit") for i in ids}
        assert len(networks) == 1
    imp = TrialSpec(ModelSpec("mlp"), DataSpec("digits"), PruneSpec("imp", 0.0, levels=2), seed=0)
    assert imp.shared_dense() is None  # imp trains before it cuts: its 1x trial is its own


def test_dense_is_only_unpruned_and_only_under_ablations_that_can_change_it():
    with pytest.raises(ValueError, match="algorithm 'dense' trains the network unpruned, at log10 compression 0; got 1"):
        PruneSpec("dense", 1.0)
    with pytest.raises(ValueError, match="ablation 'shuffle' cannot change an unpruned network; valid for dense: "
                                         "none, reinit"):
        PruneSpec("dense", 0.0, ablation="shuffle")


def test_defaults_left_out_of_the_id_never_change():
    for cls, pinned in PINNED_DEFAULTS.items():
        defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
        assert defaults == pinned, cls.__name__
    assert TrialSpec.__dataclass_fields__["train"].default_factory() == TrainSpec()


def test_a_new_field_with_a_default_leaves_the_id_unchanged():
    # The next feature adds a field to a spec: stored trials must keep their ids. The fields added here must be new
    # (adding one a spec already has, as `ablation` once was, would test nothing).
    assert "score_noise" not in {f.name for f in dataclasses.fields(PruneSpec)}
    assert "label_smoothing" not in {f.name for f in dataclasses.fields(TrainSpec)}
    NoisyPrune = dataclasses.make_dataclass("PruneSpec", [("score_noise", float, dataclasses.field(default=0.0))],
                                            bases=(PruneSpec,), frozen=True)
    SmoothTrain = dataclasses.make_dataclass("TrainSpec", [("label_smoothing", float, dataclasses.field(default=0.0))],
                                             bases=(TrainSpec,), frozen=True)
    before = spec(log10_compression=1.0)
    after = dataclasses.replace(before, prune=NoisyPrune("synflow", 1.0),
                                train=SmoothTrain(epochs=160, lr=0.1, weight_decay=1e-4, lr_drops=(60, 120)))
    assert "score_noise" in after.prune.__dataclass_fields__ and "label_smoothing" in after.train.__dataclass_fields__
    assert after.trial_id == before.trial_id == PINNED["synflow_1"]
    # ... and a non-default value of either is a different trial.
    assert dataclasses.replace(after, prune=NoisyPrune("synflow", 1.0, score_noise=0.1)).trial_id != before.trial_id
    smoothed = SmoothTrain(epochs=160, lr=0.1, weight_decay=1e-4, lr_drops=(60, 120), label_smoothing=0.1)
    assert dataclasses.replace(after, train=smoothed).trial_id != before.trial_id


def test_id_ignores_spelling_and_resolves_defaults():
    assert spec(log10_compression=1).trial_id == spec(log10_compression=1.0000000001).trial_id
    assert spec(iterations=None).trial_id == spec(iterations=100).trial_id
    assert spec().prune.iterations == 100
    assert PruneSpec("snip").iterations == 1
    assert spec(log10_compression=1.0).trial_id != spec(log10_compression=1.25).trial_id
    assert TrainSpec(lr=1).lr == 1.0 and isinstance(TrainSpec(lr=1).lr, float)
    same = TrialSpec(ModelSpec("mlp"), DataSpec("digits"), PruneSpec("snip"), TrainSpec(epochs=2, lr=1))
    assert same.trial_id == dataclasses.replace(same, train=TrainSpec(epochs=2, lr=1.0)).trial_id


def test_auto_precision_is_outside_the_id_and_an_explicit_one_inside():
    auto = spec(log10_compression=1.0)
    assert "precision" not in auto.canonical_json()
    fp32 = dataclasses.replace(auto, train=dataclasses.replace(auto.train, precision="fp32"))
    assert fp32.trial_id != auto.trial_id and '"precision":"fp32"' in fp32.canonical_json()


def test_round_trip_through_dict():
    s = spec(log10_compression=0.75, scope="local")
    assert TrialSpec.from_dict(s.to_dict()) == s
    assert TrialSpec.from_dict(s.to_dict()).trial_id == s.trial_id
    assert TrialSpec.from_dict(s.identity()) == s  # the id's own form rebuilds the same description


@pytest.mark.parametrize("make,needle", [
    (lambda: ModelSpec("vgg17"), "unknown model 'vgg17' (did you mean 'vgg19'?); valid models: "),
    (lambda: DataSpec("svhn"), "unknown dataset 'svhn'; valid datasets: "),
    (lambda: DataSpec("cifar10", num_classes=5), "only be set for dataset 'synthetic'"),
    (lambda: DataSpec("synthetic", input_shape=(3, 10**6, 32)), "input_shape entry must be an integer in [1, 4096]"),
    (lambda: DataSpec("synthetic", size=10**12), "size must be an integer in [1, 1e+07]"),
    (lambda: PruneSpec("snap"), "unknown algorithm 'snap' (did you mean 'snip'?); valid algorithms: dense, force, grasp, grasp_abs, imp, magnitude, ntk_sap, prospr, px, random, snip, synflow, synflow_l2; your own algorithm is loaded with --plugins MODULE"),
    (lambda: PruneSpec("snip", -1), "log10_compression must be a finite number in [0, 12]"),
    (lambda: PruneSpec("snip", 1e308), "log10_compression must be a finite number in [0, 12]"),
    (lambda: PruneSpec("snip", float("nan")), "log10_compression must be a finite number in [0, 12]"),
    (lambda: PruneSpec("snip", iterations=0), "iterations must be an integer in [1, 10000], got 0"),
    (lambda: PruneSpec("snip", iterations=99999999999), "iterations must be an integer in [1, 10000]"),
    (lambda: PruneSpec("snip", schedule="cosine"), "unknown schedule 'cosine'; valid schedules: exponential, linear"),
    (lambda: PruneSpec("snip", scope="layer"), "unknown scope 'layer'; valid scopes: global, local"),
    (lambda: PruneSpec("snip", mode="test"), "unknown prune mode 'test'; valid prune modes: eval, train"),
    (lambda: PruneSpec("imp"), "levels (imp) must be an integer in [1, 100]"),
    (lambda: PruneSpec("snip", levels=2), "levels is only for algorithm 'imp'"),
    (lambda: TrainSpec(epochs=-1), "epochs must be an integer in [0, 10000]"),
    (lambda: TrainSpec(lr=float("inf")), "lr must be a finite number"),
    (lambda: TrainSpec(momentum=3), "momentum must be a finite number in [0, 1]"),
    (lambda: TrainSpec(lr_drops=(120, 60)), "lr_drops must be increasing"),
    (lambda: TrainSpec(precision="fp8"), "unknown precision 'fp8'; valid precisions: auto, fp32, bf16"),
    (lambda: TrialSpec(ModelSpec("mlp"), DataSpec("digits"), PruneSpec("snip"), seed=-1), "seed must be an integer in [0, "),
    (lambda: TrialSpec(ModelSpec("mlp"), DataSpec("digits"), PruneSpec("snip"), seed=2**32), "seed must be an integer in [0, 4.29497e+09]"),
])
def test_bad_descriptions_name_the_value_and_the_choices(make, needle):
    with pytest.raises(ValueError) as err:
        make()
    assert needle in str(err.value)
