"""Seed statistics, ablation and effective-compression tables, from small frames built here (no store).

Every expected number is worked out by hand in the comments.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import ablation_figures, accuracy_figures, comparisons, stats, summary, tables
from analysis.drawing import PanelLayout
from analysis.drawing import FigureOptions
from analysis.load import Results, default_settings, with_default_prune_settings, with_later_columns

SQRT3 = math.sqrt(3.0)
T975_DF2 = 4.302652729911275  # t(0.975, 2), from tables (scipy.stats.t.ppf(0.975, 2))


def trial(algorithm="synflow", log10=1.0, seed=0, top1=0.5, *, model="vgg11_bn", dataset="cifar10",
          ablation="none", effective=None, prune_mode="eval", status="completed", **extra):
    row = dict(trial_id=f"{model}-{dataset}-{algorithm}-{log10}-{seed}-{ablation}-{prune_mode}-{top1}", model=model,
               dataset=dataset, algorithm=algorithm, log10_compression=float(log10), compression=10.0 ** log10,
               seed=seed, iterations=100 if algorithm == "synflow" else 1, schedule="exponential", scope="global",
               prune_mode=prune_mode, ablation=ablation, status=status, final_top1=top1, epochs=3,
               prunable_params=1000, prunable_layers=4, effective_remaining_params=effective, collapsed=False)
    row.update(extra)
    return row


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows)


# ------------------------------------------------------------------- t quantile

@pytest.mark.parametrize("df, expected", [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (10, 2.228),
                                          (30, 2.042), (120, 1.980)])
def test_t_quantile_matches_the_printed_tables(df, expected):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)


def test_t_quantile_exact_forms_symmetry_and_bad_input():
    # df = 1 is the Cauchy distribution, df = 2 has t = (2p - 1) / sqrt(2p(1 - p)): both exact.
    for p in (0.6, 0.9, 0.975, 0.999):
        assert stats.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)
        assert stats.t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-10)
        assert stats.t_quantile(1 - p, 7) == pytest.approx(-stats.t_quantile(p, 7), rel=1e-12)
    assert stats.t_quantile(0.5, 3) == 0.0
    assert stats.t_quantile(0.975, 1e6) == pytest.approx(1.959966, abs=1e-5)  # the normal's
    for p, df in ((0.0, 3), (1.0, 3), (0.9, 0), (0.9, float("inf"))):
        with pytest.raises(ValueError):
            stats.t_quantile(p, df)


def test_t_quantile_agrees_with_scipy_where_installed():
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 9, 17, 33, 100, 2.5):
        for p in (0.55, 0.8, 0.95, 0.975, 0.995, 0.9999):
            assert stats.t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-8)


def test_half_width():
    assert stats.half_width(1.0, 3) == pytest.approx(T975_DF2 / SQRT3)
    assert math.isnan(stats.half_width(1.0, 2))  # below three seeds no interval (t(0.975, 1) = 12.7)
    assert math.isnan(stats.half_width(1.0, 1)) and math.isnan(stats.half_width(float("nan"), 3))
    assert stats.half_widths([1.0, 1.0], [3, 2])[0] == pytest.approx(T975_DF2 / SQRT3)
    assert math.isnan(stats.half_widths([1.0, 1.0], [3, 2])[1])


# ------------------------------------------------------------- accuracy curves

def test_accuracy_curves_carry_the_95_percent_interval():
    trials = frame([trial("snip", 1, s, t) for s, t in enumerate((0.80, 0.82, 0.84))] + [trial("snip", 2, 0, 0.3)])
    curves = tables.accuracy_curves(trials).set_index("log10_compression")
    # 80, 82, 84: mean 82, std 2, half-width t(0.975, 2) * 2 / sqrt(3) = 4.968
    assert curves.loc[1.0, "top1_ci"] == pytest.approx(T975_DF2 * 2 / SQRT3)
    assert curves.loc[1.0, "top1_ci_low"] == pytest.approx(82 - T975_DF2 * 2 / SQRT3)
    assert curves.loc[1.0, "top1_ci_high"] == pytest.approx(82 + T975_DF2 * 2 / SQRT3)
    assert curves.loc[2.0, ["top1_ci", "top1_ci_low", "top1_ci_high"]].isna().all()  # one seed: no interval
    two = tables.accuracy_curves(trials[trials["seed"] < 2]).set_index("log10_compression")
    assert two.loc[1.0, ["top1_ci", "top1_ci_low", "top1_ci_high"]].isna().all()  # two seeds: none either
    assert tables.accuracy_curves(trials.iloc[:0]).columns.tolist()[-len(tables.ACCURACY_COLUMNS):] == \
        tables.ACCURACY_COLUMNS


def test_the_accuracy_figure_draws_the_interval_band_when_asked():
    trials = frame([trial(a, lg, s, t + 0.02 * s) for a, t in (("synflow", 0.8), ("snip", 0.7))
                    for lg in (0, 1) for s in range(3)])
    curves = tables.accuracy_curves(trials)
    for band, low, high in (("ci", 72 - T975_DF2 * 2 / SQRT3, 72 + T975_DF2 * 2 / SQRT3), ("range", 70, 74)):
        fig = accuracy_figures.draw_accuracy(curves, tables.dense_reference(trials), trials,
                                             PanelLayout.of(tables.panels(curves)), "test", band=band)
        snip_band = fig.axes[0].collections[1].get_paths()[0].vertices[:, 1]
        assert min(snip_band) == pytest.approx(low) and max(snip_band) == pytest.approx(high)
        assert ("95% t-interval" in fig._suptitle.get_text()) == (band == "ci")
    with pytest.raises(ValueError, match="unknown band 'sd'; valid bands: range, ci"):
        FigureOptions(band="sd")


# ---------------------------------------------------------- paired differences

def t_df2(p: float) -> float:
    """The p-quantile of Student's t with 2 degrees of freedom, in closed form: (2p - 1) / sqrt(2p(1 - p))."""
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


