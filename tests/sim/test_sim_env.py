"""The stand-in env: determinism, observations, actions, success, limits, reset-free behaviour."""

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import yaml

from robot_calql.config import CONFIG_DIR
from robot_calql.sim import ENV_ID, TASKS, ActionError, UnknownTaskError, make_env, task_pair
from robot_calql.sim.env import (
    PROPRIO_DIM,
    S_BOWL,
    S_CUBE,
    STATE_DIM,
    WORKSPACE_MAX,
    WORKSPACE_MIN,
)
from robot_calql.sim.tasks import BOWL_FLOOR_TOP, CUBE_HALF


def _rollout(env, seed, steps=12):
    rng = np.random.default_rng(123)
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for _ in range(steps):
        obs, *_ = env.step(rng.uniform(-1, 1, 5).astype(np.float32))
        out.append(obs)
    return out


def test_environment_is_deterministic():
    a = _rollout(make_env("cube_in_bowl", image_size=64), seed=3)
    b = _rollout(make_env("cube_in_bowl", image_size=64), seed=3)
    for oa, ob in zip(a, b, strict=True):
        for k in ("image", "proprio", "state"):
            np.testing.assert_array_equal(oa[k], ob[k], err_msg=k)
    c = _rollout(make_env("cube_in_bowl", image_size=0), seed=4, steps=0)
    assert not np.allclose(a[0]["state"][S_CUBE], c[0]["state"][S_CUBE]), "another seed must place the cube elsewhere"


def test_snapshot_restores_the_exact_continuation():
    env = make_env("cube_in_bowl", image_size=0, seed=5)
    env.reset()
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(25, 5)).astype(np.float32)
    for a in actions[:10]:
        env.step(a)
    snap = env.get_state()
    first = [env.step(a)[0]["state"] for a in actions[10:]]
    other = make_env("cube_out_of_bowl", image_size=0, seed=99)  # another task and scene
    other.reset()
    other.set_state(snap)
    assert other.task.name == "cube_in_bowl"
    again = [other.step(a)[0]["state"] for a in actions[10:]]
    np.testing.assert_array_equal(np.array(first), np.array(again))
    assert not np.allclose(first[0], first[-1])  # the arm did move


def test_seed_given_to_make_env_is_used_by_first_reset():
    a, _ = make_env("cube_left", image_size=0, seed=11).reset()
    b, _ = make_env("cube_left", image_size=0).reset(seed=11)
    np.testing.assert_array_equal(a["state"], b["state"])


@pytest.mark.parametrize("size", [64, 100, 128])
def test_observation_shapes_and_dtypes(size):
    env = make_env("cube_in_bowl", image_size=size, seed=0)
    obs, info = env.reset()
    assert obs["image"].shape == (size, size, 3) and obs["image"].dtype == np.uint8
    assert obs["image"].std() > 5, "the rendered frame must show a scene, not a flat colour"
    assert obs["proprio"].shape == (PROPRIO_DIM,) and obs["proprio"].dtype == np.float32
    assert obs["state"].shape == (STATE_DIM,) and obs["state"].dtype == np.float32
    assert obs["instruction"] == TASKS["cube_in_bowl"].instruction
    assert env.observation_space.contains(obs)
    assert info["success"] is False
    env.close()


def test_state_only_env_has_no_image():
    env = make_env("cube_in_bowl", image_size=0, seed=0)
    obs, _ = env.reset()
    assert "image" not in obs and "image" not in env.observation_space.spaces
    with pytest.raises(ValueError, match="image_size"):
        make_env("cube_in_bowl", image_size=96)


@pytest.mark.parametrize(
    "action, match",
    [
        (np.array([0, 0, np.nan, 0, 0], np.float32), "NaN or infinite"),
        (np.array([np.inf, 0, 0, 0, 0], np.float32), "NaN or infinite"),
        (np.zeros(4, np.float32), "shape"),
        (np.zeros((5, 1), np.float32), "shape"),
    ],
)
def test_bad_actions_raise_naming_the_problem(action, match):
    env = make_env("cube_in_bowl", image_size=0, seed=0)
    env.reset()
    before = env.joint_positions()
    with pytest.raises(ActionError, match=match):
        env.step(action)
    assert isinstance(ActionError("x"), ValueError)
    np.testing.assert_array_equal(env.joint_positions(), before)  # nothing was executed
    with pytest.raises(ActionError, match="shape"):
        env.step_joint_targets(np.zeros(6), 0.0)
    with pytest.raises(ActionError, match="NaN"):
        env.step_joint_targets(np.full(5, np.nan), 0.0)


