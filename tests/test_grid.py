"""Sweep grids: presets, axis parsing, overrides, recipes and resources."""
import dataclasses

import pytest

from orchestrator.grid import PRESETS, AlgorithmVariant, parse_compressions, parse_seeds, with_overrides
from orchestrator.resources import ResourcePolicy, trial_resources
from trainables.recipes import paper_recipe


def test_preset_sizes():
    sizes = {name: len(PRESETS[name].own_trials()) for name in PRESETS.names()}
    assert sizes == {"quickstart": 100 + 4 * 5 * 2, "fig1": 5 * 13 * 3, "fig6": 12 * 5 * 13 * 3,
                     "layer-collapse": 5 * 25 * 3, "iterative-snip": 4 * 13 * 3, "train-mode": 4 * 13 * 3,
                     "sanity-checks": 2 * 5 * 5 * 13 * 3, "effective-sparsity": 11 * 25 * 3, "iterative": 6 * 13 * 3,
                     "baselines-2024": 2 * 15 * 11 * 3, "imagenet": 5 * 13 * 3}
    # What runs: at 1x one dense trial per (pair, seed), and one reinit dense trial where reinit is in the grid.
    shared = {name: len(PRESETS[name].trials()) for name in PRESETS.names()}
    assert shared == {"quickstart": 140 - 28 + 2 * 2 + 2, "fig1": 195 - 5 * 3 + 3, "fig6": 2340 - 12 * 5 * 3 + 12 * 3,
                      "layer-collapse": 375 - 15 + 3, "iterative-snip": 156 - 12 + 3, "train-mode": 156 - 12 + 3,
                      "sanity-checks": 1950 - 2 * 25 * 3 + 2 * 2 * 3, "effective-sparsity": 825 - 33 + 3,
                      "iterative": 234 - 18 + 3,
                      # imp's 1x trials are its own (it trains before it cuts); the 14 other variants share one
                      "baselines-2024": 990 - 2 * 15 * 3 + 2 * 3 + 2 * 3, "imagenet": 195 - 5 * 3 + 3}


def test_research_presets_hold_the_asked_grids():
    sanity = PRESETS["sanity-checks"].own_trials()
    assert {(t.model.name, t.data.name) for t in sanity} == {("vgg16_bn", "cifar100"), ("resnet20", "cifar10")}
    assert {(t.prune.algorithm, t.prune.ablation) for t in sanity} == {
        (a, b) for a in ("synflow", "snip", "grasp", "magnitude", "random")
        for b in ("none", "shuffle", "reinit", "invert", "layerwise_random")}
    effective = PRESETS["effective-sparsity"].own_trials()
    assert {t.train.epochs for t in effective} == {0} and max(t.prune.log10_compression for t in effective) == 6.0
    iterative = {(t.prune.algorithm, t.prune.iterations) for t in PRESETS["iterative"].own_trials()}
    assert iterative == {("snip", 1), ("snip", 10), ("snip", 100), ("force", 10), ("force", 100), ("synflow", 100)}
    quick = PRESETS["quickstart"].own_trials()
    ablated = [t for t in quick if t.prune.ablation != "none"]
    assert {(t.model.name, t.prune.algorithm) for t in ablated} == {("mlp", "synflow")}
    assert {t.train for t in quick} == {quick[0].train}


def test_ablations_axis_crosses_every_algorithm_and_leaves_imp_unablated():
    sweep = with_overrides(PRESETS["fig1"], algorithms="synflow,imp", ablations="none,shuffle,invert")
    pairs = {(v.algorithm, v.ablation) for v in sweep.algorithms}
    assert pairs == {("synflow", "none"), ("synflow", "shuffle"), ("synflow", "invert"), ("imp", "none")}
    # Overrides reach every grid of a preset; the trials the grids then share run once.
    quick = with_overrides(PRESETS["quickstart"], ablations="reinit", seeds="0")
    assert {t.prune.ablation for t in quick.own_trials()} == {"reinit"} and len(quick.own_trials()) == 2 * 5 * 5
    assert len(quick.trials()) == 2 * 5 * 4 + 2  # at 1x: one reinit dense trial per model
    with pytest.raises(ValueError, match="unknown ablation 'flip'; valid ablations: none, shuffle, reinit"):
        with_overrides(PRESETS["fig1"], ablations="none,flip")
    with pytest.raises(ValueError, match="apply to pruning at initialization, not to imp"):
        with_overrides(PRESETS["fig1"], algorithms="imp", ablations="shuffle")


def test_fig6_uses_each_pairs_paper_recipe():
    trials = PRESETS["fig6"].trials()
    by_pair = {(t.model.name, t.data.name): t.train for t in trials}
    assert by_pair[("vgg16_bn", "cifar100")] == paper_recipe("vgg16_bn", "cifar100")
    assert (by_pair[("resnet18", "cifar10")].lr, by_pair[("resnet18", "cifar10")].lr_drop_factor,
            by_pair[("resnet18", "cifar10")].weight_decay) == (0.01, 0.2, 5e-4)
    assert by_pair[("vgg11_bn", "tiny_imagenet")].lr_drops == (30, 60, 80)
    assert by_pair[("wide_resnet18", "tiny_imagenet")].epochs == 100
    assert {t.prune.iterations for t in trials if t.prune.algorithm == "synflow"} == {100}


def test_layer_collapse_is_prune_only_to_1e6_and_variants_are_distinct_trials():
    trials = PRESETS["layer-collapse"].own_trials()
    assert {t.train.epochs for t in trials} == {0} and max(t.prune.log10_compression for t in trials) == 6.0
    snip = [t for t in PRESETS["iterative-snip"].own_trials() if t.prune.algorithm == "snip"]
    assert sorted({t.prune.iterations for t in snip}) == [1, 10, 100]
    modes = {(t.prune.algorithm, t.prune.mode) for t in PRESETS["train-mode"].own_trials()}
    assert modes == {("snip", "eval"), ("snip", "train"), ("grasp", "eval"), ("grasp", "train")}


