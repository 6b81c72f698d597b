"""Figures and tables from a small real store with known numbers.

The store holds three (model, dataset) panels of a 2x2 grid (resnet20/cifar100
is missing), algorithms synflow/snip/random at compressions 1, 10, 100 and
seeds 0-2, plus variants that the default figures must leave out.
Accuracy of a cell = BASE[algorithm][log10] + PANEL_SHIFT + SEED_OFFSET[seed].
"""
from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib
import matplotlib.image
import pandas as pd
import pytest

from analysis import accuracy_figures, drawing, plots, summary, tables
from analysis.drawing import PanelLayout
from analysis.load import Results, default_settings, load_results
from results_store import ResultsStore

REPO = Path(__file__).resolve().parents[1]
T0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
PANELS = {("vgg11_bn", "cifar10"): 0.0, ("resnet20", "cifar10"): -0.02, ("vgg11_bn", "cifar100"): -0.25}
BASE = {"synflow": {0: 0.90, 1: 0.88, 2: 0.80}, "snip": {0: 0.90, 1: 0.85, 2: 0.60},
        "random": {0: 0.90, 1: 0.70, 2: 0.30}}
SEED_OFFSET = {0: -0.01, 1: 0.0, 2: 0.04}
# Layers: conv (100 weights), its bias (opt-in, 10), conv (1000), linear (50).
LAYERS = [("features.0", "features.0.weight", "conv", 100), ("features.0", "features.0.bias", "bias", 10),
          ("features.3", "features.3.weight", "conv", 1000), ("classifier", "classifier.weight", "linear", 50)]
DENSITY = {  # (algorithm, log10) -> density of the three conv/linear layers
    ("synflow", 0): (1.0, 1.0, 1.0), ("snip", 0): (1.0, 1.0, 1.0), ("random", 0): (1.0, 1.0, 1.0),
    ("synflow", 1): (0.5, 0.06, 0.4), ("snip", 1): (0.4, 0.07, 0.2), ("random", 1): (0.1, 0.1, 0.1),
    ("synflow", 2): (0.2, 0.004, 0.2), ("snip", 2): (0.1, 0.008, 0.02), ("random", 2): (0.01, 0.01, 0.02),
}
SCORES = {"synflow": (5.0, 5.0, 5.0), "snip": (1.0, 3.0, -0.5), "random": (2.0, 20.0, 1.0)}
# Collapse (an empty layer): snip seed 1 at 100x (linear), random seed 0 at 10x (first conv).
EMPTY_LAYER = {("snip", 2, 1): 2, ("random", 1, 0): 0}


