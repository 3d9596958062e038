"""Kinematics from a URDF (robot_calql.control.urdf_kinematics, Pinocchio) on the WidowX 250
example's URDF: poses worked out by hand from its link lengths, IK round trips, joint limits,
errors that name the missing joint or link, and the safety check it feeds."""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pinocchio")

from robot_calql.control.urdf_kinematics import UrdfError, UrdfKinematics  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
URDF = ROOT / "calibration/widowx250_example/widowx250.urdf"
JOINTS = ["waist", "shoulder", "elbow", "wrist_angle", "wrist_rotate"]
BASE, EE = "wx250/base_link", "wx250/ee_gripper_link"
# the URDF's lengths (m): base -> shoulder axis, upper arm (forward, up), forearm, wrist, hand
Z0, UX, UZ, FOREARM, WRIST, HAND = 0.072 + 0.03865, 0.04975, 0.25, 0.25, 0.065, 0.0936


@pytest.fixture(scope="module")
def kin():
    return UrdfKinematics(URDF, JOINTS, BASE, EE)


def test_poses_match_the_link_lengths(kin):
    pos, rot = kin.fk(np.zeros(5))  # stretched forward: the hand level
    np.testing.assert_allclose(pos, [UX + FOREARM + WRIST + HAND, 0.0, Z0 + UZ], atol=1e-9)
    np.testing.assert_allclose(rot, np.eye(3), atol=1e-9)
    pos, _ = kin.fk([np.pi / 2, 0, 0, 0, 0])  # waist a quarter turn: the same reach along +y
    np.testing.assert_allclose(pos, [0.0, UX + FOREARM + WRIST + HAND, Z0 + UZ], atol=1e-9)
    pos, rot = kin.fk([0, np.pi / 2, 0, 0, 0])  # shoulder forward 90 deg: upper arm level, forearm down
    np.testing.assert_allclose(pos, [UZ, 0.0, Z0 - UX - (FOREARM + WRIST + HAND)], atol=1e-9)
    np.testing.assert_allclose(rot[:, 0], [0, 0, -1], atol=1e-9)  # the approach axis points down
    pos, yaw = kin.pose([0.4, 0, 0, np.pi / 2, 0.3])  # wrist down: heading = waist + wrist rotate
    assert yaw == pytest.approx(0.4 - 0.3, abs=1e-9)


def test_joint_limits_come_from_the_urdf(kin):
    np.testing.assert_allclose(kin.lower, [-3.14158, -1.88496, -2.14675, -1.74533, -3.14158])
    np.testing.assert_allclose(kin.upper, [3.14158, 1.98968, 1.60570, 2.14675, 3.14158])


def test_ik_round_trip_is_under_a_millimetre_within_the_joint_limits(kin):
    rng = np.random.default_rng(0)
    errs = []
    for _ in range(50):
        q_true = rng.uniform(0.7 * kin.lower, 0.7 * kin.upper)
        pos, rot = kin.fk(q_true)
        q0 = np.clip(q_true + rng.normal(0.0, 0.2, 5), kin.lower, kin.upper)
        q = kin.solve(pos, rot, q0)
        assert np.all(q >= kin.lower) and np.all(q <= kin.upper)
        p, r = kin.fk(q)
        errs.append(np.linalg.norm(p - pos))
        assert np.linalg.norm(r - rot) < 1e-2
    assert max(errs) < 1e-3, max(errs)


def test_ik_pointing_down_as_the_safety_node_asks(kin):
    """ik(pos, yaw, q0): the stand-in's contract (few steps for one command's move), gripper down."""
    q0 = np.array([0.0, 0.3, 0.4, 0.87, 0.0])
    p0, yaw0 = kin.pose(q0)
    q = q0
    target = p0 + np.array([0.02, -0.01, -0.015])
    for _ in range(5):  # a few commands' worth of steps
        q = kin.ik(target, yaw0 + 0.1, q)
    p, rot = kin.fk(q)
    assert np.linalg.norm(p - target) < 1e-3
    assert rot[2, 0] < -0.999  # approach axis down
    assert kin.pose(q)[1] == pytest.approx(yaw0 + 0.1, abs=1e-2)


def test_ik_out_of_reach_stays_within_the_joint_limits(kin):
    q = kin.solve([2.0, 0.0, 0.2], np.eye(3), np.zeros(5))
    assert np.all(q >= kin.lower) and np.all(q <= kin.upper)
    q = kin.ik([0.0, 0.0, -0.5], 0.0, np.zeros(5), iters=50)  # below the base: joints run into limits
    assert np.all(q >= kin.lower) and np.all(q <= kin.upper)


def test_the_safety_check_runs_on_the_urdf_model(kin):
    """check_joint_command (the safety node's joint-interface check) with this model's FK: a joint
    target beyond the URDF's limit is clipped to it."""
    from robot_calql.control.safety import SafetyLimits, Workspace, check_joint_command

    limits = SafetyLimits(max_translation_step_m=0.05, max_rotation_step_rad=0.2, joint_lower=kin.lower,
                          joint_upper=kin.upper, max_joint_step_rad=0.3)
    ws = Workspace(np.array([0.0, -0.5, -0.2]), np.array([0.7, 0.5, 0.6]), "wx250/base_link")
    q_now = np.array([0.0, 0.0, 0.0, 0.0, 3.0])
    q, problems = check_joint_command(np.array([0.0, 0.0, 0.0, 0.0, 3.5]), q_now, lambda x: kin.fk(x)[0], ws, limits)
    assert q is not None and q[4] == pytest.approx(kin.upper[4]) and "outside joint limits" in problems[0]


@pytest.mark.parametrize("joints,base,ee,match", [
    (["waist", "shoulder", "elbow", "wrist_angle", "wrist_twist"], BASE, EE, r"no joint\(s\) \['wrist_twist'\]"),
    (JOINTS, BASE, "wx250/tool_link", "no link 'wx250/tool_link'"),
    (JOINTS, EE, BASE, "does not hang below"),
])
def test_errors_name_the_missing_joint_or_link(joints, base, ee, match):
    with pytest.raises(UrdfError, match=match):
        UrdfKinematics(URDF, joints, base, ee)


def test_a_missing_or_broken_urdf_is_named(tmp_path):
    with pytest.raises(UrdfError, match="no URDF file"):
        UrdfKinematics(tmp_path / "none.urdf", JOINTS, BASE, EE)
    bad = tmp_path / "bad.urdf"
    bad.write_text("<robot name='x'><link name='a'/><joint name='j'")
    with pytest.raises(UrdfError, match="cannot read URDF"):
        UrdfKinematics(bad, JOINTS, BASE, EE)
