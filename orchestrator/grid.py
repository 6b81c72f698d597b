"""Sweeps: a `SweepSpec` expands into the trials of its grid, each with a stable id; presets name the paper's grids.

The grid is (model x dataset) x algorithm variant x log10 compression x seed.
An algorithm *variant* is an algorithm with its iteration count, scoring
mode and sanity-check ablation, so "snip x1, x10, x100", "grasp in eval and
train mode" or "synflow, shuffled" are one axis.
Each (model, dataset) trains with the paper's recipe where the paper gives one,
or with the sweep's own `train`, and `train_overrides` apply on top.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from common.axes import MAX_SEED, parse_compressions, parse_names, parse_seeds
from common.checks import check_choice, check_number
from common.registry import Registry
from common.vocabulary import ABLATIONS, DEFAULT_ABLATION, DEFAULT_PRUNE_MODE, DEFAULT_SCOPE, SCOPES
from trainables.specs import MAX_LEVELS, DataSpec, ModelSpec, PruneSpec, TrainSpec, TrialSpec
from trainables.recipes import FALLBACK_RECIPE, fallback_recipe, is_transformer, paper_recipe

ALL_ALGORITHMS = ("synflow", "snip", "grasp", "magnitude", "random")
# The methods a 2024 pruning-at-initialization paper compares against beyond the SynFlow paper's five:
# ProsPr (ICLR 2022), NTK-SAP (ICLR 2023), PX (CVPR 2024) and SynFlow with squared weights (as those papers run it).
RECENT_ALGORITHMS = ("prospr", "ntk_sap", "synflow_l2", "px")
# The axes of a grid, as the sweep's options name them: a sweep given all of them keeps nothing of its preset's grid.
GRID_AXES = ("models", "datasets", "algorithms", "log10_compressions", "seeds")
DEFAULT_IMP_LEVELS = 3
# A grid larger than this is a typo (10x the paper's fig6 grid is 23,400): refused before it is materialised.
MAX_TRIALS = 100_000


@dataclass(frozen=True)
class AlgorithmVariant:
    algorithm: str
    iterations: Optional[int] = None   # None: the algorithm's default (synflow 100, others 1)
    mode: str = DEFAULT_PRUNE_MODE
    levels: int = 0                    # imp only
    ablation: str = DEFAULT_ABLATION
    scope: str = DEFAULT_SCOPE         # the layer budget: global, local, erk, er

    def __post_init__(self) -> None:
        if self.algorithm == "imp" and not self.levels:
            object.__setattr__(self, "levels", DEFAULT_IMP_LEVELS)
        self.prune(0.0)

    def prune(self, log10_compression: float) -> PruneSpec:
        return PruneSpec(self.algorithm, log10_compression, iterations=self.iterations, mode=self.mode,
                         levels=self.levels, ablation=self.ablation, scope=self.scope)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    models: Tuple[str, ...]
    datasets: Tuple[str, ...]
    algorithms: Tuple[AlgorithmVariant, ...]
    log10_compressions: Tuple[float, ...]
    seeds: Tuple[int, ...]
    train: Optional[TrainSpec] = None            # None: the paper's recipe for each (model, dataset)
    train_overrides: Tuple[Tuple[str, object], ...] = ()
    description: str = ""
    also: Tuple["SweepSpec", ...] = ()  # more grids run as part of this sweep (other pairs, other variants)
    origin: str = ""  # the preset a renamed sweep was made from (its recipe's source); "" for the preset itself
    # GPUs each trial asks for unless --gpus-per-trial says otherwise; above 1, one Ray Train worker per GPU. A run
    # option, never part of a trial's description (its id).
    gpus_per_trial: Optional[float] = None

    def __post_init__(self) -> None:
        for axis in ("models", "datasets", "algorithms", "log10_compressions", "seeds"):
            if not getattr(self, axis):
                raise ValueError(f"sweep {self.name!r} has no {axis.replace('_', ' ')}")
        size = sum(len(p.models) * len(p.datasets) * len(p.algorithms) * len(p.log10_compressions) * len(p.seeds)
                   for p in self.parts())
        if size > MAX_TRIALS:
            raise ValueError(f"the grid has {size:,} trials, more than {MAX_TRIALS:,}; check the axes "
                             f"({len(self.log10_compressions):,} compressions, {len(self.seeds):,} seeds)")
        for m in self.models:
            ModelSpec(m)
        for d in self.datasets:
            DataSpec(d)
        for c in self.log10_compressions:
            PruneSpec("random", c)
        for s in self.seeds:
            check_number("seed", s, 0, MAX_SEED, integer=True)
        self.recipe(self.models[0], self.datasets[0])

    def recipe_source(self, model: str, dataset: str) -> str:
        source = self._recipe_source(model, dataset)
        if is_transformer(model) and self.recipe(model, dataset).optimizer == "sgd":
            source += "; a transformer trained with SGD may stay at chance: --optimizer adamw --lr-schedule cosine"
        return source

    def _recipe_source(self, model: str, dataset: str) -> str:
        if self.train is not None:
            return f"the {self.origin or self.name} preset's recipe"
        try:
            paper_recipe(model, dataset)
            return "the transformers' recipe (ViT-Lite, Hassani et al. 2021)" if is_transformer(model) else \
                "the paper's recipe"
        except ValueError:
            if fallback_recipe(model) is not FALLBACK_RECIPE:
                return "the paper has none for this pair: the transformers' CIFAR recipe"
            return "the paper has none for this pair: its VGG/CIFAR recipe"

    def recipe(self, model: str, dataset: str) -> TrainSpec:
        overrides = dict(self.train_overrides)
        if self.train is not None:
            base = self.train
        else:
            try:
                base = paper_recipe(model, dataset)
            except ValueError:
                base = fallback_recipe(model)
        schedule = overrides.get("lr_schedule", base.lr_schedule)
        if schedule == "cosine" and base.lr_schedule != "cosine" and "lr_drops" not in overrides:
            overrides["lr_drops"] = ()  # the drops belong to the multistep schedule the recipe had
        if schedule == "multistep" and base.lr_schedule != "multistep" and "warmup_epochs" not in overrides:
            overrides["warmup_epochs"] = 0
        if "epochs" in overrides and base.epochs and "lr_drops" not in overrides:
            # A shortened (or lengthened) run keeps the recipe's shape: drops move in proportion.
            scale = overrides["epochs"] / base.epochs
            drops = sorted({max(1, round(d * scale)) for d in base.lr_drops if round(d * scale) < overrides["epochs"]})
            overrides["lr_drops"] = tuple(drops)
        if "epochs" in overrides and base.epochs and base.warmup_epochs and "warmup_epochs" not in overrides:
            overrides["warmup_epochs"] = min(round(base.warmup_epochs * overrides["epochs"] / base.epochs),
                                             max(overrides["epochs"] - 1, 0))  # the warmup keeps its share
        return dataclasses.replace(base, **overrides)

    def parts(self) -> List["SweepSpec"]:
        """The grids of this sweep: its own, then each of `also` (flattened)."""
        own = dataclasses.replace(self, also=()) if self.also else self
        return [own] + [p for part in self.also for p in part.parts()]

    def trials(self) -> List[TrialSpec]:
        """The trials to run, in a stable order: each distinct network once.

        Every trial of the grid that trains the unpruned network (compression 1
        of a prune-at-init algorithm, see `TrialSpec.shared_dense`) is replaced
        by the one `dense` trial of its (model, data, recipe, seed).
        """
        seen: Dict[str, TrialSpec] = {}
        for spec in self.own_trials():
            shared = spec.shared_dense() or spec
            seen.setdefault(shared.trial_id, shared)
        return list(seen.values())

    def shared_dense_members(self) -> Dict[str, List[str]]:
        """Each shared dense trial's id -> the ids of the grid's own trials it stands for.

        A store written before dense trials were shared holds those: any of
        them counts as the dense trial done, so nothing stored runs again.
        """
        members: Dict[str, List[str]] = {}
        for spec in self.own_trials():
            shared = spec.shared_dense()
            if shared is not None:
                members.setdefault(shared.trial_id, []).append(spec.trial_id)
        return members

    def own_trials(self) -> List[TrialSpec]:
        """Every trial of every grid with its own description (1x trials not yet shared), stable, no duplicates."""
        seen: Dict[str, TrialSpec] = {}
        for part in self.parts():
            for model in part.models:
                for dataset in part.datasets:
                    train = part.recipe(model, dataset)
                    for variant in part.algorithms:
                        for log10 in part.log10_compressions:
                            for seed in part.seeds:
                                spec = TrialSpec(ModelSpec(model), DataSpec(dataset), variant.prune(log10), train,
                                                 seed)
                                seen.setdefault(spec.trial_id, spec)
        return list(seen.values())


PRESETS: Registry[SweepSpec] = Registry("preset")


def preset(spec: SweepSpec) -> SweepSpec:
    return PRESETS.register(spec.name)(spec)


def _range(start: float, stop: float, step: float) -> Tuple[float, ...]:
    return parse_compressions(f"{start}:{stop}:{step}")


def _defaults(*names: str) -> Tuple[AlgorithmVariant, ...]:
    return tuple(AlgorithmVariant(n) for n in names)


def with_ablations(variants: Tuple[AlgorithmVariant, ...], ablations: Tuple[str, ...]) -> Tuple[AlgorithmVariant, ...]:
    """Every variant under every ablation; imp (trained, not pruned at init) keeps only `none`."""
    crossed = [dataclasses.replace(v, ablation=a) for v in variants for a in ablations
               if v.algorithm != "imp" or a == DEFAULT_ABLATION]
    if not crossed:
        raise ValueError(f"ablations {', '.join(ablations)} apply to pruning at initialization, not to imp; "
                         f"add --ablations none or another algorithm")
    return tuple(dict.fromkeys(crossed))


def with_budgets(variants: Tuple[AlgorithmVariant, ...], budgets: Tuple[str, ...]) -> Tuple[AlgorithmVariant, ...]:
    """Every variant under every layer budget (`random` under `erk` is ERK-random); imp keeps its own."""
    return tuple(dict.fromkeys(dataclasses.replace(v, scope=b) if v.algorithm != "imp" else v
                               for v in variants for b in budgets))


def parse_budgets(text: str) -> Tuple[str, ...]:
    names = parse_names(text, "budgets")
    for name in names:
        check_choice("layer budget", name, SCOPES)
    return names


def parse_ablations(text: str) -> Tuple[str, ...]:
    names = parse_names(text, "ablations")
    for name in names:
        check_choice("ablation", name, ABLATIONS)
    return names


_QUICKSTART_TRAIN = TrainSpec(epochs=15, batch_size=64, lr=0.1, momentum=0.9, weight_decay=5e-4, lr_drops=(10,),
                              lr_drop_factor=0.1)
_QUICKSTART_RATIOS = (0.0, 0.5, 1.0, 1.5, 2.0)
preset(SweepSpec(
    name="quickstart",
    description="offline on CPU in minutes: mlp and conv on the 8x8 digits bundled with scikit-learn, and "
                "SynFlow's sanity-check ablations on mlp",
    models=("mlp", "conv"), datasets=("digits",), algorithms=_defaults(*ALL_ALGORITHMS),
    log10_compressions=_QUICKSTART_RATIOS, seeds=(0, 1), train=_QUICKSTART_TRAIN,
    also=(SweepSpec(
        name="quickstart", models=("mlp",), datasets=("digits",),
        algorithms=with_ablations(_defaults("synflow"), ABLATIONS[1:]),
        log10_compressions=_QUICKSTART_RATIOS, seeds=(0, 1), train=_QUICKSTART_TRAIN,
    ),),
))
preset(SweepSpec(
    name="fig1",
    description="the paper's Fig. 1: vgg16_bn on CIFAR-100, top-1 against compression",
    models=("vgg16_bn",), datasets=("cifar100",), algorithms=_defaults(*ALL_ALGORITHMS),
    log10_compressions=_range(0, 3, 0.25), seeds=(0, 1, 2),
))
preset(SweepSpec(
    name="fig6",
    description="the paper's Fig. 6: 12 (model, dataset) pairs with their recipes",
    models=("vgg11_bn", "vgg16_bn", "resnet18", "wide_resnet18"), datasets=("cifar10", "cifar100", "tiny_imagenet"),
    algorithms=_defaults(*ALL_ALGORITHMS), log10_compressions=_range(0, 3, 0.25), seeds=(0, 1, 2),
))
preset(SweepSpec(
    name="layer-collapse",
    description="prune only, vgg16_bn/CIFAR-100 up to 10^6: where each algorithm collapses a layer",
    models=("vgg16_bn",), datasets=("cifar100",), algorithms=_defaults(*ALL_ALGORITHMS),
    log10_compressions=_range(0, 6, 0.25), seeds=(0, 1, 2), train_overrides=(("epochs", 0),),
))
preset(SweepSpec(
    name="iterative-snip",
    description="SNIP with 1, 10 and 100 iterations against SynFlow on vgg16_bn/CIFAR-100",
    models=("vgg16_bn",), datasets=("cifar100",),
    algorithms=(AlgorithmVariant("snip", 1), AlgorithmVariant("snip", 10), AlgorithmVariant("snip", 100),
                AlgorithmVariant("synflow")),
    log10_compressions=_range(0, 3, 0.25), seeds=(0, 1, 2),
))
preset(SweepSpec(
    name="sanity-checks",
    description="the sanity checks of 'Missing the Mark': 5 algorithms x 5 ablations on vgg16_bn/CIFAR-100 and "
                "resnet20/CIFAR-10",
    models=("vgg16_bn",), datasets=("cifar100",), algorithms=with_ablations(_defaults(*ALL_ALGORITHMS), ABLATIONS),
    log10_compressions=_range(0, 3, 0.25), seeds=(0, 1, 2),
    also=(SweepSpec(
        name="sanity-checks", models=("resnet20",), datasets=("cifar10",),
        algorithms=with_ablations(_defaults(*ALL_ALGORITHMS), ABLATIONS),
        log10_compressions=_range(0, 3, 0.25), seeds=(0, 1, 2),
    ),),
))
preset(SweepSpec(
    name="effective-sparsity",
    description="prune only, vgg16_bn/CIFAR-100 up to 10^6: effective against nominal compression",
    models=("vgg16_bn",), datasets=("cifar100",),
    algorithms=_defaults(*ALL_ALGORITHMS, "force", "grasp_abs", *RECENT_ALGORITHMS),
    log10_compressions=_range(0, 6, 0.25), seeds=(0, 1, 2), train_overrides=(("epochs", 0),),
))
preset(SweepSpec(
    name="iterative",
    description="the rebuttal's iterative methods at equal cost: SNIP x1/x10/x100, FORCE x10/x100, SynFlow x100 "
                "on vgg16_bn/CIFAR-100",
    models=("vgg16_bn",), datasets=("cifar100",),
    algorithms=(AlgorithmVariant("snip", 1), AlgorithmVariant("snip", 10), AlgorithmVariant("snip", 100),
                AlgorithmVariant("force", 10), AlgorithmVariant("force", 100), AlgorithmVariant("synflow")),
    log10_compressions=_range(0, 3, 0.25), seeds=(0, 1, 2),
))
# NTK-SAP's and PX's density levels: 0.8^(2k) of the weights kept, k = 1..10 (64% down to 1.15%), and 1x.
_BASELINE_RATIOS = (0.0, *(round(2 * k * math.log10(1.25), 6) for k in range(1, 11)))
_BASELINES = (*_defaults("random", "magnitude", "snip", "grasp", "grasp_abs", "synflow", *RECENT_ALGORITHMS, "force",
                         "imp"),
              AlgorithmVariant("snip", 100),                          # iterative SNIP (FORCE's paper)
              AlgorithmVariant("random", scope="erk"), AlgorithmVariant("random", scope="er"))  # Liu et al. 2022
preset(SweepSpec(
    name="baselines-2024",
    description="every built-in algorithm, iterative SNIP, and ERK/ER random on vgg16_bn/CIFAR-100 and "
                "resnet20/CIFAR-10 at NTK-SAP's and PX's densities (64% down to 1.15%)",
    models=("vgg16_bn",), datasets=("cifar100",), algorithms=_BASELINES,
    log10_compressions=_BASELINE_RATIOS, seeds=(0, 1, 2),
    also=(SweepSpec(
        name="baselines-2024", models=("resnet20",), datasets=("cifar10",), algorithms=_BASELINES,
        log10_compressions=_BASELINE_RATIOS, seeds=(0, 1, 2),
    ),),
))
preset(SweepSpec(
    name="train-mode",
    description="SNIP and GraSP scored with batch-norm in eval mode and in train mode on vgg16_bn/CIFAR-100",
    models=("vgg16_bn",), datasets=("cifar100",),
    algorithms=tuple(AlgorithmVariant(a, mode=m) for a in ("snip", "grasp") for m in ("eval", "train")),
    log10_compressions=_range(0, 3, 0.25), seeds=(0, 1, 2),
))
# ImageNet: the paper gives no recipe, so the standard ResNet-50 one (Goyal et al. 2017 at its reference batch):
# SGD, momentum 0.9, global batch 256 (32 a GPU on 8 workers; the lr is for the global batch, never rescaled),
# lr 0.1, 90 epochs, /10 at 30 and 60, wd 1e-4.
_IMAGENET_TRAIN = TrainSpec(epochs=90, batch_size=256, lr=0.1, momentum=0.9, weight_decay=1e-4, lr_drops=(30, 60),
                            lr_drop_factor=0.1)
preset(SweepSpec(
    name="imagenet",
    description="resnet50 on ImageNet, the 5 algorithms of fig6 at its ratios; 8 GPUs a trial (DDP, one worker "
                "each); the standard 90-epoch recipe",
    models=("imagenet_resnet50",), datasets=("imagenet",), algorithms=_defaults(*ALL_ALGORITHMS),
    log10_compressions=_range(0, 3, 0.25), seeds=(0, 1, 2), train=_IMAGENET_TRAIN, gpus_per_trial=8.0,
))


def with_overrides(
    base: SweepSpec,
    *,
    models: Optional[str] = None,
    datasets: Optional[str] = None,
    algorithms: Optional[str] = None,
    log10_compressions: Optional[str] = None,
    seeds: Optional[str] = None,
    iterations: Optional[int] = None,
    levels: Optional[int] = None,
    ablations: Optional[str] = None,
    budgets: Optional[str] = None,
    **train: object,
) -> SweepSpec:
    """The preset with CLI axis overrides; each value is validated and named in the error."""
    changes: Dict[str, object] = {}
    if models is not None:
        changes["models"] = parse_names(models, "models")
    if datasets is not None:
        changes["datasets"] = parse_names(datasets, "datasets")
    variants = base.algorithms
    if algorithms is not None:
        variants = tuple(AlgorithmVariant(a) for a in parse_names(algorithms, "algorithms"))
    if levels is not None:
        check_number("--levels", levels, 1, MAX_LEVELS, integer=True)
        if not any(v.algorithm == "imp" for v in variants):
            raise ValueError(f"--levels {levels} applies only to algorithm imp, which this sweep does not run")
        variants = tuple(dataclasses.replace(v, levels=levels) if v.algorithm == "imp" else v for v in variants)
    if iterations is not None:
        if all(v.algorithm == "imp" for v in variants):
            raise ValueError(f"--iterations {iterations} does not apply to imp (it prunes once per level; "
                             f"use --levels)")
        variants = tuple(dataclasses.replace(v, iterations=iterations) if v.algorithm != "imp" else v
                         for v in variants)
    if ablations is not None:
        variants = with_ablations(tuple(dataclasses.replace(v, ablation=DEFAULT_ABLATION) for v in variants),
                                  parse_ablations(ablations))
    if budgets is not None:
        variants = with_budgets(tuple(dataclasses.replace(v, scope=DEFAULT_SCOPE) for v in variants),
                                parse_budgets(budgets))
    changes["algorithms"] = tuple(dict.fromkeys(variants))
    if log10_compressions is not None:
        changes["log10_compressions"] = parse_compressions(log10_compressions)
    if seeds is not None:
        changes["seeds"] = parse_seeds(seeds)
    train_changes = tuple((k, v) for k, v in train.items() if v is not None)
    if train_changes:
        changes["train_overrides"] = tuple(dict(base.train_overrides, **dict(train_changes)).items())
    if base.also:  # every grid of the preset gets the same overrides (trials they then share run once)
        dataclasses.replace(base, also=(), **changes)  # the main grid's own errors first: they name what was asked
        changes["also"] = tuple(
            with_overrides(part, models=models, datasets=datasets, algorithms=algorithms,
                           log10_compressions=log10_compressions, seeds=seeds, iterations=iterations, levels=levels,
                           ablations=ablations, budgets=budgets, **train)
            for part in base.also)
    return dataclasses.replace(base, **changes)
