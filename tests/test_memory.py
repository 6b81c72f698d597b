"""The per-trial GPU memory estimate that lets packed trials refuse to start instead of crashing neighbours."""
import pytest

from trainables.memory import GIB, MemoryEstimate, activation_elements_per_example, check_fits, estimate_training_memory
from trainables.models import build_model
from trainables.specs import TrainSpec


def test_activation_count_of_a_known_network():
    model = build_model("mlp", (1, 8, 8), 10, seed=0)
    # leaf outputs of flatten(64) -> linear(100) -> relu(100) -> linear(100) -> relu(100) -> linear(10)
    assert activation_elements_per_example(model, (1, 8, 8)) == 64 + 100 + 100 + 100 + 100 + 10


def test_estimate_scales_with_batch_and_precision():
    model = build_model("vgg11_bn", (3, 32, 32), 10, seed=0)
    params = sum(p.numel() for p in model.parameters())
    small = estimate_training_memory(model, (3, 32, 32), 64, "fp32")
    large = estimate_training_memory(model, (3, 32, 32), 128, "fp32")
    half = estimate_training_memory(model, (3, 32, 32), 128, "bf16", dataset_bytes=10**8)
    assert small.parameter_bytes == params * 12
    assert large.activation_bytes == 2 * small.activation_bytes
    assert half.activation_bytes * 2 == large.activation_bytes
    assert half.total == half.parameter_bytes + half.activation_bytes + 10**8 + half.context_bytes


def test_the_estimate_counts_the_optimizers_buffers():
    """AdamW keeps two fp32 tensors the size of the weights (exp_avg, exp_avg_sq), SGD one (its momentum buffer),
    or none at momentum 0."""
    model = build_model("mlp", (1, 8, 8), 10, seed=0)
    params = sum(p.numel() for p in model.parameters())

    def estimate(**train):
        spec = TrainSpec(**train)
        return estimate_training_memory(model, (1, 8, 8), 32, "fp32", optimizer=spec.optimizer, momentum=spec.momentum)

    sgd, adamw, plain = estimate(), estimate(optimizer="adamw"), estimate(momentum=0.0)
    assert adamw.total - sgd.total == adamw.parameter_bytes - sgd.parameter_bytes == params * 4
    assert sgd.parameter_bytes - plain.parameter_bytes == params * 4 and plain.parameter_bytes == params * 8
    assert (adamw.activation_bytes, adamw.data_bytes) == (sgd.activation_bytes, sgd.data_bytes)


def test_check_fits_refuses_with_a_clear_message():
    estimate = MemoryEstimate(parameter_bytes=2 * GIB, activation_bytes=20 * GIB, data_bytes=GIB)
    check_fits(estimate, device_bytes=80 * GIB, share=0.5, what="trial x")
    with pytest.raises(MemoryError) as err:
        check_fits(estimate, device_bytes=80 * GIB, share=0.25, what="trial x (vgg16_bn/cifar100, batch 128, fp32)")
    message = str(err.value)
    assert "trial x (vgg16_bn/cifar100, batch 128, fp32) needs about 23.6 GiB" in message
    assert "share 0.25 of the 80 GiB GPU is 20.0 GiB" in message and "--gpus-per-trial" in message
