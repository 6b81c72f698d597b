"""Selecting what to read, and readings a paper can take: a mixed store, small samples, the sanity-check table,
tables as markdown, LaTeX and CSV.

The mixed store holds what a researcher's store holds after two sweeps: a trained digits sweep ("digits",
mlp and conv, 3 seeds, with synflow ablations on mlp) and a prune-only vgg16_bn sweep ("collapse"), each
with its grid recorded as the sweep records it, plus a third sweep ("mlp-seeds") whose grid is all trials the
first one ran.
"""
from __future__ import annotations

import math

import matplotlib.image
import pandas as pd
import pytest

from analysis import plots, summary
from analysis.load import load_results
from analysis.select import Selection, SelectionError
from results_store import ResultsStore, record_grid
from test_analysis import write

SEEDS = (0, 1, 2)
RATIOS = (0, 1, 2)
TOP1 = {"synflow": {0: 0.97, 1: 0.95, 2: 0.80}, "snip": {0: 0.97, 1: 0.93, 2: 0.40}}
SEED_SHIFT = {0: -0.01, 1: 0.0, 2: 0.02}
# synflow on mlp under each ablation, minus the method's own top-1 (pp), the same in every seed but shuffle's
ABLATION_DROP = {"shuffle": {1: -3.0, 2: -30.0}, "reinit": {1: 0.0, 2: -1.0}}


def digits_trials(store, model, seeds=SEEDS, sweep="digits"):
    ids = []
    for algorithm, by_ratio in TOP1.items():
        for log10 in RATIOS:
            for seed in seeds:
                write(store, model, "digits", algorithm, log10, seed, by_ratio[log10] + SEED_SHIFT[seed],
                      sweep=sweep)
                ids.append(f"{model}-digits-{algorithm}-{log10}-{seed}-{100 if algorithm == 'synflow' else 1}"
                           f"-eval-3-completed-{sweep}")
    return ids


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed") / "results"
    store = ResultsStore(root)
    ids = digits_trials(store, "mlp") + digits_trials(store, "conv")
    for ablation, drops in ABLATION_DROP.items():
        for log10, drop in drops.items():
            for seed in SEEDS:
                spread = 0.01 * seed if ablation == "shuffle" else 0.0  # -3, -2, -1 pp at 10x: a spread to test
                top1 = TOP1["synflow"][log10] + SEED_SHIFT[seed] + drop / 100 + spread
                write(store, "mlp", "digits", "synflow", log10, seed, top1, ablation=ablation, sweep="digits")
                ids.append(f"mlp-digits-synflow-{log10}-{seed}-100-eval-3-completed-{ablation}-digits")
    record_grid(store, "digits", ids)
    collapse = []
    for algorithm in ("synflow", "random"):
        for log10 in (1, 2, 3):
            write(store, "vgg16_bn", "cifar100", algorithm, log10, 0, None, epochs=0, sweep="collapse",
                  num_classes=100)
            collapse.append(f"vgg16_bn-cifar100-{algorithm}-{log10}-0-{100 if algorithm == 'synflow' else 1}"
                            "-eval-0-completed-collapse-100")
    record_grid(store, "collapse", collapse)
    record_grid(store, "mlp-seeds", [i for i in ids if i.startswith("mlp-") and "-synflow-" in i
                                     and i.endswith("-completed-digits")])
    return root


def test_a_sweep_is_its_recorded_grid_even_trials_another_sweep_ran(mixed):
    results = load_results(mixed, Selection(sweep="mlp-seeds"))
    assert len(results.trials) == 9 and set(results.trials["sweep"]) == {"digits"}  # 3 ratios x 3 seeds
    assert set(results.layers["trial_id"]) == set(results.trials["trial_id"])
    assert results.notes == ["sweep mlp-seeds: 9 of its 9 grid trials are in the store"]
    assert results.selection == "sweep mlp-seeds"


def test_a_store_without_grid_records_falls_back_to_the_sweep_column_and_says_so(tmp_path):
    store = ResultsStore(tmp_path / "old")
    digits_trials(store, "mlp", seeds=(0,), sweep="old-sweep")
    results = load_results(tmp_path / "old", Selection(sweep="old-sweep"))
    assert len(results.trials) == 6
    assert "no recorded grid" in results.notes[0] and "sweep column" in results.notes[0]


@pytest.mark.parametrize("selection, message", [
    (Selection(sweep="fig6"), "unknown sweep 'fig6' in {store}; sweeps: collapse, digits, mlp-seeds"),
    (Selection(models=("mpl",)), "--models mpl: not among the trials in {store} (models: conv, mlp, vgg16_bn)"),
    (Selection(sweep="collapse", algorithms=("snip",)),
     "--algorithms snip: not among the trials of sweep collapse in {store} (algorithms: random, synflow)"),
    (Selection(models=("vgg16_bn",), seeds=(1,)), "no trial in {store} matches models vgg16_bn; seeds 1"),
])
def test_a_selection_naming_what_the_store_lacks_is_one_line(mixed, selection, message):
    with pytest.raises(SelectionError) as error:
        load_results(mixed, selection)
    assert str(error.value) == message.format(store=mixed)