def write(store, model, dataset, algorithm, log10, seed, top1, *, iterations=None, prune_mode="eval", epochs=3,
          status="completed", densities=None, empty_layer=None, prune_seconds=None, **extra):
    """One trial; `extra` sets more trial columns (e.g. ablation, effective_remaining_params)."""
    iterations = iterations or (100 if algorithm == "synflow" else 1)
    densities = densities or DENSITY[(algorithm, log10 if log10 <= 2 else 2)]
    remaining = [round(size * d) for size, d in zip((100, 1000, 50), densities)]
    if empty_layer is not None:
        remaining[empty_layer] = 0
    trial_id = f"{model}-{dataset}-{algorithm}-{log10}-{seed}-{iterations}-{prune_mode}-{epochs}-{status}" + \
        "".join(f"-{value}" for value in extra.values())
    weight_rows = iter(zip(remaining, (SCORES[algorithm] if log10 > 0 else (None,) * 3)))
    layers = []
    for index, (layer, param, kind, size) in enumerate(LAYERS):
        kept, score = (size, None) if kind == "bias" else next(weight_rows)
        layers.append(dict(layer_index=index, layer=layer, param=param, kind=kind, size=size, remaining=kept,
                           density=kept / size, score_sum=score))
    trial = dict(
        trial_id=trial_id, sweep=extra.pop("sweep", "test"), model=model, dataset=dataset, algorithm=algorithm,
        log10_compression=float(log10), compression=10.0 ** log10, seed=seed, iterations=iterations,
        schedule="exponential", scope=extra.pop("scope", "global"), prune_mode=prune_mode, levels=0, examples_per_class=10,
        prunable_params=1150, prunable_layers=3, remaining_params=sum(remaining),
        density=sum(remaining) / 1150, collapsed=0 in remaining,
        prune_passes=iterations * (100 if algorithm == "snip" else 1),  # data-free: one pass a round
        prune_seconds=prune_seconds if prune_seconds is not None else (360.0 if algorithm == "synflow" else 36.0),
        dense_flops=10_000, remaining_flops=1_000, epochs=epochs, final_top1=top1,
        final_top5=None if top1 is None else min(1.0, top1 + 0.05), best_top1=top1, final_test_loss=None,
        train_seconds=3600.0 if epochs else 0.0, status=status, started_at=T0, finished_at=T0, host="h",
        device=None, cpus=2.0, gpus=0.5, torch_version="2.15", project_version="0.1.0", config="{}",
        num_classes=extra.pop("num_classes", 100 if dataset == "cifar100" else 10), **extra,
    )
    store.write_trial(trial, [], layers)
    return trial_id


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis") / "results"
    store = ResultsStore(root)
    for (model, dataset), shift in PANELS.items():
        for algorithm, by_ratio in BASE.items():
            for log10, base in by_ratio.items():
                for seed, offset in SEED_OFFSET.items():
                    write(store, model, dataset, algorithm, log10, seed, base + shift + offset,
                          empty_layer=EMPTY_LAYER.get((algorithm, log10, seed)))
    # Variants and leftovers on (vgg11_bn, cifar10) that the default curves must not average in.
    for log10 in (1, 2):
        for seed in SEED_OFFSET:
            write(store, "vgg11_bn", "cifar10", "snip", log10, seed, 0.05 + 0.1 * log10, iterations=10,
                  densities=(0.9, 0.9, 0.9), prune_seconds=360.0)
    write(store, "vgg11_bn", "cifar10", "snip", 1, 0, 0.06, prune_mode="train")
    write(store, "vgg11_bn", "cifar10", "random", 2, 0, 0.01, epochs=1)  # a smoke-test run
    write(store, "vgg11_bn", "cifar10", "random", 1, 3, 0.11, status="diverged")
    write(store, "vgg11_bn", "cifar10", "synflow", 2.5, 0, None, epochs=0)  # prune-only, not collapsed
    return root


@pytest.fixture(scope="module")
def results(store_dir):
    return load_results(store_dir)


def curve(curves, model, dataset, algorithm):
    rows = curves[(curves["model"] == model) & (curves["dataset"] == dataset) & (curves["algorithm"] == algorithm)]
    return rows.sort_values("log10_compression")


def test_accuracy_curves_are_per_group_mean_min_max_in_percent(results):
    selected, caption = default_settings(results.trials)
    curves = tables.accuracy_curves(selected)
    snip = curve(curves, "vgg11_bn", "cifar10", "snip")
    # seeds 84, 85, 89 at 10x; the iterated, train-mode and variant trials stay out
    assert snip["top1_mean"].tolist() == pytest.approx([91.0, 86.0, 61.0])
    assert snip["top1_min"].tolist() == pytest.approx([89.0, 84.0, 59.0])
    assert snip["top1_max"].tolist() == pytest.approx([94.0, 89.0, 64.0])
    assert snip["trials"].tolist() == [3, 3, 3]
    rand = curve(curves, "vgg11_bn", "cifar10", "random")
    assert rand["top1_mean"].tolist() == pytest.approx([91.0, 71.0, 31.0])  # no smoke-test, no diverged trial
    assert curve(curves, "vgg11_bn", "cifar100", "synflow")["top1_mean"].tolist() == pytest.approx([66.0, 64.0, 56.0])
    assert curve(curves, "vgg11_bn", "cifar10", "synflow")["compression"].tolist() == [1.0, 10.0, 100.0]
    assert "snip 1" in caption and "synflow 100" in caption and "3 epochs" in caption
    dense = tables.dense_reference(selected).set_index(["model", "dataset"])["top1_mean"]
    assert dense[("resnet20", "cifar10")] == pytest.approx(89.0)


