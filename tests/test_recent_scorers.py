"""ProsPr, NTK-SAP (recent_scores), SynFlow-L2 and PX (path_scores): each one's defining property, PX's gates on
transformers, exact counts through the pruner, determinism."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.vocabulary import default_iterations
from trainables.models import MODELS, build_model
from trainables.pruning import recent_scores
from trainables.pruning.loop import prune_model
from trainables.pruning.params import prunable_parameters
from trainables.pruning.path_scores import GateTape, PathNetworks, gated_copy, px_scores, synflow_l2_scores
from trainables.pruning.recent_scores import ntk_trace_estimate, prospect_scores
from trainables.pruning.scores import SCORERS, ScoreInputs, snip_scores

CIFAR = (3, 32, 32)
NEW = ("prospr", "ntk_sap", "synflow_l2", "px")


def _batches(classes, shape=CIFAR, count=2, size=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, *shape, generator=g), torch.randint(0, classes, (size,), generator=g))
            for _ in range(count)]


def _inputs(model, shape, seed=0):
    names = tuple(p.name for p in prunable_parameters(model, shape))
    return ScoreInputs(names=names, input_shape=tuple(shape), generator=torch.Generator().manual_seed(seed))


def _two_layer(bias=False, relu=False, seed=0):
    torch.manual_seed(seed)
    layers = [nn.Linear(3, 4, bias=bias)] + ([nn.ReLU()] if relu else []) + [nn.Linear(4, 2, bias=bias)]
    return nn.Sequential(*layers).double()


@pytest.fixture
def light(monkeypatch):
    """Cheaper NTK-SAP and ProsPr for the count tests (exactness does not depend on them): 1 draw of 4 noise
    rows, 1 inner step."""
    monkeypatch.setattr(recent_scores, "NTKSAP_DRAWS", 1)
    monkeypatch.setattr(recent_scores, "_noise_rows", lambda model, shape, param: [4])
    monkeypatch.setattr(recent_scores, "PROSPR_STEPS", 1)


# --- (a) the property each paper states ------------------------------------------------------------------------

def test_synflow_l2_equals_its_closed_form_on_a_two_layer_linear_net():
    net = _two_layer()
    w1, w2 = net[0].weight.detach(), net[1].weight.detach()
    scores = synflow_l2_scores(net, [], ScoreInputs(("0.weight", "1.weight"), (3,)))
    # R = 1^T W2^2 W1^2 1:  dR/d(W1^2)_ij = sum_k W2_ki^2,  dR/d(W2^2)_ki = sum_j W1_ij^2;  score = that * |w|
    want1 = (w2 ** 2).sum(0)[:, None].expand_as(w1) * w1.abs()
    want2 = (w1 ** 2).sum(1)[None, :].expand_as(w2) * w2.abs()
    torch.testing.assert_close(scores["0.weight"], want1, rtol=1e-12, atol=0)
    torch.testing.assert_close(scores["1.weight"], want2, rtol=1e-12, atol=0)
    assert torch.equal(net[0].weight.detach(), w1)  # scored on a copy


def test_px_equals_its_closed_form_on_a_two_layer_relu_net():
    net = _two_layer(relu=True)
    w1, w2 = net[0].weight.detach(), net[2].weight.detach()
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    scores = px_scores(net, [(x, torch.zeros(6, dtype=torch.long))], ScoreInputs(("0.weight", "2.weight"), (3,)))
    # z1(x) = 1_{2x4} D(x) 1_{4x3} x^2 (unit weights, the ReLU's pattern), c = sum_x z1(x), R = c^T W2^2 W1^2 1
    patterns = (x @ w1.T > 0).double()                          # (6, 4)
    hidden = patterns * (x ** 2).sum(1, keepdim=True)           # (6, 4): D(x) 1 x^2
    c = hidden.sum(1).sum(0) * torch.ones(2, dtype=torch.float64)
    d_w2sq = c[:, None] * (w1 ** 2).sum(1)[None, :]             # dR/d(W2^2)
    d_w1sq = ((w2 ** 2).T @ c)[:, None].expand_as(w1)           # dR/d(W1^2)
    torch.testing.assert_close(scores["0.weight"], w1 ** 2 * d_w1sq ** 2, rtol=1e-10, atol=0)
    torch.testing.assert_close(scores["2.weight"], w2 ** 2 * d_w2sq ** 2, rtol=1e-10, atol=0)


def test_px_squares_the_gelu_gate_phi_of_the_real_pre_activation():
    """A GELU's gate is GELU(u)/u = Phi(u); PX's z1 sums squared path Jacobians (a_p x)^2, so it takes Phi(u)^2."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4, bias=False), nn.GELU(), nn.Linear(4, 2, bias=False)).double()
    w1, w2 = net[0].weight.detach(), net[2].weight.detach()
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    scores = px_scores(net, [(x, torch.zeros(6, dtype=torch.long))], ScoreInputs(("0.weight", "2.weight"), (3,)))
    u = x @ w1.T
    gates = (F.gelu(u) / u) ** 2                                # Phi(u)^2, (6, 4)
    torch.testing.assert_close(gates, (0.5 * (1 + torch.erf(u / 2 ** 0.5))) ** 2, rtol=1e-12, atol=0)
    c = (gates * (x ** 2).sum(1, keepdim=True)).sum() * torch.ones(2, dtype=torch.float64)  # sum_x z1(x)
    d_w2sq = c[:, None] * (w1 ** 2).sum(1)[None, :]
    d_w1sq = ((w2 ** 2).T @ c)[:, None].expand_as(w1)
    torch.testing.assert_close(scores["0.weight"], w1 ** 2 * d_w1sq ** 2, rtol=1e-10, atol=0)
    torch.testing.assert_close(scores["2.weight"], w2 ** 2 * d_w2sq ** 2, rtol=1e-10, atol=0)


