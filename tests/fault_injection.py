"""Failure injection for tests, around the production trainable (which has no test hooks).

`trial_failing_once` runs `run_trial` and raises once, right after the trial
reported a given epoch (its checkpoint for that epoch is already written), so
a test can prove that a real restart continues from it. A marker file makes
the failure happen once across restarts and worker processes.
"""
import os

from trainables.trial import run_trial


def _hit(metrics, after, phase) -> bool:
    if phase == "training":
        return metrics.get("status") == "running" and metrics.get("epoch") == after
    return (metrics.get("status") == "pruning" and phase == f"imp level {metrics.get('imp_level')}"
            and metrics.get("imp_epoch") == after)


def trial_failing_once(config):
    from ray import tune

    after, marker = config.get("fail_after_epoch"), config.get("fail_marker")
    phase = config.get("fail_in_phase", "training")
    real_report = tune.report

    def report(metrics, *args, **kwargs):
        real_report(metrics, *args, **kwargs)
        if after is not None and marker and _hit(metrics, after, phase) and not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(str(after))
            raise RuntimeError(f"injected failure after epoch {after} ({phase})")

    tune.report = report
    try:
        run_trial(config)
    finally:
        tune.report = real_report  # a reused worker runs the next trial with the real one
