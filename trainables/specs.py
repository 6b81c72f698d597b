"""The description of one trial: frozen dataclasses composed into `TrialSpec`.

Every field that changes a trial's result is part of its canonical JSON, and the
trial id is a hash of that JSON, so a trial re-run or shared by two sweeps has
one id and lands in the store once. Where things live (data directory, store,
storage path) is not part of the description.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

SCHEDULES = ("exponential", "linear")
SCOPES = ("global", "local")
PRUNE_MODES = ("eval", "train")
PRECISIONS = ("auto", "fp32", "bf16")
DEFAULT_SYNFLOW_ITERATIONS = 100


def _choice(what: str, value: Any, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; valid {what}s: {', '.join(map(str, choices))}")


def _at_least(what: str, value: Any, minimum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class ModelSpec:
    name: str

    def __post_init__(self) -> None:
        from trainables.models import MODELS

        MODELS.check(self.name)


@dataclass(frozen=True)
class DataSpec:
    """A dataset by name. `input_shape`/`num_classes`/`size` only shape `synthetic`."""

    name: str
    input_shape: Optional[Tuple[int, ...]] = None
    num_classes: Optional[int] = None
    size: Optional[int] = None

    def __post_init__(self) -> None:
        from trainables.data import DATASETS

        DATASETS.check(self.name)
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        overrides = (self.input_shape, self.num_classes, self.size)
        if self.name != "synthetic" and any(o is not None for o in overrides):
            raise ValueError(
                f"input_shape/num_classes/size can only be set for dataset 'synthetic', not {self.name!r}"
            )
        if self.num_classes is not None:
            _at_least("num_classes", self.num_classes, 2)
        if self.size is not None:
            _at_least("size", self.size, 1)


@dataclass(frozen=True)
class PruneSpec:
    """How to prune at initialization.

    `log10_compression` is the exponent of the compression ratio (0 = dense,
    1 = 10x fewer weights). `iterations=None` resolves to the algorithm's
    default (100 for synflow, 1 otherwise) so the id hashes the value used.
    `levels` is the number of train-prune-rewind rounds of `imp`.
    """

    algorithm: str
    log10_compression: float = 0.0
    iterations: Optional[int] = None
    schedule: str = "exponential"
    scope: str = "global"
    mode: str = "eval"
    prune_bias: bool = False
    prune_batchnorm: bool = False
    prune_residual: bool = False
    examples_per_class: int = 10
    levels: int = 0

    def __post_init__(self) -> None:
        from trainables.pruning.algorithms import ALGORITHMS

        ALGORITHMS.check(self.algorithm)
        if isinstance(self.log10_compression, bool) or not isinstance(self.log10_compression, (int, float)) \
                or not math.isfinite(self.log10_compression) or self.log10_compression < 0:
            raise ValueError(
                f"log10_compression must be a finite number >= 0 (compression >= 1), got {self.log10_compression!r}"
            )
        object.__setattr__(self, "log10_compression", round(float(self.log10_compression), 6))
        if self.iterations is None:
            default = DEFAULT_SYNFLOW_ITERATIONS if self.algorithm == "synflow" else 1
            object.__setattr__(self, "iterations", default)
        _at_least("iterations", self.iterations, 1)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("scope", self.scope, SCOPES)
        _choice("prune mode", self.mode, PRUNE_MODES)
        _at_least("examples_per_class", self.examples_per_class, 1)
        if self.algorithm == "imp":
            _at_least("levels (imp)", self.levels, 1)
        elif self.levels:
            raise ValueError(f"levels is only for algorithm 'imp', got levels={self.levels} for {self.algorithm!r}")

    @property
    def compression(self) -> float:
        return 10.0 ** self.log10_compression


@dataclass(frozen=True)
class TrainSpec:
    """SGD with momentum and multi-step learning-rate drops (the paper's recipe)."""

    epochs: int = 0
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_drops: Tuple[int, ...] = ()
    lr_drop_factor: float = 0.1
    precision: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr_drops", tuple(int(d) for d in self.lr_drops))
        _at_least("epochs", self.epochs, 0)
        _at_least("batch_size", self.batch_size, 1)
        _at_least("lr", self.lr, 0)
        _at_least("momentum", self.momentum, 0)
        _at_least("weight_decay", self.weight_decay, 0)
        _at_least("lr_drop_factor", self.lr_drop_factor, 0)
        if list(self.lr_drops) != sorted(self.lr_drops) or any(d < 1 for d in self.lr_drops):
            raise ValueError(f"lr_drops must be increasing epochs >= 1, got {list(self.lr_drops)}")
        _choice("precision", self.precision, PRECISIONS)


@dataclass(frozen=True)
class TrialSpec:
    model: ModelSpec
    data: DataSpec
    prune: PruneSpec
    train: TrainSpec = field(default_factory=TrainSpec)
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def trial_id(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrialSpec":
        return cls(
            model=ModelSpec(**d["model"]),
            data=DataSpec(**d["data"]),
            prune=PruneSpec(**d["prune"]),
            train=TrainSpec(**d.get("train", {})),
            seed=d.get("seed", 0),
        )