class _TinyAttention(nn.Module):
    """Tokens -> LayerNorm -> one softmax-attention head -> GELU MLP -> mean over tokens -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4)
        self.query, self.key, self.value = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)
        self.softmax = nn.Softmax(dim=-1)
        self.mlp = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 4))
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = self.norm(x)
        a = self.softmax(self.query(h) @ self.key(h).transpose(1, 2))
        h = x + a @ self.value(h)
        return self.head((h + self.mlp(h)).mean(1))


def _randomised(model):
    """Every parameter redrawn (biases, norms, class token nonzero) in float64, so constant terms matter."""
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(p.numel())) * 0.5)
    return model


def _recorded(model, x):
    """`model`'s gates on `x`, recorded on a fresh GateTape, and its output."""
    tape = GateTape()
    handles = tape.attach(model)
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return tape, out


@pytest.mark.parametrize("name", ["tiny", "vit_tiny", "mixer_tiny"])
def test_the_gated_network_reproduces_the_real_network_on_its_data(name):
    """What the gating promises: the real network's gates on x (GELU(u)/u, the per-token LayerNorm statistics, the
    attention matrix) make a linear network that computes f(x) exactly; PX's gated copy is it with unit weights."""
    shape = (5, 4) if name == "tiny" else (1, 8, 8)
    model = _randomised(_TinyAttention() if name == "tiny" else build_model(name, shape, 10, 0))
    x = torch.randn(3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    tape, want = _recorded(model, x)
    kinds = {kind for kind, _ in tape.entries}
    assert {"gelu", "layernorm"} <= kinds and ("softmax" in kinds) == (name != "mixer_tiny")
    with torch.no_grad():
        got = gated_copy(model, tape)(x)
    assert tape.entries == []
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # the token mixing really is held fixed: other inputs through the gated copy change nothing in the gates
    tape2, _ = _recorded(model, x)
    with torch.no_grad():
        other = gated_copy(model, tape2)(2 * x)
    torch.testing.assert_close(other - got, gated_copy_linear_part(model, x), rtol=1e-9, atol=1e-10)


def gated_copy_linear_part(model, x):
    """f_gated(2x) - f_gated(x) = the gated network's linear part on x (the constants cancel): biases zeroed."""
    tape, _ = _recorded(model, x)
    linear = gated_copy(model, tape, shifts=False)
    with torch.no_grad():
        for n, p in linear.named_parameters():
            if n.endswith("bias") or "cls_token" in n or "position" in n:
                p.zero_()
        return linear(x)


@pytest.mark.parametrize("name", ["vit_tiny", "mixer_tiny"])
def test_px_scores_transformers_finite_in_every_layer_leaving_the_model_alone(name):
    model = _model(name, CIFAR, 10)
    before = copy.deepcopy(model.state_dict())
    inputs = _inputs(model, CIFAR)
    nets = PathNetworks(model, set(inputs.names)).eval()
    scores = px_scores(nets, _batches(10), inputs)
    assert set(scores) == set(inputs.names)
    for n, s in scores.items():
        assert s.shape == model.get_parameter(n).shape and bool(torch.isfinite(s).all()), n
        assert float(s.min()) >= 0 and float(s.max()) > 0, n
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_px_refuses_layers_it_cannot_gate():
    mha = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.MultiheadAttention(4, 1))
    with pytest.raises(ValueError, match=r"^px cannot gate .*nn.MultiheadAttention"):
        px_scores(mha, [(torch.randn(2, 4), torch.zeros(2, dtype=torch.long))], ScoreInputs(("0.weight",), (4,)))
    tanh = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"^px scores networks of .* is a Tanh$"):
        px_scores(tanh, [(torch.randn(2, 4), torch.zeros(2, dtype=torch.long))], ScoreInputs(("0.weight",), (4,)))


