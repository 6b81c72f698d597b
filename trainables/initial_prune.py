"""A trial's network at its seeded initialization, and its prune: what every trial, IMP level and `prune-one` runs.

SynFlow, magnitude and random need only the dataset's input shape and class
count (never its files); SNIP and GraSP load class-balanced scoring examples.
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

import torch
from torch import nn

from trainables import data
from trainables.models import build_model
from trainables.pruning import PruneResult, prune_model
from trainables.pruning.ablations import AFTER_PRUNING, apply_ablation
from trainables.pruning.algorithms import ALGORITHMS
from trainables.pruning.loop import measure_layers
from trainables.pruning.metrics import effective_total
from trainables.specs import TrialSpec

SCORING_BATCH_SIZE = 256


def initial_model(spec: TrialSpec, device: torch.device | str = "cpu") -> Tuple[nn.Module, data.DatasetInfo]:
    """The trial's network at its seeded initialization: the same weights for every algorithm at one seed."""
    info = data.dataset_info(spec.data)
    model = build_model(spec.model.name, info.input_shape, info.num_classes, seed=spec.seed)
    return model.to(device), info


def scoring_batches(spec: TrialSpec, device, data_dir=None) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    return data.scoring_batches(spec.data, data_dir, spec.prune.examples_per_class, SCORING_BATCH_SIZE, device,
                                spec.seed)


def prune_at_init(model: nn.Module, spec: TrialSpec, info: data.DatasetInfo, device, data_dir=None,
                  compression: Optional[float] = None, masks=None) -> PruneResult:
    """Prune `model` in place as `spec.prune` says, ablation included (imp's levels pass their own compression
    and masks)."""
    p = spec.prune
    algorithm = ALGORITHMS[p.algorithm]
    initial = ({n: w.detach().clone() for n, w in model.named_parameters()}
               if p.ablation in AFTER_PRUNING else {})
    result = prune_model(
        model, algorithm.scorer, p.compression if compression is None else compression, info.input_shape,
        iterations=1 if algorithm.trains_between_cuts else p.iterations,
        schedule=p.schedule, scope=p.scope, mode=p.mode,
        prune_bias=p.prune_bias, prune_batchnorm=p.prune_batchnorm, prune_residual=p.prune_residual,
        prune_layernorm=p.prune_layernorm, prune_embedding=p.prune_embedding,
        batches=lambda: scoring_batches(spec, device, data_dir), seed=spec.seed, masks=masks,
        invert=p.ablation == "invert",
    )
    if p.ablation not in AFTER_PRUNING:
        return result
    apply_ablation(p.ablation, model, result.masks, result.params, spec.seed, initial,
                   lambda seed: build_model(spec.model.name, info.input_shape, info.num_classes, seed=seed))
    layers = measure_layers(model, result.params, result.masks, {s.param: s.score_sum for s in result.layers},
                            info.input_shape)
    return dataclasses.replace(result, layers=layers, effective_remaining_params=effective_total(layers))
