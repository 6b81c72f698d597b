"""Sanity-check ablations, effective (on-path) weights, FORCE and |GraSP|: each checked against an independent count."""
import itertools
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainables import prune_one
from trainables.initial_prune import initial_model, prune_at_init, scoring_batches
from trainables.models import build_model
from trainables.pruning import Masks, keep_top, prunable_parameters, prune_model
from trainables.pruning.ablations import ablation_seed
from trainables.pruning.effective import effective_remaining
from trainables.pruning.scores import SCORERS, ScoreInputs, force_scores
from trainables.specs import DataSpec, ModelSpec, PruneSpec, TrialSpec

DIGITS = (1, 8, 8)


def digits_trial(algorithm="magnitude", log10=1.0, ablation="none", model="mlp", **prune):
    spec = TrialSpec(ModelSpec(model), DataSpec("digits"), PruneSpec(algorithm, log10, ablation=ablation, **prune),
                     seed=4)
    net, info = initial_model(spec)
    initial = {n: p.detach().clone() for n, p in net.named_parameters()}
    return net, prune_at_init(net, spec, info, "cpu"), initial


def masks_of(result):
    return {n: result.masks.mask(n).clone() for n in result.masks.names}


def synthetic(classes=10, per_class=3, shape=DIGITS, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn((classes * per_class, *shape), generator=g), torch.arange(classes).repeat_interleave(per_class))]


# ---------------------------------------------------------------- ablations

def test_shuffle_keeps_every_layers_count_moves_the_positions_and_keeps_initial_weights():
    _, none, _ = digits_trial()
    net, shuffled, initial = digits_trial(ablation="shuffle")
    assert [s.remaining for s in shuffled.layers] == [s.remaining for s in none.layers]
    for name, mask in masks_of(shuffled).items():
        before = none.masks.mask(name)
        assert int(mask.sum()) == int(before.sum())
        assert not torch.equal(mask, before)
        weight = dict(net.named_parameters())[name].detach()
        assert torch.equal(weight[mask], initial[name][mask])  # kept positions hold the network's own initial weights
        assert int((weight[~mask] != 0).sum()) == 0
    assert shuffled.remaining_params == none.remaining_params


def test_reinit_keeps_the_mask_and_redraws_the_weights_from_another_seed():
    _, none, _ = digits_trial()
    net, reinit, initial = digits_trial(ablation="reinit")
    fresh = dict(build_model("mlp", DIGITS, 10, seed=ablation_seed(4, "reinit")).named_parameters())
    assert ablation_seed(4, "reinit") != 4
    for name, mask in masks_of(reinit).items():
        assert torch.equal(mask, none.masks.mask(name))
        weight = dict(net.named_parameters())[name].detach()
        assert torch.equal(weight[mask], fresh[name].detach()[mask])
        assert not torch.equal(weight[mask], initial[name][mask])


@pytest.mark.parametrize("algorithm", ["magnitude", "snip"])
def test_invert_at_half_the_weights_is_the_exact_complement_of_none(algorithm):
    _, none, _ = digits_trial(algorithm, log10=0.30102999566398120)  # compression 2: keeps 8,700 of 17,400
    _, inverted, _ = digits_trial(algorithm, log10=0.30102999566398120, ablation="invert")
    assert none.prunable_params == 17_400 and none.remaining_params == inverted.remaining_params == 8_700
    kept = torch.cat([none.masks.mask(n).flatten() for n in none.masks.names])
    kept_inverted = torch.cat([inverted.masks.mask(n).flatten() for n in inverted.masks.names])
    overlap = int((kept & kept_inverted).sum())
    if algorithm == "magnitude":  # continuous scores: no ties at all
        assert overlap == 0 and bool((kept | kept_inverted).all())
        return
    # SNIP: only scores tied at the cut (zero gradients tie at 0) may fall on both sides. Count them in the scores the
    # pruner ranked, recomputed here: of the c scores equal to the lowest kept one, `none` keeps 8,700 - (those
    # above) and `invert` keeps 8,700 - (those below); the two can share at most the smaller of these.
    scores = snip_scores_of_digits_trial()
    assert torch.equal(keep_top(scores, 8_700), kept)  # these are the scores the pruner ranked
    cut = scores[kept].min()
    tied, above, below = int((scores == cut).sum()), int((scores > cut).sum()), int((scores < cut).sum())
    shared_at_most = max(0, min(8_700 - above, 8_700 - below))
    assert overlap <= shared_at_most <= tied, (overlap, shared_at_most, tied)  # here 0: no tie at the cut


