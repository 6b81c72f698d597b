"""Pruning at initialization: exact counts, conservation, collapse, determinism, SynFlow numerics."""
import copy
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from trainables.models import build_model
from trainables.pruning import (
    Masks, apportion, density_schedule, keep_top, load_masks, prunable_parameters, prune_model, save_masks,
)
from trainables.pruning.masks import BRACKET_MARGIN, BRACKET_MIN_SIZE, BRACKET_SAMPLE, kth_smallest
from trainables.pruning.scores import SCORERS, linearized_float64_copy

CIFAR = (3, 32, 32)


def synthetic_batches(classes=10, per_class=1, shape=CIFAR, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((classes * per_class, *shape), generator=g)
    y = torch.arange(classes).repeat_interleave(per_class)
    return [(x, y)]


@pytest.fixture(scope="module")
def vgg16_bn_init():
    return build_model("vgg16_bn", CIFAR, 10, seed=0)


# ---------------------------------------------------------------- exact counts

def test_keep_top_breaks_ties_by_lowest_index_and_is_exact():
    assert keep_top(torch.zeros(10), 3).nonzero().flatten().tolist() == [0, 1, 2]
    assert keep_top(torch.tensor([1.0, 2, 2, 2, 0, 2]), 2).nonzero().flatten().tolist() == [1, 2]
    assert keep_top(torch.tensor([5.0, 1, 5, 1]), 3).nonzero().flatten().tolist() == [0, 1, 2]
    for keep in range(0, 8):
        assert int(keep_top(torch.ones(7), keep).sum()) == keep
    with pytest.raises(ValueError, match="NaN"):
        keep_top(torch.tensor([1.0, float("nan")]), 1)


def test_apportion_sums_exactly_and_follows_sizes():
    assert apportion(10, [1, 1, 1]) == [4, 3, 3]
    assert apportion(0, [5, 5]) == [0, 0]
    # Unequal sizes, worked by hand: quotas total * size / sum(sizes), floors, then the leftover one by one to the
    # largest remainders (ties to the lower index).
    assert apportion(7, [3, 2, 1]) == [4, 2, 1]  # quotas 3.5, 2.33, 1.17: floors 3, 2, 1, one left to 3.5
    assert apportion(5, [1, 3, 6]) == [1, 1, 3]  # quotas 0.5, 1.5, 3.0: floors 0, 1, 3, one left, 0.5 ties to index 0
    assert apportion(100, [1, 10, 989]) == [0, 1, 99]  # quotas 0.1, 1.0, 98.9: the smallest layer rounds to 0
    # vgg16_bn's first two convs, a big one and the classifier at 10^3: quotas 10.42, 222.20, 14220.77, 308.61,
    # floors sum to 14760, the two left go to .77 and .61.
    assert apportion(14762, [1728, 36864, 2359296, 51200]) == [10, 222, 14221, 309]


def test_local_scope_gives_each_mlp_layer_its_hand_computed_share():
    """Not derived with `apportion`: mlp's layers hold 6,400, 10,000 and 1,000 weights; at 7x the target is
    round(17,400 / 7) = 2,486, quotas 914.39, 1428.74 and 142.87, floors 914 + 1428 + 142 = 2,484, and the two
    left go to the remainders .87 and .74."""
    model = build_model("mlp", (1, 8, 8), 10, seed=0)
    result = prune_model(model, "magnitude", 7.0, (1, 8, 8), scope="local")
    assert [s.size for s in result.layers] == [6400, 10000, 1000]
    assert [s.remaining for s in result.layers] == [914, 1429, 143]
    assert [int(result.masks.mask(s.param).sum()) for s in result.layers] == [914, 1429, 143]


class KthvalueCalls(torch.overrides.TorchFunctionMode):
    """Records what every `kthvalue` call runs on (the real one runs): which path `kth_smallest` took."""

    def __init__(self):
        super().__init__()
        self.inputs = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") == "kthvalue":
            self.inputs.append(args[0])
        return func(*args, **(kwargs or {}))


def _kth_cases():
    """(name, values) above the size where kth_smallest samples: random, and built to be hard for a sample."""
    n = BRACKET_MIN_SIZE + 12_345
    g = torch.Generator().manual_seed(0)
    trap = torch.zeros(n)
    trap[::n // BRACKET_SAMPLE] = 1e30  # the strided sample sees only these: its bracket cannot hold a middle rank
    mostly_zero = torch.randn(n, generator=g)
    mostly_zero[torch.rand(n, generator=g) < 0.9] = 0.0
    return [
        ("normal", torch.randn(n, generator=g)),
        ("normal float64", torch.randn(n, generator=g, dtype=torch.float64)),
        ("all equal", torch.full((n,), 0.25)),
        ("three values", torch.randint(0, 3, (n,), generator=g).float()),
        ("90% exact zeros", mostly_zero),
        ("ascending", torch.arange(n, dtype=torch.float32)),
        ("descending", torch.arange(n, 0, -1, dtype=torch.float32)),
        ("heavy tail with infinities", torch.cat([torch.randn(n - 4, generator=g).exp() ** 8,
                                                 torch.tensor([float("inf"), -float("inf"), float("inf"), 0.0])])),
        ("strided trap", trap),
    ]


@pytest.mark.parametrize("name,values", _kth_cases(), ids=[c[0] for c in _kth_cases()])
def test_kth_smallest_equals_kthvalue_on_its_sampled_path_and_its_fallback(name, values):
    """Both paths of the exact selection every prune relies on, against `torch.kthvalue`, tiny to huge k."""
    n = values.numel()
    middle = n // 2
    ranks = [1, 2, 3, BRACKET_MARGIN, middle - 1, middle, middle + 1, n - BRACKET_MARGIN, n - 2, n - 1, n]
    if name == "descending":
        # CPU kthvalue is quadratic on descending input at small ranks (22 s a call at ranks 1 to 512 here). The
        # ranks below the sample's margin, where kth_smallest falls back to it, are left out, and the truth is
        # read off a sort.
        ranks = [r for r in ranks if r >= BRACKET_MARGIN]
    truth = torch.sort(values).values if name == "descending" else None
    path = {}
    for rank in ranks:
        with KthvalueCalls() as calls:
            got = kth_smallest(values, rank)
        want = truth[rank - 1] if truth is not None else torch.kthvalue(values, rank).values
        assert torch.equal(got, want), (name, rank)
        # The fallback runs kthvalue on the input itself; the shortcut on its sample, then on a band of it.
        path[rank] = "fallback" if any(t is values for t in calls.inputs) else "sampled"
    if name == "normal":  # random input takes both paths (today: sampled in the middle, fallback at the ends)
        assert set(path.values()) == {"sampled", "fallback"}, path
    if name == "strided trap":
        assert path[middle] == "fallback", path


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["random", "magnitude", "snip", "grasp", "synflow"])
@pytest.mark.parametrize("scope", ["global", "local"])
def test_remaining_count_is_exact_for_every_scorer_and_scope(vgg16_bn_init, algorithm, scope):
    prunable = 14_715_584  # vgg16_bn conv + linear weights, CIFAR shape, 10 classes
    for log10 in (0.0, 0.5, 3.0, 6.0):
        model = copy.deepcopy(vgg16_bn_init)
        result = prune_model(model, algorithm, 10 ** log10, CIFAR, iterations=3 if algorithm == "synflow" else 1,
                             scope=scope, batches=synthetic_batches)
        target = round(prunable / 10 ** log10)
        assert result.prunable_params == prunable
        assert result.remaining_params == target, (algorithm, scope, log10)
        named = dict(model.named_parameters())
        assert sum(int(result.masks.mask(s.param).sum()) for s in result.layers) == target
        # The model itself holds exactly that many nonzero prunable weights, at exactly the kept positions (pruned
        # ones are zeroed in place). Exact on nonzeros too because vgg16_bn's init draws no exact 0.0 (the next
        # test checks it): a kept weight is never zero, so a pruner zeroing one extra would show here.
        assert sum(int((named[s.param] != 0).sum()) for s in result.layers) == target
        assert all(torch.equal(named[s.param] != 0, result.masks.mask(s.param)) for s in result.layers)
        if scope == "local":
            shares = apportion(target, [s.size for s in result.layers])
            assert [s.remaining for s in result.layers] == shares


def test_vgg16_bn_init_holds_no_exact_zero_prunable_weight(vgg16_bn_init):
    """Why the exact-count test may count nonzeros: every weight it keeps is an initial one, and none is 0.0."""
    named = dict(vgg16_bn_init.named_parameters())
    assert all(bool((named[p.name] != 0).all()) for p in prunable_parameters(vgg16_bn_init, CIFAR))


@pytest.mark.parametrize("fill", [0.0, 0.5])
def test_exact_count_when_every_score_ties(fill):
    model = build_model("mlp", (1, 8, 8), 10, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(fill)
    result = prune_model(model, "magnitude", 7.0, (1, 8, 8), iterations=4)
    assert result.remaining_params == round(result.prunable_params / 7.0)


# ---------------------------------------------------------------- conservation (Theorem 2)

def _layer_saliency_sums(model, loss):
    params = prunable_parameters(model, model.input_shape)
    named = dict(model.named_parameters())
    ws = [named[p.name] for p in params]
    grads = torch.autograd.grad(loss, ws)
    return torch.stack([(g * w).sum() for g, w in zip(grads, ws)])


def _assert_all_equal(sums, rel=1e-4):
    assert torch.all(torch.isfinite(sums))
    spread = (sums.max() - sums.min()).abs() / sums.abs().max()
    assert spread < rel, sums


@pytest.mark.parametrize("loss_name", ["cross_entropy", "sum_of_cubes"])
def test_signed_synaptic_saliency_is_conserved_across_layers_of_vgg16_bn(vgg16_bn_init, loss_name):
    model = copy.deepcopy(vgg16_bn_init).double().eval()
    model.input_shape = CIFAR
    x, y = synthetic_batches(classes=10, per_class=2)[0]
    out = model(x.double())
    loss = F.cross_entropy(out, y) if loss_name == "cross_entropy" else (out ** 3).sum()
    sums = _layer_saliency_sums(model, loss)
    assert len(sums) == 14
    _assert_all_equal(sums)


def test_signed_synaptic_saliency_is_conserved_in_an_mlp_with_zero_biases():
    model = build_model("mlp", (1, 8, 8), 10, seed=3).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    model.input_shape = (1, 8, 8)
    x = torch.randn(16, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = model(x)
    sums = _layer_saliency_sums(model, out.logsumexp(dim=1).mean() - out[:, 0].mean())
    _assert_all_equal(sums)
    # Without zero biases the property is genuinely lost, so the check above can fail.
    biased = build_model("mlp", (1, 8, 8), 10, seed=3).double().eval()
    with torch.no_grad():
        for name, p in biased.named_parameters():
            if name.endswith("bias"):
                p.fill_(0.5)
    biased.input_shape = (1, 8, 8)
    out = biased(x)
    spread_sums = _layer_saliency_sums(biased, out.logsumexp(dim=1).mean() - out[:, 0].mean())
    with pytest.raises(AssertionError):
        _assert_all_equal(spread_sums)


def test_synflow_first_round_layer_score_sums_are_equal(vgg16_bn_init):
    result = prune_model(copy.deepcopy(vgg16_bn_init), "synflow", 10.0, CIFAR, iterations=1)
    _assert_all_equal(torch.tensor([s.score_sum for s in result.layers], dtype=torch.float64))


# ---------------------------------------------------------------- collapse

@pytest.mark.slow
def test_synflow_100_keeps_every_vgg16_bn_layer_alive_up_to_1e6_where_magnitude_and_random_collapse():
    model = build_model("vgg16_bn", CIFAR, 100, seed=0)
    prunable = sum(p.size for p in prunable_parameters(model, CIFAR))
    layers = 14
    assert prunable / layers > 1e6  # 10^6 is within the maximum meaningful compression
    result = prune_model(copy.deepcopy(model), "synflow", 1e6, CIFAR, iterations=100)
    assert not result.collapsed
    assert min(s.remaining for s in result.layers) >= 1
    assert result.remaining_params == round(prunable / 1e6)
    for algorithm in ("magnitude", "random"):
        r = prune_model(copy.deepcopy(model), algorithm, 1e4, CIFAR)
        assert r.collapsed, algorithm
        assert min(s.remaining for s in r.layers) == 0


# ---------------------------------------------------------------- rounds, determinism, masks

def test_pruned_weights_stay_pruned_across_rounds_and_calls():
    model = build_model("conv", (1, 8, 8), 10, seed=0)
    first = prune_model(model, "random", 10.0, (1, 8, 8), iterations=5, seed=1)
    before = {n: first.masks.mask(n).clone() for n in first.masks.names}
    # Continue from these masks with different random scores: nothing pruned may come back.
    second = prune_model(model, "random", 100.0, (1, 8, 8), iterations=5, seed=2, masks=first.masks)
    for n in before:
        after = second.masks.mask(n)
        assert not bool((after & ~before[n]).any()), n
    assert second.remaining_params == round(second.prunable_params / 100)


def test_density_schedules():
    exp = density_schedule(1000.0, 3, "exponential")
    assert exp == pytest.approx([0.1, 0.01, 0.001])
    lin = density_schedule(10.0, 3, "linear")
    assert lin == pytest.approx([0.7, 0.4, 0.1])


@pytest.mark.parametrize("algorithm", ["random", "snip", "synflow"])
def test_same_seed_gives_identical_masks(algorithm):
    def masks(seed):
        model = build_model("conv", (1, 8, 8), 10, seed=seed)
        batches = lambda: synthetic_batches(shape=(1, 8, 8))
        r = prune_model(model, algorithm, 10.0, (1, 8, 8), iterations=2, batches=batches, seed=seed)
        return r.masks.state_dict()
    a, b, c = masks(0), masks(0), masks(1)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)


def test_masks_save_and_load_by_parameter_name(tmp_path):
    model = build_model("conv", (1, 8, 8), 10, seed=0)
    r = prune_model(model, "magnitude", 5.0, (1, 8, 8))
    save_masks(r.masks, tmp_path / "masks.pt")
    saved = torch.load(tmp_path / "masks.pt")
    assert set(saved) == {s.param for s in r.layers}
    fresh = build_model("conv", (1, 8, 8), 10, seed=0)
    named = dict(fresh.named_parameters())
    loaded = Masks({n: named[n] for n in saved})
    load_masks(loaded, tmp_path / "masks.pt")
    assert loaded.remaining() == r.remaining_params
    loaded.apply()
    assert all(torch.equal(named[n] != 0, saved[n] & (named[n] != 0)) for n in saved)
    with pytest.raises(ValueError, match="missing"):
        Masks({"features.0.weight": named[next(iter(saved))]}).load_state_dict({"nope": saved[next(iter(saved))]})


# ---------------------------------------------------------------- SynFlow numerics and model restore

@pytest.mark.slow
@pytest.mark.parametrize("name,shape", [("vgg19_bn", CIFAR), ("resnet110", CIFAR), ("imagenet_resnet50", (3, 224, 224))])
def test_synflow_scores_are_finite_on_deep_nets(name, shape):
    model = build_model(name, shape, 100, seed=0)
    params = prunable_parameters(model, shape)
    names = tuple(p.name for p in params)
    from trainables.pruning.scores import ScoreInputs
    working = linearized_float64_copy(model, set(names)).eval()
    scores = SCORERS["synflow"].score(working, [], ScoreInputs(names, shape))
    flat = torch.cat([s.flatten() for s in scores.values()])
    assert torch.isfinite(flat).all()
    assert (flat > 0).any()
    # The same network linearised in float32 overflows or underflows somewhere: float64 is what makes this safe.
    if name != "vgg19_bn":
        linear32 = copy.deepcopy(model).eval()
        with torch.no_grad():
            for t in linear32.state_dict().values():
                if t.is_floating_point():
                    t.abs_()
        assert not torch.isfinite(linear32(torch.ones((1, *shape))).sum())


def _synflow_networks(monkeypatch):
    """Record every SynflowNetwork a prune makes, to see which precision it scored in."""
    import trainables.pruning.scores as scores_module

    made = []
    original = scores_module.SynflowNetwork.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self)
    monkeypatch.setattr(scores_module.SynflowNetwork, "__init__", init)
    return made


@pytest.mark.parametrize("name,shape,certified", [
    ("vgg11_bn", CIFAR, True),          # a chain with no additive terms: rescaled float32 after round 1
    ("resnet20", CIFAR, False),         # identity shortcuts bypass layers: stays float64
    ("mlp", (1, 8, 8), False),          # nonzero biases add paths: stays float64
])
def test_synflow_rescales_in_float32_only_where_conservation_certifies_it(monkeypatch, name, shape, certified):
    made = _synflow_networks(monkeypatch)
    prune_model(build_model(name, shape, 10, seed=0), "synflow", 10.0, shape, iterations=3)
    assert (made[0].f32 is not None) == certified
    made.clear()
    prune_model(build_model(name, shape, 10, seed=0), "synflow", 10.0, shape, iterations=3, mode="train")
    assert made[0].f32 is None  # train-mode batch-norm is not linear: never certified


def test_rescaled_float32_synflow_matches_float64_masks_and_score_sums(monkeypatch):
    import trainables.pruning.scores as scores_module

    def run():
        return prune_model(build_model("vgg11_bn", CIFAR, 10, seed=0), "synflow", 100.0, CIFAR, iterations=5)
    rescaled = run()
    monkeypatch.setattr(scores_module, "CONSERVATION_TOLERANCE", -1.0)  # never certify: float64 throughout
    exact = run()
    assert all(torch.equal(rescaled.masks.mask(n), exact.masks.mask(n)) for n in exact.masks.names)
    for a, b in zip(rescaled.layers, exact.layers):
        assert a.score_sum == pytest.approx(b.score_sum, rel=1e-4)  # true scores, not the rescaled ones


def test_synflow_restores_weights_signs_buffers_and_dtype_exactly():
    model = build_model("resnet20", CIFAR, 10, seed=0)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = prune_model(model, "synflow", 10.0, CIFAR, iterations=5, prune_batchnorm=True, prune_bias=True)
    after = model.state_dict()
    assert not model.training
    for k, v in before.items():
        assert after[k].dtype == v.dtype
        if k in r.masks.params:
            m = r.masks.mask(k)
            assert torch.equal(after[k][m], v[m]), k          # kept weights: bit-identical, signs intact
            assert torch.count_nonzero(after[k][~m]) == 0, k  # pruned weights: exactly zero
        else:
            assert torch.equal(after[k], v), k                # buffers and unpruned params untouched


def test_train_mode_scoring_leaves_batch_norm_statistics_unchanged():
    model = build_model("vgg11_bn", CIFAR, 10, seed=0)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    prune_model(model, "snip", 10.0, CIFAR, mode="train", batches=synthetic_batches)
    assert all(torch.equal(v, dict(model.named_buffers())[k]) for k, v in buffers.items())
    # and train mode genuinely changes the scores relative to eval mode
    a = prune_model(build_model("vgg11_bn", CIFAR, 10, seed=0), "snip", 10.0, CIFAR, mode="train", batches=synthetic_batches)
    b = prune_model(build_model("vgg11_bn", CIFAR, 10, seed=0), "snip", 10.0, CIFAR, mode="eval", batches=synthetic_batches)
    assert any(not torch.equal(a.masks.mask(n), b.masks.mask(n)) for n in a.masks.names)


def test_grasp_removes_the_weights_with_the_highest_grasp_score():
    """GraSP's score is S = -(H g) * w and GraSP removes the highest S: check against an independent H g."""
    model = build_model("mlp", (1, 8, 8), 10, seed=0).eval()
    batches = synthetic_batches(classes=10, per_class=4, shape=(1, 8, 8))
    named = dict(model.named_parameters())
    names = [p.name for p in prunable_parameters(model, (1, 8, 8))]
    params = [named[n] for n in names]
    x, y = batches[0]
    loss = F.cross_entropy(model(x) / 200.0, y)
    g = torch.autograd.grad(loss, params, create_graph=True)
    g_detached = [t.detach() for t in g]
    hg = torch.autograd.grad(sum((a * b).sum() for a, b in zip(g, g_detached)), params)
    grasp_score = torch.cat([(-(h * w)).detach().flatten() for h, w in zip(hg, params)])
    keep = round(grasp_score.numel() / 4)
    expected_removed = set(torch.topk(grasp_score, grasp_score.numel() - keep).indices.tolist())
    result = prune_model(model, "grasp", 4.0, (1, 8, 8), batches=lambda: batches)
    kept = torch.cat([result.masks.mask(n).flatten() for n in names])
    assert int(kept.sum()) == keep
    assert not any(bool(kept[i]) for i in expected_removed)


# ---------------------------------------------------------------- metrics

def test_layer_metrics_passes_and_flops():
    model = build_model("vgg16_bn", CIFAR, 100, seed=0)
    r = prune_model(model, "magnitude", 10.0, CIFAR)
    first = r.layers[0]
    assert (first.layer_index, first.param, first.kind, first.size) == (0, "features.0.weight", "conv", 1728)
    assert [s.layer_index for s in r.layers] == list(range(14))
    assert r.layers[-1].kind == "linear"
    assert r.dense_flops == 313_247_744  # conv+linear multiply-adds per 32x32 example
    assert r.remaining_flops == sum(s.remaining * p.macs_per_weight for s, p in zip(r.layers, r.params))
    assert r.prune_passes == 0
    assert r.density == pytest.approx(0.1, rel=1e-6)
    snip = prune_model(build_model("conv", (1, 8, 8), 10, seed=0), "snip", 2.0, (1, 8, 8),
                       batches=lambda: synthetic_batches(classes=10, per_class=3, shape=(1, 8, 8)))
    assert snip.prune_passes == 30
    grasp = prune_model(build_model("conv", (1, 8, 8), 10, seed=0), "grasp", 2.0, (1, 8, 8), iterations=2,
                        batches=lambda: synthetic_batches(classes=10, per_class=3, shape=(1, 8, 8)))
    assert grasp.prune_passes == 2 * 2 * 30
    assert prune_model(build_model("conv", (1, 8, 8), 10, seed=0), "synflow", 2.0, (1, 8, 8), iterations=100).prune_passes == 100


def test_residual_projections_are_opt_in():
    model = build_model("resnet20", CIFAR, 10, seed=0)
    default = {p.name for p in prunable_parameters(model, CIFAR)}
    with_residual = {p.name for p in prunable_parameters(model, CIFAR, prune_residual=True)}
    assert not any("downsample" in n for n in default)
    assert {n for n in with_residual - default} and all("downsample" in n for n in with_residual - default)
    with_bn = prunable_parameters(model, CIFAR, prune_batchnorm=True, prune_bias=True)
    assert {p.kind for p in with_bn} == {"conv", "linear", "batchnorm", "bias"}


# ---------------------------------------------------------------- the prune-only command

def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "trainables.prune_one", *args], capture_output=True, text=True, env=env)