def test_ntk_sap_finite_difference_recovers_the_gradient_of_the_ntk_trace():
    """Summed over the basis perturbations, J / eps^2 -> tr Theta(m); so must its mask gradient."""
    net = _two_layer(seed=3)
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    weights = {n: p.detach() for n, p in net.named_parameters()}
    masks = {n: torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64).repeat(w.numel() // 3 + 1)[:w.numel()]
             .view_as(w).requires_grad_() for n, w in weights.items()}
    eps = 1e-5
    fd = {n: torch.zeros_like(w) for n, w in weights.items()}
    for n, w in weights.items():
        for j in range(w.numel()):
            basis = {k: torch.zeros_like(v) for k, v in weights.items()}
            basis[n].view(-1)[j] = 1.0
            j_est = ntk_trace_estimate(net, weights, {}, masks, x, basis, eps)
            for k, g in zip(masks, torch.autograd.grad(j_est, list(masks.values()))):
                fd[k] += g / eps ** 2

    def trace(m):  # sum over x, outputs and parameters of (d f / d theta)^2, theta perturbed before the mask
        params = {n: w.clone().requires_grad_() for n, w in weights.items()}
        out = torch.func.functional_call(net, {n: params[n] * m[n] for n in params}, (x,))
        total = 0
        for value in out.flatten():
            grads = torch.autograd.grad(value, list(params.values()), create_graph=True)
            total = total + sum((g ** 2).sum() for g in grads)
        return total

    exact = torch.autograd.grad(trace(masks), list(masks.values()))
    for n, e in zip(masks, exact):
        torch.testing.assert_close(fd[n], e, rtol=1e-3, atol=1e-6)
    assert any(float(e.abs().max()) > 1e-3 for e in exact)


def test_prospr_with_no_inner_step_is_snip():
    model = build_model("conv", (1, 8, 8), 10, 0).train()
    batch = _batches(10, (1, 8, 8), count=1, size=8)
    inputs = _inputs(model, (1, 8, 8))
    got = prospect_scores(model, batch, inputs, steps=0)
    want = snip_scores(model, batch, inputs)
    for n in inputs.names:
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-9)


def test_prospr_meta_gradient_matches_a_finite_difference_through_the_inner_steps():
    net = _two_layer(bias=True, seed=5)
    x = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    names = ("0.weight", "1.weight")
    steps, lr = 2, 0.5
    got = prospect_scores(net, [(x, y)], ScoreInputs(names, (3,)), steps=steps, lr=lr)

    def meta_loss(masks):  # the same unrolled SGD, no graph through the steps, for finite differences
        state = {n: p.detach() * masks[n] if n in masks else p.detach() for n, p in net.named_parameters()}
        for _ in range(steps):
            leaves = {n: t.clone().requires_grad_() for n, t in state.items()}
            loss = F.cross_entropy(torch.func.functional_call(net, leaves, (x,)), y)
            grads = torch.autograd.grad(loss, list(leaves.values()))
            state = {n: t - lr * g for (n, t), g in zip(state.items(), grads)}
        return float(F.cross_entropy(torch.func.functional_call(net, state, (x,)), y))

    h = 1e-6
    for n in names:
        for j in range(0, net.get_parameter(n).numel(), 3):
            up = {k: torch.ones_like(net.get_parameter(k)) for k in names}
            down = {k: v.clone() for k, v in up.items()}
            up[n].view(-1)[j] += h
            down[n].view(-1)[j] -= h
            fd = (meta_loss(up) - meta_loss(down)) / (2 * h)
            assert abs(float(got[n].view(-1)[j]) - abs(fd)) <= 1e-6 + 1e-5 * abs(fd), (n, j)