def test_axis_parsing():
    assert parse_compressions("0:3:0.25") == tuple(i * 0.25 for i in range(13))
    assert parse_compressions("0,0.5,1") == (0.0, 0.5, 1.0)
    assert parse_seeds("0:2") == (0, 1, 2) and parse_seeds("4,7") == (4, 7) and parse_seeds("0:10:5") == (0, 5, 10)
    # One range rule on every axis: start:stop[:step], both ends included, step 1 if left out.
    assert parse_compressions("0:3") == (0.0, 1.0, 2.0, 3.0) and parse_seeds("2:2") == (2,)
    for bad in ("0:3:4:5", "1:0:0.5", "0:1:0", "x"):
        with pytest.raises(ValueError, match="bad log10 compressions"):
            parse_compressions(bad)


def test_the_built_in_names_known_without_torch_are_the_registries_names():
    from common.vocabulary import BUILTIN_ALGORITHMS, BUILTIN_DATASETS, BUILTIN_MODELS
    from trainables.data import DATASETS
    from trainables.models import MODELS
    from trainables.pruning.algorithms import ALGORITHMS

    assert list(BUILTIN_MODELS) == MODELS.names() and list(BUILTIN_DATASETS) == DATASETS.names()
    assert list(BUILTIN_ALGORITHMS) == ALGORITHMS.names()


def test_overrides_replace_axes_and_shorten_recipes_in_proportion():
    s = with_overrides(PRESETS["fig1"], algorithms="snip,imp", seeds="0", log10_compressions="1", epochs=16, levels=2)
    trials = s.trials()
    assert [(t.prune.algorithm, t.prune.levels) for t in trials] == [("snip", 0), ("imp", 2)]
    assert trials[0].train.epochs == 16 and trials[0].train.lr_drops == (6, 12)
    assert with_overrides(PRESETS["quickstart"], iterations=5).own_trials()[0].prune.iterations == 5
    # The same trial in two sweeps has one id: a second sweep skips it.
    assert {t.trial_id for t in with_overrides(PRESETS["fig6"], models="vgg16_bn", datasets="cifar100").trials()} \
        == {t.trial_id for t in PRESETS["fig1"].trials()}


def test_bad_axis_values_name_the_value():
    with pytest.raises(ValueError, match="unknown model 'vgg17'"):
        with_overrides(PRESETS["fig1"], models="vgg17")
    with pytest.raises(ValueError, match="unknown algorithm 'snap'"):
        AlgorithmVariant("snap")
    # A pair the paper trains no network on gets the fallback recipe, and the plan says so.
    from orchestrator.grid import FALLBACK_RECIPE
    unusual = with_overrides(PRESETS["fig1"], models="mlp", datasets="cifar10", epochs=16)
    assert unusual.trials()[0].train == dataclasses.replace(FALLBACK_RECIPE, epochs=16, lr_drops=(6, 12))
    assert "has none for this pair" in unusual.recipe_source("mlp", "cifar10")
    assert unusual.recipe_source("vgg16_bn", "cifar100") == "the paper's recipe"
    assert with_overrides(PRESETS["layer-collapse"], models="resnet20").trials()[0].train.epochs == 0


def test_resources_are_sized_to_model_and_data_and_drop_gpus_without_them():
    trials = {(t.model.name, t.data.name): t for t in PRESETS["fig6"].trials()}
    gpu = ResourcePolicy(cluster_has_gpus=True)
    assert trial_resources(trials[("vgg16_bn", "cifar10")], gpu) == {"CPU": 1.0, "GPU": 0.25}
    assert trial_resources(trials[("resnet18", "tiny_imagenet")], gpu) == {"CPU": 1.0, "GPU": 0.5}
    assert trial_resources(trials[("wide_resnet18", "tiny_imagenet")], gpu) == {"CPU": 1.0, "GPU": 1.0}
    assert trial_resources(trials[("vgg16_bn", "cifar10")], ResourcePolicy()) == {"CPU": 1.0}
    override = ResourcePolicy(cluster_has_gpus=True, gpus_per_trial=0.5, cpus_per_trial=4)
    assert trial_resources(trials[("vgg16_bn", "cifar10")], override) == {"CPU": 4, "GPU": 0.5}
    imagenet = with_overrides(PRESETS["quickstart"], models="imagenet_resnet50", datasets="imagenet").trials()[0]
    assert trial_resources(imagenet, gpu) == {"CPU": 8.0, "GPU": 1.0}


def test_baselines_2024_holds_every_builtin_algorithm_erk_and_er_random_and_ntk_saps_densities():
    from common.vocabulary import BUILTIN_ALGORITHMS

    own = PRESETS["baselines-2024"].own_trials()
    assert {(t.model.name, t.data.name) for t in own} == {("vgg16_bn", "cifar100"), ("resnet20", "cifar10")}
    variants = {(t.prune.algorithm, t.prune.iterations, t.prune.scope) for t in own}
    assert {a for a, _, _ in variants} == set(BUILTIN_ALGORITHMS) - {"dense"}
    assert {("snip", 100, "global"), ("random", 1, "erk"), ("random", 1, "er")} <= variants
    densities = sorted({round(10 ** -t.prune.log10_compression, 4) for t in own})
    assert densities == [0.0115, 0.018, 0.0281, 0.044, 0.0687, 0.1074, 0.1678, 0.2621, 0.4096, 0.64, 1.0]
    assert {t.seed for t in own} == {0, 1, 2}