def test_the_drawn_lines_and_bands_are_those_numbers(results):
    selected, caption = default_settings(results.trials)
    curves = tables.accuracy_curves(selected)
    layout = PanelLayout.of(tables.panels(curves))
    fig = accuracy_figures.draw_accuracy(curves, tables.dense_reference(selected), results.trials, layout, caption)
    # Three pairs of a 2x2 grid: laid out in one row, no empty panel for (resnet20, cifar100).
    assert (layout.rows, layout.cols) == (1, 3)
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()][:3] == \
        ["resnet20 / cifar10", "vgg11_bn / cifar10", "vgg11_bn / cifar100"]
    panel = fig.axes[1]
    chance = [line for line in panel.get_lines() if line.get_linestyle() == ":"]
    assert len(chance) == 1 and chance[0].get_ydata()[0] == pytest.approx(10.0)  # cifar10: 100 / 10 classes
    lines = {line.get_label(): line for line in panel.get_lines()}
    assert list(lines["snip"].get_xdata()) == [1.0, 10.0, 100.0]
    assert list(lines["snip"].get_ydata()) == pytest.approx([91.0, 86.0, 61.0])
    snip_band = panel.collections[1].get_paths()[0].vertices[:, 1]
    assert min(snip_band) == pytest.approx(59.0) and max(snip_band) == pytest.approx(94.0)
    assert [line.get_ydata()[0] for line in panel.get_lines() if line.get_linestyle() == "--"] == [pytest.approx(91.0)]


def test_critical_compression_is_the_largest_ratio_where_no_seed_collapsed(results):
    selected, _ = default_settings(results.trials, same_training=False)
    critical = tables.critical_compression(selected).set_index(["model", "dataset", "algorithm"])
    snip = critical.loc[("vgg11_bn", "cifar10", "snip")]
    assert snip["critical"] == pytest.approx(10.0) and snip["first_collapse"] == pytest.approx(100.0)
    assert not snip["censored"]
    # Random collapsed at 10x in one seed but not at 100x: the largest intact ratio counts.
    rand = critical.loc[("resnet20", "cifar10", "random")]
    assert rand["critical"] == pytest.approx(100.0) and rand["first_collapse"] == pytest.approx(10.0)
    # Synflow never collapsed; the prune-only trial at 10^2.5 extends what was tested on one panel.
    assert critical.loc[("vgg11_bn", "cifar10", "synflow"), "critical"] == pytest.approx(10 ** 2.5)
    assert critical.loc[("vgg11_bn", "cifar100", "synflow"), "critical"] == pytest.approx(100.0)
    assert bool(critical.loc[("vgg11_bn", "cifar100", "synflow"), "censored"])
    assert critical["theoretical_max"].unique().tolist() == pytest.approx([1150 / 3])
    assert critical.loc[("vgg11_bn", "cifar10", "snip"), "trials"] == 9  # the iterated snip trials are variants


def test_layer_density_profiles_average_seeds_over_conv_and_linear_layers(results):
    selected, _ = default_settings(results.trials, same_training=False)
    profiles = tables.layer_density_profiles(selected, results.layers)
    rows = profiles[(profiles["model"] == "vgg11_bn") & (profiles["dataset"] == "cifar10")
                    & (profiles["algorithm"] == "random") & (profiles["log10_compression"] == 1)]
    assert rows["position"].tolist() == [0, 1, 2]  # the bias entry is not a layer of the plot
    assert rows["layer"].tolist() == ["features.0", "features.3", "classifier"]
    # seed 0 emptied the first conv; the diverged seed 3 counts too (its pruning happened): (0 + 3 * 0.1) / 4
    assert rows["density_mean"].tolist() == pytest.approx([0.075, 0.1, 0.1])
    assert rows["zero_seeds"].tolist() == [1, 0, 0]
    snip = profiles[(profiles["model"] == "vgg11_bn") & (profiles["dataset"] == "cifar10")
                    & (profiles["algorithm"] == "snip") & (profiles["log10_compression"] == 2)]
    assert snip["density_mean"].tolist() == pytest.approx([0.1, 0.008, 0.02 * 2 / 3])  # not the 0.9 variant


