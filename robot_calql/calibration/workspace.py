"""The end-effector safety box from joint states: `robot-calql calibrate-workspace`.

Move the arm by hand (or teleop) through the whole region it may use, recording joint states,
then:

    robot-calql calibrate-workspace bag=recordings/workspace_sweep      # a rosbag2 (sqlite3/mcap)
    robot-calql calibrate-workspace samples=sweep.npy                    # (N, J) joint positions
    robot-calql calibrate-workspace live=true duration_s=60              # listen on ROS 2 now

Every joint sample goes through forward kinematics (`kinematics:`, a `module:function` mapping
(N, J) joint positions in the robot config's joint order to (N, 3) positions; the stand-in's is
robot_calql.sim.kinematics:ee_positions, a real arm names one built from its MJCF/URDF). The box is
min/max of the points, grown by `margin` metres (negative shrinks it), written atomically to
`<robot.calibration>/workspace.yaml`, plus `workspace_points.png` (three projections of the
points and the box).

The file's reader `load_workspace` and its validation `Workspace` live here too; the safety node
(robot_calql.control.safety) enforces the box they give.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from robot_calql.calibration import (
    CalibrationError,
    calibration_dir,
    read_yaml,
    resolve_out,
    write_yaml_atomic,
)
from robot_calql.ros_process import ros_unavailable, run_ros_module

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the file format
class SafetyError(ValueError):
    """A safety configuration (workspace box, robot limits) that is missing or makes no sense."""


@dataclass(frozen=True)
class Workspace:
    """Axis-aligned box for the end-effector position in `frame` (metres); the safety node
    (robot_calql.control.safety) keeps the arm inside it."""

    min: np.ndarray
    max: np.ndarray
    frame: str = "base_link"

    def __post_init__(self):
        lo, hi = np.asarray(self.min, float), np.asarray(self.max, float)
        if lo.shape != (3,) or hi.shape != (3,):
            raise SafetyError(f"workspace min/max must be [x, y, z], got {lo.tolist()} / {hi.tolist()}")
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise SafetyError("workspace min/max must be finite")
        if np.any(lo >= hi):
            raise SafetyError(f"workspace min {lo.tolist()} must be below max {hi.tolist()} on every axis")
        object.__setattr__(self, "min", lo)
        object.__setattr__(self, "max", hi)

    def contains(self, p: np.ndarray, tol: float = 1e-9) -> bool:
        p = np.asarray(p, float)
        return bool(np.all(p >= self.min - tol) and np.all(p <= self.max + tol))


def load_workspace(path: str | os.PathLike) -> Workspace:
    """Read calibration/<cell>/workspace.yaml; raise SafetyError naming what is wrong."""
    d = read_yaml(path, "workspace", SafetyError, " (write it with robot-calql calibrate-workspace)")
    if "min" not in d or "max" not in d:
        raise SafetyError(f"workspace file {path} needs keys 'min' and 'max' ([x, y, z] in metres)")
    try:
        return Workspace(np.asarray(d["min"], float), np.asarray(d["max"], float),
                         str(d.get("frame", "base_link")))
    except (TypeError, ValueError) as e:
        raise SafetyError(f"workspace file {path}: {e}") from None


# ----------------------------------------------------------------------------- joint sources
def read_joint_states_bag(path: str | os.PathLike, topic: str, joint_names: list[str]) -> np.ndarray:
    """(N, J) joint positions from the sensor_msgs/JointState messages on `topic` of a rosbag2,
    reordered to `joint_names` (the message's own `name` field says which is which)."""
    from rosbags.highlevel import AnyReader

    path = Path(path)
    if not path.exists():
        raise CalibrationError(f"bag not found: {path}")
    rows = []
    try:
        with AnyReader([path]) as reader:
            conns = [c for c in reader.connections if c.topic == topic]
            if not conns:
                topics = sorted({c.topic for c in reader.connections})
                raise CalibrationError(f"bag {path} has no topic {topic} (it has: {', '.join(topics)})")
            for conn, _, raw in reader.messages(connections=conns):
                msg = reader.deserialize(raw, conn.msgtype)
                index = {n: i for i, n in enumerate(msg.name)}
                missing = [n for n in joint_names if n not in index]
                if missing:
                    if len(rows) == 0 and len(msg.name) and not set(joint_names) & set(index):
                        raise CalibrationError(
                            f"JointState on {topic} names joints {list(msg.name)}, none of the "
                            f"robot's {joint_names}")
                    continue  # e.g. a gripper-only JointState on the same topic
                pos = np.asarray(msg.position, dtype=np.float64)
                rows.append([pos[index[n]] for n in joint_names])
    except CalibrationError:
        raise
    except Exception as e:  # rosbags raises its own errors for broken bags
        raise CalibrationError(f"cannot read bag {path}: {e}") from None
    if not rows:
        raise CalibrationError(f"bag {path}: no JointState on {topic} with all joints {joint_names}")
    return np.asarray(rows)


def read_joint_samples(path: str | os.PathLike, n_joints: int) -> np.ndarray:
    """(N, J) joint positions from a .npy, .csv (one sample per row) or .json (list of lists)."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"joint samples file not found: {path}")
    try:
        if path.suffix == ".npy":
            q = np.load(path)
        elif path.suffix == ".csv":
            q = np.loadtxt(path, delimiter=",", ndmin=2)
        elif path.suffix == ".json":
            q = np.asarray(json.loads(path.read_text()), dtype=np.float64)
        else:
            raise CalibrationError(f"joint samples {path}: use .npy, .csv or .json")
    except (ValueError, OSError) as e:
        raise CalibrationError(f"cannot read joint samples {path}: {e}") from None
    q = np.asarray(q, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != n_joints or len(q) == 0:
        raise CalibrationError(f"joint samples {path}: expected shape (N, {n_joints}), got {q.shape}")
    return q


# ----------------------------------------------------------------------------- the box
def load_kinematics(spec: str):
    """Resolve `module:function` to the forward-kinematics function (N, J) -> (N, 3)."""
    if not spec or ":" not in str(spec):
        raise CalibrationError(f"kinematics must be 'module:function', got {spec!r}")
    mod, fn = str(spec).split(":", 1)
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise CalibrationError(f"cannot load kinematics {spec}: {e}") from None


def workspace_box(points: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box around the points, grown by `margin` on every side."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise CalibrationError(f"need end-effector points of shape (N, 3), got {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise CalibrationError("end-effector points contain NaN or inf (bad joint states?)")
    lo, hi = pts.min(axis=0) - margin, pts.max(axis=0) + margin
    if np.any(hi - lo <= 1e-6):
        flat = [ax for ax, d in zip("xyz", hi - lo, strict=True) if d <= 1e-6]
        raise CalibrationError(
            f"the workspace box is flat along {', '.join(flat)}: move the arm through the whole "
            "region (or use a larger margin)")
    return lo, hi


def workspace_dict(lo, hi, margin: float, frame: str, source: str) -> dict:
    """The workspace.yaml mapping (docs/architecture.md, "Calibration files")."""
    r = lambda v: [round(float(x), 5) for x in v]  # noqa: E731
    return {"frame": frame, "min": r(lo), "max": r(hi), "margin": float(margin), "source": source}


def plot_workspace(points: np.ndarray, lo, hi, path: Path, title: str = "") -> Path:
    """PNG with the points and the box in three projections (top x-y, side x-z, front y-z)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.3))
    for ax, (i, j) in zip(axes, [(0, 1), (0, 2), (1, 2)], strict=True):
        ax.plot(points[:, i], points[:, j], ".", ms=2, alpha=0.5, label="end effector")
        ax.add_patch(Rectangle((lo[i], lo[j]), hi[i] - lo[i], hi[j] - lo[j], fill=False,
                               ec="red", lw=1.5, label="workspace box"))
        ax.set_xlabel(f"{'xyz'[i]} [m]")
        ax.set_ylabel(f"{'xyz'[j]} [m]")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(title or "workspace calibration")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- live (ROS 2)