def test_cli_json_reports_exact_totals_and_layers_without_any_dataset(tmp_path):
    out = run_cli("--model", "vgg11_bn", "--dataset", "cifar100", "--algorithm", "synflow", "--log10-compression", "2",
                  "--iterations", "10", "--json", "--data-dir", str(tmp_path / "empty"))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert {"prunable_params", "remaining_params", "collapsed", "prune_passes", "prune_seconds", "layers"} <= set(report)
    assert report["remaining_params"] == round(report["prunable_params"] / 100)
    assert report["prune_passes"] == 10
    assert report["layers"][0].keys() >= {"layer_index", "layer", "kind", "size", "remaining", "density", "score_sum"}
    assert sum(layer["remaining"] for layer in report["layers"]) == report["remaining_params"]
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").iterdir())


def test_cli_table_and_default_iterations():
    out = run_cli("--model", "mlp", "--dataset", "digits", "--algorithm", "synflow", "--log10-compression", "1")
    assert out.returncode == 0, out.stderr
    assert "synflow x100" in out.stdout and "total: 1,740 of 17,400" in out.stdout
    out = run_cli("--model", "mlp", "--dataset", "digits", "--algorithm", "snip", "--json")
    assert json.loads(out.stdout)["prune_passes"] == 10 * 10  # one round over 10 examples x 10 classes


