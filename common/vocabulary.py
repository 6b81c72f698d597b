"""The values a trial's pruning settings and the store's columns take, and the defaults.

The descriptions (`trainables.specs`), the pruner (`trainables.pruning`) and the
analysis, which selects "the default settings" from the store without torch,
all import these, so they cannot disagree.
"""
from __future__ import annotations

from typing import Dict

SCHEDULES = ("exponential", "linear")
# Layer budgets: how many weights each layer keeps. `global`: one threshold over every score; `local`: the same
# density in every layer; `erk` / `er`: Erdos-Renyi(-Kernel) densities from each layer's shape (RigL).
SCOPES = ("global", "local", "erk", "er")
PRUNE_MODES = ("eval", "train")
PRECISIONS = ("auto", "fp32", "bf16")
# Training: SGD with momentum and multi-step drops is the SynFlow paper's recipe; vision transformers train with
# AdamW and a cosine schedule after a linear warmup (Hassani et al. 2021, the CIFAR ViT-Lite recipe).
OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("multistep", "cosine")
# The built-in names of each registry, known without importing torch (tests keep them equal to the registries),
# so the sweep checks a grid's names before anything heavy loads.
BUILTIN_MODELS = ("conv", "imagenet_resnet50", "imagenet_vgg16", "imagenet_vgg19", "mixer", "mixer_tiny", "mlp",
                  "resnet110", "resnet18", "resnet20", "resnet32", "resnet44", "resnet56", "vgg11", "vgg11_bn", "vgg13",
                  "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "vit", "vit_tiny", "wide_resnet18")
BUILTIN_DATASETS = ("cifar10", "cifar100", "digits", "imagenet", "mnist", "synthetic", "tiny_imagenet")
BUILTIN_ALGORITHMS = ("dense", "force", "grasp", "grasp_abs", "imp", "magnitude", "ntk_sap", "prospr", "px", "random",
                      "snip", "synflow", "synflow_l2")

# `dense` trains the network at its initialization, unpruned. Every prune-at-init algorithm at compression 1 keeps
# every weight and leaves the weights as they were (a scorer may not change the model), so they all train this
# one network: a sweep runs it once, as a `dense` trial, and the analysis draws each algorithm's 1x point from it.
DENSE_ALGORITHM = "dense"
# Algorithms that do not prune at initialization: their 1x trials are their own (imp trains before it cuts).
OWN_DENSE_TRIAL = ("imp",)

# Sanity-check ablations of a pruned network (Frankle et al. 2021; Su et al. 2020): `none` is the method itself.
ABLATIONS = ("none", "shuffle", "reinit", "invert", "layerwise_random")
# What each ablation does to a full mask (compression 1): shuffle, invert and layerwise_random permute or re-draw
# a mask that keeps everything, so nothing changes and the trial is the dense one; reinit draws new weights, so
# its dense trial is its own (one per seed, shared by every algorithm).
DENSE_ABLATION = {"none": "none", "shuffle": "none", "invert": "none", "layerwise_random": "none",
                  "reinit": "reinit"}

DEFAULT_SCHEDULE = "exponential"
DEFAULT_SCOPE = "global"
DEFAULT_PRUNE_MODE = "eval"
DEFAULT_ABLATION = "none"
# The settings figures select on, as {trials column: value}.
DEFAULT_PRUNE_SETTINGS: Dict[str, str] = {"prune_mode": DEFAULT_PRUNE_MODE, "scope": DEFAULT_SCOPE,
                                          "schedule": DEFAULT_SCHEDULE, "ablation": DEFAULT_ABLATION}

# Pruning iterations when a description leaves them out: SynFlow's paper default is 100 rounds, every other
# algorithm prunes in one shot.
# FORCE is iterative by definition (with one round it is SNIP), so it gets SynFlow's 100 too.
# SynFlow-L2 and PX: 100 rounds (px-ntk-pruning launch_scripts/cifar10.sh, 'rounds': 100); NTK-SAP: 20
# (NTK-SAP scripts/run.sh, --prune-epochs 20); ProsPr is one shot.
DEFAULT_ITERATIONS: Dict[str, int] = {"synflow": 100, "force": 100, "synflow_l2": 100, "px": 100, "ntk_sap": 20}


def default_iterations(algorithm: str) -> int:
    return DEFAULT_ITERATIONS.get(algorithm, 1)


# The `kind` of a layer whose weight is prunable (the others are bias, batchnorm, ...): paths and
# layer-collapse counts run through these alone.
WEIGHT_KINDS = ("conv", "linear")
