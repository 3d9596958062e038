"""A second simulated arm from its robot config alone (configs/robot/kestrel6.yaml and its model
files in calibration/kestrel6/): the cell, its kinematics and its demos work through the generic
code, the URDF the nodes use agrees with the MJCF the simulator runs, and no code names the arm."""

import subprocess
from pathlib import Path

import numpy as np
import pytest

from robot_calql.config import REPO_ROOT, ConfigError
from robot_calql.robot_config import RobotConfigError, build_kinematics, load_robot_config
from robot_calql.sim.episodes import dataset_meta, iter_episodes
from robot_calql.sim.kinematics import STANDIN_ARM, ArmKinematics, arm_spec

NAME = "kestrel6"
CFG = REPO_ROOT / "configs" / "robot" / f"{NAME}.yaml"
STANDIN = REPO_ROOT / "configs" / "robot" / "sim_standin.yaml"


def test_no_code_names_the_second_arm():
    out = subprocess.run(["git", "grep", "--untracked", "-il", NAME, "--", "*.py", ":!tests/"], cwd=REPO_ROOT,
                         capture_output=True, text=True)
    assert out.returncode in (0, 1), out.stderr
    assert out.stdout.strip() == "", f"code names the arm: {out.stdout.split()}"


def test_standin_config_gives_the_standin_arm():
    assert arm_spec(STANDIN) == STANDIN_ARM


def test_urdf_and_mjcf_forward_kinematics_agree():
    robot = load_robot_config(CFG)
    urdf = build_kinematics(robot)
    mjcf = ArmKinematics(arm=arm_spec(CFG))
    assert len(robot.joints) == 6 and mjcf.joints == tuple(robot.joints)
    np.testing.assert_allclose(urdf.lower, mjcf.lower)
    np.testing.assert_allclose(urdf.upper, mjcf.upper)
    rng = np.random.default_rng(0)
    worst_pos = worst_rot = 0.0
    for _ in range(200):
        q = rng.uniform(mjcf.lower, mjcf.upper)
        p_u, r_u = urdf.fk(q)
        p_m, r_m = mjcf.fk(q)
        worst_pos = max(worst_pos, float(np.linalg.norm(p_u - p_m)))
        worst_rot = max(worst_rot, float(np.abs(r_u - r_m).max()))
    assert worst_pos < 1e-3 and worst_rot < 1e-3, (worst_pos, worst_rot)


def test_second_arm_cell_observations_and_scripted_demos():
    arm = arm_spec(CFG)
    assert arm.cameras == ("front", "wrist") and len(arm.arm_joints) == 6
    eps = list(iter_episodes("cube_in_bowl", 4, image_size=64, seed=1, arm=arm))
    assert sum(e.success for e in eps) >= 3, [e.success for e in eps]
    ep = eps[0]
    assert ep.proprio.shape[1] == 11 and ep.state.shape[1] == 24
    assert set(ep.camera_images) == {"image_wrist"}
    assert ep.image.shape == ep.camera_images["image_wrist"].shape == (len(ep) + 1, 64, 64, 3)
    assert not np.array_equal(ep.image, ep.camera_images["image_wrist"])  # two views, not one twice
    meta = dataset_meta(64, arm=arm, robot=NAME)
    assert (meta.proprio_dim, meta.state_dim, meta.extra_cameras, meta.robot) == (11, 24, ["wrist"], NAME)
    ep.validate(meta)
    # the other direction too (the cube starts in the bowl)
    back = list(iter_episodes("cube_out_of_bowl", 3, image_size=0, seed=1, arm=arm))
    assert sum(e.success for e in back) >= 2


def test_sim_section_errors_name_the_key(tmp_path):
    import yaml

    data = yaml.safe_load(CFG.read_text())
    bad = {**data, "sim": {**data["sim"], "home_q": [0.0] * 5}}
    with pytest.raises(RobotConfigError, match=r"sim\.home_q: 5 values for 6 joints"):
        load_robot_config(bad)
    with pytest.raises(RobotConfigError, match=r"^robot config 'kestrel6': sim: standin: true needs"):
        load_robot_config({k: v for k, v in data.items() if k != "sim"})
    bad = {**data, "sim": {**data["sim"], "mjcf": str(tmp_path / "none.xml")}}
    with pytest.raises(RobotConfigError, match=r"sim\.mjcf: no file"):
        load_robot_config(bad)
    real = yaml.safe_load((REPO_ROOT / "configs" / "robot" / "widowx250_example.yaml").read_text())
    with pytest.raises(ConfigError, match="no `sim` section"):
        arm_spec(real)
    with pytest.raises(ConfigError, match="sim: home_q has 5 values for the 6 arm joints"):
        arm_spec({**data, "sim": {**data["sim"], "home_q": [0.0] * 5}})


def test_mjcf_without_a_named_joint_is_a_clear_error(tmp_path):
    from dataclasses import replace

    from robot_calql.sim import make_env
    from robot_calql.sim.kinematics import KinematicsError

    arm = replace(arm_spec(CFG), finger_joints=("jaw_a", "jaw_c"))
    with pytest.raises(KinematicsError, match="jaw_c"):
        make_env("cube_in_bowl", image_size=0, arm=arm)
    assert Path(arm.mjcf).is_file()


def test_collect_command_records_the_robots_arm_and_cameras(tmp_path, capsys):
    from robot_calql.cli import main
    from robot_calql.data.dataset import Dataset
    from robot_calql.sim.kinematics import sim_arm

    out = tmp_path / "demos"
    assert main(["collect", f"robot={NAME}", "task=cube_in_bowl", "episodes=2", "image_size=64", f"out={out}"]) == 0
    ds = Dataset(out)
    assert (ds.meta.robot, ds.meta.proprio_dim, ds.meta.state_dim, ds.meta.extra_cameras) == (NAME, 11, 24, ["wrist"])
    ep = ds[0]
    assert ep.camera_images["image_wrist"].shape == ep.image.shape
    # the name a dataset records gives its simulated arm back (pretrain / finetune / evaluate)
    assert sim_arm(ds.meta.robot) == arm_spec(CFG) and sim_arm("sim_standin") == STANDIN_ARM
    assert sim_arm("widowx250_example") == STANDIN_ARM  # a real arm's data: evaluated on the stand-in
