"""The robot config schema (robot_calql.robot_config): the shipped configs pass, every kind of bad
key gets one error naming it, optional keys are optional, and the node set refuses a bad robot
config before any node starts."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from robot_calql.config import ConfigError
from robot_calql.robot_config import (
    OWN_TOPICS,
    RobotConfigError,
    UrdfModel,
    build_kinematics,
    load_robot_config,
    main,
)

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "configs/robot/sim_standin.yaml"
WIDOWX = ROOT / "configs/robot/widowx250_example.yaml"
CONFIGS = ROOT / "configs/robot"

MINIMAL = {  # only the required keys
    "name": "tiny", "control_hz": 10, "frames": {"base": "base", "ee": "tool"},
    "joints": ["a", "b"], "gripper_joint": "g", "gripper_range": [0.0, 1.0],
    "topics": {"image": "/cam", "joint_states": "/js"}, "command_interface": "delta_ee_twist",
    "limits": {"max_translation_step_m": 0.03, "max_rotation_step_rad": 0.2, "camera_width": 64, "camera_height": 64},
}


def _widowx() -> dict:
    return yaml.safe_load(WIDOWX.read_text())


def _set(d: dict, dotted: str, value) -> dict:
    *path, leaf = dotted.split(".")
    for p in path:
        d = d[p]
    if value is _DELETE:
        del d[leaf]
    else:
        d[leaf] = value
    return d


_DELETE = object()


def test_the_shipped_configs_pass():
    s = load_robot_config(STANDIN)
    assert s.standin and s.kinematics == "standin" and s.ee_pose == "topic"
    w = load_robot_config(WIDOWX)
    assert isinstance(w.kinematics, UrdfModel) and w.ee_pose == "fk" and not w.topics.ee_pose
    assert w.kinematics_links() == ("wx250/base_link", "wx250/ee_gripper_link")


def test_the_standin_config_gives_the_simulators_tasks():
    """The tasks moved from the simulator's registry to the YAML: same pairs, labels, instructions."""
    from robot_calql.sim.tasks import PAIRS, TASKS

    s = load_robot_config(STANDIN)
    assert set(s.tasks) == set(PAIRS)
    for name, (fwd, bwd) in PAIRS.items():
        pair = s.tasks[name]
        assert (pair.forward.label, pair.backward.label) == (fwd, bwd)
        assert (pair.forward.instruction, pair.backward.instruction) == (TASKS[fwd].instruction, TASKS[bwd].instruction)
    assert s.task_pair("cube_right") == ("cube_left_right", s.tasks["cube_left_right"])
    with pytest.raises(RobotConfigError, match="task 'stack' is not in its `tasks`.*cube_bowl"):
        s.task_pair("stack")


def test_optional_keys_are_optional_and_get_their_defaults():
    r = load_robot_config(MINIMAL)
    assert r.camera_hz == 30.0 and r.image_size == 64 and r.ee_pose == "topic" and r.kinematics is None
    assert (r.action_scale.translation_m, r.action_scale.rotation_rad) == (0.02, 0.15)
    p = r.node_params()
    assert p["topics"]["policy_command"] == OWN_TOPICS["policy_command"]  # robot_calql's own topic: default
    assert "ee_pose" not in p["topics"] and "calibration" not in p and "tasks" not in p  # unset: left out
    assert p["action_scale"] == {"translation_m": 0.02, "rotation_rad": 0.15}


