"""The sweep's progress line: running trials and the ETA from the trials' own start and finish times and costs."""
import io
import time
from types import SimpleNamespace

import pandas as pd
import pytest

from orchestrator import tune_run
from orchestrator.tune_run import eta_seconds, make_progress, resolved_costs, running_at, running_during

BOUNDARY_SLACK = 3.0  # seconds: Ray delivers a trial's reports to the driver a little after the trial sends them


def test_running_at_counts_the_intervals_covering_the_instant():
    intervals = [(0.0, 10.0), (5.0, None), (None, None), (12.0, 20.0), (30.0, None)]
    assert running_at(intervals, 7.0) == 2  # the first two; the third never reported a start
    assert running_at(intervals, 10.0) == 1  # a trial finished at `now` is no longer running
    assert running_at(intervals, 12.0) == 2  # one started at `now` is
    assert running_at(intervals, 25.0) == 1
    assert running_at(intervals, 31.0) == 2
    assert running_at([], 1.0) == 0


def test_eta_is_weighted_by_cost_not_by_count():
    # Two cheap trials done in 10 s, one ten times as dear untouched: 10 cost units left at 0.2 a second.
    eta = eta_seconds(total_cost=12.0, work=[(1.0, 1.0, 0.0), (1.0, 1.0, 0.0)], elapsed=10.0)
    assert eta == pytest.approx(50.0)
    by_count = 10.0 / 2 * 1  # the old formula: elapsed / finished * remaining
    assert eta / by_count == pytest.approx(10.0)
    # The other way round: a dear trial done first, two cheap ones left.
    assert eta_seconds(12.0, [(10.0, 1.0, 0.0)], 10.0) == pytest.approx(2.0)


def test_eta_counts_running_trials_by_their_fraction_done():
    # One trial of cost 10, half its epochs done in 5 s; one of cost 2 not started.
    assert eta_seconds(12.0, [(10.0, 0.5, 0.0)], 5.0) == pytest.approx(7.0)
    # Nothing done yet: no ETA rather than a made-up one.
    assert eta_seconds(12.0, [(10.0, 0.0, 0.0)], 5.0) is None
    assert eta_seconds(12.0, [], 5.0) is None


def test_eta_does_not_count_work_done_before_this_run_as_speed():
    # Resumed at 60% of its epochs from an earlier run's checkpoint, now at 80% after 4 s: 0.5 units a second.
    assert eta_seconds(10.0, [(10.0, 0.8, 0.6)], 4.0) == pytest.approx(4.0)


def test_costs_missing_from_the_plan_take_the_mean_of_the_known_ones_and_none_known_is_uniform():
    assert resolved_costs(None) == ({}, 1.0)
    assert resolved_costs({"a": None, "b": None}) == ({"a": 1.0, "b": 1.0}, 1.0)
    assert resolved_costs({"a": 2.0, "b": 4.0, "c": None, "d": float("nan")}) == (
        {"a": 2.0, "b": 4.0, "c": 3.0, "d": 3.0}, 3.0)
    assert resolved_costs({"a": 0.0, "b": 0.0}) == ({"a": 1.0, "b": 1.0}, 1.0)


def test_short_trials_back_to_back_in_two_slots_count_as_two_running():
    """The quickstart's case: 0.3 s trials, two slots. At the instant one ends the other slot is often between
    trials, so an instant's count said "1 running" on every line while two ran; the line's window does not."""
    slot_a = [(0.3 * i, 0.3 * i + 0.25) for i in range(20)]  # 0.05 s between trials in each slot
    slot_b = [(0.3 * i + 0.15, 0.3 * i + 0.4) for i in range(20)]
    assert running_at(slot_a + slot_b, 3.27) == 1  # a slot-a trial has ended and its next has not begun
    assert running_during(slot_a + slot_b, 1.0, 5.0) == 2
    assert running_during(slot_a, 1.0, 5.0) == 1 and running_during([], 1.0, 5.0) == 0
    assert running_during([(0.0, None)], 1.0, 5.0) == 1  # still running: until now
    assert running_during(slot_a + slot_b, 3.27, 3.27) == 1  # no window: the instant


def fake_trial(tune_id, epochs=4):
    """What the callback reads of a Tune trial; its Tune status says PENDING throughout, and must not matter."""
    return SimpleNamespace(trial_id=tune_id, status="PENDING", last_result={},
                           config={"spec": {"train": {"epochs": epochs}}})


def send(progress, trial, **result):
    trial.last_result = result
    progress.on_trial_result(0, [trial], trial, result)


