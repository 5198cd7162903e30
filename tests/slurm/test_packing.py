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


@pytest.mark.parametrize("per_job, expected", [(8, [7, 7, 6]), (3, [4, 4, 3, 3, 3, 3]), (100, [10, 10])])
def test_seed_packs_go_to_array_tasks_whole(per_job: int, expected: list[int]):
    """With seeds_per_trial K a task holds whole packs, at most trials_per_job trials (or one larger pack): no pack
    is split across tasks, so each trains vectorized in one process. 2 configs x 10 seeds with K = 4 on 2 slots:
    balanced packs of 4, 3, 3 per config; trials_per_job 8 puts two packs in a task, 3 one pack each, and 100
    would allow all six in one task but the two slots get three each."""
    from orchestrator.backends.slurm.backend import SlurmBackend
    from orchestrator.runner import seed_packs

    trials = [_trial(seed, k) for seed in range(10) for k in ("softmax", "normsoftmax")]  # a config's seeds apart
    backend = SlurmBackend(_config(seeds_per_trial=4, trials_per_job=per_job, slots=2))
    chunks = backend.task_chunks(trials)
    assert [len(c) for c in chunks] == expected
    assert sorted(t.trial_id for c in chunks for t in c) == sorted(t.trial_id for t in trials)
    ids = [[t.trial_id for t in chunk] for chunk in chunks]
    for unit in seed_packs(trials, 4, 2):  # every pack sits, contiguous and in seed order, inside one task
        members = [t.trial_id for t in unit]
        assert sum(any(c[i:i + len(members)] == members for i in range(len(c))) for c in ids) == 1
    unpacked = SlurmBackend(_config(seeds_per_trial=1, trials_per_job=per_job, slots=2))
    assert [len(c) for c in unpacked.task_chunks(trials)] == [len(c) for c in pack(trials, per_job)]


@pytest.mark.parametrize("seeds, slots, per_job, units", [
    (16, 2, 16, [[8], [8]]),                 # one pack of 16 would leave a slot idle: two packs of 8, one per task
    (16, 64, 10, [[1]] * 16),                # packs of 1 are all the slots allow, and below 8 singles are faster
    (64, 2, 64, [[16, 16], [16, 16]]),       # K as asked (4 packs >= 2 slots), two per task rather than all in one
    (17, 2, 32, [[9], [8]]),                 # balanced: 9 + 8
    (64, 2, 16, [[16]] * 4),                 # the cap: trials_per_job 16 holds one pack of 16 a task
    (40, 2, 40, [[10, 10], [10, 10]]),       # 14 + 13 + 13 would leave one slot a second pack
])
def test_packs_and_tasks_are_cut_for_the_slots(seeds: int, slots: int, per_job: int, units: list[list[int]]):
    """On SLURM the slots are `array_parallelism`: packs are cut as on Ray (the largest size whose packs finish
    within 10% of the soonest), and the tasks are never fewer than min(slots, units), so no slot waits while a task
    runs two packs in sequence."""
    from orchestrator.backends.slurm.backend import SlurmBackend

    trials = [_trial(seed, "softmax") for seed in range(seeds)]
    backend = SlurmBackend(_config(seeds_per_trial=16, trials_per_job=per_job, slots=slots))
    plan = backend.task_units(trials)
    assert [[len(unit) for unit in task] for task in plan] == units
    assert sorted(t.trial_id for task in plan for unit in task for t in unit) == sorted(t.trial_id for t in trials)


def test_tasks_are_balanced_by_trials_not_by_units():
    """Groups of 16 and 9 seeds on 4 slots: single trials (no cut pays), spread so each task holds 6-7 of them; and
    packs go whole, largest first, to the least loaded task, never past trials_per_job unless one pack is larger."""
    from orchestrator.backends.slurm.backend import SlurmBackend
    from orchestrator.backends.slurm.packing import balance

    trials = [_trial(seed, "softmax") for seed in range(16)] + [_trial(seed, "normsoftmax") for seed in range(9)]
    plan = SlurmBackend(_config(seeds_per_trial=16, trials_per_job=32, slots=4)).task_units(trials)
    assert sorted(sum(map(len, task)) for task in plan) == [6, 6, 6, 7]
    assert balance([[1] * 8, [1] * 8, [1], [1], [1]], 2, 32) == [[[1] * 8, [1], [1]], [[1] * 8, [1]]]
    assert [[len(u) for u in task] for task in balance([[1] * 5, [1] * 3, [1] * 3], 1, 6)] == [[5], [3, 3]]
    assert [[len(u) for u in task] for task in balance([[1] * 9, [1]], 1, 4)] == [[9], [1]]  # 9 > cap: alone
    assert balance([], 3, 4) == []


def _config(*, seeds_per_trial: int, trials_per_job: int, slots: int = 64) -> BackendConfig:
    config = BackendConfig(kind="slurm", seeds_per_trial=seeds_per_trial)
    config.options = SlurmOptions(trials_per_job=trials_per_job, array_parallelism=slots)  # as spec.load_backend
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


def test_a_task_pickled_before_units_existed_runs_its_trials(tmp_path):
    """A TrialChunk pickled by the previous version (trials + seeds_per_trial, queued across an upgrade) loads with
    the units that version would have run: here one pack of the 3 seeds, then the other config's pack."""
    import pickle

    from orchestrator.backends.slurm.job import TrialChunk

    trials = [_trial(seed, k) for k in ("softmax", "normsoftmax") for seed in range(3)]
    old = TrialChunk.__new__(TrialChunk)
    old.__dict__.update({"run_dir": str(tmp_path), "trials": [t.to_dict() for t in trials], "launch_id": "L",
                         "retry_failed": False, "max_retries": 0, "num_threads": 1, "seeds_per_trial": 3})
    loaded = pickle.loads(pickle.dumps(old))
    assert [[u["trial_id"] for u in unit] for unit in loaded.units] == [[t.trial_id for t in trials[:3]],
                                                                         [t.trial_id for t in trials[3:]]]
    assert not hasattr(loaded, "trials") and not hasattr(loaded, "seeds_per_trial")
    fresh = pickle.loads(pickle.dumps(TrialChunk(str(tmp_path), [[trials[0].to_dict()]], "L", max_retries=0,
                                                 num_threads=1)))
    assert fresh.units == [[trials[0].to_dict()]]
