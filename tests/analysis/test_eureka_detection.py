"""Eureka detection on synthetic curves whose jump steps are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.eureka import DetectionParams, detect_eureka, metric_direction
from tests.analysis.helpers import STEPS, eureka_curve, long_table


def detect_one(values: np.ndarray, **overrides) -> pd.Series:
    return detect_eureka(long_table({"t": values}), "val_acc", **overrides).loc["t"]


def test_clean_jump_is_located_with_levels_plateau_length_and_sharpness():
    row = detect_one(eureka_curve(1200))
    assert row["eureka_outcome"] == "eureka"
    assert row["eureka_step"] == 1200
    assert row["plateau_level"] == pytest.approx(0.55)
    assert row["final_level"] == pytest.approx(1.0)
    assert row["jump_height"] == pytest.approx(0.45)
    # on the plateau from the first eval (step 100) until the jump starts (last eval at the plateau: step 1100)
    assert row["plateau_steps"] == 1000
    assert (row["jump_start_step"], row["jump_end_step"]) == (1100, 1200)
    assert row["sharpness_steps"] == 100  # a jump between two evals: the eval spacing, the resolution limit
    assert (row["first_step"], row["last_step"], row["n_points"]) == (0, 2000, 21)


def test_gradual_jump_sharpness_spans_the_rise_from_10_to_90_percent():
    values = eureka_curve(None)
    rise = {1000: 0.60, 1100: 0.70, 1200: 0.80, 1300: 0.90, 1400: 0.97}  # 0.55 -> 1.0 over 500 steps
    for step, value in rise.items():
        values[step // 100] = value  # evals every 100 steps
    values[STEPS >= 1500] = 1.0
    row = detect_one(values)
    assert row["eureka_outcome"] == "eureka"
    # midpoint 0.775: smoothed values are 0.70 at 1100 and 0.80 at 1200, and stay above from there
    assert row["eureka_step"] == 1200
    # 10% of the jump = 0.595: last eval at or below it is 900; 90% = 0.955: first eval at or above it is 1400
    assert (row["jump_start_step"], row["jump_end_step"], row["sharpness_steps"]) == (900, 1400, 500)


def test_noisy_curves_are_detected_within_one_eval_of_the_planted_jump():
    rng = np.random.default_rng(7)
    jumps = rng.integers(3, 18, size=200) * 100 + 50  # jump half-way between two evals
    curves = {f"t{i:03d}": eureka_curve(int(j)) + rng.normal(0, 0.02, size=len(STEPS)) for i, j in enumerate(jumps)}
    found = detect_eureka(long_table(curves), "val_acc")
    assert (found["eureka_outcome"] == "eureka").all()
    expected = pd.Series(jumps + 50, index=[f"t{i:03d}" for i in range(len(jumps))])  # first eval after the jump
    assert (found["eureka_step"].astype(int) == expected.reindex(found.index)).all()
    assert found["plateau_level"].between(0.515, 0.585).all()  # short plateaus average few noisy evals
    assert found["plateau_level"].mean() == pytest.approx(0.55, abs=0.005)  # and are not biased


def test_curve_stuck_on_the_plateau_has_no_eureka():
    rng = np.random.default_rng(0)
    row = detect_one(eureka_curve(None) + rng.normal(0, 0.01, size=len(STEPS)))
    assert row["eureka_outcome"] == "no_eureka"
    assert pd.isna(row["eureka_step"]) and pd.isna(row["sharpness_steps"])
    assert row["plateau_level"] == pytest.approx(0.55, abs=0.01)
    assert abs(row["jump_height"]) < 0.05


def test_jump_right_after_the_first_evals_is_no_plateau():
    # plateau held for one eval only (step 100), then solved at 200: far shorter than 10% of the run
    row = detect_one(eureka_curve(200))
    assert row["eureka_outcome"] == "no_plateau"
    assert row["eureka_step"] == 200


def test_flat_curve_at_the_top_is_told_from_a_stuck_one_by_the_reference_plateau():
    learned_at_once = eureka_curve(100)  # chance at step 0, solved from the first eval on
    stuck = eureka_curve(None)
    curves = long_table({"eureka": eureka_curve(900), "at_once": learned_at_once, "stuck": stuck})
    found = detect_eureka(curves, "val_acc")  # reference: the plateau of the Eureka curve in the same call
    assert found.loc["at_once", "eureka_outcome"] == "no_plateau"
    assert found.loc["at_once", "eureka_step"] == 100
    assert found.loc["stuck", "eureka_outcome"] == "no_eureka"
    # alone, nothing says where the plateau is: documented to be no_eureka unless plateau_level is given
    assert detect_one(learned_at_once)["eureka_outcome"] == "no_eureka"
    assert detect_one(learned_at_once, plateau_level=0.55)["eureka_outcome"] == "no_plateau"
    assert detect_one(stuck, plateau_level=0.55)["eureka_outcome"] == "no_eureka"


def test_late_jump_is_found_when_two_evals_confirm_it_but_not_from_the_last_eval_alone():
    assert detect_one(eureka_curve(1900))["eureka_step"] == 1900
    assert detect_one(eureka_curve(1900))["eureka_outcome"] == "eureka"
    last_only = detect_one(eureka_curve(2000))  # final level = median of the last 3 evals = the plateau
    assert last_only["eureka_outcome"] == "no_eureka"


def test_two_step_curve_reports_the_big_jump():
    small_then_big = eureka_curve(1400)
    small_then_big[(STEPS >= 800) & (STEPS < 1400)] = 0.62
    row = detect_one(small_then_big)
    assert (row["eureka_outcome"], row["eureka_step"]) == ("eureka", 1400)
    assert row["plateau_level"] == pytest.approx((7 * 0.55 + 6 * 0.62) / 13)

    big_then_small = eureka_curve(1400)
    big_then_small[(STEPS >= 800) & (STEPS < 1400)] = 0.9
    row = detect_one(big_then_small)
    assert (row["eureka_outcome"], row["eureka_step"]) == ("eureka", 800)
    assert row["plateau_level"] == pytest.approx(0.55)


def test_loss_curves_are_read_with_lower_is_better():
    loss = np.where(STEPS == 0, 2.3, 1.2)
    loss[STEPS >= 1200] = 0.05
    found = detect_eureka(long_table({"t": loss}, metric="val_loss"), "val_loss")
    assert metric_direction("val_loss") == "min" and metric_direction("val_acc") == "max"
    row = found.loc["t"]
    assert (row["eureka_outcome"], row["eureka_step"]) == ("eureka", 1200)
    assert row["plateau_level"] == pytest.approx(1.2)
    assert row["final_level"] == pytest.approx(0.05)
    assert row["jump_height"] == pytest.approx(1.15)


def test_short_and_non_finite_curves_are_too_short_not_dropped():
    diverged = eureka_curve(None)[:3]
    with_nans = eureka_curve(700)
    with_nans[[5, 9]] = np.nan  # NaN evals are ignored, the rest still shows the jump
    curves = long_table({"diverged": diverged, "all_nan": np.full(4, np.nan), "with_nans": with_nans})
    found = detect_eureka(curves, "val_acc")
    assert set(found.index) == {"diverged", "all_nan", "with_nans"}
    assert found.loc["diverged", "eureka_outcome"] == "too_short"
    assert found.loc["all_nan", "eureka_outcome"] == "too_short"
    assert found.loc["all_nan", "n_points"] == 0
    assert (found.loc["with_nans", "eureka_outcome"], found.loc["with_nans", "eureka_step"]) == ("eureka", 700)
    assert found.loc["with_nans", "n_points"] == 19


def test_row_order_and_id_dtype_do_not_change_the_result():
    rng = np.random.default_rng(3)
    curves = long_table({f"t{i}": eureka_curve(int(j)) + rng.normal(0, 0.01, len(STEPS))
                         for i, j in enumerate([300, 800, 1500, 1900])} | {"stuck": eureka_curve(None)})
    reference = detect_eureka(curves, "val_acc")
    shuffled = curves.sample(frac=1.0, random_state=1)
    categorical = curves.assign(trial_id=curves["trial_id"].astype("category"))
    for variant in (shuffled, categorical):
        pd.testing.assert_frame_equal(detect_eureka(variant, "val_acc").loc[reference.index], reference)


def test_batch_result_equals_curve_by_curve_result_for_eureka_curves():
    rng = np.random.default_rng(11)
    curves = {f"t{i}": eureka_curve(int(j)) + rng.normal(0, 0.015, len(STEPS))
              for i, j in enumerate(rng.integers(5, 19, 30) * 100)}
    together = detect_eureka(long_table(curves), "val_acc")
    for trial_id, values in curves.items():
        alone = detect_one(values)
        assert together.loc[trial_id, "eureka_step"] == alone["eureka_step"]
        assert together.loc[trial_id, "plateau_level"] == pytest.approx(alone["plateau_level"])


def test_parameters_are_validated_and_missing_metric_is_named():
    with pytest.raises(ValueError, match="odd"):
        DetectionParams(smooth_points=4)
    with pytest.raises(KeyError, match="val_acc"):
        detect_eureka(long_table({"t": eureka_curve(500)}, metric="val_loss"), "val_acc")


def test_min_jump_sets_what_counts_as_a_jump():
    small = eureka_curve(900, final=0.7)  # a 0.15 rise
    assert detect_one(small)["eureka_outcome"] == "no_eureka"
    assert detect_one(small, min_jump=0.1)["eureka_step"] == 900


def test_chunked_processing_gives_the_same_result(monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(2)
    curves = long_table({f"t{i:02d}": eureka_curve(int(j)) + rng.normal(0, 0.01, len(STEPS))
                         for i, j in enumerate(rng.integers(3, 19, 40) * 100)} | {"short": eureka_curve(600)[:12]})
    whole = detect_eureka(curves, "val_acc")
    monkeypatch.setattr("analysis.eureka.CHUNK_ROWS", 50)  # chunks of 2-3 curves, boundaries inside curves
    pd.testing.assert_frame_equal(detect_eureka(curves, "val_acc"), whole)
    assert whole.loc["short", "eureka_step"] == 600
