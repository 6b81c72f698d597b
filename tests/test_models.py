"""The model zoo: shapes, stock layers, seeded initialization, names the pruning code relies on."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainables.models import MODELS, build_model
from common.registry import UnknownNameError

CIFAR = (3, 32, 32)
TINY_IMAGENET = (3, 64, 64)
DIGITS = (1, 8, 8)
MNIST = (1, 28, 28)

# The input each model is meant for; ImageNet models at 32x32, the smallest
# torchvision's VGG accepts, to stay fast.
TYPICAL_SHAPES = {
    **{f"vgg{d}{bn}": CIFAR for d in (11, 13, 16, 19) for bn in ("", "_bn")},
    **{f"resnet{d}": CIFAR for d in (20, 32, 44, 56, 110)},
    "resnet18": TINY_IMAGENET,
    "wide_resnet18": CIFAR,
    "mlp": DIGITS,
    "conv": MNIST,
    "imagenet_vgg16": CIFAR,
    "imagenet_vgg19": CIFAR,
    "imagenet_resnet50": CIFAR,
    "vit": CIFAR,
    "vit_tiny": DIGITS,
    "mixer": TINY_IMAGENET,
    "mixer_tiny": DIGITS,
}

# Total parameters at 10 classes on a 3-channel input (any size: pools are global).
PARAMETERS_AT_10_CLASSES = {
    "vgg11": 9_225_610, "vgg11_bn": 9_231_114, "vgg13": 9_410_122, "vgg13_bn": 9_416_010,
    "vgg16": 14_719_818, "vgg16_bn": 14_728_266, "vgg19": 20_029_514, "vgg19_bn": 20_040_522,
    # He et al.'s 0.27M / 0.46M / 0.66M / 0.85M / 1.7M, with option-B projections.
    "resnet20": 272_474, "resnet32": 466_906, "resnet44": 661_338, "resnet56": 855_770,
    "resnet110": 1_730_714,
    "resnet18": 11_173_962,  # the usual CIFAR ResNet-18 count
    "wide_resnet18": 44_662_922,
    "vit": 3_722_250,  # ViT-Lite-7/4's 3.72M (Hassani et al. 2021)
    "mixer": 4_360_970, "vit_tiny": 21_162, "mixer_tiny": 14_858,
}


def prunable_weights(model: nn.Module) -> dict:
    """Conv and linear weights outside residual projections, by module name."""
    return {
        name: module.weight.numel()
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear)) and "downsample" not in name.split(".")
    }


def test_every_registered_model_has_a_typical_shape_here():
    assert sorted(TYPICAL_SHAPES) == MODELS.names()


@pytest.mark.parametrize("name", sorted(TYPICAL_SHAPES))
def test_model_builds_from_stock_layers_and_classifies_a_batch(name):
    shape = TYPICAL_SHAPES[name]
    model = build_model(name, shape, num_classes=7, seed=0)
    assert model.training
    for param in model.parameters():
        assert param.dtype == torch.float32 and param.device.type == "cpu"
    for qualified, module in model.named_modules():
        if not list(module.children()):
            module_path = type(module).__module__
            assert module_path.startswith(("torch.nn", "torchvision")), (qualified, module_path)
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_vgg16_bn_cifar100_counts():
    model = build_model("vgg16_bn", CIFAR, num_classes=100, seed=0)
    weights = prunable_weights(model)
    # 13 convs (one per plan entry) and the one 512 -> 100 classifier.
    assert len(weights) == 14
    assert weights["classifier"] == 512 * 100
    assert sum(weights.values()) == 14_761_664
    assert sum(weights.values()) - weights["classifier"] == 14_710_464
    assert sum(p.numel() for p in model.parameters()) == 14_774_436


def test_parameter_counts_are_pinned():
    with torch.device("meta"):  # counts need no weights drawn
        counts = {
            name: sum(p.numel() for p in MODELS[name](CIFAR, 10).parameters())
            for name in PARAMETERS_AT_10_CLASSES
        }
    assert counts == PARAMETERS_AT_10_CLASSES


def test_imagenet_models_match_torchvision_published_sizes():
    with torch.device("meta"):
        counts = {
            name: sum(p.numel() for p in MODELS[name]((3, 224, 224), 1000).parameters())
            for name in ("imagenet_vgg16", "imagenet_vgg19", "imagenet_resnet50")
        }
    assert counts == {
        "imagenet_vgg16": 138_357_544,
        "imagenet_vgg19": 143_667_240,
        "imagenet_resnet50": 25_557_032,
    }


def test_vgg_plan_pools_and_output_map():
    model = build_model("vgg16_bn", CIFAR, num_classes=10, seed=0)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256] + [512] * 6
    assert all(c.bias is not None and c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 4
    # 32x32 leaves a 2x2 map, which the SynFlow code average-pools: same as global.
    assert model.features(torch.randn(1, *CIFAR)).shape == (1, 512, 2, 2)
    no_bn = build_model("vgg16", CIFAR, num_classes=10, seed=0)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in no_bn.modules())


def test_vgg_skips_pools_on_a_one_pixel_map_keeping_parameter_names():
    small = build_model("vgg16_bn", DIGITS, num_classes=10, seed=0)
    pools = [type(m) for m in small.features if isinstance(m, (nn.MaxPool2d, nn.Identity))]
    assert pools == [nn.MaxPool2d, nn.MaxPool2d, nn.MaxPool2d, nn.Identity]  # 8 -> 4 -> 2 -> 1
    with torch.no_grad():
        assert small(torch.randn(2, *DIGITS)).shape == (2, 10)
    large = build_model("vgg16_bn", (1, 32, 32), num_classes=10, seed=0)
    assert small.state_dict().keys() == large.state_dict().keys()


def test_vgg_initialization_is_synflows_kaiming_fan_in():
    model = build_model("vgg16_bn", CIFAR, num_classes=100, seed=3)
    last_conv = model.features[-3]
    assert isinstance(last_conv, nn.Conv2d) and last_conv.in_channels == 512
    fan_in = 512 * 9
    assert last_conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.02)
    assert model.classifier.weight.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.05)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            assert not module.bias.any()
        if isinstance(module, nn.BatchNorm2d):
            assert (module.weight == 1).all() and not module.bias.any()


def test_resnet18_initialization_is_kaiming_fan_out():
    model = build_model("resnet18", CIFAR, num_classes=10, seed=3)
    conv = model.layer4[1].conv2
    fan_out = 512 * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.02)


@pytest.mark.parametrize(
    "name, projections",
    [
        ("resnet20", ["layer2.0.downsample.0", "layer3.0.downsample.0"]),
        ("resnet110", ["layer2.0.downsample.0", "layer3.0.downsample.0"]),
        ("resnet18", ["layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0"]),
        ("imagenet_resnet50", [f"layer{i}.0.downsample.0" for i in (1, 2, 3, 4)]),
    ],
)
def test_resnet_projections_are_the_only_1x1_convs_and_are_named_downsample(name, projections):
    with torch.device("meta"):
        model = MODELS[name](CIFAR, 10)
    one_by_one = [
        n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
    ]
    downsample_convs = [
        n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and "downsample" in n.split(".")
    ]
    if name == "imagenet_resnet50":  # bottlenecks have 1x1 convs of their own
        assert downsample_convs == projections
    else:
        assert one_by_one == downsample_convs == projections
    for n in projections:
        block = model.get_submodule(n.rsplit(".downsample", 1)[0])
        assert isinstance(block.downsample, nn.Sequential)
        assert [type(m) for m in block.downsample] == [nn.Conv2d, nn.BatchNorm2d]


def test_resnet_blocks_add_their_shortcut():
    model = build_model("resnet20", CIFAR, num_classes=10, seed=0).eval()
    identity_block, projection_block = model.layer1[1], model.layer2[0]
    assert identity_block.downsample is None
    assert sum(p.numel() for n, p in identity_block.named_parameters() if "downsample" in n) == 0
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        for block in (identity_block, projection_block):
            block.conv2.weight.zero_()  # the residual branch now adds bn2's bias (0) only
        assert torch.equal(identity_block(x), torch.relu(x))
        expected = torch.relu(projection_block.downsample(x))
        assert torch.allclose(projection_block(x), expected)
        assert projection_block(x).shape == (2, 32, 4, 4)


def test_wide_resnet18_doubles_every_width():
    with torch.device("meta"):
        narrow, wide = MODELS["resnet18"](CIFAR, 10), MODELS["wide_resnet18"](CIFAR, 10)
    narrow_widths = [m.out_channels for m in narrow.modules() if isinstance(m, nn.Conv2d)]
    wide_widths = [m.out_channels for m in wide.modules() if isinstance(m, nn.Conv2d)]
    assert wide_widths == [2 * w for w in narrow_widths]
    assert narrow_widths[0] == 64 and narrow.fc.in_features == 512 and wide.fc.in_features == 1024


@pytest.mark.parametrize("name, shape", [("vgg11_bn", CIFAR), ("resnet20", CIFAR), ("resnet18", CIFAR),
                                         ("mlp", DIGITS), ("conv", DIGITS), ("imagenet_resnet50", (1, 32, 32))])
def test_initial_weights_depend_only_on_the_seed(name, shape):
    def state(seed):
        return build_model(name, shape, num_classes=10, seed=seed).state_dict()

    def same(a, b):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    reference = state(5)
    torch.manual_seed(123)
    torch.rand(1000)  # earlier use of the global RNG must not leak in
    rng_before = torch.get_rng_state()
    again = state(5)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert same(reference, again)
    assert not same(reference, state(6))


def test_build_ignores_the_callers_default_dtype_and_device():
    reference = build_model("resnet20", CIFAR, num_classes=10, seed=1).state_dict()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with torch.device("meta"):
            model = build_model("resnet20", CIFAR, num_classes=10, seed=1)
    finally:
        torch.set_default_dtype(previous)
    assert torch.get_default_dtype() == previous
    state = model.state_dict()
    assert all(t.device.type == "cpu" for t in state.values())
    assert all(torch.equal(reference[k], state[k]) for k in reference)


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(UnknownNameError) as error:
        build_model("vgg17", CIFAR, num_classes=10, seed=0)
    message = str(error.value)
    assert "'vgg17'" in message
    for name in ("vgg16_bn", "resnet20", "wide_resnet18", "mlp", "imagenet_resnet50"):
        assert name in message


@pytest.mark.parametrize(
    "name, shape",
    [
        ("imagenet_vgg16", (3, 16, 16)),
        ("imagenet_vgg19", (3, 31, 64)),
        ("vgg16_bn", (32, 32)),
        ("resnet20", (3, 0, 32)),
        ("conv", (1, 8, 8, 1)),
        ("mlp", (0, 8)),
    ],
)
def test_too_small_or_malformed_input_is_refused_naming_model_and_shape(name, shape):
    with pytest.raises(ValueError) as error:
        build_model(name, shape, num_classes=10, seed=0)
    assert repr(name) in str(error.value) and repr(tuple(shape)) in str(error.value)


def test_imagenet_models_take_other_channel_counts():
    model = build_model("imagenet_resnet50", (1, 32, 32), num_classes=4, seed=0)
    assert model.conv1.in_channels == 1 and model.conv1.out_channels == 64
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 4)
    assert not any(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))


@pytest.mark.parametrize("num_classes, seed", [(0, 0), (True, 0), (10, -1), (10, 1.5)])
def test_bad_class_count_or_seed_is_refused(num_classes, seed):
    with pytest.raises(ValueError):
        build_model("mlp", DIGITS, num_classes=num_classes, seed=seed)