def test_conservation_pairs_match_synflow_at_the_smallest_scored_ratio(results):
    selected, _ = default_settings(results.trials, same_training=False)
    pairs, notes = tables.conservation_pairs(selected, results.layers)
    assert notes == []
    mine = pairs[(pairs["model"] == "resnet20") & (pairs["dataset"] == "cifar10")]
    assert set(mine["log10_compression"]) == {1.0} and set(mine["seed"]) == {0}  # dense trials have no scores
    assert mine["algorithm"].unique().tolist() == ["synflow", "snip", "random"]
    snip = mine[mine["algorithm"] == "snip"]
    assert snip["score_sum"].tolist() == [1.0, 3.0, -0.5]
    assert snip["abs_score"].tolist() == [1.0, 3.0, 0.5]
    assert snip["score_per_weight"].tolist() == pytest.approx([0.01, 0.003, 0.01])


def test_cost_table_is_per_trial_with_totals_apart(results):
    cost = tables.cost_table(results.trials).set_index(["model", "dataset", "algorithm", "iterations", "ablations"])
    synflow = cost.loc[("vgg11_bn", "cifar10", "synflow", 100, False)]
    assert synflow["trials"] == 10  # 9 trained + 1 prune-only
    assert synflow["gpu_hours"] == pytest.approx((9 * (360 + 3600) + 360) * 0.5 / 3600)
    assert synflow["prune_passes"] == 100
    # per trial: the median, and the min-max (the prune-only trial trained for 0 s)
    assert (synflow["train_seconds"], synflow["train_seconds_min"], synflow["train_seconds_max"]) == (3600, 0, 3600)
    assert (synflow["seconds"], synflow["seconds_min"]) == (3960, 360)
    assert cost.loc[("vgg11_bn", "cifar10", "snip", 10, False), "trials"] == 6
    assert cost.loc[("resnet20", "cifar10", "synflow", 100, False), "trials"] == 9
    here = cost.loc[("vgg11_bn", "cifar10")].index.get_level_values("algorithm").tolist()
    assert here[:3] == ["synflow", "snip", "snip"]


def test_iterative_and_mode_curves_hold_the_variants(results):
    iterative = tables.iterative_curves(results.trials)
    mine = iterative[(iterative["model"] == "vgg11_bn") & (iterative["dataset"] == "cifar10")]
    assert sorted(mine["variant"].unique()) == ["snip x1", "snip x10", "synflow x100"]
    x10 = mine[mine["variant"] == "snip x10"].sort_values("log10_compression")
    # At 1x snip x10 trains the same network as every algorithm: its 1x point is that network's stored 1x trial
    # (this store predates dense trials, so an algorithm's own: snip's, the variant's algorithm, first).
    t = results.trials
    sources = t[(t["model"] == "vgg11_bn") & (t["dataset"] == "cifar10") & (t["log10_compression"] == 0)
                & (t["algorithm"] == "snip") & ~t["shared_dense"]]
    shared = results.trials[results.trials["shared_dense"] & (results.trials["iterations"] == 10)]
    assert sorted(shared["trial_id"]) == sorted(sources["trial_id"]) and sorted(shared["seed"]) == [0, 1, 2]
    assert x10["top1_mean"].tolist() == pytest.approx([sources["final_top1"].mean() * 100, 15.0, 25.0])
    modes = tables.prune_mode_curves(results.trials)
    train = modes[modes["variant"] == "snip (train)"].sort_values("log10_compression")
    seed_0 = sources[sources["seed"] == 0]["final_top1"].item() * 100  # train-mode scoring at 1x: the same network
    assert train["top1_mean"].tolist() == pytest.approx([seed_0, 6.0]) and train["trials"].tolist() == [1, 1]


def test_iterative_curves_put_force_beside_iterative_snip(results):
    snip = results.trials[results.trials["algorithm"] == "snip"]
    force = pd.concat([snip.assign(algorithm="force", iterations=n, trial_id=snip["trial_id"] + f"-force{n}")
                       for n in (10, 100)])
    iterative = tables.iterative_curves(pd.concat([results.trials, force]))
    mine = iterative[(iterative["model"] == "vgg11_bn") & (iterative["dataset"] == "cifar10")]
    assert {"force x10", "force x100", "snip x1", "snip x10", "synflow x100"} <= set(mine["variant"])