def test_the_callback_counts_from_the_trials_own_times_not_from_tunes_states():
    out = io.StringIO()
    progress = make_progress(3, "p", stream=out, interval=0.0, expected_cost={"a": 1.0, "b": 1.0, "c": 10.0})
    progress.start = time.time() - 10
    a, b, c = fake_trial("t1"), fake_trial("t2"), fake_trial("t3")
    now = time.time()
    send(progress, a, spec_id="a", status="started", attempt_started_at=now - 10)
    send(progress, b, spec_id="b", status="started", attempt_started_at=now - 9)
    send(progress, a, spec_id="a", status="completed", epoch=4, resumed_from_epoch=0, attempt_started_at=now - 10,
         finished_at=now - 5)
    send(progress, b, spec_id="b", status="completed", epoch=4, resumed_from_epoch=0, attempt_started_at=now - 9,
         finished_at=now - 4)
    send(progress, c, spec_id="c", status="started", attempt_started_at=now - 3)
    progress.on_step_end(0, [a, b, c])
    assert progress.samples[-1][1] == 1
    line = out.getvalue().splitlines()[-1]
    assert line.startswith("[p] 2/3 done, 1 running, 0 failed, 10s elapsed, ETA ")
    eta = float(line.rsplit("ETA ", 1)[1].rstrip("s"))
    assert 48 <= eta <= 52  # 10 of 12 cost units left at 0.2 a second; by count it would say 5s

    # A failed attempt ends when the driver learns it; the retry's first report starts it again.
    progress.on_trial_recover(0, [a, b, c], c)
    progress.on_step_end(0, [a, b, c])
    assert progress.samples[-1][1] == 0 and "1 restarted" in out.getvalue().splitlines()[-1]
    send(progress, c, spec_id="c", status="started", attempt_started_at=time.time())
    progress.on_step_end(0, [a, b, c])
    assert progress.samples[-1][1] == 1
    # Tune gives up on it: failed, finished, no longer running.
    progress.on_trial_error(0, [a, b, c], c)
    assert progress.samples[-1][1] == 0
    assert out.getvalue().splitlines()[-1].startswith("[p] 2/3 done, 0 running, 1 failed, 1 restarted")


def test_a_trial_started_but_not_yet_heard_of_and_a_finished_one_are_not_running():
    progress = make_progress(2, "p", stream=io.StringIO(), interval=0.0)
    a, b = fake_trial("t1", epochs=0), fake_trial("t2")
    a.status = b.status = "RUNNING"  # Tune's view, lagging: both still RUNNING
    send(progress, a, spec_id="a", status="started", attempt_started_at=time.time() - 2)
    send(progress, a, spec_id="a", status="completed", epoch=0, attempt_started_at=time.time() - 2,
         finished_at=time.time() - 1)
    progress.on_step_end(0, [a, b])
    assert progress.samples[-1][1] == 0
    progress.on_trial_complete(0, [a, b], a)  # late news from Tune changes nothing
    assert progress.samples[-1][1] == 0


def trials_in_store(store) -> pd.DataFrame:
    trials = pd.read_parquet(store / "trials")
    for column in ("started_at", "finished_at"):
        trials[column] = [t.timestamp() for t in trials[column]]
    return trials


@pytest.mark.slow
def test_the_printed_running_count_matches_the_trials_overlap_in_a_real_sweep(ray_session, tmp_path, monkeypatch):
    from orchestrator.plan import plan
    from orchestrator.resources import ResourcePolicy
    from orchestrator.sweep import build_parser, resolve_sweep
    from results_store import ResultsStore

    made = []

    def often(*args, **kwargs):  # the sweep's own callback, printing every half second
        made.append(make_progress(*args, **{**kwargs, "interval": 0.5}))
        return made[-1]

    monkeypatch.setattr(tune_run, "make_progress", often)
    args = build_parser().parse_args([
        "--models", "mlp", "--datasets", "digits", "--algorithms", "magnitude,random", "--ablations", "none",
        "--log10-compressions", "1", "--seeds", "0,1", "--epochs", "160", "--batch-size", "8",
        "--store", str(tmp_path / "store"), "--storage-path", str(tmp_path / "ray"),
        "--data-dir", str(tmp_path / "data")])
    sweep, store = resolve_sweep(args), ResultsStore(str(tmp_path / "store"))
    policy = ResourcePolicy(cluster_has_gpus=False)
    to_run = plan(sweep, store, policy)["to_run_specs"]
    assert len(to_run) == 4
    outcome = tune_run.run_sweep(args, sweep, store, to_run, policy)  # 2 CPUs, 1 per trial: 2 at once
    assert outcome["errored"] == [] and not outcome["interrupted"]

    trials = trials_in_store(tmp_path / "store")
    assert len(trials) == 4 and (trials.status == "completed").all()
    intervals = list(zip(trials.started_at, trials.finished_at))
    boundaries = [t for interval in intervals for t in interval]
    samples = made[0].samples
    checked = [(at, running) for at, running in samples
               if all(abs(at - boundary) > BOUNDARY_SLACK for boundary in boundaries)]
    assert checked, (samples, intervals)
    for at, running in checked:
        assert running == running_at(intervals, at), (at, running, intervals)
    assert any(running == 2 for _, running in checked), (checked, intervals)