def p_df2(t: float) -> float:
    """Two-sided p-value of t with 2 degrees of freedom, in closed form: 1 - |t| / sqrt(t^2 + 2)."""
    return 1 - abs(t) / math.sqrt(t * t + 2)


def test_holm_by_hand():
    # sorted: 0.005 <= 0.05/4 (reject), 0.01 <= 0.05/3 (reject), 0.03 > 0.05/2: stop; 0.04 not rejected either
    adjusted, rejected, levels = stats.holm([0.01, 0.04, 0.03, float("nan"), 0.005])
    assert adjusted[[4, 0, 2, 1]] == pytest.approx([0.02, 0.03, 0.06, 0.06]) and math.isnan(adjusted[3])
    assert rejected.tolist() == [True, False, False, False, True]
    # each held to its step's level; after the stop, every one to the stop's level
    assert levels[[4, 0, 2, 1]] == pytest.approx([0.05 / 4, 0.05 / 3, 0.05 / 2, 0.05 / 2])
    assert stats.holm([float("nan")])[1].tolist() == [False]
    assert stats.paired_t_p_value(2.0, 1.0, 3) == pytest.approx(p_df2(2 * SQRT3))
    assert math.isnan(stats.paired_t_p_value(2.0, 1.0, 2)) and math.isnan(stats.paired_t_p_value(2.0, 0.0, 5))