def test_cli_writes_png_and_pdf_for_every_figure_and_reports_the_missing_panel(store_dir, tmp_path, capsys):
    out = tmp_path / "figures"
    assert plots.main(["--store", str(store_dir), "--out", str(out)]) == 0
    panels = ["resnet20_cifar10", "vgg11_bn_cifar10", "vgg11_bn_cifar100"]
    names = ["accuracy", "critical_compression", "iterative", "cost"] + \
        [f"{figure}_{panel}" for figure in ("layer_density", "conservation") for panel in panels]
    expected = {f"{n}.{ext}" for n in names for ext in ("png", "pdf")} | {"critical_compression.csv", "cost.csv"}
    assert {p.name for p in out.iterdir()} == expected
    image = matplotlib.image.imread(out / "accuracy.png")
    assert image.shape[0] > 500 and image.shape[1] > 500
    assert (out / "accuracy.pdf").read_bytes()[:5] == b"%PDF-"
    printed = capsys.readouterr().out.splitlines()
    # (resnet20, cifar100) was never run: it is no panel of any figure, and nothing reports it as missing
    assert not [line for line in printed if "(resnet20, cifar100)" in line]
    assert "learning_curves: no trained trial has epoch rows; figure not drawn" in printed
    assert "accuracy: 8 trained trial(s) with non-default settings left out (see the iterative figure)" in printed
    assert "ablations: no ablation trials among the selected (every trial has ablation none); figure not drawn" in printed
    assert ("effective_sparsity: no trial records effective_remaining_params (the store predates it); "
            "figure not drawn") in printed
    assert printed[-1].startswith(f"wrote 10 figure(s) to {out}: accuracy, conservation_resnet20_cifar10")


