"""The launch's progress bar: trials, and fractions of running trials, never counted twice."""

from __future__ import annotations

import pandas as pd
import pytest

from orchestrator.progress import Progress


def test_running_trials_move_the_bar_and_a_finished_trial_counts_one_in_all():
    progress = Progress(4, enabled=True)
    progress.trial_progress("a", 0.25)
    progress.trial_progress("b", 0.5)
    progress.trial_progress("a", 0.1)  # an older report arriving late: the bar does not go back
    assert progress.done == pytest.approx(0.75)
    progress.trial_finished("completed", "a")
    progress.trial_progress("a", 0.9)  # after its record: ignored
    assert progress.done == pytest.approx(1.5)
    progress.trial_finished("failed", "b")
    progress.trial_finished("completed")  # a backend that reports no fractions
    progress.trial_finished("failed", "b")  # reported again (a dead Ray worker's batch): counted once
    assert progress.done == pytest.approx(3.0) and progress.counts == {"completed": 2, "failed": 1}
    progress.close()


def test_running_trials_partial_curves_follow_the_one_went_back_rule(tmp_path):
    """load_run(running=True)'s partial curves: attempt 2 resumed from step 100 after attempt 1 reached 200, so
    attempt 1's step 200 is gone until it is reported again (orchestrator.trial.StepRows, as for the command
    trainer's curve)."""
    from analysis.load import read_running
    from orchestrator.identity import TrialSpec
    from orchestrator.store import RunStore
    from orchestrator.trial_io import ProgressFile

    store = RunStore(tmp_path)
    trial = TrialSpec("a" * 16, "eureka", 3, {}, {"seed": 3, "train.lr": 0.001})
    store.write_plan([trial])
    for attempt, steps in ((1, [0, 100, 200]), (2, [100])):
        report = ProgressFile(store.progress_path(trial.trial_id), trial.trial_id, attempt, 400, None)
        for step in steps:  # attempt 2 reports only val_acc: attempt 1's loss at step 100 is not kept
            report(step, {"val_acc": step / 1000 + attempt, **({"loss": 9.0} if attempt == 1 else {})})
        report.close()
    trials, curves = read_running(tmp_path)
    (row,) = trials.to_dict("records")
    assert (row["trial_id"], row["status"], row["steps_run"], row["train.lr"]) == ("a" * 16, "running", 100, 0.001)
    assert list(curves["step"]) == [0, 100] and list(curves["val_acc"]) == [1.0, 2.1]
    assert curves["loss"].iloc[0] == 9.0 and pd.isna(curves["loss"].iloc[1])
    assert curves["running"].all()