def test_paired_differences_by_hand_with_holm():
    rows = [trial("synflow", 1, s, t) for s, t in enumerate((0.50, 0.60, 0.70, 0.80))]
    rows += [trial("snip", 1, s, t) for s, t in enumerate((0.51, 0.62, 0.73))]  # seed 3 unpaired: dropped
    rows += [trial("snip", 1, 4, 0.99)]  # a seed synflow lacks: dropped
    rows += [trial("random", 1, s, t) for s, t in enumerate((0.60, 0.71, 0.82))]  # +10, +11, +12
    rows += [trial("grasp", 1, s, t) for s, t in enumerate((0.47, 0.575, 0.68))]  # -3, -2.5, -2
    rows += [trial("grasp", 2, 0, 0.1), trial("synflow", 2, 0, 0.2)]  # one pair: untested
    diffs = comparisons.algorithm_differences(frame(rows), "synflow")
    assert diffs["algorithm"].tolist() == ["snip", "grasp", "grasp", "random"]  # figure order, then ratio
    assert set(diffs["reference"]) == {"synflow"} and set(diffs["family_size"]) == {3}
    by = {(r.algorithm, r.log10_compression): r for r in diffs.itertuples()}
    snip, grasp, rand, lone = by[("snip", 1.0)], by[("grasp", 1.0)], by[("random", 1.0)], by[("grasp", 2.0)]
    # paired t-tests, df 2: snip 1, 2, 3 (t = 2 / (1/sqrt 3)); grasp -3, -2.5, -2 (t = 2.5 / (0.5/sqrt 3));
    # random 10, 11, 12 (t = 11 / (1/sqrt 3))
    assert (snip.pairs, snip.diff_mean, snip.diff_std) == (3, pytest.approx(2.0), pytest.approx(1.0))
    assert snip.p_value == pytest.approx(p_df2(2 * SQRT3))          # 0.0742
    assert grasp.p_value == pytest.approx(p_df2(5 * SQRT3))         # 0.0131
    assert rand.p_value == pytest.approx(p_df2(11 * SQRT3))         # 0.0027
    # Holm over the 3 tested: random <= 0.05/3 and grasp <= 0.05/2 rejected; snip > 0.05 is not
    assert rand.holm_p == pytest.approx(3 * rand.p_value) and grasp.holm_p == pytest.approx(2 * grasp.p_value)
    assert snip.holm_p == pytest.approx(snip.p_value)
    assert (rand.significant, grasp.significant, snip.significant) == (True, True, False)
    # intervals at the level Holm held each to: t(1 - 0.05/6, 2), t(1 - 0.05/4, 2), t(0.975, 2) times std/sqrt(3)
    assert (rand.diff_ci_low, rand.diff_ci_high) == (pytest.approx(11 - t_df2(1 - 0.05 / 6) / SQRT3),
                                                     pytest.approx(11 + t_df2(1 - 0.05 / 6) / SQRT3))
    assert (grasp.diff_ci_low, grasp.diff_ci_high) == (pytest.approx(-2.5 - t_df2(1 - 0.05 / 4) * 0.5 / SQRT3),
                                                       pytest.approx(-2.5 + t_df2(1 - 0.05 / 4) * 0.5 / SQRT3))
    assert snip.diff_ci_low == pytest.approx(2 - T975_DF2 / SQRT3) and snip.diff_ci_low < 0 < snip.diff_ci_high
    assert grasp.diff_ci_high < 0 and rand.diff_ci_low > 0  # marked exactly where the interval excludes 0
    assert snip.arm_mean == pytest.approx(62.0) and snip.reference_mean == pytest.approx(60.0)
    assert lone.pairs == 1 and lone.diff_mean == pytest.approx(-10.0)
    assert math.isnan(lone.p_value) and math.isnan(lone.diff_ci_low) and not lone.significant
    # as printed: mean [interval] (n), * where Holm rejects
    assert summary.difference_cell(rand) == "+11.0 [+6.6, +15.4] (3) *"
    assert summary.difference_cell(grasp) == "-2.5 [-4.3, -0.7] (3) *"
    assert summary.difference_cell(snip) == "+2.0 [-0.5, +4.5] (3)"
    assert summary.difference_cell(lone) == "-10.0 (1)"


def test_paired_differences_average_repeats_and_skip_untrained_and_other_panels():
    rows = [trial("synflow", 1, s, t) for s, t in enumerate((0.5, 0.6))]
    rows += [trial("snip", 1, 0, 0.50), trial("snip", 1, 0, 0.54)]  # two trials of seed 0: 52
    rows += [trial("snip", 1, 1, 0.9, status="diverged")]  # not trained: seed 1 unpaired
    rows += [trial("snip", 1, 0, 0.4, model="resnet20")]  # no synflow on that panel
    diffs = comparisons.algorithm_differences(frame(rows), "synflow")
    assert len(diffs) == 1 and diffs.iloc[0]["diff_mean"] == pytest.approx(2.0) and diffs.iloc[0]["pairs"] == 1
    assert comparisons.algorithm_differences(frame(rows), "grasp").empty
    assert "significant" in comparisons.algorithm_differences(frame(rows).iloc[:0], "synflow").columns


