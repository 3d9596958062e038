"""Safety limits: workspace box, step limits, joint limits, watchdog, throttling."""

import numpy as np
import pytest

from robot_calql.control.safety import (
    SafetyError,
    SafetyLimits,
    Throttle,
    Watchdog,
    Workspace,
    check_delta,
    check_joint_targets,
    load_workspace,
)

LIMITS = SafetyLimits.from_config({
    "max_translation_step_m": 0.03, "max_rotation_step_rad": 0.2,
    "joint_lower": [-1, -1], "joint_upper": [1, 1], "max_joint_step_rad": 0.1,
})
BOX = Workspace(np.array([0.1, -0.2, 0.0]), np.array([0.4, 0.2, 0.3]))


def test_safe_command_passes_unchanged():
    d = np.array([0.01, 0.0, -0.01, 0.1, 0.5])
    out, problems = check_delta(d, np.array([0.2, 0.0, 0.1]), BOX, LIMITS)
    np.testing.assert_array_equal(out, d)
    assert problems == []


def test_command_leaving_the_box_is_clipped_to_it():
    out, problems = check_delta(np.array([0.0, 0.0, -0.03, 0, 0]), np.array([0.2, 0.0, 0.01]), BOX, LIMITS)
    assert BOX.contains(np.array([0.2, 0.0, 0.01]) + out[:3])
    assert out[2] == pytest.approx(-0.01)
    assert any("leave the workspace" in p and "z=" in p for p in problems)


def test_arm_outside_the_box_is_only_pulled_back_with_bounded_steps():
    p = np.array([0.2, 0.0, -0.5])  # far below the box
    out, problems = check_delta(np.array([0.0, 0.0, -0.03, 0, 0]), p, BOX, LIMITS)
    assert out[2] > 0 and np.linalg.norm(out[:3]) <= 0.03 + 1e-12
    assert problems


def test_large_steps_are_scaled_and_clipped():
    out, problems = check_delta(np.array([0.3, 0.4, 0.0, 1.0, 7.0]), np.array([0.25, 0.0, 0.1]), BOX, LIMITS)
    assert np.linalg.norm(out[:3]) <= 0.03 + 1e-12
    np.testing.assert_allclose(out[:2] / np.linalg.norm(out[:2]), [0.6, 0.8])  # direction kept
    assert out[3] == 0.2 and out[4] == 1.0
    assert len(problems) == 2


@pytest.mark.parametrize("delta, ee", [
    (np.array([np.nan, 0, 0, 0, 0]), np.array([0.2, 0, 0.1])),
    (np.array([0, 0, 0, 0, 0.0]), None),
    (np.array([0, 0, 0, 0, 0.0]), np.array([np.inf, 0, 0.1])),
])
def test_unknown_or_nan_inputs_hold(delta, ee):
    out, problems = check_delta(delta, ee, BOX, LIMITS)
    assert out is None and problems


def test_joint_targets_limited():
    q, problems = check_joint_targets(np.array([0.5, -2.0]), np.array([0.0, -0.95]), LIMITS)
    np.testing.assert_allclose(q, [0.1, -1.0])
    assert len(problems) == 2
    assert check_joint_targets(np.array([np.nan, 0]), np.zeros(2), LIMITS)[0] is None
    assert check_joint_targets(np.zeros(3), np.zeros(2), LIMITS)[0] is None


def test_workspace_file(tmp_path):
    f = tmp_path / "workspace.yaml"
    f.write_text("frame: base_link\nmin: [0.1, -0.2, 0.0]\nmax: [0.4, 0.2, 0.3]\nmargin: 0.02\n")
    ws = load_workspace(f)
    assert ws.frame == "base_link" and ws.contains([0.2, 0, 0.1]) and not ws.contains([0.5, 0, 0.1])
    f.write_text("min: [0.1, 0.2, 0.0]\nmax: [0.4, 0.1, 0.3]\n")
    with pytest.raises(SafetyError, match="below max"):
        load_workspace(f)
    f.write_text("frame: x\n")
    with pytest.raises(SafetyError, match="'min' and 'max'"):
        load_workspace(f)
    with pytest.raises(SafetyError, match="not found"):
        load_workspace(tmp_path / "nope.yaml")


def test_shipped_standin_workspace_loads():
    from robot_calql.config import REPO_ROOT

    ws = load_workspace(REPO_ROOT / "calibration/sim_standin/workspace.yaml")
    assert np.all(ws.max > ws.min)


def test_bad_limits_are_named():
    with pytest.raises(SafetyError, match="lack 'joint_upper'"):
        SafetyLimits.from_config({"max_translation_step_m": 1, "max_rotation_step_rad": 1, "joint_lower": [0]})


def test_watchdog_and_throttle():
    w = Watchdog({"image": 0.2, "joints": 0.2})
    assert w.stale(0.0) == ["image", "joints"]  # never arrived = stale
    w.feed("image", 1.0)
    w.feed("joints", 1.0)
    assert w.stale(1.1) == []
    assert w.stale(1.25) == ["image", "joints"]
    w.feed("image", 1.2)
    w.invalidate("joints")
    assert w.stale(1.3) == ["joints"]
    with pytest.raises(KeyError):
        w.feed("lidar", 0.0)
    t = Throttle(1.0)
    assert t.ready("nan", 0.0) and not t.ready("nan", 0.5) and t.ready("other", 0.5)
    assert t.ready("nan", 1.01)
