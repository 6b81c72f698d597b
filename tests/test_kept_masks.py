"""Kept masks (`--keep-masks`): stored beside the store by every trial, read back exactly, and compared.

A plugin scoring (w*g)^2 ranks every weight as SNIP's |w*g| does, so its masks must be SNIP's: an overlap of
exactly 1 that only kept masks can show (identical accuracies could be chance).
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch

import test_store_s3
from analysis.load import load_results
from analysis.mask_overlap import NO_MASKS, averaged, mask_overlaps, seed_overlaps
from analysis.plots import draw_all
from results_store import MissingMasks, ResultsStore, StoreError, masked_trial_ids, read_mask_arrays, read_masks
from results_store.masks import PackedMask, masks_path, read_packed_masks, write_masks
from test_store import layer_rows, write_trials

s3_endpoint = test_store_s3.s3_endpoint  # the moto S3 server fixture
location = test_store_s3.location

SNIP_SQUARED = '''
    import torch
    import torch.nn.functional as F

    from trainables.pruning import scorer


    @scorer("snip_squared", needs_data=True, passes_per_example=1)
    def snip_squared(model, batches, inputs):
        named = dict(model.named_parameters())
        params = [named[name] for name in inputs.names]
        total = [torch.zeros_like(p) for p in params]
        for x, y in batches:
            grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, allow_unused=True)
            total = [t + (g if g is not None else 0) for t, g in zip(total, grads)]
        # squared in float64: exact for a float32 product, so no two different |w*g| tie
        return {name: (g * p.detach()).double() ** 2 for name, p, g in zip(inputs.names, params, total)}
'''


def sweep_args(tmp: pathlib.Path, *extra: str):
    return [sys.executable, "-m", "orchestrator.sweep", "--plugins", str(tmp / "plugin" / "snip_squared.py"),
            "--models", "mlp", "--datasets", "digits", "--algorithms", "snip,snip_squared,random",
            "--ablations", "none", "--log10-compressions", "0,1", "--seeds", "0,1", "--epochs", "1",
            "--num-cpus", "2", "--store", str(tmp / "store"), "--storage-path", str(tmp / "ray"), *extra]


def run(args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A real local-Ray sweep with --keep-masks: snip, the (w*g)^2 plugin and random at 1x and 10x, 2 seeds."""
    tmp = tmp_path_factory.mktemp("kept_masks")
    (tmp / "plugin").mkdir()
    (tmp / "plugin" / "snip_squared.py").write_text(textwrap.dedent(SNIP_SQUARED))
    out = run(sweep_args(tmp, "--keep-masks"))
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp


@pytest.mark.slow
def test_every_stored_trial_keeps_its_mask_with_the_stored_counts_in_forward_order(swept):
    store = ResultsStore(swept / "store")
    trials = pd.read_parquet(swept / "store" / "trials")
    layers = pd.read_parquet(swept / "store" / "layers")
    assert len(trials) == 3 * 2 + 2  # 3 algorithms at 10x, one shared dense trial per seed at 1x
    assert masked_trial_ids(store) == set(trials.trial_id)
    for trial in trials.itertuples():
        masks = read_masks(store, trial.trial_id)
        mine = layers[layers.trial_id == trial.trial_id].sort_values("layer_index")
        assert list(masks) == list(mine.param) == ["1.weight", "3.weight", "5.weight"]
        assert all(m.dtype == torch.bool for m in masks.values())
        assert [tuple(m.shape) for m in masks.values()] == [(100, 64), (100, 100), (10, 100)]
        assert [int(m.sum()) for m in masks.values()] == list(mine.remaining)
        assert sum(int(m.sum()) for m in masks.values()) == trial.remaining_params
        if trial.algorithm == "dense":
            assert all(bool(m.all()) for m in masks.values())
        else:
            assert trial.remaining_params == round(17400 / 10)