def test_unknown_task_lists_known_tasks():
    with pytest.raises(UnknownTaskError, match="cube_in_bowl.*cube_out_of_bowl"):
        make_env("stack_the_blocks")
    env = make_env("cube_in_bowl", image_size=0)
    with pytest.raises(UnknownTaskError, match="known tasks"):
        env.set_task("nope")
    with pytest.raises(UnknownTaskError):
        task_pair("nope")


def test_task_pairs_are_each_others_reverse():
    assert task_pair("cube_bowl") == ("cube_in_bowl", "cube_out_of_bowl")
    assert task_pair("cube_out_of_bowl") == ("cube_in_bowl", "cube_out_of_bowl")
    assert task_pair("cube_left_right") == ("cube_left", "cube_right")
    for name, t in TASKS.items():
        assert TASKS[t.reverse].reverse == name
        assert t.instruction != TASKS[t.reverse].instruction


def _settle(env, gripper=-1.0, steps=3):
    for _ in range(steps):
        out = env.step(np.array([0, 0, 0, 0, gripper], np.float32))
    return out


def test_success_detection_from_ground_truth():
    env = make_env("cube_in_bowl", image_size=0, seed=0)
    env.reset()
    bowl = env.bowl_pos()
    # cube on the table, far from the bowl: neither in it ...
    env.set_scene([0.18, 0.18, CUBE_HALF], bowl)
    assert not env.success()
    env.set_task("cube_left")  # ... but on the left side
    _, reward, terminated, _, info = _settle(env)
    assert info["success"] and terminated and reward == 1.0
    env.set_task("cube_right")
    assert not env.success()
    # cube dropped into the bowl, gripper open: in the bowl, not out of it
    env.set_task("cube_in_bowl")
    env.set_scene([bowl[0], bowl[1], BOWL_FLOOR_TOP + CUBE_HALF + 0.01], bowl)
    obs, reward, terminated, truncated, info = _settle(env)
    assert info["success"] and terminated and not truncated and reward == 1.0
    np.testing.assert_allclose(obs["state"][S_BOWL], bowl)
    env.set_task("cube_out_of_bowl")
    assert not env.success()
    # in the bowl but the gripper closed: not "put" yet
    env.set_task("cube_in_bowl")
    _, reward, terminated, _, info = _settle(env, gripper=1.0, steps=4)
    assert env.gripper_opening() < 0.5 and not info["success"] and reward == 0.0 and not terminated
    # held above the bowl (above the rim): not in it
    env.set_scene([bowl[0], bowl[1], 0.2], bowl)
    assert not env.success()


def test_truncation_at_time_limit():
    env = make_env("cube_in_bowl", image_size=0, seed=0, max_episode_steps=4)
    env.reset()
    for t in range(4):
        _, reward, terminated, truncated, info = env.step(np.zeros(5, np.float32))
        assert reward == 0.0 and not terminated
        assert truncated == (t == 3)
    assert info["elapsed_steps"] == 4


def test_reset_free_keeps_scene_and_full_reset_randomises():
    env = make_env("cube_out_of_bowl", image_size=0, seed=1)
    obs0, _ = env.reset()
    for _ in range(5):
        env.step(np.array([0.5, 0.5, 0.2, 0.3, -1], np.float32))
    q, cube = env.joint_positions(), env.cube_pos()
    env.set_task("cube_in_bowl")
    obs, info = env.reset(options={"full": False})
    np.testing.assert_array_equal(env.joint_positions(), q)
    np.testing.assert_array_equal(env.cube_pos(), cube)
    assert obs["instruction"] == TASKS["cube_in_bowl"].instruction and info["elapsed_steps"] == 0
    obs, _ = env.reset()  # full: cube on the table (the start of cube_in_bowl), elsewhere
    assert obs["state"][S_CUBE][2] < CUBE_HALF + 0.003
    assert not np.allclose(obs["state"][S_CUBE], cube, atol=1e-3)


