"""Each algorithm's 1x point from the one dense trial of its network: what the analysis reads from a store the
sharing sweep wrote (dense trials at 1x, each algorithm's own above it)."""
from __future__ import annotations

import pytest

from analysis import summary, tables
from analysis.load import load_results
from analysis.select import Selection
from results_store import ResultsStore
from test_analysis import write

SEEDS = (0, 1, 2)
SHIFT = {0: -0.01, 1: 0.0, 2: 0.02}


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("shared") / "results"
    store = ResultsStore(root)
    for seed in SEEDS:
        write(store, "mlp", "digits", "dense", 0, seed, 0.97 + SHIFT[seed], iterations=1, densities=(1, 1, 1))
        write(store, "mlp", "digits", "dense", 0, seed, 0.95 + SHIFT[seed], iterations=1, densities=(1, 1, 1),
              ablation="reinit")
        for log10, (synflow, snip) in {1: (0.95, 0.93), 2: (0.80, 0.40)}.items():
            write(store, "mlp", "digits", "synflow", log10, seed, synflow + SHIFT[seed])
            write(store, "mlp", "digits", "snip", log10, seed, snip + SHIFT[seed])
            for ablation in ("shuffle", "reinit"):
                write(store, "mlp", "digits", "synflow", log10, seed, synflow - 0.1 + SHIFT[seed], ablation=ablation)
    return root


def one_x(trials, algorithm, ablation="none"):
    rows = trials[(trials["algorithm"] == algorithm) & (trials["ablation"] == ablation)
                  & (trials["log10_compression"] == 0)]
    return rows.sort_values("seed")


def test_every_algorithm_and_ablation_draws_its_1x_point_from_its_networks_dense_trial(shared_store):
    results = load_results(shared_store)
    trials = results.trials
    dense_none = [f"mlp-digits-dense-0-{s}-1-eval-3-completed" for s in SEEDS]
    dense_reinit = [f"{i}-reinit" for i in dense_none]
    for algorithm in ("synflow", "snip"):
        rows = one_x(trials, algorithm)
        assert rows["trial_id"].tolist() == dense_none and rows["shared_dense"].all()
        assert (rows["final_top1"] * 100).tolist() == pytest.approx([96.0, 97.0, 99.0])
    assert one_x(trials, "synflow", "shuffle")["trial_id"].tolist() == dense_none  # a full mask shuffled: itself
    assert one_x(trials, "synflow", "reinit")["trial_id"].tolist() == dense_reinit  # re-drawn weights: their own
    assert "dense" not in set(trials["algorithm"])  # every dense trial served as some variant's 1x point
    assert any("1x: 12 point(s) of 4 algorithm variant(s) drawn from 6 trial(s) of the same network" in note
               for note in results.notes)
    # The epochs and layers of the dense trial join every row that stands for it.
    assert set(results.layers["trial_id"]) >= set(dense_none + dense_reinit)


def test_a_selected_algorithm_keeps_its_1x_point_and_the_bill_counts_each_trial_once(shared_store):
    snip = load_results(shared_store, Selection(algorithms=("snip",))).trials
    assert set(snip["algorithm"]) == {"snip"} and sorted(snip["log10_compression"].unique()) == [0, 1, 2]
    assert len(one_x(snip, "snip")) == 3
    cost = tables.cost_table(load_results(shared_store).trials).set_index(["algorithm", "ablations"])["trials"]
    # 6 dense trials (3 unpruned, 3 re-drawn), each once, though they stand for 12 points; snip: its own 6.
    assert cost[("dense", False)] == 3 and cost[("dense", True)] == 3 and cost[("snip", False)] == 6


def test_the_summary_reads_1x_as_the_same_network_for_every_algorithm(shared_store):
    text = summary.summarize(load_results(shared_store))
    assert text.splitlines()[2].startswith("30 trials (30 trained to completion")  # 36 rows, 30 trials
    assert "6 shared trial(s) stand as each algorithm's 1x point" in text
    assert "| synflow | 97.3 [93.5, 100.0] (3) | 95.3 ± 3.8 (3) | 80.3 ± 3.8 (3) |" in text
    assert "| snip | 97.3 [93.5, 100.0] (3) | 93.3 ± 3.8 (3) | 40.3 ± 3.8 (3) |" in text
    # Paired by seed on the same trial: the difference is identical, never tested or starred.
    assert "| snip | +0.0 identical (3) |" in text
    assert "| shuffle | +0.0 identical (3) |" in text and "| reinit | -2.0 identical (3) |" in text
