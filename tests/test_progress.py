"""The launch's progress bar: trials, and fractions of running trials, never counted twice."""

from __future__ import annotations

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
