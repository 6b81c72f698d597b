"""How much GPU memory a trial will need, so a packed trial refuses to start rather than crash its neighbours.

Several trials share one GPU through fractional Ray resources, but Ray does
not police memory: a trial that outgrows its share takes an out-of-memory
error down with whoever shares the device. The estimate is deliberately
simple and conservative: weights, gradients and the optimizer's buffers in
fp32 (SGD's momentum, none without it; AdamW's two moments), the
activations a backward pass keeps (measured with one batch-1 forward pass),
the device-resident dataset, and the CUDA context.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from trainables.pruning.params import probe_forward

CUDA_CONTEXT_BYTES = 600 * 2**20
GIB = 2**30


@dataclass(frozen=True)
class MemoryEstimate:
    parameter_bytes: int   # weights + gradients + optimizer buffers, fp32
    activation_bytes: int  # kept for backward, at the batch size and precision
    data_bytes: int        # uint8 dataset resident on the device
    context_bytes: int = CUDA_CONTEXT_BYTES

    @property
    def total(self) -> int:
        return self.parameter_bytes + self.activation_bytes + self.data_bytes + self.context_bytes


def activation_elements_per_example(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Sum of every leaf module's output size for one example (what autograd keeps, roughly)."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output[0].numel()

    probe_forward(model, input_shape, [(m, count) for m in model.modules() if not list(m.children())])
    return total


def optimizer_buffers(optimizer: str, momentum: float) -> int:
    """Tensors the size of the weights that torch's optimizer keeps: AdamW's exp_avg and exp_avg_sq; SGD's
    momentum_buffer, which it does not create when momentum is 0."""
    if optimizer == "adamw":
        return 2
    if optimizer == "sgd":
        return 1 if momentum else 0
    raise ValueError(f"no memory estimate for optimizer {optimizer!r}")


def estimate_training_memory(model: nn.Module, input_shape: Sequence[int], batch_size: int, precision: str,
                             dataset_bytes: int = 0, optimizer: str = "sgd", momentum: float = 0.9) -> MemoryEstimate:
    """`optimizer` and `momentum` as in the trial's TrainSpec (its defaults here)."""
    params = sum(p.numel() for p in model.parameters())
    bytes_per_activation = 2 if precision == "bf16" else 4
    # x2: autograd keeps inputs as well as outputs of many layers (conv + BN + ReLU chains).
    activations = 2 * activation_elements_per_example(model, input_shape) * batch_size * bytes_per_activation
    parameter_bytes = params * 4 * (2 + optimizer_buffers(optimizer, momentum))  # weights, grads, buffers
    return MemoryEstimate(parameter_bytes=parameter_bytes, activation_bytes=activations, data_bytes=dataset_bytes)


class ShareTooSmallError(MemoryError):
    """The trial cannot fit its GPU share: the same on every retry, so it is not retried."""


def check_fits(estimate: MemoryEstimate, device_bytes: int, share: float, what: str) -> None:
    """Raise ShareTooSmallError with a clear message when the estimate exceeds `share` of the device."""
    budget = device_bytes * share
    if estimate.total > budget:
        raise ShareTooSmallError(
            f"{what} needs about {estimate.total / GIB:.1f} GiB of GPU memory "
            f"(weights+grads+optimizer state {estimate.parameter_bytes / GIB:.1f}, activations "
            f"{estimate.activation_bytes / GIB:.1f}, data {estimate.data_bytes / GIB:.1f}, CUDA context "
            f"{estimate.context_bytes / GIB:.1f}) but its share {share:g} of the {device_bytes / GIB:.0f} GiB GPU "
            f"is {budget / GIB:.1f} GiB; give it a larger share (--gpus-per-trial) or a smaller --batch-size"
        )
