"""Per-trial operations on a long table without a Python loop over trials.

A long curve table is stored as flat numpy arrays sorted by (trial, step); each trial is a contiguous *segment*.
Everything here works on all segments at once with cumulative sums, `ufunc.reduceat` and gathers, which keeps
10M curve rows to a few hundred milliseconds per pass.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator

import numpy as np
import pandas as pd


class Segments:
    """Contiguous segments of a flat array: segment k is rows `starts[k]:ends[k]`."""

    def __init__(self, starts: np.ndarray, ends: np.ndarray) -> None:
        self.starts = starts.astype(np.int64, copy=False)
        self.ends = ends.astype(np.int64, copy=False)

    @property
    def count(self) -> int:
        return len(self.starts)

    @property
    def lengths(self) -> np.ndarray:
        return self.ends - self.starts

    @functools.cached_property
    def ids(self) -> np.ndarray:
        """Segment of each row (rows before the first segment start are not expected)."""
        return np.repeat(np.arange(self.count, dtype=np.int64), self.lengths)

    @classmethod
    def from_sorted_codes(cls, codes: np.ndarray) -> Segments:
        """Segments of a code array in which equal codes are contiguous."""
        n = len(codes)
        if n == 0:
            empty = np.zeros(0, dtype=np.int64)
            return cls(empty, empty)
        boundaries = np.flatnonzero(codes[1:] != codes[:-1]) + 1
        return cls(np.concatenate(([0], boundaries)), np.concatenate((boundaries, [n])))

    def chunks(self, max_rows: int) -> Iterator[tuple[int, int, Segments]]:
        """Consecutive groups of whole segments of about `max_rows` rows: (first row, end row, local segments).

        Working chunk by chunk keeps temporaries small (below glibc's mmap threshold), so they are reused instead
        of being page-faulted in afresh for every numpy operation; on 10M rows that halves the run time.
        """
        if self.count == 0:
            return
        cuts = np.unique(np.searchsorted(self.starts, np.arange(0, self.ends[-1], max_rows), side="right") - 1)
        bounds = np.append(np.maximum(cuts, 0), self.count)
        for k0, k1 in itertools.pairwise(bounds):
            if k1 <= k0:
                continue
            row0, row1 = int(self.starts[k0]), int(self.ends[k1 - 1])
            yield row0, row1, Segments(self.starts[k0:k1] - row0, self.ends[k0:k1] - row0)


def trial_codes(trial_id: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Integer codes (-1 for a missing id) and their labels for a trial_id column; free for a categorical one."""
    if isinstance(trial_id.dtype, pd.CategoricalDtype):
        return trial_id.cat.codes.to_numpy(), pd.Index(trial_id.cat.categories)
    codes, labels = pd.factorize(trial_id, sort=False)
    return codes, pd.Index(labels)


def sort_order(codes: np.ndarray, steps: np.ndarray) -> np.ndarray | None:
    """Permutation that sorts rows by (trial code, step), or None when they already are grouped and ordered.

    The orchestrator writes curves trial by trial with increasing steps, so the check (two vector passes) almost
    always saves the sort (a lexsort of 10M rows costs about a second).
    """
    if len(codes) < 2:
        return None
    changes = codes[1:] != codes[:-1]
    steps_increase = steps[1:] > steps[:-1]
    first_codes = codes[np.concatenate(([0], np.flatnonzero(changes) + 1))]
    grouped = len(np.unique(first_codes)) == len(first_codes)  # no trial appears in two runs of rows
    if grouped and bool(np.all(steps_increase | changes)):
        return None
    return np.lexsort((steps, codes))


def centred_moving_average(values: np.ndarray, seg: Segments, window: int) -> np.ndarray:
    """Mean over `window` (odd) points centred on each row, truncated at its segment's ends."""
    if window <= 1:
        return values.astype(np.float64, copy=True)
    position = np.arange(len(values), dtype=np.int64) - seg.starts[seg.ids]
    remaining = seg.lengths[seg.ids] - 1 - position  # rows after this one in its segment
    total = values.astype(np.float64, copy=True)
    count = np.ones(len(values), dtype=np.float64)
    for shift in range(1, window // 2 + 1):
        has_left = position[shift:] >= shift
        total[shift:] += np.where(has_left, values[:-shift], 0.0)
        count[shift:] += has_left
        has_right = remaining[:-shift] >= shift
        total[:-shift] += np.where(has_right, values[shift:], 0.0)
        count[:-shift] += has_right
    return total / count


def segment_max(values: np.ndarray, seg: Segments) -> np.ndarray:
    return np.maximum.reduceat(values, seg.starts) if seg.count else np.zeros(0, dtype=values.dtype)


def segment_min(values: np.ndarray, seg: Segments) -> np.ndarray:
    return np.minimum.reduceat(values, seg.starts) if seg.count else np.zeros(0, dtype=values.dtype)


def segment_mean(values: np.ndarray, mask: np.ndarray, seg: Segments) -> np.ndarray:
    """Mean of `values` over the rows of each segment where `mask` holds; NaN for segments with no such row."""
    if seg.count == 0:
        return np.zeros(0)
    total = np.add.reduceat(np.where(mask, values, 0.0), seg.starts)
    count = np.add.reduceat(mask, seg.starts, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def last_index_where(mask: np.ndarray, seg: Segments, index: np.ndarray | None = None) -> np.ndarray:
    """Row index of the last row of each segment where `mask` holds; -1 where none does.

    `index` is `np.arange(len(mask))`, passed in by callers that already have one."""
    index = np.arange(len(mask), dtype=np.int64) if index is None else index
    candidates = np.where(mask, index, -1)
    return segment_max(candidates, seg)


def first_index_where(mask: np.ndarray, seg: Segments, index: np.ndarray | None = None) -> np.ndarray:
    """Row index of the first row of each segment where `mask` holds; -1 where none does."""
    index = np.arange(len(mask), dtype=np.int64) if index is None else index
    sentinel = np.iinfo(np.int64).max
    candidates = np.where(mask, index, sentinel)
    first = segment_min(candidates, seg)
    return np.where(first == sentinel, -1, first)


def tail_median(values: np.ndarray, seg: Segments, points: int) -> np.ndarray:
    """Median of the last `points` rows of each segment (fewer where the segment is shorter)."""
    offsets = np.arange(1, points + 1, dtype=np.int64)  # 1 = last row
    index = seg.ends[:, None] - offsets[None, :]  # (S, points)
    valid = index >= seg.starts[:, None]
    gathered = np.where(valid, values[np.clip(index, 0, None)], np.nan)
    return np.nanmedian(gathered, axis=1) if points > 1 else gathered[:, 0]
