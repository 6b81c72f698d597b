"""A researcher's own scorer, model and dataset, from outside the project, through a real sweep on real local Ray."""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from analysis import tables
from analysis.load import default_settings, load_results
from orchestrator import sweep as sweep_cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "gradient_norm_plugin.py"

LAB_PLUGIN = '''
    """A lab's own method, model and data: registered with the project's public decorators."""
    import torch
    from torch import nn

    from trainables.data import dataset
    from trainables.models import model
    from trainables.pruning import scorer


    @scorer("smallest_first", needs_data=False)  # data-free: no passes_per_example to say
    def smallest_first(model, batches, inputs):
        named = dict(model.named_parameters())
        return {n: -named[n].detach().abs() for n in inputs.names}


    @model("lab_mlp")
    def lab_mlp(input_shape, num_classes):
        inputs = 1
        for side in input_shape:
            inputs *= side
        return nn.Sequential(nn.Flatten(), nn.Linear(inputs, 32), nn.ReLU(), nn.Linear(32, num_classes))


    @dataset("lab_blobs", input_shape=(1, 4, 4), num_classes=3, mean=(0.5,), std=(0.25,))
    def lab_blobs(split, root):
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        labels = torch.arange(96 if split == "train" else 48) % 3
        images = (labels.view(-1, 1, 1, 1) * 80 + torch.randint(0, 60, (len(labels), 1, 4, 4), generator=g))
        return images.to(torch.uint8), labels
'''


def write_plugin(directory: pathlib.Path) -> pathlib.Path:
    path = directory / "lab_methods.py"
    path.write_text(textwrap.dedent(LAB_PLUGIN))
    return path


@pytest.mark.slow
def test_a_plugin_from_outside_the_project_runs_on_every_ray_worker_and_lands_like_a_builtin(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    plugin = write_plugin(tmp_path / "elsewhere")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    assert str(plugin.parent) not in env.get("PYTHONPATH", "")  # only Ray's runtime environment can ship it
    args = [sys.executable, "-m", "orchestrator.sweep", "--plugins", str(plugin), "--plugins", str(EXAMPLE),
            "--models", "lab_mlp", "--datasets", "lab_blobs", "--algorithms", "smallest_first,grad_norm,magnitude",
            "--ablations", "none,shuffle", "--log10-compressions", "0.5", "--seeds", "0", "--epochs", "1",
            "--num-cpus", "2", "--store", str(tmp_path / "store"), "--storage-path", str(tmp_path / "ray")]
    plan = subprocess.run([*args, "--dry-run", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert json.loads(plan.stdout)["to_run"] == 6
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    trials = pd.read_parquet(tmp_path / "store" / "trials")
    assert len(trials) == 6 and trials.trial_id.is_unique
    assert set(zip(trials.algorithm, trials.ablation)) == {
        (a, b) for a in ("smallest_first", "grad_norm", "magnitude") for b in ("none", "shuffle")}
    assert set(trials.model) == {"lab_mlp"} and set(trials.dataset) == {"lab_blobs"}
    assert (trials.prunable_params == 16 * 32 + 32 * 3).all() and (trials.remaining_params == 192).all()
    assert trials.effective_remaining_params.notna().all()
    assert (trials.effective_remaining_params <= trials.remaining_params).all()
    assert (trials.prune_passes[trials.algorithm == "grad_norm"] > 0).all()
    assert (trials.prune_passes[trials.algorithm == "smallest_first"] == 0).all()  # counted: it ran no network
    layers = pd.read_parquet(tmp_path / "store" / "layers")
    assert layers.effective_remaining.notna().all() and len(layers) == 6 * 2
    assert len(pd.read_parquet(tmp_path / "store" / "epochs")) == 6
    # The analysis treats the plugin's method like a built-in one.
    results = load_results(tmp_path / "store")
    selected, _ = default_settings(results.trials)
    curves = tables.accuracy_curves(selected)
    assert set(curves.algorithm) == {"smallest_first", "grad_norm", "magnitude"}


def test_bad_plugins_are_one_line_with_exit_code_2(tmp_path, capsys):
    broken = tmp_path / "broken_plugin.py"
    broken.write_text("raise RuntimeError('the lab forgot a file')\n")
    quitting = tmp_path / "quitting_plugin.py"  # exit status 0 having run nothing, before
    quitting.write_text("import sys\nsys.exit(0)\n")
    cases = [
        ([str(quitting)], "plugin '" + str(quitting) + "' called sys.exit(0) while importing"),
        ([str(tmp_path / "absent.py")], "does not exist or is not a .py file"),
        (["no_such_lab.pruners"], "cannot import plugin 'no_such_lab.pruners': no module named 'no_such_lab'"),
        ([str(broken)], "failed to import: RuntimeError: the lab forgot a file"),
    ]
    for plugin, needle in cases:
        code = sweep_cli.main(["--plugins", plugin[0], "--dry-run", "--store", str(tmp_path / "s")])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_the_worked_example_prunes_with_prune_one_to_the_exact_count():
    out = subprocess.run([sys.executable, "-m", "trainables.prune_one", "--plugins", str(EXAMPLE), "--algorithm",
                          "grad_norm", "--model", "conv", "--dataset", "digits", "--log10-compression", "1", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout)
    assert summary["algorithm"] == "grad_norm" and summary["remaining_params"] == round(summary["prunable_params"] / 10)
    assert summary["prune_passes"] == 10 * 10  # one pass per scoring example (10 per class, 10 classes)
