"""Pruning at initialization: scorers, exact thresholding, the iterative loop, metrics."""
from trainables.pruning.algorithms import ALGORITHMS, scorer
from trainables.pruning.budgets import density_schedule, layer_shares, target_count
from trainables.pruning.loop import PruneResult, prune_model
from trainables.pruning.masks import Masks, apportion, keep_top, load_masks, save_masks
from trainables.pruning.params import PrunableParam, prunable_parameters
from trainables.pruning.scores import SCORERS, ScoreInputs

__all__ = [
    "ALGORITHMS", "SCORERS", "Masks", "PrunableParam", "PruneResult", "apportion", "density_schedule",
    "keep_top", "load_masks", "prunable_parameters", "prune_model", "save_masks", "target_count",
    "ScoreInputs", "layer_shares", "scorer",
]