@pytest.mark.parametrize("key,value,match", [
    # unknown keys, at the top and nested
    ("contol_hz", 10, r"contol_hz: unknown key \(known: name, control_hz"),
    ("topics.imagee", "/cam", r"topics\.imagee: unknown key"),
    ("limits.max_joint_stp_rad", 0.2, r"limits\.max_joint_stp_rad: unknown key"),
    ("kinematics.urdf_file", "x.urdf", r"kinematics\.urdf_file: unknown key"),
    ("tasks.cube_bowl.forward.instrution", "x", r"tasks\.cube_bowl\.forward\.instrution: unknown key"),
    # wrong types
    ("control_hz", "fast", r"control_hz: must be a number, got 'fast'"),
    ("joints", "waist", r"joints: must be a list"),
    ("limits.joint_lower", [-3.1, "low", 0, 0, 0], r"limits\.joint_lower\[1\]: must be a number"),
    ("image_size", 64.5, r"image_size: must be an integer"),
    ("standin", "yes", r"standin: must be true or false"),
    ("topics", ["/a"], r"topics: must be a mapping"),
    # missing required keys
    ("joints", _DELETE, r"joints: missing required key"),
    ("frames.base", _DELETE, r"frames\.base: missing required key"),
    ("kinematics.urdf", _DELETE, r"kinematics\.urdf: missing required key"),
    # values outside their choices
    ("command_interface", "twist", r"command_interface: 'twist' is not one of delta_ee_twist, joint_position_array"),
    ("ee_pose", "odom", r"ee_pose: 'odom' is not one of topic, fk, tf"),
    ("kinematics", "widowx", r"kinematics: must be one of standin or a mapping \(urdf, base, ee\) or null"),
    # checks across keys
    ("kinematics.urdf", "no/such.urdf", r"kinematics\.urdf: no file no/such\.urdf"),
    ("limits.joint_upper", [1.0, 1.0], r"limits\.joint_upper: 2 values for 5 joints"),
    ("gripper_range", [0.02, 0.02], r"gripper_range: must be \[closed, open\]"),
    ("cameras", {"front cam": {"topic": "/a"}}, r"cameras\.front cam: a camera name must be a plain identifier"),
    ("cameras", {"front": {"topic": "/a", "crop": {"x": 0, "y": 0, "width": 0, "height": 5}}}, r"cameras\.front\.crop"),
    ("cameras", {"front": {"compressed": True}}, r"cameras\.front\.topic: missing required key"),
])
def test_a_bad_key_gets_one_error_naming_it(key, value, match):
    cfg = _widowx()
    _set(cfg, key, value)
    with pytest.raises(RobotConfigError, match=r"^robot config 'widowx250_example': " + match) as e:
        load_robot_config(cfg)
    assert "\n" not in str(e.value)


def test_fk_pose_without_kinematics_is_refused():
    cfg = _widowx()
    cfg["kinematics"] = None
    with pytest.raises(RobotConfigError, match="ee_pose: fk needs `kinematics`"):
        load_robot_config(cfg)


def test_the_cameras_section_of_the_multi_camera_shape_passes():
    cfg = _widowx()
    cfg["cameras"] = {"front": {"topic": "/camera/color/image_raw/compressed", "compressed": True},
                      "wrist": {"topic": "/wrist/image_raw", "crop": {"x": 0, "y": 0, "width": 480, "height": 480}},
                      "side": {"topic": "/side/image_raw", "crop": "center"}}
    r = load_robot_config(cfg)
    assert list(r.cameras) == ["front", "wrist", "side"] and r.cameras["wrist"].crop.width == 480
    assert r.node_params()["cameras"]["front"] == {"topic": "/camera/color/image_raw/compressed", "compressed": True}


def test_kinematics_standin_and_urdf_build():
    from robot_calql.control.urdf_kinematics import UrdfKinematics
    from robot_calql.sim.kinematics import ArmKinematics

    assert isinstance(build_kinematics(load_robot_config(STANDIN)), ArmKinematics)
    kin = build_kinematics(load_robot_config(WIDOWX).node_params())  # as a node gets it
    assert isinstance(kin, UrdfKinematics) and kin.joints == tuple(load_robot_config(WIDOWX).joints)
    cfg = _widowx()
    cfg["kinematics"]["ee"] = "wx250/tool_link"
    with pytest.raises(RobotConfigError, match="kinematics: URDF widowx250.urdf has no link 'wx250/tool_link'"):
        build_kinematics(load_robot_config(cfg))


def test_the_check_command(capsys, tmp_path):
    assert main([str(WIDOWX)]) == 0
    out = capsys.readouterr().out
    assert "robot config 'widowx250_example': OK" in out and "EE at zero joints [0.4584, 0.0, 0.3607]" in out
    bad = _widowx()
    bad["command_interface"] = "servo"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert main([str(path)]) == 1
    assert "command_interface: 'servo' is not one of" in capsys.readouterr().err
    assert main(["--keys"]) == 0
    assert "kinematics.urdf: a string (required)" in capsys.readouterr().out


