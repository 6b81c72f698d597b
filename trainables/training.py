"""Train and evaluate a masked network with its recipe (the paper's SGD, or AdamW for transformers).

Pruned weights are exactly zero after every optimizer step: the masks are
re-applied with one fused multiply right after `optimizer.step()`, so neither
momentum nor weight decay can revive them. Losses and accuracy accumulate on
the device and are read once per epoch, so a GPU step never waits on the host.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass
from typing import Iterable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from trainables.pruning import Masks
from trainables.specs import TrainSpec

Batches = Iterable[Tuple[torch.Tensor, torch.Tensor]]


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` is bf16 autocast on CUDA (fast) and the exact fp32 recipe elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    test_loss: Optional[float]
    top1: Optional[float]
    top5: Optional[float]
    lr: float
    seconds: float

    def as_row(self) -> dict:
        return asdict(self)


def make_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, spec: TrainSpec) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch. Cosine: epoch e < w runs at lr (e + 1) / w, then lr (1 + cos(pi (e - w) / (E - w))) / 2."""
    if spec.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: warmup_cosine_factor(
            epoch, spec.epochs, spec.warmup_epochs))
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(spec.lr_drops), gamma=spec.lr_drop_factor)


def warmup_cosine_factor(epoch: int, epochs: int, warmup: int) -> float:
    if epoch < warmup:
        return (epoch + 1) / warmup
    span = max(epochs - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(epoch - warmup, span) / span))


class Trainer:
    """The recipe's optimizer and schedule for one masked model; its state is what a checkpoint holds."""

    def __init__(self, model: nn.Module, masks: Optional[Masks], spec: TrainSpec, device: torch.device) -> None:
        self.model = model
        self.masks = masks
        self.spec = spec
        self.device = torch.device(device)
        self.precision = resolve_precision(spec.precision, self.device)
        if self.precision == "bf16" and self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(model, spec)
        self.scheduler = make_scheduler(self.optimizer, spec)

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision == "bf16" and self.device.type == "cuda":
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def train_epoch(self, batches: Batches) -> float:
        """One epoch; returns the mean training loss (NaN/inf when the run diverged)."""
        self.model.train()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        count = 0
        for x, y in batches:
            with self._autocast():
                loss = F.cross_entropy(self.model(self._inputs(x)), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.masks is not None:
                self.masks.apply()
            loss_sum += loss.detach().to(torch.float64) * y.numel()
            count += y.numel()
        self.scheduler.step()
        return float(loss_sum) / max(count, 1)

    @torch.no_grad()
    def evaluate(self, batches: Batches) -> Tuple[float, float, float]:
        """(mean test loss, top-1, top-5) with top-k as fractions in [0, 1]."""
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros(2, device=self.device, dtype=torch.int64)
        count = 0
        for x, y in batches:
            with self._autocast():
                logits = self.model(self._inputs(x))
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").to(torch.float64)
            k = min(5, logits.shape[1])
            top = logits.topk(k, dim=1).indices
            hits = top == y[:, None]
            correct[0] += hits[:, 0].sum()
            correct[1] += hits.any(dim=1).sum()
            count += y.numel()
        top1, top5 = (correct.double() / max(count, 1)).tolist()
        return float(loss_sum) / max(count, 1), top1, top5

    def run_epoch(self, epoch: int, train: Batches, test: Batches) -> EpochMetrics:
        lr = self.optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        train_loss = self.train_epoch(train)
        if not math.isfinite(train_loss):
            return EpochMetrics(epoch, train_loss, None, None, None, lr, time.perf_counter() - start)
        test_loss, top1, top5 = self.evaluate(test)
        return EpochMetrics(epoch, train_loss, test_loss, top1, top5, lr, time.perf_counter() - start)

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "masks": self.masks.state_dict() if self.masks is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.masks is not None and state.get("masks") is not None:
            self.masks.load_state_dict(state["masks"])