@pytest.mark.parametrize("args,needle", [
    (["--model", "nope"], "unknown model 'nope'; valid models: "),
    (["--algorithm", "nope"], "unknown algorithm 'nope'; valid algorithms: dense, force, grasp, grasp_abs, imp, "
                              "magnitude, ntk_sap, prospr, px, random, snip, synflow, synflow_l2"),
    (["--dataset", "nope"], "unknown dataset 'nope'; valid datasets: "),
    (["--log10-compression", "-0.5"], "log10_compression must be a finite number in [0, 12]"),
    (["--log10-compression", "7"], "compression 1e+07 is above the number of prunable weights (17400)"),
    (["--iterations", "0"], "iterations must be an integer in [1, 10000], got 0"),
    (["--scope", "layer"], "unknown scope 'layer'; valid scopes: global, local, erk, er"),
])
def test_cli_bad_input_is_one_line_with_exit_code_2(args, needle, capsys):
    from trainables.prune_one import main

    try:  # in this process: the CLI's own checks, without a torch import per case
        code = main(["--model", "mlp", "--dataset", "digits", *args])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert needle in err


def test_cli_data_driven_scorer_on_absent_dataset_names_it_and_the_directory(tmp_path):
    out = run_cli("--model", "vgg11_bn", "--dataset", "cifar10", "--algorithm", "snip", "--data-dir", str(tmp_path))
    assert out.returncode == 1
    assert "cifar10" in out.stderr and str(tmp_path) in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
