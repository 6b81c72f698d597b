"""The description of one trial: frozen dataclasses composed into `TrialSpec`.

The trial id is a hash of the description's canonical JSON *without the fields
that equal their defaults* (as open_lth's run hashes do). So a trial re-run or
shared by two sweeps has one id and lands in the store once, and a field added
later with a default leaves every stored trial's id unchanged. Two rules keep
that promise: never change an existing field's default (tests pin them), and
give every new field a default that means "as before". Where things live (data
directory, store, storage path) is not part of the description.

`precision="auto"` (the default, so outside the id) is a policy, not an
arithmetic: bf16 autocast on a GPU, fp32 on a CPU. A trial's row records the
precision that ran; an explicit `fp32` or `bf16` is part of the id.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from common.axes import MAX_SEED
from common.checks import check_choice, check_number
from common.registry import check_known
from common.vocabulary import (ABLATIONS, BUILTIN_ALGORITHMS, BUILTIN_DATASETS, BUILTIN_MODELS, DEFAULT_ABLATION,
                               DEFAULT_PRUNE_MODE, DEFAULT_SCHEDULE, DEFAULT_SCOPE, DENSE_ABLATION, DENSE_ALGORITHM,
                               LR_SCHEDULES, OPTIMIZERS, OWN_DENSE_TRIAL, PRECISIONS, PRUNE_MODES, SCHEDULES, SCOPES,
                               default_iterations)


# Bounds on every number of a description: generous for research, small enough that a typo fails at once.
MAX_LOG10_COMPRESSION = 12.0        # 10^12x: no network has that many weights
MAX_ITERATIONS = 10_000
MAX_EXAMPLES_PER_CLASS = 10_000
MAX_LEVELS = 100
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536
MAX_CLASSES = 1_000_000
MAX_SYNTHETIC_SIZE = 10_000_000
MAX_INPUT_SIDE = 4_096


@dataclass(frozen=True)
class ModelSpec:
    name: str

    def __post_init__(self) -> None:
        check_known("model", self.name, BUILTIN_MODELS)


@dataclass(frozen=True)
class DataSpec:
    """A dataset by name. `input_shape`/`num_classes`/`size` only shape `synthetic`."""

    name: str
    input_shape: Optional[Tuple[int, ...]] = None
    num_classes: Optional[int] = None
    size: Optional[int] = None

    def __post_init__(self) -> None:
        check_known("dataset", self.name, BUILTIN_DATASETS)
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        overrides = (self.input_shape, self.num_classes, self.size)
        if self.name != "synthetic" and any(o is not None for o in overrides):
            raise ValueError(
                f"input_shape/num_classes/size can only be set for dataset 'synthetic', not {self.name!r}"
            )
        if self.input_shape is not None:
            if not 1 <= len(self.input_shape) <= 3:
                raise ValueError(f"input_shape must have 1 to 3 entries (channels, height, width), got {self.input_shape}")
            for side in self.input_shape:
                check_number("input_shape entry", side, 1, MAX_INPUT_SIDE, integer=True)
        if self.num_classes is not None:
            check_number("num_classes", self.num_classes, 2, MAX_CLASSES, integer=True)
        if self.size is not None:
            check_number("size", self.size, 1, MAX_SYNTHETIC_SIZE, integer=True)


@dataclass(frozen=True)
class PruneSpec:
    """How to prune at initialization.

    `log10_compression` is the exponent of the compression ratio (0 = dense,
    1 = 10x fewer weights). `iterations=None` resolves to the algorithm's
    default (100 for synflow, 1 otherwise) so the id hashes the value used.
    `levels` is the number of train-prune-rewind rounds of `imp`. `ablation`
    is a sanity check applied to the method (see `trainables.pruning.ablations`);
    `none` (the default, so outside the id) is the method itself.
    """

    algorithm: str
    log10_compression: float = 0.0
    iterations: Optional[int] = None
    schedule: str = DEFAULT_SCHEDULE
    scope: str = DEFAULT_SCOPE
    mode: str = DEFAULT_PRUNE_MODE
    prune_bias: bool = False
    prune_batchnorm: bool = False
    prune_residual: bool = False
    prune_layernorm: bool = False
    prune_embedding: bool = False
    examples_per_class: int = 10
    levels: int = 0
    ablation: str = DEFAULT_ABLATION

    def __post_init__(self) -> None:
        check_known("algorithm", self.algorithm, BUILTIN_ALGORITHMS)
        check_number("log10_compression", self.log10_compression, 0, MAX_LOG10_COMPRESSION)
        object.__setattr__(self, "log10_compression", round(float(self.log10_compression), 6))
        if self.algorithm == DENSE_ALGORITHM and self.log10_compression != 0:
            raise ValueError(f"algorithm 'dense' trains the network unpruned, at log10 compression 0; got "
                             f"{self.log10_compression:g}")
        if self.algorithm == DENSE_ALGORITHM and self.ablation not in set(DENSE_ABLATION.values()):
            raise ValueError(f"ablation {self.ablation!r} cannot change an unpruned network; valid for dense: "
                             f"{', '.join(sorted(set(DENSE_ABLATION.values())))}")
        if self.iterations is None:
            object.__setattr__(self, "iterations", default_iterations(self.algorithm))
        check_number("iterations", self.iterations, 1, MAX_ITERATIONS, integer=True)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("scope", self.scope, SCOPES)
        check_choice("prune mode", self.mode, PRUNE_MODES)
        check_number("examples_per_class", self.examples_per_class, 1, MAX_EXAMPLES_PER_CLASS, integer=True)
        if self.algorithm == "imp":
            check_number("levels (imp)", self.levels, 1, MAX_LEVELS, integer=True)
            if self.iterations != 1:
                raise ValueError(f"iterations={self.iterations} does not apply to imp (it prunes once per level; "
                                 f"set levels)")
        elif self.levels:
            raise ValueError(f"levels is only for algorithm 'imp', got levels={self.levels} for {self.algorithm!r}")
        check_choice("ablation", self.ablation, ABLATIONS)
        if self.algorithm == "imp" and self.ablation != DEFAULT_ABLATION:
            raise ValueError(f"ablation {self.ablation!r} applies to pruning at initialization, not to imp; "
                             f"valid for imp: {DEFAULT_ABLATION}")

    @property
    def compression(self) -> float:
        return 10.0 ** self.log10_compression


@dataclass(frozen=True)
class TrainSpec:
    """SGD with momentum and multi-step learning-rate drops (the paper's recipe), or AdamW with a linear warmup
    and a cosine decay (the vision transformers' recipe).

    `momentum` is SGD's; AdamW keeps torch's betas (0.9, 0.999) and decouples
    the weight decay. `lr_drops` and `lr_drop_factor` belong to the multistep
    schedule, `warmup_epochs` to the cosine one.
    """

    epochs: int = 0
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_drops: Tuple[int, ...] = ()
    lr_drop_factor: float = 0.1
    precision: str = "auto"
    optimizer: str = "sgd"
    lr_schedule: str = "multistep"
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr_drops", tuple(int(d) for d in self.lr_drops))
        for name in ("lr", "momentum", "weight_decay", "lr_drop_factor"):  # 1 and 1.0 are one trial
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))
        check_number("epochs", self.epochs, 0, MAX_EPOCHS, integer=True)
        check_number("batch_size", self.batch_size, 1, MAX_BATCH_SIZE, integer=True)
        check_number("lr", self.lr, 0, sys.float_info.max)
        check_number("momentum", self.momentum, 0, 1)
        check_number("weight_decay", self.weight_decay, 0, sys.float_info.max)
        check_number("lr_drop_factor", self.lr_drop_factor, 0, sys.float_info.max)
        if list(self.lr_drops) != sorted(self.lr_drops) or any(not 1 <= d <= MAX_EPOCHS for d in self.lr_drops):
            raise ValueError(f"lr_drops must be increasing epochs in [1, {MAX_EPOCHS}], got {list(self.lr_drops)}")
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("lr schedule", self.lr_schedule, LR_SCHEDULES)
        check_number("warmup_epochs", self.warmup_epochs, 0, MAX_EPOCHS, integer=True)
        if self.lr_schedule == "cosine" and self.lr_drops:
            raise ValueError(f"lr_drops {list(self.lr_drops)} belong to the multistep schedule, not to cosine")
        if self.lr_schedule == "multistep" and self.warmup_epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} belongs to the cosine schedule, not to multistep")


@dataclass(frozen=True)
class TrialSpec:
    model: ModelSpec
    data: DataSpec
    prune: PruneSpec
    train: TrainSpec = field(default_factory=TrainSpec)
    seed: int = 0

    def __post_init__(self) -> None:
        check_number("seed", self.seed, 0, MAX_SEED, integer=True)

    def to_dict(self) -> Dict[str, Any]:
        """Every field, defaults included: what a trial needs to rebuild its description."""
        return dataclasses.asdict(self)

    def identity(self) -> Dict[str, Any]:
        """The description without the fields that equal their defaults: what the id hashes."""
        return _without_defaults(self)

    def canonical_json(self) -> str:
        return json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))

    @functools.cached_property
    def trial_id(self) -> str:
        """Computed once per description (frozen, so it cannot change): a grid of 20,000 asks it many times."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    def shared_dense(self) -> Optional["TrialSpec"]:
        """The `dense` trial that trains exactly this trial's network, or None when this trial's network is its own.

        At compression 1 a prune-at-init algorithm keeps every weight and
        leaves the weights untouched, whatever its scores, iterations, scope or
        scoring mode, and an ablation that permutes or re-draws a full mask
        changes nothing; the data order depends on the seed alone. So all of
        them train one network per (model, data, recipe, seed): this one.
        `reinit` re-draws the weights, so its dense trial is a reinit one.
        """
        p = self.prune
        if p.log10_compression != 0 or p.algorithm in OWN_DENSE_TRIAL or p.algorithm == DENSE_ALGORITHM:
            return None
        return TrialSpec(self.model, self.data, PruneSpec(DENSE_ALGORITHM, 0.0, ablation=DENSE_ABLATION[p.ablation]),
                         self.train, self.seed)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrialSpec":
        return cls(
            model=ModelSpec(**d["model"]),
            data=DataSpec(**d["data"]),
            prune=PruneSpec(**d["prune"]),
            train=TrainSpec(**d.get("train", {})),
            seed=d.get("seed", 0),
        )


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _canonical_value(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return _without_defaults(value)
    if isinstance(value, (tuple, list)):
        return [_canonical_value(v) for v in value]
    return value


def _without_defaults(obj: Any) -> Dict[str, Any]:
    """A dataclass as a dict of its non-default fields, recursively; a nested spec equal to its default drops out."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value == _default_of(f):
            continue
        out[f.name] = _canonical_value(value)
    return out