def snip_scores_of_digits_trial():
    """The SNIP scores `digits_trial` prunes by, flat in forward order: the same network, examples and scorer."""
    spec = TrialSpec(ModelSpec("mlp"), DataSpec("digits"), PruneSpec("snip", 0.30102999566398120), seed=4)
    net, info = initial_model(spec)
    names = tuple(p.name for p in prunable_parameters(net, info.input_shape))
    scores = SCORERS["snip"].score(net.eval(), scoring_batches(spec, "cpu"), ScoreInputs(names, info.input_shape))
    return torch.cat([scores[n].detach().flatten() for n in names])


def test_layerwise_random_matches_the_algorithms_per_layer_counts_at_new_positions():
    _, none, _ = digits_trial("snip", log10=1.5)
    _, random_layers, _ = digits_trial("snip", log10=1.5, ablation="layerwise_random")
    _, shuffled, _ = digits_trial("snip", log10=1.5, ablation="shuffle")
    assert [s.remaining for s in random_layers.layers] == [s.remaining for s in none.layers]
    assert any(not torch.equal(random_layers.masks.mask(n), none.masks.mask(n)) for n in none.masks.names)
    assert any(not torch.equal(random_layers.masks.mask(n), shuffled.masks.mask(n)) for n in none.masks.names)


def test_imp_refuses_ablations_and_the_choices_are_named():
    with pytest.raises(ValueError, match="not to imp"):
        PruneSpec("imp", 1.0, levels=2, ablation="shuffle")
    with pytest.raises(ValueError, match="unknown ablation 'flip'; valid ablations: none, shuffle, reinit, invert"):
        PruneSpec("snip", 1.0, ablation="flip")


# ---------------------------------------------------------------- effective weights, against explicit graphs

def reachable_weights(edges, inputs, outputs):
    """Independent count: BFS over an explicit unit graph; a weight counts when its edge lies on an input-output path.

    `edges` maps a weight id to its (source unit, target unit) pairs (a conv weight is shared by many positions).
    """
    forward, backward = {}, {}
    for pairs in edges.values():
        for a, b in pairs:
            forward.setdefault(a, set()).add(b)
            backward.setdefault(b, set()).add(a)

    def closure(start, graph):
        seen, todo = set(start), list(start)
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    from_input, to_output = closure(inputs, forward), closure(outputs, backward)
    return {w for w, pairs in edges.items() if any(a in from_input and b in to_output for a, b in pairs)}


def mlp_graph(sizes, masks):
    edges = {}
    for layer, mask in enumerate(masks):
        for j, i in mask.nonzero().tolist():
            edges[(layer, j, i)] = [((layer, i), (layer + 1, j))]
    return edges


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_effective_weights_of_an_mlp_match_an_explicit_path_search(seed):
    sizes = [6, 7, 5, 3]
    model = nn.Sequential(nn.Linear(6, 7), nn.ReLU(), nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, 3))
    params = prunable_parameters(model, (6,))
    named = dict(model.named_parameters())
    masks = Masks({p.name: named[p.name] for p in params})
    g = torch.Generator().manual_seed(seed)
    hand_built = []
    for p, density in zip(params, (0.35, 0.25, 0.5)):
        mask = torch.rand(named[p.name].shape, generator=g) < density
        masks.alive[p.name] = mask.flatten().nonzero().flatten()
        hand_built.append(mask)
    counts = effective_remaining(model, masks, params, (6,))
    expected = reachable_weights(mlp_graph(sizes, hand_built), [(0, i) for i in range(6)],
                                 [(3, j) for j in range(3)])
    for layer, p in enumerate(params):
        assert counts[p.name] == sum(1 for w in expected if w[0] == layer), p.name
    assert sum(counts.values()) < sum(int(m.sum()) for m in hand_built)  # these masks leave some weights dangling


def conv_graph(conv1, conv2, linear, side=4):
    """Units of: input 1xHxW -> conv 3x3 pad 1 -> relu -> maxpool 2 -> conv 3x3 pad 1 -> relu -> avgpool -> linear."""
    edges = {}

    def conv_edges(tag, mask, src, dst, size):
        out_ch, in_ch = mask.shape[:2]
        for o, i, ky, kx in itertools.product(range(out_ch), range(in_ch), range(3), range(3)):
            if not mask[o, i, ky, kx]:
                continue
            pairs = []
            for y, x in itertools.product(range(size), range(size)):
                sy, sx = y + ky - 1, x + kx - 1
                if 0 <= sy < size and 0 <= sx < size:
                    pairs.append(((src, i, sy, sx), (dst, o, y, x)))
            edges[(tag, o, i, ky, kx)] = pairs

    conv_edges("conv1", conv1, "in", "c1", side)
    half = side // 2
    pool = [((("c1", c, 2 * y + dy, 2 * x + dx)), ("p1", c, y, x))
            for c in range(conv1.shape[0]) for y, x, dy, dx in itertools.product(range(half), range(half), (0, 1), (0, 1))]
    edges[("pool",)] = pool  # not a weight: a max-pool window reaches its output from any input
    conv_edges("conv2", conv2, "p1", "c2", half)
    gap = [(("c2", c, y, x), ("g", c)) for c in range(conv2.shape[0]) for y, x in itertools.product(range(half), range(half))]
    edges[("gap",)] = gap
    for o, i in linear.nonzero().tolist():
        edges[("linear", o, i)] = [(("g", i), ("out", o))]
    inputs = [("in", 0, y, x) for y, x in itertools.product(range(side), range(side))]
    return edges, inputs, [("out", o) for o in range(linear.shape[0])]


