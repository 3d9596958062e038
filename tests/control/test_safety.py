"""Safety limits: workspace box, step limits, joint limits, watchdog, throttling."""

import numpy as np
import pytest

from robot_calql.control.safety import (
    SafetyError,
    SafetyLimits,
    SinceMeasurement,
    Throttle,
    Watchdog,
    Workspace,
    box_excess,
    check_delta,
    check_joint_command,
    check_joint_targets,
    check_stamp,
    load_workspace,
    position_bounds,
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


# ---------------------------------------------------------------- joint limits (issue #24 item 2)
def test_a_joint_outside_its_limits_moves_back_by_at_most_the_step():
    # current joint 0.5 rad above its upper limit: the limit clip alone would move it 0.5 rad
    q, problems = check_joint_targets(np.array([0.0, 1.5]), np.array([0.0, 1.5]), LIMITS)
    np.testing.assert_allclose(q, [0.0, 1.4])
    q, _ = check_joint_targets(np.array([0.9, 0.0]), np.array([-1.3, 0.0]), LIMITS)
    np.testing.assert_allclose(q, [-1.2, 0.0])


def test_joint_reference_is_the_last_target_the_joint_state_may_not_show_yet():
    tr = SinceMeasurement(settle_s=0.1)
    assert tr.latest() is None
    tr.measure(np.zeros(2), 1.0)
    tr.record(1.05, np.array([0.1, 0.0]))
    np.testing.assert_allclose(tr.latest(), [0.1, 0.0])     # a late joint state: the arm is heading there
    tr.measure(np.array([0.09, 0.0]), 1.1)                  # sent only 0.05 s before: may not show yet
    np.testing.assert_allclose(tr.latest(), [0.1, 0.0])
    tr.measure(np.array([0.1, 0.0]), 1.2)                   # sent 0.15 s before: reflected
    assert tr.pending() == [] and np.allclose(tr.latest(), [0.1, 0.0])
    tr.invalidate()
    assert tr.latest() is None


# ---------------------------------------------------------------- joint commands through FK (item 1)
STANDIN_LIMITS = SafetyLimits.from_config({
    "max_translation_step_m": 0.035, "max_rotation_step_rad": 0.2, "max_joint_step_rad": 0.25,
    "joint_lower": [-3.1, -1.8, -1.7, -1.7, -3.1], "joint_upper": [3.1, 1.8, 1.6, 2.1, 3.1]}, control_hz=10)
STANDIN_BOX = Workspace(np.array([0.10, -0.28, 0.015]), np.array([0.46, 0.28, 0.25]))


def _kin():
    from robot_calql.sim.kinematics import ArmKinematics

    kin = ArmKinematics()
    return kin, (lambda q: kin.fk(q)[0])


def test_joint_command_whose_fk_leaves_the_box_or_steps_too_far_is_cut_or_held():
    kin, fk = _kin()
    q0 = kin.ik(np.array([0.3, 0.0, 0.03]), 0.0, np.array([0.0, -0.1, 0.35, 1.32, 0.0]), iters=50)
    p0 = fk(q0)
    assert STANDIN_BOX.contains(p0) and p0[2] < 0.035
    # every joint within its step and limits, but the EE would go 2-3 cm under the table
    q_down = q0 + np.array([0.0, 0.25, 0.0, 0.0, 0.0])
    assert fk(q_down)[2] < STANDIN_BOX.min[2]
    q, problems = check_joint_command(q_down, q0, fk, STANDIN_BOX, STANDIN_LIMITS)
    assert q is not None and STANDIN_BOX.contains(fk(q)) and "joint step scaled" in problems[-1]
    assert np.linalg.norm(fk(q) - p0) <= STANDIN_LIMITS.max_translation_step_m
    # the waist alone: 0.25 rad swings the EE ~7 cm sideways, twice the translation limit
    q_swing = q0 + np.array([0.25, 0.0, 0.0, 0.0, 0.0])
    assert np.linalg.norm(fk(q_swing) - p0) > 2 * STANDIN_LIMITS.max_translation_step_m
    q, problems = check_joint_command(q_swing, q0, fk, STANDIN_BOX, STANDIN_LIMITS)
    assert np.linalg.norm(fk(q) - p0) <= STANDIN_LIMITS.max_translation_step_m and "FK step" in problems[-1]
    # nothing passes: held, with the reason named
    tiny_step = SafetyLimits(0.001, 0.2, STANDIN_LIMITS.joint_lower, STANDIN_LIMITS.joint_upper, 0.25)
    q, problems = check_joint_command(q_swing, q0, fk, STANDIN_BOX, tiny_step)
    assert q is None and "FK step" in problems[-1] and "held" in problems[-1]


def test_ik_then_joint_command_keeps_realistic_arm_states_in_the_box_and_the_step():
    """The WidowX path (delta -> IK -> joints) from arm states spread over the box."""
    from robot_calql.sim.env import HOME_Q

    kin, fk = _kin()
    rng = np.random.default_rng(3)
    checked = moved = 0
    for _ in range(300):
        q = kin.ik(rng.uniform(STANDIN_BOX.min, STANDIN_BOX.max), rng.uniform(-1.5, 1.5), HOME_Q, iters=30)
        p = fk(q)
        if not STANDIN_BOX.contains(p):
            continue
        d = np.r_[rng.uniform(-0.035, 0.035, 3), rng.uniform(-0.2, 0.2), 0.0]
        safe, _ = check_delta(d, p, STANDIN_BOX, STANDIN_LIMITS)
        q_target = kin.ik(p + safe[:3], rng.uniform(-1.5, 1.5), q)
        q_safe, _ = check_joint_command(q_target, q, fk, STANDIN_BOX, STANDIN_LIMITS)
        checked += 1
        if q_safe is None:
            continue
        moved += 1
        assert STANDIN_BOX.contains(fk(q_safe)), "FK of the sent joints outside the box"
        assert np.linalg.norm(fk(q_safe) - p) <= STANDIN_LIMITS.max_translation_step_m + 1e-12
        assert np.all(np.abs(q_safe - q) <= STANDIN_LIMITS.max_joint_step_rad + 1e-12)
    assert checked > 250 and moved > 0.95 * checked


# ---------------------------------------------------------------- late poses (item 3)
def _closed_loop_at_the_wall(pose_for, seed: int, hz: float = 10.0, ticks: int = 300):
    """A policy pushing toward goals outside the box, an arm that executes each sent delta 10 ms
    after it is sent, and the node's view of the arm given by `pose_for(t, history)` (the stamp
    and position of the pose it has at time t). Returns (worst excess outside the box, closest
    approach to a wall the goal lay beyond)."""
    rng = np.random.default_rng(seed)
    limits = STANDIN_LIMITS
    true = np.array([0.3, 0.0, 0.1])
    history = [(-1.0, true.copy())]   # (time the state became true, position)
    track = SinceMeasurement(limits.command_settle_s)
    worst, closest = 0.0, np.inf
    for k in range(ticks):
        t = k / hz
        if k % 40 == 0:
            goal = rng.uniform(STANDIN_BOX.min - 0.06, STANDIN_BOX.max + 0.06)
        stamp, pos = pose_for(t, history)
        track.measure(pos, stamp)
        d = np.r_[np.clip(goal - track.value, -0.035, 0.035), 0.0, 0.0]
        safe, _ = check_delta(d, track.value, STANDIN_BOX, limits, position_bounds(track.value, track.pending()))
        if safe is None:
            continue
        track.record(t, safe[:3])
        true = true + safe[:3]
        history.append((t + 0.01, true.copy()))
        worst = max(worst, float(box_excess(true, STANDIN_BOX).max()))
        beyond = (goal > STANDIN_BOX.max) | (goal < STANDIN_BOX.min)
        gap = np.minimum(STANDIN_BOX.max - true, true - STANDIN_BOX.min)[beyond]
        closest = min(closest, float(gap.min())) if gap.size else closest
    return worst, closest


def _state_at(history, t):
    return [p for ts, p in history if ts <= t][-1]


@pytest.mark.parametrize("case", ["1-2 ticks late", "6 Hz"])
def test_late_or_slow_pose_never_lets_accumulated_commands_leave_the_box(case):
    rng = np.random.default_rng(0)

    def late(t, history):
        tm = t - int(rng.integers(1, 3)) * 0.1 - 1e-3   # measured 1-2 ticks ago, before that tick's command
        return tm, _state_at(history, tm)

    def six_hz(t, history):
        tm = np.floor(t * 6.0) / 6.0
        return tm, _state_at(history, tm)

    for seed in range(4):
        worst, closest = _closed_loop_at_the_wall(late if case == "1-2 ticks late" else six_hz, seed)
        assert worst <= 1e-12, f"{case}: the arm went {worst * 1000:.1f} mm outside the box"
        assert closest < 0.005, "the arm still reaches the walls"


def test_since_measurement_forgets_only_what_a_measurement_reflects():
    tr = SinceMeasurement(settle_s=0.1)
    tr.record(1.0, np.array([0.01, 0, 0]))
    tr.record(1.2, np.array([0.0, -0.02, 0]))
    assert tr.measure(np.zeros(3), 1.15)   # reflects the first (sent 0.15 s before), not the second
    assert len(tr.pending()) == 1
    lo, hi = position_bounds(tr.value, tr.pending())
    np.testing.assert_allclose(lo, [0, -0.02, 0])
    np.testing.assert_allclose(hi, [0, 0, 0])
    assert not tr.measure(np.ones(3), 1.1), "an older measurement is ignored"
    np.testing.assert_array_equal(tr.value, np.zeros(3))


def test_uncertain_range_is_clipped_as_a_whole_or_held():
    p = np.array([0.2, 0.0, 0.05])
    # a 3 cm move down is not in the pose yet: only 0.5 cm more down is allowed
    out, problems = check_delta(np.array([0, 0, -0.03, 0, 0]), p, BOX, LIMITS, (p - [0, 0, 0.045], p))
    assert out[2] == pytest.approx(-0.005) and "leave the workspace" in problems[0]
    out, problems = check_delta(np.zeros(5), p, BOX, LIMITS, (p - [0, 0, 0.2], p + [0, 0, 0.2]))
    assert out is None and "too uncertain" in problems[0]


# ---------------------------------------------------------------- stamps (item 4)
def test_stamps_from_the_future_or_too_old_are_named():
    assert check_stamp(100.0, 100.0, LIMITS, "command") == ""
    assert check_stamp(100.04, 100.0, LIMITS, "command") == ""   # within the 0.05 s tolerance
    for ahead in (0.06, 1.0, 1e9):
        assert "ahead of the clock" in check_stamp(100.0 + ahead, 100.0, LIMITS, "image")
    assert "0.300 s old" in check_stamp(99.7, 100.0, LIMITS, "command", max_age_s=0.2)
    assert "not finite" in check_stamp(float("nan"), 100.0, LIMITS, "command")
    assert LIMITS.future_stamp_tolerance_s == 0.05 and STANDIN_LIMITS.command_settle_s == pytest.approx(0.2)
