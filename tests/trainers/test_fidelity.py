"""The definitions ported from the authors' code, against values worked out by hand from the official formulas:
heat's schedule (eurekaMoments helpers.py get_temperature_schedule 'half_cosine'), NormSoftmax's divisor
(vit_timm0412.py Attention.forward) and Admin's output change (Transformer-Clinic fairseq_task.py train_step with
--plot_stability); and the trial ids they change: exactly the heat, NormSoftmax (var) and output-change trials."""

from __future__ import annotations

import math

import pytest
import torch

from orchestrator import schema
from orchestrator.identity import trial_id
from orchestrator.plugins import identity_name
from orchestrator.spec import load_spec
from tests.conftest import REPO
from trainers.model import (
    STABILITY_STEP,
    Attention,
    Encoder,
    ModelConfig,
    heat_scale,
    normsoftmax_kernel,
    stability_output_change,
    stability_parameters,
)

pytestmark = pytest.mark.numeric  # run again under other CPU code paths by `make test` (the portability net)


@pytest.mark.parametrize(("progress", "expected"), [
    (0.0, 3.0),  # t = 0: s_start
    (0.25, 0.125 + 0.5 * (3.0 - 0.125) * (1 + math.cos(math.pi * 0.25 / 0.5))),  # t = T/4: (3 + 0.125) / 2
    (0.5, 0.125),  # t = T/2: s_end, and held
    (1.0, 0.125),  # t = T
])
def test_heat_schedule_is_the_official_half_cosine(progress: float, expected: float) -> None:
    assert heat_scale(progress, 3.0, 0.125, 0.5) == pytest.approx(expected, rel=1e-12)
    assert heat_scale(0.25, 3.0, 0.125, 0.5) == pytest.approx(1.5625, rel=1e-12)


