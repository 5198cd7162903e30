"""A progress bar for a launch: trials done (fractions of them while they train), diverged / failed counts, ETA.

The bar counts trials; a trial that reports its evals (`train.steps` known) moves it by the fraction of its steps
done, so a sweep of a few long trials shows progress before the first one ends. tqdm computes the ETA from the
observed rate.
"""

from __future__ import annotations

import sys
from collections import Counter

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, *, enabled: bool = True) -> None:
        self.counts: Counter[str] = Counter()
        self._partial: dict[str, float] = {}  # running trial -> fraction of it already on the bar
        self._finished: set[str] = set()
        self._bar = tqdm(total=total, unit="trial", disable=not enabled or total == 0, file=sys.stderr,
                         dynamic_ncols=True, smoothing=0.05, bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} "
                         "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")

    @property
    def done(self) -> float:
        """Trials done: finished ones, plus the fractions of running ones (what the bar shows)."""
        return sum(self.counts.values()) + sum(self._partial.values())

    def trial_progress(self, trial_id: str, fraction: float) -> None:
        """A running trial has done `fraction` of its steps (reports may come in any order; the bar never goes
        back, and a finished trial's late report is ignored)."""
        if trial_id in self._finished:
            return
        before = self._partial.get(trial_id, 0.0)
        if fraction > before:
            self._partial[trial_id] = fraction
            self._move()

    def trial_finished(self, status: str, trial_id: str | None = None) -> None:
        """A trial's record is written; one reported twice (a dead Ray worker's batch) counts once."""
        if trial_id is not None:
            if trial_id in self._finished:
                return
            self._finished.add(trial_id)
        self.counts[status] += 1
        self._bar.set_postfix(completed=self.counts["completed"], diverged=self.counts["diverged"],
                              failed=self.counts["failed"], refresh=False)
        self._partial.pop(trial_id, None)
        self._move()

    def _move(self) -> None:
        """Put the bar at finished trials + running fractions, recomputed (not summed step by step, which drifts:
        the last trial would end at 3.9999 of 4)."""
        self._bar.update(self.done - self._bar.n)

    def close(self) -> None:
        self._bar.close()