def test_identical_differences_are_reported_as_such_never_as_significant():
    rows = [trial(a, 1, s, t) for a in ("synflow", "snip") for s, t in enumerate((0.1, 0.7, 0.3))]
    rows += [trial("magnitude", 1, s, t) for s, t in enumerate((0.1, 0.4, 0.3))]  # 0, -30, 0: a spread, tested
    rows += [trial("random", 1, s, t - 0.05) for s, t in enumerate((0.1, 0.7, 0.3))]  # -5 in every pair
    diffs = comparisons.algorithm_differences(frame(rows), "synflow").set_index("algorithm")
    assert diffs.loc["snip", "diff_mean"] == 0.0 and diffs.loc["snip", "identical"]
    assert diffs.loc["random", "diff_mean"] == pytest.approx(-5.0) and diffs.loc["random", "identical"]
    for algorithm in ("snip", "random"):  # no spread: untested, no interval, never marked
        assert not diffs.loc[algorithm, "significant"] and math.isnan(diffs.loc[algorithm, "p_value"])
        assert math.isnan(diffs.loc[algorithm, "diff_ci_low"])
    assert diffs.loc["magnitude", "family_size"] == 1  # only magnitude was tested
    assert summary.difference_cell(next(diffs.reset_index().query("algorithm == 'random'").itertuples())) == \
        "-5.0 identical (3)"


def test_accuracy_intervals_stay_within_0_and_100():
    trials = frame([trial("snip", 1, s, t) for s, t in enumerate((0.99, 1.0, 1.0))])
    row = tables.accuracy_curves(trials).iloc[0]
    # mean 99.667, std 0.577, half-width 4.303 * 0.577 / 1.732 = 1.434: 101.1 is clipped to 100
    assert row["top1_ci_high"] == 100.0 and row["top1_ci_low"] == pytest.approx(99.6667 - 1.4342, abs=1e-3)
    assert summary.accuracy_cell(row["top1_mean"], row["top1_ci_low"], row["top1_ci_high"], 3) == \
        "99.7 [98.2, 100.0] (3)"
    assert summary.accuracy_cell(82.0, 77.0, 87.0, 3) == "82.0 ± 5.0 (3)"
    assert summary.accuracy_cell(82.0, float("nan"), float("nan"), 2) == "82.0 (2)"


# ------------------------------------------------------------------- ablations

def test_an_absent_or_null_ablation_is_the_default():
    rows = [trial("snip", 1, 0, 0.5), trial("snip", 1, 1, 0.5, ablation=None), trial("snip", 1, 2, 0.5,
                                                                                          ablation="shuffle")]
    assert len(with_default_prune_settings(frame(rows))) == 2
    assert len(with_default_prune_settings(frame(rows).drop(columns="ablation"))) == 3
    assert len(with_default_prune_settings(frame(rows), except_for="ablation")) == 3
    selected, caption = default_settings(frame(rows))
    assert sorted(selected["seed"]) == [0, 1] and "no ablation" in caption
    filled = with_later_columns("trials", frame(rows).drop(columns=["ablation", "effective_remaining_params"]))
    assert filled["ablation"].tolist() == ["none"] * 3 and filled["effective_remaining_params"].isna().all()
    assert with_later_columns("trials", frame(rows))["ablation"].tolist() == ["none", "none", "shuffle"]
    assert with_later_columns("layers", pd.DataFrame({"layer": ["a"]}))["effective_remaining"].isna().all()


def ablation_trials() -> pd.DataFrame:
    rows = []
    for seed in range(2):
        for log10 in (0, 1, 2):
            rows.append(trial("synflow", log10, seed, 0.8 - 0.1 * log10 + 0.02 * seed))
            rows.append(trial("snip", log10, seed, 0.7 - 0.1 * log10))
            rows.append(trial("snip", log10, seed, 0.3, model="resnet20"))  # no ablation on this panel
        for log10 in (1, 2):
            rows.append(trial("synflow", log10, seed, 0.5 - 0.1 * log10 + 0.02 * seed, ablation="invert"))
            rows.append(trial("synflow", log10, seed, 0.65, ablation="shuffle"))
    rows.append(trial("snip", 1, 0, 0.2, ablation="reinit"))
    rows.append(trial("synflow", 1, 0, 0.01, ablation="shuffle", prune_mode="train"))  # a variant: left out
    rows.append(trial("synflow", 2, 0, 0.01, ablation="reinit", status="diverged"))  # untrained: left out
    return frame(rows)