def test_homing_the_arm_keeps_the_scene_and_lets_go_of_a_held_cube():
    from robot_calql.sim.demonstrators import ScriptedDemonstrator
    from robot_calql.sim.env import HOME_EE

    env = make_env("cube_in_bowl", image_size=0, seed=3)
    obs, _ = env.reset()
    demo = ScriptedDemonstrator("cube_in_bowl", noise=0.0, rng=np.random.default_rng(0))
    for _ in range(60):  # carry the cube up in the air
        obs, *_ = env.step(demo.act(obs["state"]))
        if demo.phase == "carry":
            break
    cube, bowl = env.cube_pos(), env.bowl_pos()
    assert cube[2] > CUBE_HALF + 0.03 and env.gripper_opening() < 0.8, "the cube should be held up"
    obs, info = env.reset(options={"full": False, "home": True})
    ee, _ = env.ee_pose()
    assert np.linalg.norm(ee - HOME_EE) < 0.04 and env.gripper_opening() > 0.9
    assert env.cube_pos()[2] < CUBE_HALF + 0.005, "the released cube lands on the table"
    assert np.linalg.norm(env.cube_pos()[:2] - cube[:2]) < 0.03  # where it was let go
    np.testing.assert_array_equal(env.bowl_pos(), bowl)
    assert info["elapsed_steps"] == 0 and np.allclose(obs["state"][S_CUBE], env.cube_pos())
    resting = env.cube_pos()
    env.home_arm()  # a cube on the table stays put
    np.testing.assert_allclose(env.cube_pos(), resting, atol=1e-3)


def test_dropped_start_lands_the_cube_in_the_bowl_tipped_or_leaning():
    from robot_calql.sim.tasks import cube_in_bowl

    def tilt(env):
        q = env.cube_quat()
        return float(np.hypot(q[1], q[2]))  # 0 for a cube lying flat (a rotation about z only)

    dropped = make_env("cube_out_of_bowl", image_size=0, seed=0, dropped_start=1.0)
    flat = make_env("cube_out_of_bowl", image_size=0, seed=0)
    tilts = []
    for seed in range(12):
        dropped.reset(seed=seed)
        assert cube_in_bowl(dropped.scene()), "a dropped cube starts in the bowl, at rest"
        assert np.abs(dropped.data.qvel[dropped._cube_dof:dropped._cube_dof + 6]).max() < 0.05
        tilts.append(tilt(dropped))
        flat.reset(seed=seed)
        assert tilt(flat) < 1e-6 and cube_in_bowl(flat.scene())
    assert sum(t > 0.05 for t in tilts) >= 6, tilts  # most drops leave it tipped or leaning
    # the forward task starts with the cube on the table: nothing is dropped
    fwd = make_env("cube_in_bowl", image_size=0, seed=0, dropped_start=1.0)
    fwd.reset(seed=3)
    assert tilt(fwd) < 1e-6 and fwd.cube_pos()[2] == pytest.approx(CUBE_HALF, abs=1e-3)
    with pytest.raises(ValueError, match="dropped_start must be a probability"):
        make_env("cube_out_of_bowl", image_size=0, dropped_start=1.5)