def logits_row_qk(row: list[float], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q (1, 1, 1, D) and k (1, 1, T, D) whose raw logits q.k are exactly `row`."""
    q = torch.zeros(1, 1, 1, dim, dtype=torch.float64)
    q[..., 0] = 1.0
    k = torch.zeros(1, 1, len(row), dim, dtype=torch.float64)
    k[0, 0, :, 0] = torch.tensor(row, dtype=torch.float64)
    return q, k


@pytest.mark.parametrize(("units", "start_scale", "end_scale"), [
    ("relative", 24 / math.sqrt(16), 1 / math.sqrt(16)),  # D = 16: 24/sqrt(D) -> 1/sqrt(D), plain softmax at the end
    ("absolute", 3.0, 0.125),  # the official values as they are
])
def test_heat_kernel_scales_the_raw_logits_by_the_schedule_in_place_of_one_over_sqrt_d(
        units: str, start_scale: float, end_scale: float) -> None:
    attention = Attention(ModelConfig(width=64, heads=4, kernel="heat", heat_units=units))  # D = 16
    row = [0.5, -1.0, 2.0, 0.0, 1.5]
    q, k = logits_row_qk(row, 16)
    for progress, scale in ((0.0, start_scale), (0.75, end_scale)):
        attention.set_progress(progress)
        expected = torch.softmax(torch.tensor(row, dtype=torch.float64) * scale, -1)
        torch.testing.assert_close(attention.weights(q, k)[0, 0, 0], expected)


def test_normsoftmax_divides_by_the_population_variance_of_the_raw_logits() -> None:
    row = [1.0, 2.0, 3.0, 4.0, 5.0]  # mean 3; population variance (4+1+0+1+4)/5 = 2 (unbiased: 2.5)
    q, k = logits_row_qk(row, 16)  # sqrt(D) = 4 > 2: the variance is the divisor
    expected = torch.softmax(torch.tensor(row, dtype=torch.float64) / 2.0, -1)
    torch.testing.assert_close(normsoftmax_kernel(q, k, "var")[0, 0, 0], expected)
    unbiased_std = math.sqrt(2.5)  # norm_softmax_std: torch.std, unbiased, as the official code
    torch.testing.assert_close(normsoftmax_kernel(q, k, "std")[0, 0, 0],
                               torch.softmax(torch.tensor(row, dtype=torch.float64) / unbiased_std, -1))
    big = [10.0 * v for v in row]  # population variance 200 > sqrt(D): capped at sqrt(D) = 4
    q, k = logits_row_qk(big, 16)
    torch.testing.assert_close(normsoftmax_kernel(q, k, "var")[0, 0, 0],
                               torch.softmax(torch.tensor(big, dtype=torch.float64) / 4.0, -1))


@pytest.mark.parametrize("norm", ["post_ln", "pre_ln", "admin"])
def test_output_change_is_the_squared_move_of_the_final_hidden_state_under_the_official_perturbation(
        norm: str) -> None:
    torch.manual_seed(0)
    config = ModelConfig(depth=2, width=16, heads=2, norm=norm, admin_init="closed_form")
    model = Encoder(config, vocab_size=7, seq_len=6, n_classes=7, readout="all").double()
    inputs = torch.randint(0, 7, (4, 6))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    # By hand, from the official rule: every parameter whose name has none of bias / layer norm / Admin's ratio
    # moves by -1e-4 * sign(eps), eps ~ N(0, 1), drawn in named_parameters order from the same generator.
    moved = Encoder(config, vocab_size=7, seq_len=6, n_classes=7, readout="all").double()
    moved.load_state_dict(model.state_dict())
    generator = torch.Generator().manual_seed(42)
    perturbed = []
    for name, p in moved.named_parameters():
        if "bias" in name or "ln_" in name or "omega" in name:
            continue
        with torch.no_grad():
            p.add_(torch.randn(p.shape, generator=generator).sign().double(), alpha=-1e-4)
        perturbed.append(name)
    with torch.no_grad():
        expected = float((model.hidden(inputs) - moved.hidden(inputs)).pow(2).sum())

    squared, norm_value = stability_output_change(model, inputs, torch.Generator().manual_seed(42))
    assert squared == pytest.approx(expected, rel=1e-9) and norm_value == pytest.approx(math.sqrt(expected), rel=1e-9)
    assert STABILITY_STEP == 1e-4 and squared > 0
    assert len(stability_parameters(model)) == len(perturbed)
    assert "tok.weight" in perturbed and "head.weight" in perturbed and "pos" in perturbed
    assert not any("ln_" in n or "omega" in n or n.endswith("bias") for n in perturbed)
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())  # weights restored


def ids_by_kernel(path: str) -> dict[str, list[tuple[str, str]]]:
    """(current id, the id without any semantics version: what the code before the ports gave) per kernel."""
    spec = load_spec(REPO / path)
    name = identity_name(spec.trainer_name, spec.trainer)
    out: dict[str, list[tuple[str, str]]] = {}
    for trial in spec.trials():
        identity = schema.to_dict(schema.build(spec.trainer.config_class, trial.config), identity_only=True)
        unversioned = {k: ({kk: vv for kk, vv in v.items() if kk != schema.SEMANTICS_KEY} if isinstance(v, dict)
                           else v) for k, v in identity.items() if k != schema.SEMANTICS_KEY}
        out.setdefault(trial.config["model"]["kernel"], []).append(
            (trial.trial_id, trial_id(name, trial.seed, unversioned)))
    return out


def test_the_ported_kernels_get_new_ids_and_softmax_keeps_its_own() -> None:
    robustness = ids_by_kernel("sweeps/robustness.yaml")
    assert set(robustness) == {"softmax", "normsoftmax", "heat"}
    assert all(now == before for now, before in robustness["softmax"])  # its math did not change
    assert all(now != before for kernel in ("heat", "normsoftmax") for now, before in robustness[kernel])
    # Pinned from the code before the ports (seed 0, lr 3e-4): softmax's id stays, heat's and NormSoftmax's change.
    first = {kernel: ids[0][0] for kernel, ids in robustness.items()}
    assert first["softmax"] == "6c9d3e92f591fa78"
    assert first["heat"] != "036e7af659e03c92" and first["normsoftmax"] != "7a39df6da55ea70a"
    images = ids_by_kernel("sweeps/eureka_images.yaml")
    assert images["softmax"][0][0] == "4ca0b746dfda3ce4" and images["normsoftmax"][0][0] != "2b9d12989cd102f9"


def test_the_depth_trials_that_log_the_output_change_get_new_ids() -> None:
    spec = load_spec(REPO / "sweeps/admin_depth.yaml")
    trials = spec.trials()
    assert trials[0].trial_id != "dbfb1a5cdc0b6bae"  # pinned from before the port: post_ln, depth 2, seed 0
    quiet = load_spec(REPO / "sweeps/admin_depth.yaml", ["train.perturbation=0"]).trials()
    config = schema.build(spec.trainer.config_class, quiet[0].config)
    assert schema.SEMANTICS_KEY not in schema.to_dict(config, identity_only=True)["train"]  # logs none: unchanged


@pytest.mark.parametrize(("step", "expected"), [
    (5, 1e-3 * 5 / 10),  # warmup: linear from 0
    (10, 1e-3),  # the peak, at the end of the warmup
    (55, 1e-5 + (1e-3 - 1e-5) * 0.5),  # halfway through the decay: cos(pi/2) = 0
    (100, 1e-5),  # the last step: min_lr
])
def test_cosine_schedule_values(step: int, expected: float) -> None:
    from trainers.eureka import TrainConfig, scheduled_lr

    tc = TrainConfig(steps=100, lr=1e-3, schedule="cosine", warmup_steps=10, min_lr=1e-5)
    assert scheduled_lr(tc.lr, step, tc) == pytest.approx(expected, rel=1e-12)
    assert scheduled_lr(1e-3, 50, TrainConfig(steps=100, lr=1e-3, warmup_steps=10)) == 1e-3  # constant after warmup


def test_only_float64_kernel_regression_trials_with_a_teacher_get_new_ids() -> None:
    """A float64 trial's teacher targets are now computed in float64 (trainers/kernel_regression.py make_data):
    those trials get new ids; float32 trials (every shipped sweep) and random targets keep theirs."""
    path = REPO / "sweeps/gaussian_vs_softmax.yaml"

    def first(overrides: list[str]) -> tuple[str, str | None]:
        spec = load_spec(path, overrides)
        trial = spec.trials()[0]
        config = schema.build(spec.trainer.config_class, trial.config)
        return trial.trial_id, schema.to_dict(config, identity_only=True).get(schema.SEMANTICS_KEY)

    # pinned: the ids before the change (float32 planted; float64 random) stay, float64 planted's moves
    assert first([]) == ("e8316c149228f510", None)
    assert first(["train.dtype=float64", "task.target=random"]) == ("3380ee5a92189dfe", None)
    assert first(["train.dtype=float64"]) == ("79836f5d89d6dae3", "2")  # before the change: 76cdc4fedfe0b1ac
