"""Workspace calibration: a recorded joint-state bag -> box -> the safety logic enforces it."""

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from robot_calql import cli
from robot_calql.calibration import CalibrationError
from robot_calql.calibration.workspace import load_workspace, workspace_box
from robot_calql.control.safety import SafetyLimits, check_delta
from robot_calql.sim.kinematics import ARM_JOINTS, ee_positions

JOINTS = list(ARM_JOINTS)


def _sweep(n=120, seed=0) -> np.ndarray:
    """Joint positions of an arm moved by hand over part of its range."""
    rng = np.random.default_rng(seed)
    lo = np.array([-0.5, 0.0, 0.2, 0.5, -0.5])
    hi = np.array([0.5, 0.5, 0.8, 1.2, 0.5])
    return lo + (hi - lo) * rng.random((n, 5))


def _write_bag(path, q: np.ndarray, topic="/joint_states"):
    """A rosbag2 (sqlite3) with JointState messages; names shuffled and a gripper joint added,
    like a real driver, plus an unrelated topic."""
    ts = get_typestore(Stores.ROS2_KILTED if hasattr(Stores, "ROS2_KILTED") else Stores.LATEST)
    JointState = ts.types["sensor_msgs/msg/JointState"]
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    String = ts.types["std_msgs/msg/String"]
    order = [3, 0, 4, 1, 2]  # the driver's own joint order
    with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as w:
        c = w.add_connection(topic, JointState.__msgtype__, typestore=ts)
        s = w.add_connection("/other", String.__msgtype__, typestore=ts)
        for i, qi in enumerate(q):
            t = 1_000_000_000 + i * 20_000_000
            msg = JointState(
                header=Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id=""),
                name=[JOINTS[k] for k in order] + ["gripper"],
                position=np.array([qi[k] for k in order] + [0.01]),
                velocity=np.zeros(0), effort=np.zeros(0))
            w.write(c, t, ts.serialize_cdr(msg, JointState.__msgtype__))
        w.write(s, 1_000_000_000, ts.serialize_cdr(String(data="hi"), String.__msgtype__))


def test_bag_to_box_enforced_by_safety(tmp_path):
    q = _sweep()
    bag = tmp_path / "sweep"
    _write_bag(bag, q)
    out = tmp_path / "cell" / "workspace.yaml"
    assert cli.main(["calibrate-workspace", f"bag={bag}", "margin=0.02", f"out={out}"]) == 0

    pts = ee_positions(q)
    ws = load_workspace(out)  # the safety node's own loader
    np.testing.assert_allclose(ws.min, pts.min(axis=0) - 0.02, atol=1e-4)
    np.testing.assert_allclose(ws.max, pts.max(axis=0) + 0.02, atol=1e-4)
    raw = yaml.safe_load(out.read_text())
    assert raw["frame"] == "base_link" and raw["margin"] == 0.02 and "sweep" in raw["source"]
    assert (out.parent / "workspace_points.png").stat().st_size > 1000

    # the safety logic keeps commands inside the calibrated box
    from omegaconf import OmegaConf

    from robot_calql.config import compose

    robot_limits = OmegaConf.to_container(compose("calibrate_workspace").robot.limits)
    limits = SafetyLimits.from_config(robot_limits)   # the stand-in's: 3 cm max step
    edge = ws.max - np.array([0.01, 0.01, 0.01])
    cmd, problems = check_delta(np.array([0.025, 0.0, 0.0, 0.0, 0.0]), edge, ws, limits)
    assert cmd is not None and any("workspace" in p for p in problems)
    assert ws.contains(edge + cmd[:3])
    assert edge[0] + cmd[0] == pytest.approx(ws.max[0])
    inside = (ws.min + ws.max) / 2
    cmd, problems = check_delta(np.array([0.01, -0.01, 0.0, 0.0, 1.0]), inside, ws, limits)
    assert problems == [] and np.allclose(cmd[:3], [0.01, -0.01, 0.0])


def test_samples_file_gives_the_same_box(tmp_path):
    q = _sweep(n=50, seed=3)
    np.save(tmp_path / "q.npy", q)
    out = tmp_path / "ws.yaml"
    assert cli.main(["calibrate-workspace", f"samples={tmp_path / 'q.npy'}", "margin=0.0",
                     f"out={out}"]) == 0
    lo, hi = workspace_box(ee_positions(q), 0.0)
    ws = load_workspace(out)
    np.testing.assert_allclose(ws.min, lo, atol=1e-4)
    np.testing.assert_allclose(ws.max, hi, atol=1e-4)


def test_errors_are_named(tmp_path, capsys):
    bag = tmp_path / "sweep"
    _write_bag(bag, _sweep(n=5))
    assert cli.main(["calibrate-workspace", f"bag={bag}", "topic=/nope", f"out={tmp_path / 'w.yaml'}"]) == 1
    err = capsys.readouterr().err
    assert "/nope" in err and "/joint_states" in err
    assert cli.main(["calibrate-workspace", f"out={tmp_path / 'w.yaml'}"]) == 1
    assert "exactly one source" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.zeros((4, 3)))
    with pytest.raises(CalibrationError, match=r"\(N, 5\)"):
        from robot_calql.calibration.workspace import read_joint_samples
        read_joint_samples(tmp_path / "bad.npy", 5)
    with pytest.raises(CalibrationError, match="flat"):
        workspace_box(np.tile([0.3, 0.0, 0.1], (10, 1)), 0.0)
    assert not (tmp_path / "w.yaml").exists()