def test_ablation_curves_hold_one_line_per_ablation_on_panels_with_ablations():
    curves = tables.ablation_curves(ablation_trials())
    assert set(zip(curves["model"], curves["dataset"])) == {("vgg11_bn", "cifar10")}
    lines = curves.groupby(["algorithm", "ablation"], sort=False)["log10_compression"].apply(list)
    assert list(lines.index) == [("synflow", "none"), ("synflow", "shuffle"), ("synflow", "invert"),
                                 ("snip", "none"), ("snip", "reinit")]
    assert lines[("synflow", "none")] == [0.0, 1.0, 2.0] and lines[("synflow", "invert")] == [1.0, 2.0]
    invert = curves[(curves["algorithm"] == "synflow") & (curves["ablation"] == "invert")]
    assert invert["top1_mean"].tolist() == pytest.approx([41.0, 31.0])  # (40 + 42) / 2, (30 + 32) / 2
    shuffle = curves[(curves["algorithm"] == "synflow") & (curves["ablation"] == "shuffle")]
    assert shuffle["top1_mean"].tolist() == pytest.approx([65.0, 65.0]) and shuffle["trials"].tolist() == [2, 2]
    assert curves.loc[curves["ablation"] == "reinit", "top1_mean"].tolist() == pytest.approx([20.0])
    assert tables.ablation_curves(ablation_trials().query("ablation == 'none'")).empty
    assert tables.ablation_order(["zeta", "invert", "none", "shuffle"]) == ["none", "shuffle", "invert", "zeta"]


def test_ablations_figure_draws_a_line_per_ablation_and_skips_stores_without_any(tmp_path):
    trials = ablation_trials()
    lines = []
    written = ablation_figures.ablations_figure(Results("mem", trials, pd.DataFrame(), pd.DataFrame()), tmp_path,
                                                lines.append)
    assert [p.name for p in written] == ["ablations.png", "ablations.pdf"]
    curves = tables.ablation_curves(trials)
    fig = ablation_figures.draw_ablations(curves, [("vgg11_bn", "cifar10")], ["synflow", "snip"])
    drawn = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert list(drawn) == ["none", "shuffle", "invert"]
    assert drawn["none"].get_linestyle() == "-" and drawn["none"].get_linewidth() == 2.0
    assert len({drawn[a].get_color() for a in drawn}) == 3 and drawn["shuffle"].get_linestyle() == "--"
    assert list(drawn["invert"].get_ydata()) == pytest.approx([41.0, 31.0])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[0].startswith("none") and any(t.startswith("reinit") for t in legend)
    lines.clear()
    none_only = Results("mem", trials[trials["ablation"] == "none"].drop(columns="ablation"), pd.DataFrame(),
                        pd.DataFrame())
    assert ablation_figures.ablations_figure(none_only, tmp_path / "no", lines.append) == []
    assert lines == ["ablations: no ablation trials among the selected (every trial has ablation none); figure not drawn"]
    assert not (tmp_path / "no").exists()


# ------------------------------------------------------- effective compression

def effective_trials() -> pd.DataFrame:
    rows = [trial("synflow", 1, s, None, effective=e) for s, e in enumerate((100, 50, 0))]
    rows += [trial("synflow", 2, s, None, effective=0) for s in range(2)]  # all disconnected
    rows += [trial("snip", 1, s, None, effective=e) for s, e in enumerate((100, None))]  # one unmeasured
    rows += [trial("snip", 1, 5, None, effective=1, ablation="shuffle")]  # an ablation: left out by the figure
    rows += [trial("snip", 1, 0, None, effective=None, model="resnet20")]  # an old row: no count
    return frame(rows)


def test_effective_compression_counts_disconnected_trials_apart():
    table = tables.effective_compression(effective_trials().query("ablation == 'none'"))
    assert table[["algorithm", "log10_compression"]].values.tolist() == [["synflow", 1.0], ["synflow", 2.0],
                                                                         ["snip", 1.0]]
    first = table.iloc[0]  # 1000/100 = 10, 1000/50 = 20, 1000/0 = infinite
    assert first["effective_compression_mean"] == pytest.approx(15.0)
    assert (first["effective_compression_min"], first["effective_compression_max"]) == (10.0, 20.0)
    assert (first["trials"], first["connected"], first["disconnected"], first["compression"]) == (3, 2, 1, 10.0)
    cut = table.iloc[1]
    assert math.isnan(cut["effective_compression_mean"]) and (cut["connected"], cut["disconnected"]) == (0, 2)
    assert table.iloc[2]["trials"] == 1 and table.iloc[2]["effective_compression_mean"] == 10.0
    assert tables.effective_compression(effective_trials().drop(columns="effective_remaining_params")).empty