# Seeds 7 and 24 draw masks where routing a max-pool's gradient to one tied input would miss on-path weights.
@pytest.mark.parametrize("seed", [0, 7, 24])
def test_effective_weights_of_a_conv_net_with_max_pooling_match_an_explicit_path_search(seed):
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    shape = (1, 4, 4)
    params = prunable_parameters(model, shape)
    named = dict(model.named_parameters())
    masks = Masks({p.name: named[p.name] for p in params})
    g = torch.Generator().manual_seed(seed)
    hand_built = {}
    for p, density in zip(params, (0.4, 0.12, 0.6)):
        mask = torch.rand(named[p.name].shape, generator=g) < density
        masks.alive[p.name] = mask.flatten().nonzero().flatten()
        hand_built[p.name] = mask
    conv1, conv2, linear = hand_built.values()
    edges, inputs, outputs = conv_graph(conv1, conv2, linear)
    on_path = reachable_weights(edges, inputs, outputs)
    counts = effective_remaining(model, masks, params, shape)
    for tag, p in zip(("conv1", "conv2", "linear"), params):
        assert counts[p.name] == sum(1 for w in on_path if w[0] == tag), p.name


def test_a_collapsed_network_has_no_effective_weight_and_trials_report_it():
    _, collapsed, _ = digits_trial("magnitude", log10=1.5, model="conv")  # magnitude empties a conv layer here
    assert collapsed.collapsed and collapsed.effective_remaining_params == 0
    _, intact, _ = digits_trial("synflow", log10=1.5, model="conv")
    assert not intact.collapsed
    assert 0 < intact.effective_remaining_params <= intact.remaining_params
    assert intact.effective_remaining_params == sum(s.effective_remaining for s in intact.layers)


