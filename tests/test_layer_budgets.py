"""Layer budgets (global, local, erk, er) cut any scorer to exact per-layer counts; data-free plugins need no pass count."""
import pytest
import torch
from torch import nn

from orchestrator.grid import PRESETS, with_overrides
from trainables.pruning import scorer
from trainables.pruning.budgets import layer_shares
from trainables.pruning.loop import prune_model
from trainables.pruning.scores import SCORERS

INPUT = (1, 4, 4)


def small_net() -> nn.Module:
    """conv 4x1x3x3 (36 weights) -> 4x2x2 -> linear 16->8 (128) -> linear 8->2 (16): 180 prunable weights."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(16, 8), nn.ReLU(),
                         nn.Linear(8, 2))


# Worked by hand (see the docstring of `layer_shares` for the rule):
# ERK ratios r = sum(dims)/prod(dims): conv 11/36, fc1 24/128, fc2 10/16; r*n = 11, 24, 10.
#   keep 60 (3x): eps = 60/45; quotas 14.67, 32, 13.33 -> 14, 32, 13 (+1 to the largest remainder, conv) = 15, 32, 13
#   keep 90 (2x): eps = 2 puts fc2 at density 1.25 > 1 -> fc2 dense (16); 74 left over r*n 11 + 24:
#                 quotas 23.26, 50.74 -> 23, 51
# ER ratios r = (c_out + c_in)/(c_out c_in), kernel ignored: conv 5/4, fc1 24/128, fc2 10/16; r*n = 45, 24, 10.
#   keep 60: quotas 34.18, 18.23, 7.59 -> 34, 18, 8
#   keep 90: eps = 90/79 puts conv at 1.42 > 1 -> conv dense (36); 54 left over 24 + 10: 38.12, 15.88 -> 38, 16
HAND = {("erk", 3): [15, 32, 13], ("erk", 2): [23, 51, 16], ("er", 3): [34, 18, 8], ("er", 2): [36, 38, 16],
        ("local", 3): [12, 43, 5], ("local", 2): [18, 64, 8]}


@pytest.mark.parametrize("budget,compression", sorted(HAND))
def test_random_under_a_layer_budget_keeps_the_hand_computed_count_in_every_layer(budget, compression):
    model = small_net()
    result = prune_model(model, "random", compression, INPUT, scope=budget, seed=3)
    assert [s.remaining for s in result.layers] == HAND[(budget, compression)]
    assert result.remaining_params == round(180 / compression)
    for stat in result.layers:  # the mask is applied: exactly the kept weights are non-zero
        assert int((model.get_parameter(stat.param) != 0).sum()) == stat.remaining


def test_layer_shares_sum_exactly_and_never_exceed_a_layer_on_real_shapes():
    shapes = [(64, 3, 3, 3), (64, 64, 3, 3), (128, 64, 3, 3), (256, 128, 3, 3), (512, 256, 3, 3), (10, 512), (64,)]
    sizes = [int(torch.tensor(s).prod()) for s in shapes]
    for budget in ("local", "erk", "er"):
        for keep in (1, 17, sum(sizes) // 1000, sum(sizes) // 10, sum(sizes) // 2, sum(sizes) - 1, sum(sizes)):
            shares = layer_shares(keep, shapes, budget)
            assert sum(shares) == keep
            assert all(0 <= s <= n for s, n in zip(shares, sizes))
    erk = layer_shares(sum(sizes) // 10, shapes, "erk")
    assert erk[-1] == 64 and erk[0] == sizes[0]  # a bias and the small first conv stay dense under ERK at 10x
    assert erk[4] / sizes[4] < erk[1] / sizes[1]  # the widest layer keeps the lowest density


@pytest.mark.parametrize("budget", ["erk", "er"])
def test_a_scorer_picks_within_each_layers_budget_over_several_rounds(budget):
    one_shot = prune_model(small_net(), "magnitude", 3, INPUT, scope=budget)
    model = small_net()
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    iterative = prune_model(model, "magnitude", 3, INPUT, scope=budget, iterations=5)
    assert [s.remaining for s in iterative.layers] == HAND[(budget, 3)]
    for stat in one_shot.layers:  # magnitude within the budget: each layer's largest |w|, whatever the rounds
        w = weights[stat.param].abs().flatten()
        top = torch.zeros_like(w, dtype=torch.bool)
        top[w.argsort(descending=True, stable=True)[:stat.remaining]] = True
        assert torch.equal(one_shot.masks.mask(stat.param).flatten(), top)
        assert torch.equal(iterative.masks.mask(stat.param).flatten(), top)


def test_budgets_cross_every_algorithm_of_a_preset_into_its_own_trials():
    sweep = with_overrides(PRESETS["fig1"], algorithms="random,synflow", budgets="global,erk,er",
                           log10_compressions="1", seeds="0")
    assert sorted((t.prune.algorithm, t.prune.scope) for t in sweep.trials()) == [
        (a, b) for a in ("random", "synflow") for b in ("er", "erk", "global")]
    with pytest.raises(ValueError, match="'erx'.*global, local, erk, er"):
        with_overrides(PRESETS["fig1"], budgets="erx")


@pytest.fixture
def forget_test_scorers():
    """Registrations made in this process are taken out again, so the registries stay the built-in ones."""
    from trainables.pruning.algorithms import ALGORITHMS

    before = set(SCORERS.names())
    yield
    for name in set(SCORERS.names()) - before:
        SCORERS._entries.pop(name)
        ALGORITHMS._entries.pop(name, None)


def test_a_data_free_plugin_needs_no_pass_count_and_its_passes_are_counted(forget_test_scorers):
    @scorer("ones_through_network_test", needs_data=False)
    def ones_through_network(model, batches, inputs):
        model.zero_grad()
        out = model(torch.ones((1, *inputs.input_shape))).sum()
        grads = torch.autograd.grad(out, [model.get_parameter(n) for n in inputs.names])
        return {n: g.abs() for n, g in zip(inputs.names, grads)}

    assert SCORERS["ones_through_network_test"].passes_per_example is None
    result = prune_model(small_net(), "ones_through_network_test", 4, INPUT, iterations=3)
    assert result.remaining_params == 45 and result.prune_passes == 3  # one all-ones example per round
    with pytest.raises(TypeError, match="needs data.*passes_per_example"):
        scorer("needs_data_without_passes_test", needs_data=True)(lambda model, batches, inputs: {})
