"""Iterative magnitude pruning with rewinding (the lottery-ticket baseline), checkpointed every epoch.

Each level trains the masked network for `train.epochs`, prunes by magnitude
to the level's share of the target (rho^(level/levels)), then rewinds every
surviving weight, and the batch-norm state, to its value at initialization.
The original SynFlow code skipped the rewind. IMP trains for levels x epochs
before its final training, so its own state (`ImpState.as_dict`) is saved after
every epoch of every level and a restarted trial continues mid-level.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

from trainables import data
from trainables.initial_prune import prune_at_init
from trainables.pruning import Masks, PruneResult
from trainables.specs import TrialSpec
from trainables.training import Trainer

IMP_EPOCH_OFFSET = 1_000_000  # IMP's level-l training epochs draw data as epochs l*offset + e


def fresh_imp_state(model: nn.Module) -> Dict[str, Any]:
    return {"initial": {k: v.detach().clone() for k, v in model.state_dict().items()}, "level": 1, "epoch": 0,
            "masks": None, "trainer": None, "trained_examples": 0, "seconds": 0.0}


def train_batches(spec: TrialSpec, data_dir, device, epoch: int):
    return data.train_batches(spec.data, data_dir, spec.train.batch_size, device, spec.seed, epoch)


def count_examples(batches) -> int:
    images = getattr(batches, "images", None)
    if images is not None:
        return int(images.shape[0])
    return len(batches) * getattr(batches, "batch_size", 1)


def imp_prune(model: nn.Module, spec: TrialSpec, info, device, data_dir=None,
              resume: Optional[Dict[str, Any]] = None,
              save: Optional[Callable[[Dict[str, Any]], None]] = None) -> PruneResult:
    """IMP from `resume` (or from the start); `save(state)` after every epoch of every level."""
    state = resume or fresh_imp_state(model)
    levels, rho = spec.prune.levels, spec.prune.compression
    start = time.perf_counter() - state["seconds"]
    named = dict(model.named_parameters())
    masks: Optional[Masks] = None
    if state["masks"] is not None:
        masks = Masks({n: named[n] for n in state["masks"]})
        masks.load_state_dict(state["masks"])
    result: Optional[PruneResult] = None
    for level in range(state["level"], levels + 1):
        trainer = Trainer(model, masks, spec.train, device)
        if state["trainer"] is not None:
            trainer.load_state_dict(state["trainer"])
        for epoch in range(state["epoch"] + 1, spec.train.epochs + 1):
            batches = train_batches(spec, data_dir, device, level * IMP_EPOCH_OFFSET + epoch)
            trainer.train_epoch(batches)
            state.update(level=level, epoch=epoch, trainer=trainer.state_dict(),
                         trained_examples=state["trained_examples"] + count_examples(batches),
                         seconds=time.perf_counter() - start)
            if save is not None:
                save(state)
        result = prune_at_init(model, spec, info, device, data_dir, compression=rho ** (level / levels), masks=masks)
        masks = result.masks
        with torch.no_grad():
            model.load_state_dict(state["initial"])
        masks.apply()
        state.update(level=level + 1, epoch=0, trainer=None, masks=masks.state_dict())
    assert result is not None
    result.prune_seconds = time.perf_counter() - start
    result.trained_examples = state["trained_examples"]
    return result