def record_live_joint_states(topic: str, joint_names: list[str], duration_s: float) -> np.ndarray:
    """Listen to sensor_msgs/JointState on `topic` for `duration_s` seconds; (N, J) positions.

    The ROS side lives in ros_nodes: `python -m robot_calql_ros.joint_recorder` runs in a child
    process, so this library never imports rclpy. Needs a sourced ROS 2 or the [ros] extra.
    """
    why = ros_unavailable()
    if why is not None:
        raise CalibrationError(
            f"live=true needs rclpy and ros_nodes ({why}); source ROS 2 or record a bag and use bag=<path>")
    with tempfile.TemporaryDirectory(prefix="calibrate_workspace_") as tmp:
        out = Path(tmp) / "joint_states.npy"
        rc = run_ros_module("joint_recorder", ["--topic", topic, "--joints", *joint_names,
                                               "--duration-s", float(duration_s), "--out", out])
        if rc != 0 or not out.is_file():
            raise CalibrationError(f"recording {topic} failed (robot_calql_ros.joint_recorder exit {rc}; "
                                   "its error is above)")
        q = np.load(out)
    if len(q) == 0:
        raise CalibrationError(f"no JointState with joints {joint_names} on {topic} in {duration_s} s")
    return q


# ----------------------------------------------------------------------------- command
def main(cfg) -> int:
    """`robot-calql calibrate-workspace bag=<path> | samples=<file> | live=true [margin=0.02]`."""
    robot = cfg.robot
    joints = [str(j) for j in robot.joints]
    topic = str(cfg.get("topic") or robot.topics.joint_states)
    sources = [k for k in ("bag", "samples") if cfg.get(k)] + (["live"] if cfg.get("live") else [])
    if len(sources) != 1:
        raise CalibrationError("give exactly one source: bag=<rosbag2>, samples=<npy/csv/json> "
                               f"or live=true (got {sources or 'none'})")
    if cfg.get("bag"):
        q = read_joint_states_bag(os.path.expanduser(str(cfg.bag)), topic, joints)
        source = f"bag {Path(str(cfg.bag)).resolve()} topic {topic}"
    elif cfg.get("samples"):
        q = read_joint_samples(os.path.expanduser(str(cfg.samples)), len(joints))
        source = f"samples {Path(str(cfg.samples)).resolve()}"
    else:
        q = record_live_joint_states(topic, joints, float(cfg.duration_s))
        source = f"live {topic} for {float(cfg.duration_s):g} s"
    fk = load_kinematics(str(cfg.kinematics))
    pts = np.asarray(fk(q), dtype=np.float64).reshape(len(q), -1)
    margin = float(cfg.margin)
    lo, hi = workspace_box(pts, margin)
    cell = calibration_dir(robot) if robot.get("calibration") else None
    out = resolve_out(cfg.get("out"), cell, "workspace.yaml")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    data = workspace_dict(lo, hi, margin, str(robot.frames.base), f"{source}, {len(q)} samples, {stamp}")
    Workspace(lo, hi, data["frame"])  # the safety node's own validation, before anything is written
    header = ("# End-effector safety box (metres, base frame, margin applied), from\n"
              "# robot-calql calibrate-workspace. The safety node enforces it.\n")
    plot = plot_workspace(pts, lo, hi, out.with_name("workspace_points.png"),
                          f"{len(q)} samples, margin {margin:g} m")
    write_yaml_atomic(out, data, header)
    print(f"calibrate-workspace: {len(q)} joint samples -> box min {data['min']} max {data['max']} "
          f"(margin {margin:g} m, frame {data['frame']})")
    print(f"calibrate-workspace: wrote {out} and {plot.name}")
    return 0