def test_rolled_start_lays_the_cube_on_a_random_face_where_the_flat_placement_puts_it():
    def tilt(env):
        q = env.cube_quat()
        return float(np.hypot(q[1], q[2]))

    rolled = make_env("cube_in_bowl", image_size=0, seed=0, rolled_start=1.0)
    flat = make_env("cube_in_bowl", image_size=0, seed=0)
    on_side = 0
    for seed in range(12):
        rolled.reset(seed=seed)
        flat.reset(seed=seed)
        np.testing.assert_allclose(rolled.cube_pos(), flat.cube_pos(), atol=1e-6)  # same placement
        assert tilt(flat) < 1e-6
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, rolled.cube_quat())
        assert np.abs(rot.reshape(3, 3)[2]).max() == pytest.approx(1.0, abs=1e-6), "a face points up"
        rest = rolled.cube_pos()
        rolled.step(np.zeros(5, np.float32))
        np.testing.assert_allclose(rolled.cube_pos(), rest, atol=1e-3)  # and it lies still
        on_side += tilt(rolled) > 0.5
    assert on_side >= 6, on_side  # five faces of six are not the top one
    # a start in the bowl is not rolled
    back = make_env("cube_out_of_bowl", image_size=0, seed=0, rolled_start=1.0)
    back.reset(seed=3)
    assert tilt(back) < 1e-6
    with pytest.raises(ValueError, match="rolled_start must be a probability"):
        make_env("cube_in_bowl", image_size=0, rolled_start=-0.1)


def test_workspace_box_limits_the_end_effector():
    env = make_env("cube_left", image_size=0, seed=0)
    env.reset()
    for direction in ([0, 0, 1], [1, 1, 0], [0, 0, -1], [-1, -1, 0]):
        for _ in range(35):
            env.step(np.array([*direction, 0, -1], np.float32))
        ee, _ = env.ee_pose()
        assert np.all(ee >= WORKSPACE_MIN - 0.01) and np.all(ee <= WORKSPACE_MAX + 0.01), (direction, ee)
    # and it reached the box faces it was pushed against
    assert ee[0] < WORKSPACE_MIN[0] + 0.02 and ee[1] < WORKSPACE_MIN[1] + 0.02


def test_joint_targets_are_clipped_to_joint_limits():
    env = make_env("cube_in_bowl", image_size=0, seed=0)
    env.reset()
    lo, hi = env.kin.lower, env.kin.upper
    for _ in range(15):
        env.step_joint_targets(np.array([3.5, 0.3, 0.5, 2.5, -3.5]), 0.0)
    q = env.joint_positions()
    assert np.all(q <= hi + 0.02) and np.all(q >= lo - 0.02)
    assert q[0] > 3.0 and q[4] < -3.0  # driven to the limits, not beyond


def test_joint_names_match_the_robot_config_and_gym_registration():
    cfg = yaml.safe_load((CONFIG_DIR / "robot" / "sim_standin.yaml").read_text())
    env = make_env("cube_in_bowl", image_size=0)
    assert list(env.joint_names) == cfg["joints"]
    np.testing.assert_allclose(env.kin.lower, cfg["limits"]["joint_lower"])
    np.testing.assert_allclose(env.kin.upper, cfg["limits"]["joint_upper"])
    genv = gym.make(ENV_ID, task="cube_right", image_size=0)
    obs, _ = genv.reset(seed=0)
    assert obs["instruction"] == TASKS["cube_right"].instruction
    genv.close()


def test_needs_reset_when_the_cube_is_out_of_reach():
    env = make_env("cube_in_bowl", image_size=0, seed=0)
    _, info = env.reset()
    assert not info["needs_reset"]
    env.set_scene([0.6, 0.0, CUBE_HALF])  # beyond the arm's reach, still on the table
    _, _, _, _, info = env.step(np.zeros(5, np.float32))
    assert info["needs_reset"]
    env.set_scene([0.3, 0.0, -0.2])  # fell off the table
    assert env.needs_reset()
    _, info = env.reset()  # a full reset puts it back
    assert not info["needs_reset"]


def test_passes_gymnasium_env_checker():
    import warnings

    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unbounded proprio/state Boxes are intended
        check_env(make_env("cube_out_of_bowl", image_size=64), skip_render_check=True)


def test_renders_headless_when_the_user_set_no_gl_backend():
    """A shell with no MUJOCO_GL and no display (ssh to the robot PC, CI) still renders: the
    backend must be chosen before mujoco is imported, which `import robot_calql.sim` does."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY")}
    code = ("from robot_calql.sim import make_env; e = make_env('cube_in_bowl', image_size=64, seed=0); "
            "o, _ = e.reset(seed=0); print(o['image'].shape, int(o['image'].std() > 5))")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["(64,", "64,", "3)", "1"]  # a real picture, not a blank frame