# --- (b) exact counts through the real pruner ------------------------------------------------------------------

_BUILT: dict = {}


def _model(name, shape, classes):
    """A fresh copy of the seed-0 model (vgg16_bn is built once per session)."""
    key = (name, tuple(shape), classes)
    if key not in _BUILT:
        _BUILT[key] = build_model(name, shape, classes, 0)
    return copy.deepcopy(_BUILT[key])


def _check_exact_prune(name, algorithm, shape, classes, iterations, compression=10.0):
    model = _model(name, shape, classes)
    before = copy.deepcopy(model.state_dict())
    batches = _batches(classes, shape)
    result = prune_model(model, algorithm, compression, shape, iterations=iterations, batches=lambda: batches,
                         seed=0)
    prunable = sum(p.size for p in result.params)
    assert result.remaining_params == round(prunable / compression), (name, algorithm)
    after = model.state_dict()
    for key, value in before.items():
        if key in result.masks.params:
            keep = result.masks.mask(key)
            assert int(keep.sum()) == int((after[key] != 0).sum()), key
            assert torch.equal(after[key], value * keep), key  # kept weights unchanged, pruned ones zero
        else:
            assert torch.equal(after[key], value), key  # biases, batch norm, buffers untouched
    return result


@pytest.mark.parametrize("algorithm", NEW)
@pytest.mark.parametrize("name, classes", [("vgg16_bn", 100), ("resnet20", 10)])
def test_exact_count_on_cifar_networks(light, algorithm, name, classes):
    _check_exact_prune(name, algorithm, CIFAR, classes, iterations=min(2, default_iterations(algorithm)))


@pytest.mark.parametrize("algorithm", NEW)
@pytest.mark.parametrize("name", ["vit_tiny", "mixer_tiny"])
def test_exact_count_on_a_vision_transformer_and_a_mixer(light, algorithm, name):
    assert name in MODELS.names()
    _check_exact_prune(name, algorithm, CIFAR, 10, iterations=min(2, default_iterations(algorithm)))


@pytest.mark.parametrize("name", ["vit_tiny", "mixer_tiny"])
def test_px_exact_count_on_digit_sized_transformers(name):
    _check_exact_prune(name, "px", (1, 8, 8), 10, iterations=3, compression=30.0)


@pytest.mark.parametrize("algorithm", NEW)
def test_exact_count_at_the_default_settings_on_a_small_mlp(algorithm):
    result = _check_exact_prune("mlp", algorithm, (1, 8, 8), 10, default_iterations(algorithm), compression=30.0)
    passes = {"prospr": 4 * 8, "ntk_sap": 20 * 5 * 3 * 100, "synflow_l2": 100, "px": 100 * 2 * 8}
    assert result.prune_passes == passes[algorithm]


def test_the_default_rounds_and_flags_are_the_published_ones():
    assert [default_iterations(a) for a in NEW] == [1, 20, 100, 100]
    assert [SCORERS[a].needs_data for a in NEW] == [True, False, False, True]


# --- (c) determinism -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", NEW)
def test_same_seed_gives_the_same_masks(light, algorithm):
    def masks(seed):
        model = _model("conv", (1, 8, 8), 10)
        result = prune_model(model, algorithm, 20.0, (1, 8, 8), iterations=2, batches=lambda: _batches(10, (1, 8, 8)),
                             seed=seed)
        return result.masks.state_dict()

    first, again, other = masks(0), masks(0), masks(1)
    assert all(torch.equal(first[n], again[n]) for n in first)
    if algorithm == "ntk_sap":  # its weight draws and noise come from the trial's seed
        assert not all(torch.equal(first[n], other[n]) for n in first)


def test_bad_inputs_raise_clear_messages():
    model = build_model("mlp", (1, 8, 8), 10, 0)
    inputs = _inputs(model, (1, 8, 8))
    with pytest.raises(ValueError, match="prospr needs scoring batches"):
        SCORERS["prospr"].score(model, [], inputs)
    with pytest.raises(ValueError, match="ntk_sap draws random tensors"):
        SCORERS["ntk_sap"].score(model, [], ScoreInputs(inputs.names, (1, 8, 8)))
    with pytest.raises(ValueError, match="has no parameter"):
        SCORERS["ntk_sap"].score(model, [], ScoreInputs(("nope.weight",), (1, 8, 8), inputs.generator))
