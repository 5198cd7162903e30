"""Unit tests of the slurm backend's own logic: packing, array splitting, option parsing, the time schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.backends.slurm import cluster
from orchestrator.backends.slurm.options import SlurmOptions
from orchestrator.backends.slurm.packing import pack, sbatch_option_parameters, split_arrays
from orchestrator.identity import TrialSpec
from orchestrator.schema import SchemaError
from orchestrator.spec import BackendConfig


@pytest.mark.parametrize(("n", "per_task", "sizes"), [
    (0, 4, []),
    (1, 4, [1]),
    (8, 4, [4, 4]),
    (9, 4, [3, 3, 3]),  # balanced: not 4, 4, 1
    (10, 4, [4, 3, 3]),
    (5, 1, [1, 1, 1, 1, 1]),
    (3, 10, [3]),
])
def test_pack_is_balanced_ordered_and_complete(n: int, per_task: int, sizes: list[int]):
    chunks = pack(list(range(n)), per_task)
    assert [len(c) for c in chunks] == sizes
    assert [item for chunk in chunks for item in chunk] == list(range(n))
    assert all(len(c) <= per_task for c in chunks)


def test_five_thousand_one_minute_trials_are_a_few_hundred_tasks_in_arrays_below_the_limit():
    tasks = pack(list(range(5000)), 10)
    assert len(tasks) == 500
    assert [len(a) for a in split_arrays(tasks, cluster.DEFAULT_MAX_ARRAY_SIZE)] == [500]
    arrays = split_arrays(tasks, 200)  # a site that lowered MaxArraySize
    assert [len(a) for a in arrays] == [200, 200, 100]
    assert [t for a in arrays for t in a] == tasks


def test_split_arrays_respects_the_largest_index():
    # MaxArraySize=3 allows indices 0..2: three tasks per array.
    assert [len(a) for a in split_arrays(list(range(7)), 3)] == [3, 3, 1]
    assert split_arrays([], 3) == []
    with pytest.raises(ValueError, match="max_array_size must be >= 1"):
        split_arrays([1], 0)


def test_sbatch_options_become_submitit_parameters_and_reserved_ones_are_refused():
    assert sbatch_option_parameters(["--reservation=maint", "--exclusive", "--gres=gpu:a100:1"]) == {
        "reservation": "maint", "exclusive": True, "gres": "gpu:a100:1"}
    with pytest.raises(ValueError, match="--array is set by the slurm backend itself"):
        sbatch_option_parameters(["--array=0-3"])
    with pytest.raises(ValueError, match="each option is '--name=value' or '--flag'"):
        sbatch_option_parameters(["-p debug"])


@pytest.mark.parametrize(("text", "minutes"), [
    ("90", 90), ("30:30", 31), ("1:30:00", 90), ("01:00:00", 60), ("2-00:00:00", 2880), ("1-12", 2160),
    ("1-12:30", 2190), ("0:0:1", 1),
])
def test_slurm_time_forms(text: str, minutes: int):
    assert SlurmOptions(time=text).time_minutes() == minutes


@pytest.mark.parametrize(("value", "message"), [
    ("abc", "allowed: minutes, minutes:seconds"),
    ("1:2:3:4", "allowed: minutes, minutes:seconds"),
    ("0", "longer than zero"),
    (5400, "quote the time"),  # what YAML makes of an unquoted 1:30:00
])
def test_malformed_time_is_a_schema_error(value: object, message: str):
    with pytest.raises(SchemaError, match=message) as caught:
        SlurmOptions(time=value)  # type: ignore[arg-type]
    assert caught.value.key == "slurm.time"


def test_first_error_line_strips_the_tool_prefix():
    stderr = "sbatch: error: invalid partition specified: nope\nsbatch: error: Batch job submission failed\n"
    assert cluster.first_error_line(stderr) == "invalid partition specified: nope"


def _trial(seed: int, kernel: str) -> TrialSpec:
    config = {"model": {"kernel": kernel}}  # a key packs may not mix (train.lr they may: tests/trainers/test_ensemble)
    return TrialSpec(f"{kernel}-{seed}", "eureka", seed, config, {"seed": seed, "model.kernel": kernel})


@pytest.mark.parametrize("per_job, expected", [(8, [7, 7, 6]), (3, [4, 3, 3, 4, 3, 3]), (100, [20])])
def test_seed_packs_go_to_array_tasks_whole(per_job: int, expected: list[int]):
    """With seeds_per_trial K a task holds max(1, trials_per_job // K) whole packs: no pack is split across tasks,
    so each trains vectorized in one process. 2 configs x 10 seeds with K = 4: balanced packs of 4, 3, 3 per
    config, and trials_per_job 8 puts two packs in a task."""
    from orchestrator.backends.slurm.backend import SlurmBackend
    from orchestrator.runner import seed_packs

    trials = [_trial(seed, k) for seed in range(10) for k in ("softmax", "normsoftmax")]  # a config's seeds apart
    backend = SlurmBackend(_config(seeds_per_trial=4, trials_per_job=per_job))
    chunks = backend.task_chunks(trials)
    assert [len(c) for c in chunks] == expected
    assert sorted(t.trial_id for c in chunks for t in c) == sorted(t.trial_id for t in trials)
    ids = [[t.trial_id for t in chunk] for chunk in chunks]
    for unit in seed_packs(trials, 4):  # every pack sits, contiguous and in seed order, inside one task
        members = [t.trial_id for t in unit]
        assert sum(any(c[i:i + len(members)] == members for i in range(len(c))) for c in ids) == 1
    packed = SlurmBackend(_config(seeds_per_trial=1, trials_per_job=per_job))
    assert [len(c) for c in packed.task_chunks(trials)] == [len(c) for c in pack(trials, per_job)]


def _config(*, seeds_per_trial: int, trials_per_job: int) -> BackendConfig:
    config = BackendConfig(kind="slurm", seeds_per_trial=seeds_per_trial)
    config.options = SlurmOptions(trials_per_job=trials_per_job)  # what spec.load_backend sets from the file
    return config


RECORDED_SCRIPT = Path(__file__).with_name("data") / "array.sbatch"


def test_the_batch_script_is_rendered_as_recorded():
    """tests/slurm/data/array.sbatch: every kind of option (site options, GPUs, the escape hatch's flag and value
    options, setup lines, a throttled array). The real-cluster test compares the rendering with what submitit
    submits; this pins it without a cluster."""
    from orchestrator.backends.slurm.backend import SlurmBackend

    config = BackendConfig(kind="slurm")
    config.options = SlurmOptions(partition="debug", account="lab", time="1:30:00", cpus_per_task=2, gpus_per_task=1,
                                  mem="8G", sbatch_options=["--exclusive", "--mail-type=END"], python="python3",
                                  setup=["module load cuda", "source ~/venv/bin/activate"], array_parallelism=4)
    script = SlurmBackend(config).sbatch_script(Path("/shared/runs/demo"), "sweep-demo", 10)
    assert script == RECORDED_SCRIPT.read_text()