def test_cli_only_draws_the_named_figures_and_refuses_unknown_names(store_dir, tmp_path, capsys):
    assert plots.main(["--store", str(store_dir), "--out", str(tmp_path), "--only", "cost"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cost.csv", "cost.pdf", "cost.png"]
    capsys.readouterr()
    assert plots.main(["--store", str(store_dir), "--out", str(tmp_path), "--only", "accuracy,density"]) == 2
    assert capsys.readouterr().err == ("error: unknown figure 'density' (did you mean 'layer_density'?); valid "
                                       "figures: ablations, accuracy, budgets, conservation, cost, "
                                       "critical_compression, effective_sparsity, iterative, layer_density, "
                                       "learning_curves, mask_overlap\n")


def test_cli_band_picks_the_interval_and_refuses_unknown_bands(store_dir, tmp_path, capsys):
    assert plots.main(["--store", str(store_dir), "--out", str(tmp_path), "--only", "accuracy", "--band", "ci"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accuracy.pdf", "accuracy.png"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        plots.main(["--store", str(store_dir), "--out", str(tmp_path / "x"), "--band", "sd"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("error: argument --band: invalid choice: 'sd' (choose from 'range', 'ci') "
                                       "(see python -m analysis.plots --help)\n")
    assert not (tmp_path / "x").exists()


def test_old_stores_read_as_ablation_none_without_effective_counts(results):
    assert set(results.trials["ablation"]) == {"none"}  # written without the column: null in the store
    assert results.trials["effective_remaining_params"].isna().all()
    assert results.layers["effective_remaining"].isna().all()


def test_ablation_trials_stay_out_of_the_headline_figures_and_get_their_own(tmp_path, capsys):
    store = ResultsStore(tmp_path / "results")
    for seed, offset in SEED_OFFSET.items():
        for log10 in (0, 1, 2):
            for algorithm in ("synflow", "snip"):
                top1 = BASE[algorithm][log10] + offset
                # snip at 100x leaves no input-output path in seed 0: 1150 prunable / 0 effective
                effective = 0 if (algorithm, log10, seed) == ("snip", 2, 0) else round(1150 / 10 ** log10 / 2)
                write(store, "vgg11_bn", "cifar10", algorithm, log10, seed, top1, ablation="none",
                      effective_remaining_params=effective)
        for log10 in (1, 2):
            write(store, "vgg11_bn", "cifar10", "synflow", log10, seed, 0.2 + offset, ablation="shuffle",
                  effective_remaining_params=1)
    results = load_results(tmp_path / "results")
    curves = tables.accuracy_curves(default_settings(results.trials)[0])
    assert curve(curves, "vgg11_bn", "cifar10", "synflow")["top1_mean"].tolist() == pytest.approx([91.0, 89.0, 81.0])
    assert plots.main(["--store", str(tmp_path / "results"), "--out", str(tmp_path / "fig"), "--only",
                       "accuracy,ablations,effective_sparsity"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert "accuracy: 6 trained ablation trial(s) left out (see the ablations figure)" in printed
    assert "effective_sparsity: (vgg11_bn, cifar10) snip: trials disconnected (drawn at ∞): 1 of 3 at 100x" in printed
    assert {p.name for p in (tmp_path / "fig").glob("*.png")} == {"accuracy.png", "ablations.png",
                                                                   "effective_sparsity.png"}
    effective = pd.read_csv(tmp_path / "fig" / "effective_sparsity.csv")
    synflow = effective[effective["algorithm"] == "synflow"]
    # 1150 / round(1150 / 10^k / 2) at k = 0, 1, 2: the shuffle trials' 1150 / 1 stays out
    assert synflow["effective_compression_mean"].tolist() == pytest.approx([1150 / 575, 1150 / 58, 1150 / 6])
    text = summary.summarize(results)
    assert "| synflow | 91.0 ± 6.6 (3) | 89.0 ± 6.6 (3) | 81.0 ± 6.6 (3) |" in text  # no shuffle trial averaged in


def test_summary_pairs_seeds_against_a_reference(results, store_dir, capsys):
    text = summary.summarize(results)
    paired = text.split("## Paired differences to synflow")[1].split("## Critical")[0]
    panel = paired.split("### vgg11_bn / cifar10")[1].split("###")[0]
    # every seed's offset cancels: snip - synflow = 85 - 88 = -3 at 10x in each seed. No spread: reported as
    # identical, never as significant, and nothing is left to test in this panel.
    assert "| snip | +0.0 identical (3) | -3.0 identical (3) | -20.0 identical (3) |" in panel
    assert "| random | +0.0 identical (3) | -18.0 identical (3) | -50.0 identical (3) |" in panel
    assert "No comparison here could be tested" in panel and "*" not in panel
    by_random = summary.summarize(results, reference="random")
    assert "## Paired differences to random" in by_random
    assert "| synflow | +0.0 identical (3) | +18.0 identical (3) | +50.0 identical (3) |" in by_random
    assert summary.main(["--store", str(store_dir), "--reference", "grasp"]) == 2
    captured = capsys.readouterr()
    assert captured.err == ("error: unknown reference algorithm 'grasp'; algorithms in the store: synflow, snip, "
                            "random\n")
    assert captured.out == ""


def test_summary_says_when_a_panel_has_no_pairs(tmp_path):
    store = ResultsStore(tmp_path / "results")
    for seed in (0, 1):
        write(store, "vgg11_bn", "cifar10", "snip", 1, seed, 0.8)
        write(store, "vgg11_bn", "cifar100", "synflow", 1, seed, 0.5)
        write(store, "vgg11_bn", "cifar100", "snip", 2, seed, 0.4)
    text = summary.summarize(load_results(tmp_path / "results"))
    paired = text.split("## Paired differences to synflow")[1]
    assert "### vgg11_bn / cifar10\n\nNo pairs: synflow has no trained trial here." in paired
    assert ("### vgg11_bn / cifar100\n\nNo pairs: no other algorithm shares a compression and seed with synflow "
            "here.") in paired
    no_synflow = Results("mem", load_results(tmp_path / "results").trials.query("algorithm == 'snip'"),
                         pd.DataFrame(), pd.DataFrame())
    assert "The store has no synflow trials; pass --reference with one of: snip." in summary.summarize(no_synflow)


def test_a_store_with_only_pruned_trials_still_draws_the_pruning_figures(tmp_path, capsys):
    store = ResultsStore(tmp_path / "results")
    for log10 in (1, 2):
        write(store, "vgg11_bn", "cifar10", "synflow", log10, 0, None, epochs=0)
    assert plots.main(["--store", str(tmp_path / "results"), "--out", str(tmp_path / "fig")]) == 0
    printed = capsys.readouterr().out
    assert "accuracy: no completed trials with a final accuracy; figure not drawn" in printed
    assert "conservation: (vgg11_bn, cifar10): no other algorithm scored at a synflow trial's compression" in printed
    assert sorted(p.name for p in (tmp_path / "fig").glob("*.png")) == [
        "cost.png", "critical_compression.png", "layer_density_vgg11_bn_cifar10.png"]


def test_empty_or_absent_store_exits_2_with_one_line(tmp_path):
    (tmp_path / "empty" / "trials").mkdir(parents=True)
    for store, message in ((tmp_path / "empty", "has no finished trials yet"), (tmp_path / "absent", "does not exist")):
        for module, extra in (("analysis.plots", ["--out", str(tmp_path / "fig")]), ("analysis.summary", [])):
            run = subprocess.run([sys.executable, "-m", module, "--store", str(store), *extra], cwd=REPO,
                                 capture_output=True, text=True, timeout=120)
            assert run.returncode == 2, run.stderr
            assert run.stderr == f"error: store {store} {message}\n"
            assert run.stdout == ""
    assert not (tmp_path / "fig").exists()


def test_summary_tables_hold_mean_and_95_percent_interval(results, store_dir, tmp_path):
    text = summary.summarize(results)
    assert "### vgg11_bn / cifar10" in text and "### resnet20 / cifar10" in text
    accuracy = text.split("## Top-1 accuracy")[1].split("## Paired")[0]
    assert "95% Student-t interval" in accuracy
    panel = accuracy.split("### vgg11_bn / cifar10")[1].split("###")[0]
    # The paper's layout: a row per algorithm, a column per compression, mean ± half-width (n).
    # Seed offsets -1, 0, +4: std sqrt(7), half-width t(0.975, 2) * sqrt(7) / sqrt(3) = 4.303 * 1.528 = 6.6
    assert "| algorithm | 1x | 10x | 100x |" in panel
    assert "| snip | 91.0 ± 6.6 (3) | 86.0 ± 6.6 (3) | 61.0 ± 6.6 (3) |" in panel
    assert "| vgg11_bn | cifar10 | snip | 10x | 100x | 100x | 383x | 9 |" in text
    assert "(resnet20, cifar100)" not in text  # never run: not reported as missing
    out = tmp_path / "summary.md"
    assert summary.main(["--store", str(store_dir), "--out", str(out)]) == 0
    assert out.read_text() == text


def test_analysis_and_store_import_without_torch_or_ray():
    code = ("import analysis.plots, analysis.summary, analysis.tables, results_store, sys; "
            "assert 'torch' not in sys.modules and 'ray' not in sys.modules, "
            "sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray'))")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_what_the_store_could_not_read_is_said_first(store_dir, tmp_path, capsys):
    store = tmp_path / "results"
    shutil.copytree(store_dir, store)
    assert summary.main(["--store", str(store)]) == 0
    clean = capsys.readouterr().out.splitlines()
    (store / "trials" / "zzz.parquet").write_bytes(b"garbage bytes, not a parquet file")
    warning = "warning: the store could not read everything: "

    assert summary.main(["--store", str(store)]) == 0
    lines = capsys.readouterr().out.splitlines()
    said = [line for line in lines if line.startswith(warning)]
    assert len(said) == 1 and "trials/zzz.parquet" in said[0]
    # Right under the title, once (not again in the notes), and every readable trial is summarised as before.
    assert lines == clean[:2] + [said[0], ""] + clean[2:]

    assert summary.main(["--store", str(store), "--format", "csv"]) == 0
    printed = capsys.readouterr()
    assert printed.err.splitlines() == said  # on stderr: the CSV stays rows
    assert printed.out.splitlines()[0].startswith("table,model,dataset,algorithm,")

    out = tmp_path / "summary.md"
    assert summary.main(["--store", str(store), "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == said + [f"wrote {out}"]
    assert out.read_text().splitlines()[2] == said[0]

    assert plots.main(["--store", str(store), "--out", str(tmp_path / "fig"), "--only", "cost", "--jobs", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == said[0] and lines[-1] == f"wrote 1 figure(s) to {tmp_path / 'fig'}: cost"


def test_save_lays_a_figure_out_once_and_writes_the_png_savefig_would(results, tmp_path):
    selected, caption = default_settings(results.trials)
    curves = tables.accuracy_curves(selected)
    layout = PanelLayout.of(tables.panels(curves))

    def draw():
        return accuracy_figures.draw_accuracy(curves, tables.dense_reference(selected), results.trials, layout,
                                              caption)
    fig = draw()
    with matplotlib.rc_context(drawing.STYLE):
        fig.savefig(tmp_path / "by_savefig.png", dpi=drawing.PNG_DPI)
    fig = draw()
    assert drawing.save(fig, tmp_path, "by_save") == [tmp_path / "by_save.png", tmp_path / "by_save.pdf"]
    assert (tmp_path / "by_save.png").read_bytes() == (tmp_path / "by_savefig.png").read_bytes()
    assert fig.get_layout_engine() is not None  # given back: the figure lays itself out again if drawn again


def test_figures_drawn_by_worker_processes_are_the_same_files(store_dir, tmp_path, capsys):
    here = plots.draw_all(str(store_dir), tmp_path / "here", ["accuracy", "layer_density", "cost"], jobs=1)
    printed_here = capsys.readouterr().out
    workers = plots.draw_all(str(store_dir), tmp_path / "workers", ["accuracy", "layer_density", "cost"], jobs=2)
    assert capsys.readouterr().out == printed_here  # the same lines, in the same order
    assert [p.relative_to(tmp_path / "workers") for p in workers] == [p.relative_to(tmp_path / "here") for p in here]
    for path in here:
        if path.suffix != ".pdf":  # a PDF carries its creation time
            assert path.read_bytes() == (tmp_path / "workers" / path.name).read_bytes(), path.name


def test_budget_curves_put_erk_and_er_random_beside_random_and_the_figure_draws_them(results, tmp_path):
    random = results.trials[(results.trials["algorithm"] == "random") & ~results.trials["shared_dense"]
                            & (results.trials["prune_mode"] == "eval")]
    budgets = pd.concat([random.assign(scope=s, trial_id=random["trial_id"] + f"-{s}",
                                       final_top1=random["final_top1"] + shift)
                         for s, shift in (("erk", 0.10), ("er", 0.05))])
    trials = pd.concat([results.trials, budgets], ignore_index=True)
    curves = tables.budget_curves(trials)
    mine = curves[(curves["model"] == "vgg11_bn") & (curves["dataset"] == "cifar10")]
    assert sorted(mine["variant"].unique()) == ["random (er)", "random (erk)", "random (global)"]
    at_10x = mine[mine["log10_compression"] == 1].set_index("variant")["top1_mean"]
    # random at 10x: 0.70 + seed offsets (-0.01, 0, 0.04) -> mean 71.0%; ERK +10 points, ER +5
    assert at_10x.to_dict() == pytest.approx({"random (global)": 71.0, "random (erk)": 81.0, "random (er)": 76.0})
    assert (mine.loc[mine["log10_compression"] == 1, "trials"] == 3).all()
    assert tables.budget_curves(results.trials).empty  # no algorithm ran under a second budget: nothing to compare
    printed = []
    written = accuracy_figures.budgets_figure(Results("test", trials, results.epochs, results.layers), tmp_path,
                                              printed.append)
    assert sorted(p.name for p in written) == ["budgets.pdf", "budgets.png"] and not printed
    assert accuracy_figures.budgets_figure(results, tmp_path / "none", printed.append) == []
    assert printed == ["budgets: no algorithm trained under more than one layer budget (--budgets global,erk,er); "
                       "figure not drawn"]