def test_prune_one_reports_effective_weights_and_saves_masks_loadable_with_torch_alone(tmp_path, capsys):
    path = tmp_path / "masks.pt"
    assert prune_one.main(["--model", "conv", "--dataset", "digits", "--algorithm", "snip", "--log10-compression", "1.5",
                           "--ablation", "shuffle", "--json", "--save-masks", str(path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    masks = torch.load(path, weights_only=True)
    model = build_model("conv", DIGITS, 10, seed=0)
    assert list(masks) == [p.name for p in prunable_parameters(model, DIGITS)]  # forward order
    assert sum(int(m.sum()) for m in masks.values()) == summary["remaining_params"]
    assert all(m.dtype == torch.bool for m in masks.values())
    assert summary["ablation"] == "shuffle"
    assert summary["effective_remaining_params"] == sum(layer["effective_remaining"] for layer in summary["layers"])
    assert prune_one.main(["--model", "mlp", "--dataset", "digits", "--algorithm", "random",
                           "--save-masks", str(tmp_path / "absent" / "m.pt")]) == 2
    assert "cannot write masks to" in capsys.readouterr().err


# ---------------------------------------------------------------- FORCE and |GraSP|

def test_force_with_one_round_is_snip_and_its_score_is_taken_at_the_pruned_network():
    batches = synthetic()
    snip = prune_model(build_model("mlp", DIGITS, 10, seed=0), "snip", 10.0, DIGITS, batches=lambda: batches)
    force = prune_model(build_model("mlp", DIGITS, 10, seed=0), "force", 10.0, DIGITS, iterations=1,
                        batches=lambda: batches)
    assert all(torch.equal(snip.masks.mask(n), force.masks.mask(n)) for n in snip.masks.names)
    # The score for a half-pruned network, computed by hand: gradient at w * m, multiplied by the unmasked w.
    model = build_model("mlp", DIGITS, 10, seed=0)
    params = prunable_parameters(model, DIGITS)
    named = dict(model.named_parameters())
    masks = Masks({p.name: named[p.name] for p in params})
    for p in params:
        masks.alive[p.name] = torch.arange(0, p.size, 2)
    scores = force_scores(model, batches, ScoreInputs(tuple(p.name for p in params), DIGITS, masks=masks))
    w = [named[p.name].detach() for p in params]
    m = [masks.mask(p.name).float() for p in params]
    b = [named[n].detach() for n in ("1.bias", "3.bias", "5.bias")]
    masked = [(wi * mi).requires_grad_() for wi, mi in zip(w, m)]
    x, y = batches[0]
    hidden = F.relu(F.relu(x.flatten(1) @ masked[0].T + b[0]) @ masked[1].T + b[1])
    grads = torch.autograd.grad(F.cross_entropy(hidden @ masked[2].T + b[2], y), masked)
    for p, wi, gi in zip(params, w, grads):
        torch.testing.assert_close(scores[p.name], (wi * gi).abs())
        assert bool((scores[p.name].flatten()[1::2] > 0).any())  # pruned weights still score: they can come back


def test_force_revives_pruned_weights_where_iterative_snip_cannot_at_exact_counts():
    batches = synthetic(per_class=5)
    first_round = prune_model(build_model("mlp", DIGITS, 10, seed=0), "force", 10.0 ** 0.5, DIGITS, iterations=1,
                              batches=lambda: batches)
    force = prune_model(build_model("mlp", DIGITS, 10, seed=0), "force", 10.0, DIGITS, iterations=2,
                        batches=lambda: batches)
    snip = prune_model(build_model("mlp", DIGITS, 10, seed=0), "snip", 10.0, DIGITS, iterations=2,
                       batches=lambda: batches)
    target = round(17_400 / 10)
    assert force.remaining_params == snip.remaining_params == target
    revived = sum(int((force.masks.mask(n) & ~first_round.masks.mask(n)).sum()) for n in force.masks.names)
    assert revived > 0
    # Iterative SNIP's second round chooses among the first round's survivors only.
    assert all(not bool((snip.masks.mask(n) & ~first_round.masks.mask(n)).any()) for n in snip.masks.names)
    assert force.prune_passes == snip.prune_passes == 2 * 50


def test_grasp_abs_keeps_the_largest_magnitude_of_hg_times_w():
    model = build_model("mlp", DIGITS, 10, seed=0).eval()
    batches = synthetic(per_class=4)
    names = [p.name for p in prunable_parameters(model, DIGITS)]
    named = dict(model.named_parameters())
    params = [named[n] for n in names]
    x, y = batches[0]
    g = torch.autograd.grad(F.cross_entropy(model(x) / 200.0, y), params, create_graph=True)
    hg = torch.autograd.grad(sum((a * b.detach()).sum() for a, b in zip(g, g)), params)
    magnitude = torch.cat([(h * w).detach().abs().flatten() for h, w in zip(hg, params)])
    keep = round(magnitude.numel() / 4)
    expected = set(torch.topk(magnitude, keep).indices.tolist())
    result = prune_model(model, "grasp_abs", 4.0, DIGITS, batches=lambda: batches)
    kept = torch.cat([result.masks.mask(n).flatten() for n in names])
    assert int(kept.sum()) == keep and result.prune_passes == 2 * 40
    assert len(expected ^ set(kept.nonzero().flatten().tolist())) <= 2  # float ties at the threshold aside


# ---------------------------------------------------------------- what a plugin's scorer can get wrong

def test_a_scorers_mistakes_are_one_line_errors_naming_it_and_grad_carrying_scores_are_detached():
    from trainables.pruning.loop import _fingerprint, checked_scores
    from trainables.pruning.scores import Scorer

    model = build_model("mlp", DIGITS, 10, seed=0)
    params = prunable_parameters(model, DIGITS)
    named = dict(model.named_parameters())
    mine = Scorer("mine", lambda *a: None, needs_data=False, passes_per_example=0)
    good = {p.name: named[p.name].abs() for p in params}  # still requires grad, as `p.abs()` does
    checked = checked_scores(mine, good, params, model, model, _fingerprint(model, params))
    assert all(not s.requires_grad for s in checked.values())
    transposed = dict(good, **{params[0].name: named[params[0].name].T.abs()})
    with pytest.raises(ValueError, match=r"scorer 'mine': the score for '1.weight' has shape \(64, 100\), the "
                                         r"parameter has \(100, 64\)"):
        checked_scores(mine, transposed, params, model, model, None)
    with pytest.raises(ValueError, match="scorer 'mine' returned no score tensor for parameter '5.weight'"):
        checked_scores(mine, {p.name: good[p.name] for p in params[:2]}, params, model, model, None)
    with pytest.raises(TypeError, match="scorer 'mine' returned list"):
        checked_scores(mine, list(good.values()), params, model, model, None)
    before = _fingerprint(model, params)
    with torch.no_grad():
        named[params[1].name].mul_(0.01)
    with pytest.raises(ValueError, match="scorer 'mine' changed the model's weights"):
        checked_scores(mine, good, params, model, model, before)