def test_effective_sparsity_figure_draws_disconnected_seeds_on_the_infinity_row(tmp_path):
    trials = effective_trials()
    lines = []
    written = ablation_figures.effective_sparsity_figure(Results("mem", trials, pd.DataFrame(), pd.DataFrame()),
                                                         tmp_path, lines.append)
    assert sorted(p.name for p in written) == ["effective_sparsity.csv", "effective_sparsity.pdf",
                                               "effective_sparsity.png"]
    assert ("effective_sparsity: (vgg11_bn, cifar10) synflow: trials disconnected (drawn at ∞): 1 of 3 at 10x, "
            "2 of 2 at 100x") in lines
    assert "effective_sparsity: (resnet20, cifar10) has no effective counts with the default settings; not drawn" \
        in lines
    table = tables.effective_compression(default_settings(trials, same_training=False)[0])
    fig = ablation_figures.draw_effective_sparsity(table, PanelLayout.of(tables.panels(table)))
    ax = fig.axes[0]
    drawn = [line for line in ax.get_lines() if line.get_linestyle() != "None"]
    diagonal = drawn[0]
    assert list(diagonal.get_xdata()) == list(diagonal.get_ydata())  # y = x
    synflow = drawn[1]
    assert list(synflow.get_xdata()) == [10.0, 100.0] and synflow.get_ydata()[0] == pytest.approx(15.0)
    assert np.isnan(synflow.get_ydata()[1])
    infinity = ax.get_yticks()[-1]
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "∞"
    markers = [line for line in ax.get_lines() if line.get_marker() == "^"]
    # some seeds disconnected at 10x: hollow; every seed at 100x: filled; each at its true ratio, on the ∞ row
    assert [m.get_markerfacecolor() == "none" for m in markers] == [True, False]
    assert [m.get_xdata()[0] for m in markers] == [10.0, 100.0]
    assert all(list(m.get_ydata()) == [infinity] for m in markers)
    assert any("disconnected" in t.get_text() for t in fig.legends[0].get_texts())
    lines.clear()
    old = Results("mem", trials.assign(effective_remaining_params=np.nan), pd.DataFrame(), pd.DataFrame())
    assert ablation_figures.effective_sparsity_figure(old, tmp_path / "old", lines.append) == []
    assert lines == ["effective_sparsity: no trial records effective_remaining_params (the store predates it); "
                     "figure not drawn"]


# ------------------------------------------------------------- learning curves and conservation, by hand

def test_learning_curves_by_hand():
    trials = frame([
        trial("synflow", 1, 0, trial_id="a"), trial("synflow", 1, 1, trial_id="b"),
        # one shared dense trial stands as both algorithms' 1x point: its epochs count for each
        trial("synflow", 0, 0, trial_id="d", shared_dense=True), trial("snip", 0, 0, trial_id="d", shared_dense=True),
        trial("snip", 1, 0, trial_id="p", epochs=0),  # pruned only
    ])
    rows = [("a", 1, 0.5, 2.0), ("a", 2, 0.6, 1.0), ("b", 1, 0.7, 3.0), ("b", 2, 0.8, 2.0),
            ("d", 1, 0.9, 0.5), ("d", 2, 0.95, 0.25), ("x", 1, 0.1, 9.0)]  # x: a trial not selected
    epochs = pd.DataFrame(rows, columns=["trial_id", "epoch", "top1", "train_loss"])
    curves = tables.learning_curves(trials, epochs)
    assert curves[["algorithm", "log10_compression", "epoch"]].values.tolist() == [
        ["synflow", 0.0, 1], ["synflow", 0.0, 2], ["synflow", 1.0, 1], ["synflow", 1.0, 2],
        ["snip", 0.0, 1], ["snip", 0.0, 2]]
    assert curves["compression"].tolist() == [1.0, 1.0, 10.0, 10.0, 1.0, 1.0]
    # synflow at 10x, epoch 1: top-1 50 and 70 (%), loss 2 and 3; epoch 2: 60 and 80, 1 and 2
    assert curves["top1_mean"].tolist() == pytest.approx([90.0, 95.0, 60.0, 70.0, 90.0, 95.0])
    assert curves["top1_min"].tolist() == pytest.approx([90.0, 95.0, 50.0, 60.0, 90.0, 95.0])
    assert curves["top1_max"].tolist() == pytest.approx([90.0, 95.0, 70.0, 80.0, 90.0, 95.0])
    assert curves["train_loss_mean"].tolist() == [0.5, 0.25, 2.5, 1.5, 0.5, 0.25]
    assert curves["train_loss_min"].tolist() == [0.5, 0.25, 2.0, 1.0, 0.5, 0.25]
    assert curves["train_loss_max"].tolist() == [0.5, 0.25, 3.0, 2.0, 0.5, 0.25]
    assert curves["trials"].tolist() == [1, 1, 2, 2, 1, 1]


