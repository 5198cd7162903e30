"""A progress bar for a launch: done / diverged / failed counts and an ETA (tqdm's, from the observed rate)."""

from __future__ import annotations

import sys
from collections import Counter

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, *, enabled: bool = True) -> None:
        self.counts: Counter[str] = Counter()
        self._bar = tqdm(total=total, unit="trial", disable=not enabled or total == 0, file=sys.stderr,
                         dynamic_ncols=True, smoothing=0.05)

    def trial_finished(self, status: str) -> None:
        self.counts[status] += 1
        self._bar.set_postfix(completed=self.counts["completed"], diverged=self.counts["diverged"],
                              failed=self.counts["failed"], refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()