# ------------------------------------------------------------------ the node set checks first
def _node_set(*overrides):
    sys.path.insert(0, str(ROOT / "ros_nodes"))
    pytest.importorskip("rclpy")
    from robot_calql_ros.nodeset import node_set

    from robot_calql.config import compose

    return node_set(compose("launch_finetune", list(overrides)))


@pytest.mark.parametrize("overrides,match", [
    (["robot.command_interface=servo"], r"robot config 'sim_standin': command_interface: 'servo' is not one of"),
    (["+robot.topics.imagee=/cam"], r"topics\.imagee: unknown key"),
    (["robot.kinematics=null", "robot.command_interface=joint_trajectory"],
     r"command_interface joint_trajectory needs `kinematics`"),
    (["task=stack"], r"task 'stack' is not in its `tasks`"),
    (["sim=false", "robot=widowx250_example", "reward.model=/x", "robot.limits.joint_upper=[3.1,2.5,1.6,2.14,3.1]"],
     r"limits\.joint_upper: \['shoulder'\] beyond the kinematics model's limits"),
])
def test_the_node_set_refuses_a_bad_robot_config(overrides, match):
    with pytest.raises(ConfigError, match=match):
        _node_set(*overrides)


def test_widowx_without_joint_limits_takes_the_urdfs():
    specs = {s.name: s for s in _node_set("sim=false", "robot=widowx250_example", "reward.model=/x",
                                          "~robot.limits.joint_lower", "~robot.limits.joint_upper")}
    lim = specs["safety"].params["robot"]["limits"]
    assert lim["joint_lower"][1] == pytest.approx(-1.88496) and lim["joint_upper"][2] == pytest.approx(1.6057)
    assert Path(specs["safety"].params["robot"]["kinematics"]["urdf"]).is_file()  # absolute for every process


def test_the_launcher_stops_at_once_naming_the_key(tmp_path):
    """`robot-calql launch finetune` with a bad robot key: one error line, exit code != 0, no node."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "ros_nodes"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "robot_calql.cli", "launch", "finetune", "sim=true",
                           "robot.ee_pose=odom", f"run_dir={tmp_path / 'run'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "ee_pose: 'odom' is not one of topic, fk, tf" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr and "started" not in proc.stderr + proc.stdout


def test_a_robot_config_can_start_from_another_and_reads_as_hydra_composes_it(tmp_path):
    """configs/robot/sim_standin_wrist.yaml is sim_standin.yaml plus a wrist camera through
    `defaults`: the plain file readers (robot_config, the simulator's arm) give what Hydra's
    composition gives, and a missing or circular base is named."""
    from omegaconf import OmegaConf

    from robot_calql.config import compose, read_robot_file
    from robot_calql.sim.kinematics import sim_arm

    wrist = read_robot_file(CONFIGS / "sim_standin_wrist.yaml")
    base = read_robot_file(CONFIGS / "sim_standin.yaml")
    assert OmegaConf.to_container(compose("launch_finetune", ["robot=sim_standin_wrist"]).robot) == wrist
    assert wrist["sim"]["cameras"] == ["front", "wrist"] and list(wrist["cameras"]) == ["front", "wrist"]
    assert wrist["limits"] == base["limits"] and wrist["tasks"] == base["tasks"]  # the rest is the base's
    assert load_robot_config(CONFIGS / "sim_standin_wrist.yaml").name == "sim_standin_wrist"
    assert sim_arm("sim_standin_wrist").cameras == ("front", "wrist")

    (tmp_path / "a.yaml").write_text("defaults: [b]\nname: a\n")
    with pytest.raises(ConfigError, match=r"robot config file not found: .*b\.yaml"):
        read_robot_file(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("defaults: [a]\nname: b\n")
    with pytest.raises(ConfigError, match="its defaults include it again"):
        read_robot_file(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("name: b\ncontrol_hz: 5\n")
    assert read_robot_file(tmp_path / "a.yaml") == {"name": "a", "control_hz": 5}
