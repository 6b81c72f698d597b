"""Every Python example in the README runs, and says what the README says it says.

The examples that read `results/` run against a store built here, in which SynFlow's own masks win at 100x
but its sanity-check ablations (shuffled, inverted masks) would drag its mean below SNIP's: an example that
forgot to compare methods on their own masks would name the wrong winner.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from results_store import ResultsStore, record_grid
from test_analysis import write

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
OWN = {("synflow", 0): 0.97, ("synflow", 2): 0.57, ("snip", 0): 0.97, ("snip", 2): 0.38}


def run(code: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    store = ResultsStore(root / "results")
    ids = []
    for (algorithm, log10), top1 in OWN.items():
        for seed, shift in ((0, -0.01), (1, 0.01)):
            ids.append(write(store, "mlp", "digits", algorithm, log10, seed, top1 + shift, sweep="quickstart",
                             ablation="none"))
    for ablation in ("shuffle", "invert", "reinit", "layerwise_random"):
        for seed in (0, 1):
            ids.append(write(store, "mlp", "digits", "synflow", 2, seed, 0.10, sweep="quickstart", ablation=ablation))
    record_grid(store, "quickstart", ids)
    return root


def test_the_readme_has_the_examples_this_file_runs():
    assert len(BLOCKS) == 3
    assert "@scorer(" in BLOCKS[0] and "results/trials" in BLOCKS[1] and "Selection(" in BLOCKS[2]


def test_the_best_algorithm_example_compares_methods_on_their_own_masks(store_dir):
    printed = run(BLOCKS[1], store_dir).splitlines()
    assert printed[0].split() == ["model", "dataset", "algorithm", "iterations", "top1_percent"]
    assert [row.split() for row in printed[1:]] == [["mlp", "digits", "synflow", "100", "57.0"]]


def test_the_selection_example_prints_the_accuracy_figures_numbers(store_dir):
    printed = run(BLOCKS[2], store_dir).splitlines()
    assert printed[0].split() == ["algorithm", "top1_mean", "trials"]
    assert [row.split() for row in printed[1:]] == [["snip", "38.0", "2"], ["synflow", "57.0", "2"]]


def test_the_plugin_example_registers_a_scorer_that_prunes_to_the_exact_count(tmp_path):
    code = BLOCKS[0] + (
        "\nfrom trainables.prune_one import main\n"
        "main(['--model', 'mlp', '--dataset', 'digits', '--algorithm', 'grad_norm', '--log10-compression', '1',"
        " '--json'])\n")
    result = json.loads(run(code, tmp_path).splitlines()[-1])
    # 17,400 prunable weights / 10 = 1,740 kept; one pass per scoring example: 10 per class x 10 classes
    assert (result["algorithm"], result["remaining_params"], result["prune_passes"]) == ("grad_norm", 1740, 100)
