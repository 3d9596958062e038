"""Forward kinematics and damped least-squares IK of the stand-in arm."""

import numpy as np
import pytest

from robot_calql.sim import make_env
from robot_calql.sim.env import HOME_Q, WORKSPACE_MAX, WORKSPACE_MIN
from robot_calql.sim.kinematics import (
    ArmKinematics,
    KinematicsError,
    ee_pose,
    ee_position,
    ee_positions,
)


def test_ik_reaches_targets_in_the_workspace():
    kin = ArmKinematics()
    rng = np.random.default_rng(0)
    lo, hi = WORKSPACE_MIN + [0.05, 0.0, 0.0], WORKSPACE_MAX - [0.05, 0.0, 0.05]
    n = 0
    while n < 30:
        target = rng.uniform(lo, hi)
        if np.hypot(*target[:2]) > 0.42:  # outside the arm's reach pointing down
            continue
        yaw = rng.uniform(-1.2, 1.2)
        q = kin.ik(target, yaw, HOME_Q, iters=60)
        pos, got_yaw = ee_pose(q)
        assert np.linalg.norm(pos - target) < 2e-3, (target, pos)
        assert abs(got_yaw - yaw) < 1e-2
        assert np.all(q >= kin.lower) and np.all(q <= kin.upper)
        n += 1


def test_ik_stays_in_joint_limits_for_unreachable_target():
    kin = ArmKinematics()
    q = kin.ik(np.array([1.5, 0.0, 0.0]), 0.0, HOME_Q, iters=50)
    assert np.all(q >= kin.lower) and np.all(q <= kin.upper)
    assert np.linalg.norm(ee_position(q)) > 0.45  # stretched toward it


def test_fk_matches_the_simulation():
    env = make_env("cube_in_bowl", image_size=0, seed=2)
    env.reset()
    for _ in range(5):
        env.step(np.array([0.3, -0.5, -0.4, 0.5, 0], np.float32))
    pos, yaw = env.ee_pose()
    np.testing.assert_allclose(ee_position(env.joint_positions()), pos, atol=1e-9)
    assert abs(ee_pose(env.joint_positions())[1] - yaw) < 1e-9


def test_delta_actions_move_the_end_effector_by_the_scaled_amount():
    env = make_env("cube_in_bowl", image_size=0, seed=0)
    env.reset()
    start, yaw0 = env.ee_pose()
    for _ in range(4):
        env.step(np.array([1.0, -0.5, -0.5, 1.0, -1.0], np.float32))
    env.step(np.array([0, 0, 0, 0, -1.0], np.float32))  # let the servos settle on the last target
    end, yaw1 = env.ee_pose()
    np.testing.assert_allclose(end - start, [0.08, -0.04, -0.04], atol=0.004)
    assert abs(yaw1 - yaw0 - 0.6) < 0.02


def test_bad_joint_vectors():
    with pytest.raises(KinematicsError, match="shape"):
        ee_position([0.0, 0.1])
    with pytest.raises(KinematicsError, match="NaN"):
        ee_position([0.0, np.nan, 0, 0, 0])
    qs = np.stack([HOME_Q, HOME_Q + 0.1])
    out = ee_positions(qs)
    assert out.shape == (2, 3) and not np.allclose(out[0], out[1])
    np.testing.assert_allclose(out[0], ee_position(HOME_Q))
