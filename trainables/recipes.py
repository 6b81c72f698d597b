"""The paper's training recipes per (model, dataset): torch-free, so the sweep resolves a grid before torch loads."""
from __future__ import annotations

from trainables.specs import TrainSpec

# The paper's recipes (SGD, momentum 0.9, batch 128): (models, datasets) -> overrides of TrainSpec.
_VGG = ("vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn", "vgg11", "vgg13", "vgg16", "vgg19")
_RESNET = ("resnet18", "wide_resnet18")
PAPER_RECIPES = [
    (_VGG, ("cifar10", "cifar100"), dict(epochs=160, lr=0.1, lr_drops=(60, 120), lr_drop_factor=0.1, weight_decay=1e-4)),
    (_RESNET, ("cifar10", "cifar100"), dict(epochs=160, lr=0.01, lr_drops=(60, 120), lr_drop_factor=0.2, weight_decay=5e-4)),
    (_VGG, ("tiny_imagenet",), dict(epochs=100, lr=0.01, lr_drops=(30, 60, 80), lr_drop_factor=0.1, weight_decay=1e-4)),
    (_RESNET, ("tiny_imagenet",), dict(epochs=100, lr=0.01, lr_drops=(30, 60, 80), lr_drop_factor=0.2, weight_decay=5e-4)),
]


# Vision transformers and MLP-Mixers do not train with SGD from scratch on small data (a ViT stays at chance on the
# digits at any SGD learning rate we tried): ViT-Lite's CIFAR recipe (Hassani et al. 2021, "Escaping the Big Data
# Paradigm with Compact Transformers"): AdamW, lr 5e-4 at batch 128, weight decay 3e-2, 300 epochs, cosine decay
# after 10 warmup epochs. Left out: its label smoothing, mixup/cutmix and AutoAugment (every model here trains with
# the same crop-and-flip augmentation).
_TRANSFORMERS = ("vit", "mixer", "vit_tiny", "mixer_tiny")
TRANSFORMER_RECIPE = dict(epochs=300, lr=5e-4, weight_decay=3e-2, optimizer="adamw", lr_schedule="cosine",
                          warmup_epochs=10)
PAPER_RECIPES.append((_TRANSFORMERS, ("cifar10", "cifar100", "tiny_imagenet"), TRANSFORMER_RECIPE))


def paper_recipe(model: str, dataset: str, **overrides) -> TrainSpec:
    """The paper's training recipe for (model, dataset), with `overrides` on top."""
    for models, datasets, recipe in PAPER_RECIPES:
        if model in models and dataset in datasets:
            return TrainSpec(**{**recipe, "momentum": 0.9, "batch_size": 128, **overrides})
    known = sorted({f"{m}/{d}" for ms, ds, _ in PAPER_RECIPES for m in ms for d in ds})
    raise ValueError(f"the paper gives no recipe for {model}/{dataset}; known: {', '.join(known)}")


# For (model, dataset) pairs the paper trains no network on: its VGG/CIFAR recipe (the sweep's plan says so), or for
# a transformer the transformers' CIFAR recipe.
FALLBACK_RECIPE = paper_recipe("vgg16_bn", "cifar10")
TRANSFORMER_FALLBACK_RECIPE = paper_recipe("vit", "cifar10")


def is_transformer(model: str) -> bool:
    return model in _TRANSFORMERS


def fallback_recipe(model: str) -> TrainSpec:
    return TRANSFORMER_FALLBACK_RECIPE if is_transformer(model) else FALLBACK_RECIPE
