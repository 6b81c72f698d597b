"""What keeps a large sweep's plan quick: the built-in pairs' counts come from a shipped table, checked here against
the networks themselves (speed is measured by benchmarks/store_scale.py, never asserted here)."""
from __future__ import annotations

import json

import pytest

from orchestrator import cost


def test_the_shipped_table_holds_every_preset_pair_as_its_built_network_counts_it():
    table = json.loads(cost.PAIR_FACTS_TABLE.read_text())
    assert table["counting_code"] == cost.counting_code(), "a model changed: run python -m orchestrator.cost"
    pairs = sorted((entry["model"], entry["dataset"]) for entry in table["pairs"])
    assert pairs == sorted(cost.preset_pairs())
    for model, dataset in pairs:
        assert cost.tabled_pair_facts(model, dataset) == cost.count_pair_facts(model, dataset), (model, dataset)


def test_a_pair_the_table_knows_is_not_built(monkeypatch):
    monkeypatch.setattr(cost, "_COUNTED", {})
    monkeypatch.setattr(cost, "count_pair_facts", lambda *pair: pytest.fail(f"built {pair}"))
    facts = cost.pair_facts("vgg16_bn", "cifar100")
    # The paper's VGG-16 on CIFAR-100: 14,761,664 prunable weights in 14 conv/linear layers.
    assert (facts.prunable_weights, facts.prunable_layers, facts.dense_macs) == (14_761_664, 14, 313_247_744)
    assert (facts.input_shape, facts.train_examples, facts.test_examples) == ((3, 32, 32), 50_000, 10_000)


def test_an_entry_counted_from_other_code_or_another_dataset_shape_is_not_used(tmp_path):
    table = json.loads(cost.PAIR_FACTS_TABLE.read_text())
    path = tmp_path / "pair_facts.json"
    path.write_text(json.dumps({**table, "counting_code": "0" * 16}))
    assert cost.tabled_pair_facts("mlp", "digits", path) is None
    entries = [dict(e, num_classes=100) if (e["model"], e["dataset"]) == ("mlp", "digits") else e
               for e in table["pairs"]]
    path.write_text(json.dumps({**table, "pairs": entries}))
    assert cost.tabled_pair_facts("mlp", "digits", path) is None
    assert cost.tabled_pair_facts("conv", "digits", path) == cost.tabled_pair_facts("conv", "digits")
    assert cost.tabled_pair_facts("mlp", "cifar10", path) is None  # no entry


def test_a_pair_outside_the_table_is_built_once_per_process(tmp_path, monkeypatch):
    monkeypatch.setattr(cost, "_COUNTED", {})
    monkeypatch.setattr(cost, "PAIR_FACTS_TABLE", tmp_path / "absent.json")
    built = []
    count = cost.count_pair_facts
    monkeypatch.setattr(cost, "count_pair_facts", lambda *pair: built.append(pair) or count(*pair))
    first, again = cost.pair_facts("mlp", "digits"), cost.pair_facts("mlp", "digits")
    assert built == [("mlp", "digits")] and first == again
    assert (first.prunable_weights, first.prunable_layers, first.parameters) == (17_400, 3, 17_610)