def test_the_commands_take_the_same_selection_and_exit_2_on_a_bad_one(mixed, tmp_path, capsys):
    for command, extra in ((plots.main, ["--out", str(tmp_path / "fig")]), (summary.main, [])):
        assert command(["--store", str(mixed), *extra, "--models", "resnet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --models resnet: not among the trials") and err.count("\n") == 1
        assert command(["--store", str(mixed), *extra, "--seeds", "x"]) == 2
        assert capsys.readouterr().err.startswith("error: bad seeds 'x'")
    assert not (tmp_path / "fig").exists()


def visible_titles(axes):
    return [ax.get_title() for ax in axes if ax.get_visible() and ax.get_title()]


def test_plots_of_one_sweep_in_a_mixed_store_draw_no_empty_panel(mixed, tmp_path, capsys, monkeypatch):
    drawn = {}
    from analysis import accuracy_figures

    original = accuracy_figures.draw_accuracy

    def keep(*args, **kwargs):
        drawn["accuracy"] = original(*args, **kwargs)
        return drawn["accuracy"]

    monkeypatch.setattr(accuracy_figures, "draw_accuracy", keep)
    # One process: the figure is kept here (drawn by workers, it would be theirs).
    assert plots.main(["--store", str(mixed), "--out", str(tmp_path / "digits"), "--sweep", "digits", "--jobs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "vgg16_bn" not in printed
    titles = visible_titles(drawn["accuracy"].axes)
    assert titles == ["conv / digits", "mlp / digits", "zoom: 1x to 31.6x", "zoom: 1x to 31.6x"]
    assert {p.stem for p in (tmp_path / "digits").glob("*.png")} >= {"accuracy", "ablations", "critical_compression"}

    assert plots.main(["--store", str(mixed), "--out", str(tmp_path / "collapse"), "--sweep", "collapse"]) == 0
    printed = capsys.readouterr().out.splitlines()
    # prune-only: its pruning figures, and one line for each figure that has nothing to draw
    assert {p.stem for p in (tmp_path / "collapse").glob("*.png")} == {
        "conservation_vgg16_bn_cifar100", "cost", "critical_compression", "layer_density_vgg16_bn_cifar100"}
    assert "accuracy: no completed trials with a final accuracy; figure not drawn" in printed
    assert "learning_curves: no trained trial has epoch rows; figure not drawn" in printed
    image = matplotlib.image.imread(tmp_path / "collapse" / "critical_compression.png")
    assert image.shape[1] > 500


def test_a_two_seed_store_prints_no_interval_no_mark_and_says_why_once(tmp_path):
    store = ResultsStore(tmp_path / "two")
    digits_trials(store, "mlp", seeds=(0, 1))
    text = summary.summarize(load_results(tmp_path / "two"))
    cells = [line for line in text.splitlines() if line.startswith("| synflow") or line.startswith("| snip")]
    assert cells and not any("±" in c or "[" in c or "*" in c for c in cells)
    assert "| synflow | 96.5 (2) | 94.5 (2) | 79.5 (2) |" in cells
    assert text.count("fewer than 3 seeds") == 1
    assert "Every cell here has fewer than 3 seeds: no interval and no significance mark anywhere." in text


def test_the_sanity_check_table_subtracts_the_methods_own_mask_seed_by_seed(mixed):
    text = summary.summarize(load_results(mixed, Selection(sweep="digits")))
    section = text.split("## Sanity checks: each ablation minus the method's own mask")[1].split("\n## ")[0]
    assert "### mlp / digits: synflow" in section and "### conv" not in section  # conv ran no ablation
    # shuffle: -3, -2, -1 at 10x (t = 2 sqrt 3, p = 0.074) and -30, -29, -28 at 100x (t = 29 sqrt 3, p = 0.0004);
    # reinit 0 and -1 in every seed: identical, untested. Holm over the 2 tested: 100x rejected at 0.05 / 2, its
    # interval -29 ± t(1 - 0.0125, 2) / sqrt 3 = -29 ± 6.205 / 1.732 = [-32.6, -25.4]; 10x not rejected at 0.05,
    # its interval -2 ± 4.303 / 1.732 = [-4.5, +0.5].
    assert "Holm-Bonferroni over the 2 tested comparison(s) of this table" in section
    # At 1x shuffle changes nothing (a full mask permuted is the full mask): its 1x point is the method's own
    # network, so the difference is identical 0; reinit has no 1x trial of its (re-drawn) network in this store.
    assert "| shuffle | +0.0 identical (3) | -2.0 [-4.5, +0.5] (3) | -29.0 [-32.6, -25.4] (3) * |" in section
    assert "| reinit | - | +0.0 identical (3) | -1.0 identical (3) |" in section


def test_the_summary_as_latex_and_csv(mixed):
    results = load_results(mixed, Selection(sweep="digits", models=("mlp",)))
    latex = summary.summarize(results, fmt="latex")
    assert "\\begin{tabular}{lrrr}" in latex and "\\toprule" in latex
    # 96, 97, 99 at 1x: 97.3 ± 3.8 would pass 100, so the bounds are printed, the upper one at 100
    assert "synflow & 97.3 [93.5, 100.0] (3) & 95.3 $\\pm$ 3.8 (3) & 80.3 $\\pm$ 3.8 (3) \\\\" in latex
    assert "\\section*{Results summary:" in latex
    rows = pd.read_csv(pd.io.common.StringIO(summary.summarize(results, fmt="csv")))
    assert set(rows["table"]) == {"accuracy", "paired_difference", "sanity_check"}
    cell = rows[(rows["table"] == "accuracy") & (rows["algorithm"] == "snip") & (rows["log10_compression"] == 1)]
    # 92, 93, 95: mean 93.33, std 1.528, half-width 4.303 * 1.528 / 1.732 = 3.795
    assert cell["n"].item() == 3 and cell["mean"].item() == pytest.approx(93.333, abs=1e-3)
    assert cell["ci_high"].item() - cell["mean"].item() == pytest.approx(3.795, abs=1e-3)
    shuffle = rows[(rows["table"] == "sanity_check") & (rows["ablation"] == "shuffle") & (rows["log10_compression"] == 1)]
    assert shuffle["mean"].item() == pytest.approx(-2.0) and not math.isnan(shuffle["p_value"].item())