@pytest.mark.slow
def test_the_snip_squared_plugin_keeps_exactly_snips_masks_and_random_does_not(swept):
    overlaps = mask_overlaps(load_results(swept / "store"))
    network = overlaps.network.set_index(["log10_compression", "variant_a", "variant_b"])
    assert network.loc[(1.0, "snip", "snip_squared"), "jaccard_mean"] == 1.0
    assert network.loc[(1.0, "snip", "snip_squared"), "n"] == 2
    assert network.loc[(1.0, "snip", "random"), "jaccard_mean"] < 0.2
    chance = 0.1 / (2 - 0.1)  # two independent random masks at density 1/10
    assert network.loc[(1.0, "snip", "random"), "chance"] == pytest.approx(chance, rel=1e-3)
    assert (network.loc[0.0, "jaccard_mean"] == 1.0).all()  # 1x: the shared dense trial's all-ones mask
    per_layer = overlaps.layers[(overlaps.layers.variant_a == "snip") & (overlaps.layers.variant_b == "snip_squared")]
    assert len(per_layer) == 2 * 3 and (per_layer.jaccard_mean == 1.0).all()


@pytest.mark.slow
def test_keeping_masks_changes_no_trial_id_and_a_stored_trial_without_its_mask_is_named_not_retrained(swept):
    plain = run([*sweep_args(swept), "--dry-run", "--json"], timeout=300)  # no --keep-masks: the same ids, all done
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert json.loads(plain.stdout)["to_run"] == 0
    store = ResultsStore(swept / "store")
    victim = sorted(masked_trial_ids(store))[0]
    kept = pathlib.Path(masks_path(store.files, victim))
    saved = kept.read_bytes()
    kept.unlink()
    try:
        again = run([*sweep_args(swept, "--keep-masks"), "--dry-run", "--json"], timeout=300)
        assert again.returncode == 0 and json.loads(again.stdout)["to_run"] == 0
        assert ("--keep-masks: 1 of the 8 trials of this grid already in the store keep no mask "
                "(stored by a run without --keep-masks); they are not trained again") in again.stderr
        with pytest.raises(MissingMasks, match=f"keeps no mask of trial {victim} .run the sweep with --keep-masks"):
            read_masks(store, victim)
    finally:
        kept.write_bytes(saved)


@pytest.mark.slow
def test_the_figure_and_the_summary_show_the_overlap(swept, tmp_path):
    lines = []
    written = draw_all(str(swept / "store"), tmp_path / "figures", ["mask_overlap"], lines.append)
    assert sorted(p.name for p in written) == ["mask_overlap.csv", "mask_overlap_mlp_digits.pdf",
                                               "mask_overlap_mlp_digits.png"]
    table = pd.read_csv(tmp_path / "figures" / "mask_overlap.csv")
    whole = table[(table.layer_index == -1) & (table.log10_compression == 1)].set_index(["variant_a", "variant_b"])
    assert whole.loc[("snip", "snip_squared"), "jaccard_mean"] == 1.0 and whole.loc[("snip", "snip_squared"), "n"] == 2
    summary = run([sys.executable, "-m", "analysis.summary", "--store", str(swept / "store")], timeout=300)
    assert summary.returncode == 0, summary.stderr[-2000:]
    assert "| snip vs snip_squared | 1 (2) | 1 (2) |" in summary.stdout


@pytest.mark.slow
def test_gc_keeps_stored_trials_masks_and_drops_a_mask_the_store_does_not_hold(swept):
    store = ResultsStore(swept / "store")
    stored = masked_trial_ids(store)
    orphan = "0123456789abcdef"
    write_masks(store, orphan, [PackedMask.of(0, "1.weight", np.ones((2, 3), bool))])
    old = time.time() - 7200
    os.utime(masks_path(store.files, orphan), (old, old))
    out = run([sys.executable, "-m", "results_store", "gc", str(swept / "store"), "--storage-path",
               str(swept / "ray"), "--older-than", "1"], timeout=300)
    assert out.returncode == 0, out.stderr
    assert "dropped the masks of 1 trial(s) the store does not hold" in out.stdout
    assert masked_trial_ids(store) == stored


def write_trial_masks(store, trial_id, masks):
    write_masks(store, trial_id, [PackedMask.of(i, name, np.array(m, bool)) for i, (name, m) in enumerate(masks.items())])


