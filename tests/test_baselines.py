"""2024's baselines end to end: the preset's plan lists every algorithm, and a vision transformer trains through a
real sweep on the offline digits under every layer budget."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from common.vocabulary import BUILTIN_ALGORITHMS, DENSE_ALGORITHM


def test_the_dry_run_of_baselines_2024_lists_every_algorithm_and_prices_every_trial(tmp_path, capsys):
    from orchestrator.sweep import main

    capsys.readouterr()
    assert main(["--preset", "baselines-2024", "--dry-run", "--json", "--store", str(tmp_path / "store")]) == 0
    plan = json.loads(capsys.readouterr().out)
    listed = {name.split(" ")[0] for name in plan["algorithms"]}
    assert listed == set(BUILTIN_ALGORITHMS) - {DENSE_ALGORITHM}
    assert {"snip x100", "random x1 (erk budget)", "random x1 (er budget)", "ntk_sap x20", "px x100",
            "synflow_l2 x100", "prospr x1", "imp x1 (3 levels)"} <= set(plan["algorithms"])
    assert (plan["trials"], plan["to_run"]) == (912, 912)
    assert [(p["model"], p["dataset"]) for p in plan["pairs"]] == [("vgg16_bn", "cifar100"), ("resnet20", "cifar10")]
    assert plan["prune_passes"] > 0 and plan["bill"]["trial_epochs"] > 0 and plan["bill"]["trials_timed"] == 912
    text = subprocess.run([sys.executable, "-m", "orchestrator.sweep", "--preset", "baselines-2024", "--dry-run",
                           "--store", str(tmp_path / "store")], capture_output=True, text=True, timeout=300)
    assert text.returncode == 0, text.stderr[-2000:]
    assert "random x1 (erk budget)" in text.stdout and "ntk_sap x20" in text.stdout


@pytest.mark.slow
def test_a_vision_transformer_trains_on_the_digits_through_a_real_sweep_under_every_budget(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    args = [sys.executable, "-m", "orchestrator.sweep", "--models", "vit_tiny", "--datasets", "digits",
            "--algorithms", "synflow,random", "--budgets", "global,erk,er", "--log10-compressions", "0,1",
            "--seeds", "0", "--epochs", "8", "--optimizer", "adamw", "--lr", "1e-3", "--lr-schedule", "cosine",
            "--warmup-epochs", "1", "--num-cpus", "2", "--store", str(tmp_path / "store"),
            "--storage-path", str(tmp_path / "ray")]
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    trials = pd.read_parquet(tmp_path / "store" / "trials")
    assert len(trials) == 1 + 2 * 3 and (trials.status == "completed").all()
    pruned = trials[trials.algorithm != DENSE_ALGORITHM]
    assert set(zip(pruned.algorithm, pruned.scope)) == {(a, b) for a in ("synflow", "random")
                                                        for b in ("global", "erk", "er")}
    assert (pruned.remaining_params == round(16736 / 10)).all() and (trials.prunable_params == 16736).all()
    layers = pd.read_parquet(tmp_path / "store" / "layers")
    assert set(layers.kind) == {"conv", "linear"}  # LayerNorm, the class token and the position embedding stay
    per_trial = layers.groupby("trial_id").remaining.sum()
    assert (per_trial[pruned.trial_id].values == pruned.remaining_params.values).all()
    epochs = pd.read_parquet(tmp_path / "store" / "epochs")
    assert len(epochs) == len(trials) * 8
    lrs = epochs[epochs.trial_id == trials.trial_id.iloc[0]].sort_values("epoch").lr.tolist()
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] < lrs[1]  # one warmup epoch, then the cosine decay
    dense = trials[trials.algorithm == DENSE_ALGORITHM].final_top1.item()
    assert dense > 0.2  # 10 classes: chance is 0.1; AdamW lifts the dense ViT well above it in 8 epochs (0.31 here)


def test_the_adamw_cosine_recipe_validates_warms_up_decays_and_resumes_exactly():
    import torch

    from trainables.models import build_model
    from trainables.specs import TrainSpec
    from trainables.training import Trainer, warmup_cosine_factor

    with pytest.raises(ValueError, match="unknown optimizer 'adam'.*sgd, adamw"):
        TrainSpec(optimizer="adam")
    with pytest.raises(ValueError, match=r"lr_drops \[5\] belong to the multistep schedule"):
        TrainSpec(lr_schedule="cosine", lr_drops=(5,))
    assert [round(warmup_cosine_factor(e, 6, 2), 4) for e in range(6)] == [0.5, 1.0, 1.0, 0.8536, 0.5, 0.1464]
    spec = TrainSpec(epochs=4, batch_size=8, lr=1e-3, weight_decay=0.05, optimizer="adamw", lr_schedule="cosine",
                     warmup_epochs=1)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(3)]

    def trainer():
        return Trainer(build_model("vit_tiny", (1, 8, 8), 10, 0), None, spec, torch.device("cpu"))

    straight = trainer()
    assert isinstance(straight.optimizer, torch.optim.AdamW)
    for _ in range(2):
        straight.train_epoch(batches)
    resumed = trainer()
    resumed.train_epoch(batches)
    again = trainer()
    again.load_state_dict(resumed.state_dict())  # a checkpoint after epoch 1
    again.train_epoch(batches)
    assert again.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]
    for a, b in zip(again.model.parameters(), straight.model.parameters()):
        assert torch.equal(a, b)
