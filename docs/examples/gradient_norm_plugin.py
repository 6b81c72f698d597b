"""A pruning-at-initialization method of your own, as a plugin: no fork of this project needed.

    prune-one --plugins docs/examples/gradient_norm_plugin.py --algorithm grad_norm --model conv --dataset digits
    prune-sweep --plugins docs/examples/gradient_norm_plugin.py --algorithms grad_norm,snip,synflow \
        --models mlp --datasets digits --ablations none,shuffle

`grad_norm` keeps the weights with the largest summed loss gradient |dL/dw|
(the gradient-norm baseline of the GraSP paper). A scorer maps (model, batches,
inputs) to one score tensor per prunable parameter; the project cuts the scores
to the exact count (globally or per layer, over `--iterations` rounds), so the
method gets ids, checkpoints, store rows, ablations, effective-weight counts and
figures exactly like the built-in algorithms.
"""
import torch
import torch.nn.functional as F

from trainables.pruning import scorer


@scorer("grad_norm", needs_data=True, passes_per_example=1)
def grad_norm(model, batches, inputs):
    """|dL/dw| summed over the scoring batches; higher is kept."""
    named = dict(model.named_parameters())
    params = [named[name] for name in inputs.names]
    total = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, allow_unused=True)
        total = [t + (g if g is not None else 0) for t, g in zip(total, grads)]
    return {name: t.abs() for name, t in zip(inputs.names, total)}