def test_jaccard_per_layer_and_network_on_hand_made_masks_averaged_over_seeds(tmp_path):
    store = ResultsStore(tmp_path / "store")
    masks = {  # (algorithm, seed): {param: mask}
        ("a", 0): {"l0": [1, 1, 0, 0, 1], "l1": [1, 0, 0, 0], "l2": [0, 0]},
        ("b", 0): {"l0": [1, 0, 1, 0, 1], "l1": [0, 1, 0, 0], "l2": [0, 0]},
        ("a", 1): {"l0": [1, 1, 1, 0, 0], "l1": [0, 0, 1, 1], "l2": [1, 0]},
        ("b", 1): {"l0": [1, 1, 1, 0, 0], "l1": [0, 0, 1, 1], "l2": [0, 1]},
    }
    rows = []
    for (algorithm, seed), layers in masks.items():
        write_trial_masks(store, f"{algorithm}{seed}", layers)
        rows.append(dict(model="m", dataset="d", recipe="prune only", seed=seed, log10_compression=0.5,
                         algorithm=algorithm, variant=algorithm, trial_id=f"{algorithm}{seed}"))
    per_seed = seed_overlaps(store, pd.DataFrame(rows)).set_index(["seed", "param"])
    # seed 0: l0 {0,4} of {0,1,2,4} = 2/4; l1 0 of 2; l2 both empty (undefined); network 2/6
    assert per_seed.loc[(0, "l0"), "jaccard"] == 0.5 and per_seed.loc[(0, "l1"), "jaccard"] == 0.0
    assert math.isnan(per_seed.loc[(0, "l2"), "jaccard"])
    assert per_seed.loc[(0, "(network)"), "jaccard"] == pytest.approx(2 / 6)
    # seed 1: l0 and l1 identical, l2 disjoint; network 5/7
    assert per_seed.loc[(1, "(network)"), "jaccard"] == pytest.approx(5 / 7)
    table = averaged(per_seed.reset_index()).set_index("param")
    assert table.loc["(network)", "jaccard_mean"] == pytest.approx((2 / 6 + 5 / 7) / 2)
    assert table.loc["(network)", "n"] == 2
    assert table.loc["l0", "jaccard_mean"] == 0.75 and table.loc["l0", "jaccard_min"] == 0.5
    assert table.loc["l2", "jaccard_mean"] == 0.0 and table.loc["l2", "n"] == 1  # seed 0's empty pair is undefined
    # the expected overlap of two independent random masks at these densities: a*b / (a + b - a*b)
    assert table.loc["l0", "chance"] == pytest.approx(0.6 * 0.6 / (0.6 + 0.6 - 0.6 * 0.6))  # 3 of 5 kept by each


def test_the_reader_refuses_a_damaged_or_foreign_mask_file_in_one_line(tmp_path):
    store = ResultsStore(tmp_path / "store")
    mask = np.zeros((3, 7), bool)
    mask[0, 1] = mask[2, 6] = True
    write_trial_masks(store, "t1", {"w": mask})
    assert (read_mask_arrays(store, "t1")["w"] == mask).all()
    assert read_packed_masks(store, "t1")[0].bits.tolist() == [0b01000000, 0, 0b00001000]  # flat C order, 21 bits
    os.replace(masks_path(store.files, "t1"), masks_path(store.files, "t2"))
    with pytest.raises(StoreError, match=r"masks/t2.parquet holds trial t1, not t2$"):
        read_masks(store, "t2")
    with pytest.raises(MissingMasks):
        read_masks(store, "t1")
    with pytest.raises(ValueError, match="bad trial id '../x'"):
        read_masks(store, "../x")


def test_compaction_leaves_kept_masks_alone_and_a_store_without_masks_skips_the_figure(tmp_path):
    store = ResultsStore(tmp_path / "store")
    write_trials(store, ["t1", "t2"])
    lines = []
    assert draw_all(str(tmp_path / "store"), tmp_path / "figures", ["mask_overlap"], lines.append) == []
    assert NO_MASKS in lines
    write_trial_masks(store, "t1", {r["param"]: np.arange(r["size"]) < r["remaining"] for r in layer_rows()})
    store.compact()
    assert masked_trial_ids(store) == {"t1"}
    assert [int(m.sum()) for m in read_masks(store, "t1").values()] == [1200, 0]


def test_masks_on_s3_write_and_read_back(location):
    store = ResultsStore(location)
    mask = np.arange(20).reshape(4, 5) % 3 == 0
    write_trial_masks(store, "s3trial", {"w": mask, "v": np.ones(9, bool)})
    assert masked_trial_ids(store) == {"s3trial"}
    back = read_masks(store, "s3trial")
    assert list(back) == ["w", "v"] and torch.equal(back["w"], torch.from_numpy(mask)) and bool(back["v"].all())