def test_conservation_pairs_pick_the_most_algorithms_then_the_smallest_ratio_and_seed():
    def scored(algorithm, log10, seed, tid, model="vgg11_bn", dataset="cifar10"):
        return trial(algorithm, log10, seed, model=model, dataset=dataset, trial_id=tid)
    trials = frame([
        scored("synflow", 1, 0, "s10"), scored("snip", 1, 0, "n10"),                 # 1 other algorithm
        scored("synflow", 2, 0, "s20"), scored("snip", 2, 0, "n20"), scored("random", 2, 0, "r20"),  # 2, but 100x
        scored("synflow", 1, 1, "s11"), scored("snip", 1, 1, "n11b"), scored("snip", 1, 1, "n11a"),
        scored("random", 1, 1, "r11"),                                                # 2 at 10x: this one
        scored("snip", 1, 0, "rn", model="resnet20"),                                  # no synflow here
        scored("synflow", 1, 0, "vs", model="vgg16_bn", dataset="cifar100"),
        scored("snip", 2, 0, "vn", model="vgg16_bn", dataset="cifar100"),              # nothing at synflow's cell
    ])
    layers = []
    for i, tid in enumerate(trials["trial_id"]):
        layers += [dict(trial_id=tid, layer_index=0, layer="c", kind="conv", size=10, score_sum=-float(i + 1)),
                   dict(trial_id=tid, layer_index=1, layer="c", kind="bias", size=2, score_sum=5.0),  # not a weight
                   dict(trial_id=tid, layer_index=2, layer="f", kind="linear", size=4, score_sum=float(i + 1))]
    pairs, notes = tables.conservation_pairs(trials, pd.DataFrame(layers))
    assert notes == ["(resnet20, cifar10): no synflow trial with layer scores",
                     "(vgg16_bn, cifar100): no other algorithm scored at a synflow trial's compression and seed"]
    # the first of two snip trials by id; positions count conv/linear layers only
    assert pairs[["algorithm", "trial_id", "position", "log10_compression", "seed"]].values.tolist() == [
        ["synflow", "s11", 0, 1.0, 1], ["synflow", "s11", 1, 1.0, 1], ["snip", "n11a", 0, 1.0, 1],
        ["snip", "n11a", 1, 1.0, 1], ["random", "r11", 0, 1.0, 1], ["random", "r11", 1, 1.0, 1]]
    assert pairs["score_sum"].tolist() == [-6.0, 6.0, -8.0, 8.0, -9.0, 9.0]
    assert pairs["abs_score"].tolist() == [6.0, 6.0, 8.0, 8.0, 9.0, 9.0]
    assert pairs["score_per_weight"].tolist() == [0.6, 1.5, 0.8, 2.0, 0.9, 2.25]


def test_conservation_pairs_never_show_the_shared_dense_trials_scores_as_each_algorithms_own():
    """At 1x every algorithm's point comes from one dense trial scored by magnitude: the figure showed five
    identical panels labelled synflow, snip, ... So only trials scored by their own algorithm are paired."""
    def scored(algorithm, log10, tid, shared=False):
        return {**trial(algorithm, log10, 0, trial_id=tid), "shared_dense": shared}
    trials = frame([scored("synflow", 0, "d", True), scored("snip", 0, "d", True), scored("random", 0, "d", True),
                    scored("dense", 0, "d"), scored("synflow", 1, "s10"), scored("snip", 1, "n10")])
    layers = [dict(trial_id=tid, layer_index=0, layer="c", kind="conv", size=10, score_sum=float(i + 1))
              for i, tid in enumerate(["d", "s10", "n10"])]
    pairs, notes = tables.conservation_pairs(trials, pd.DataFrame(layers))
    assert notes == []
    assert pairs[["algorithm", "trial_id", "log10_compression"]].values.tolist() == [
        ["synflow", "s10", 1.0], ["snip", "n10", 1.0]]
