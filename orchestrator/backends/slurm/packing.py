"""Pure planning: trials -> array tasks (packing) -> arrays (split below MaxArraySize). No SLURM needed.

Packing runs many short trials in one array task, so a sweep of 5,000 one-minute trials is a few hundred tasks
instead of 5,000 scheduler jobs. Tasks are balanced (without seed packs their sizes differ by at most one; with
packs, whole packs are spread by size) so every task needs about the same time limit; an array task's `time` must
cover `trials_per_job` trials, or one pack where a pack is larger.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

# sbatch options the backend sets itself: letting the escape hatch override them would break the bookkeeping
# (job ids, log paths, the checkpoint signal) that relaunch and status rely on.
RESERVED_SBATCH_OPTIONS = ("array", "output", "error", "open-mode", "signal", "wrap", "parsable", "job-name",
                           "test-only")


def pack(items: Sequence[T], per_task: int) -> list[list[T]]:
    """Split `items` into ceil(n / per_task) contiguous chunks whose sizes differ by at most one, in order."""
    if per_task < 1:
        raise ValueError(f"per_task must be >= 1, got {per_task}")
    n_tasks = -(-len(items) // per_task)
    if n_tasks == 0:
        return []
    base, extra = divmod(len(items), n_tasks)
    chunks, start = [], 0
    for index in range(n_tasks):
        size = base + (1 if index < extra else 0)
        chunks.append(list(items[start:start + size]))
        start += size
    return chunks


def balance(units: Sequence[Sequence[T]], n_tasks: int, cap: int) -> list[list[Sequence[T]]]:
    """Put whole `units` into at least `n_tasks` tasks (fewer if there are fewer units) of about equal size in
    items: largest unit first, each to the least loaded task, or to a new task where it would take that task past
    `cap` items (a unit larger than `cap` gets a task of its own)."""
    tasks: list[list[Sequence[T]]] = [[] for _ in range(min(n_tasks, len(units)))]
    loads = [(0, index) for index in range(len(tasks))]  # a heap of (items, task)
    for unit in sorted(units, key=len, reverse=True):
        load, index = loads[0] if loads else (cap, -1)
        if load and load + len(unit) > cap:
            tasks.append([])
            load, index = 0, len(tasks) - 1
            heapq.heappush(loads, (load, index))
        tasks[index].append(unit)
        heapq.heapreplace(loads, (load + len(unit), index))
    return tasks


def split_arrays(tasks: Sequence[T], max_array_size: int) -> list[list[T]]:
    """Group array tasks into arrays of at most `max_array_size` tasks.

    SLURM's MaxArraySize bounds the largest array *index* (MaxArraySize - 1), and submitit numbers each array's
    tasks from 0, so an array may hold at most MaxArraySize tasks.
    """
    if max_array_size < 1:
        raise ValueError(f"max_array_size must be >= 1, got {max_array_size}")
    return [list(tasks[i:i + max_array_size]) for i in range(0, len(tasks), max_array_size)]


def sbatch_option_parameters(options: Sequence[str]) -> dict[str, str | bool]:
    """['--reservation=foo', '--exclusive'] -> {'reservation': 'foo', 'exclusive': True} (submitit's form).

    ValueError names a malformed option or one the backend sets itself (see RESERVED_SBATCH_OPTIONS).
    """
    parameters: dict[str, str | bool] = {}
    for option in options:
        if not option.startswith("--") or len(option) < 3:
            raise ValueError(f"got {option!r}; each option is '--name=value' or '--flag'")
        name, has_value, value = option[2:].partition("=")
        if name in RESERVED_SBATCH_OPTIONS:
            raise ValueError(f"got {option!r}; --{name} is set by the slurm backend itself (reserved: "
                             f"{', '.join('--' + o for o in RESERVED_SBATCH_OPTIONS)})")
        parameters[name] = value if has_value else True
    return parameters
