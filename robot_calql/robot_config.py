"""The robot config schema: configs/robot/<name>.yaml as typed dataclasses, checked before any node starts.

`load_robot_config(dict_or_path)` checks a robot config (a dict, an OmegaConf node, or a YAML
file, its `defaults` applied as Hydra applies them: robot_calql.config.read_robot_file) against
the dataclasses below and returns a `RobotConfig`; a config that does not fit
raises RobotConfigError, one line naming the key: an unknown key, a wrong type, a missing
required key, a value outside its choices. Every default of a robot config is the default of
its field here, and every field has a one-line description. Optional keys may be left out.

`RobotConfig.node_params()` is the plain dict the ROS nodes get as parameter `robot` (defaults
filled in, unset keys left out); `build_kinematics(robot)` is the robot's kinematics model
(`kinematics: standin` or a URDF, robot_calql.control.urdf_kinematics).

Check a file with one command: `python -m robot_calql.robot_config configs/robot/<name>.yaml`.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from robot_calql.config import REPO_ROOT, ConfigError, data_path

CommandInterface = Literal["delta_ee_twist", "joint_position_array", "joint_trajectory"]
EePoseSource = Literal["topic", "fk", "tf"]
COMMAND_INTERFACES: tuple[str, ...] = typing.get_args(CommandInterface)
EE_POSE_SOURCES: tuple[str, ...] = typing.get_args(EePoseSource)

# robot_calql's own topics: (the name each gets when the robot config does not give one, what it
# carries); each is a field of `Topics` (a new one: one line here)
_OWN_TOPICS = {
    "policy_command": ("/robot_calql/policy_command", "policy -> safety (unchecked)"),
    "command_status": ("/robot_calql/command_status", "the safety node's verdict per command (String JSON)"),
    "gripper_command": ("/robot_calql/gripper_command", "gripper command (Float64)"),
    "instruction": ("/robot_calql/instruction", "the running task's instruction"),
    "episode_event": ("/robot_calql/episode_event", "episode events (String JSON)"),
    "success": ("/robot_calql/success", "debounced success flag of the reward node"),
    "success_prob": ("/robot_calql/success_prob", "the classifier's success probability"),
    "estop": ("/robot_calql/estop", "e-stop (Bool; true latches a hold)"),
    "transitions": ("/robot_calql/transitions", "policy -> learner transitions"),
    "weights": ("/robot_calql/policy_weights", "learner -> policy weights"),
    "human_help": ("/robot_calql/human_help", "the controller asks for a human"),
    "learner_status": ("/robot_calql/learner_status", "the learner's counters (String JSON)"),
    "teleop_command": ("/robot_calql/teleop_command", "a human's commands while taking over"),
}
OWN_TOPICS = {k: v[0] for k, v in _OWN_TOPICS.items()}


class RobotConfigError(ConfigError):
    """A robot config that does not fit the schema; the message names the key."""


def _doc(text: str) -> dict:
    return {"doc": text}


@dataclass
class Frames:
    """TF frame names of the arm."""

    base: str = field(metadata=_doc("the arm's base frame: EE poses, the workspace box and twists are in it"))
    ee: str = field(metadata=_doc("the end-effector frame (the point between the fingertips)"))
    camera: str | None = field(default=None, metadata=_doc("the camera's optical frame (informational)"))


@dataclass
class _RobotTopics:
    """Topic names. The robot's own topics have no default (absent: the robot has none, and a node
    that needs one refuses to start naming it); robot_calql's own topics default to OWN_TOPICS."""

    image: str | None = field(default=None, metadata=_doc("camera frames (sensor_msgs/Image); `cameras` replaces it"))
    camera_info: str | None = field(default=None, metadata=_doc("sensor_msgs/CameraInfo of the camera"))
    joint_states: str | None = field(default=None, metadata=_doc("sensor_msgs/JointState of the arm and gripper"))
    command: str | None = field(default=None, metadata=_doc("what the safety node sends to the arm driver"))
    sent_command: str | None = field(default=None, metadata=_doc("echo of what the safety node actually sent"))
    ee_pose: str | None = field(default=None, metadata=_doc(
        "geometry_msgs/PoseStamped of the EE in the base frame (with ee_pose: topic)"))
    ground_truth_success: str | None = field(default=None, metadata=_doc("stand-in only: ground-truth success"))
    expert_action: str | None = field(default=None, metadata=_doc("stand-in only: the scripted demonstrator's action"))
    goal_distance: str | None = field(default=None, metadata=_doc(
        "stand-in only: how far the try is from its goal (the simulated human's no-progress rule)"))
    sim_state: str | None = field(default=None, metadata=_doc("stand-in only: privileged state"))


# the robot's topics, then robot_calql's own (from _OWN_TOPICS)
Topics = dataclasses.make_dataclass(
    "Topics", [(k, str, field(default=d, metadata=_doc(doc))) for k, (d, doc) in _OWN_TOPICS.items()],
    bases=(_RobotTopics,), namespace={"__doc__": _RobotTopics.__doc__, "__module__": __name__})


@dataclass
class Crop:
    """A crop region of a camera frame, in pixels."""

    x: int = field(metadata=_doc("left column"))
    y: int = field(metadata=_doc("top row"))
    width: int = field(metadata=_doc("width in pixels"))
    height: int = field(metadata=_doc("height in pixels"))


@dataclass
class Camera:
    """One camera of `cameras` (the first one is the policy's main view)."""

    topic: str = field(metadata=_doc("the image topic"))
    compressed: bool | None = field(default=None, metadata=_doc(
        "sensor_msgs/CompressedImage instead of Image (absent: when the topic ends in /compressed)"))
    crop: Union[Crop, Literal["center", "none"], None] = field(default=None, metadata=_doc(
        "crop before the resize: {x, y, width, height}, center or none (absent, main camera: the calibration's "
        "crop.yaml); robot_calql.control.cameras"))


@dataclass
class UrdfModel:
    """Kinematics from a URDF (Pinocchio): the chain base -> ee, joints named as in `joints`."""

    urdf: str = field(metadata=_doc("the URDF file (relative paths: from the working folder, else the repository)"))
    base: str | None = field(default=None, metadata=_doc("the URDF's base link (default: frames.base)"))
    ee: str | None = field(default=None, metadata=_doc("the URDF's end-effector link (default: frames.ee)"))


@dataclass
class ActionScale:
    """What a normalised action of 1.0 means per control step."""

    translation_m: float = field(default=0.02, metadata=_doc("EE translation per step (m)"))
    rotation_rad: float = field(default=0.15, metadata=_doc("EE yaw per step (rad)"))


@dataclass
class Limits:
    """Safety limits (robot_calql.control.safety.SafetyLimits; its defaults where left out)."""

    max_translation_step_m: float = field(metadata=_doc("largest EE translation per command (m)"))
    max_rotation_step_rad: float = field(metadata=_doc("largest EE rotation per command (rad)"))
    camera_width: int = field(metadata=_doc("expected raw camera frame width (px); other sizes are rejected"))
    camera_height: int = field(metadata=_doc("expected raw camera frame height (px)"))
    joint_lower: list[float] | None = field(default=None, metadata=_doc(
        "lower joint limits, one per joint (default: the URDF's)"))
    joint_upper: list[float] | None = field(default=None, metadata=_doc(
        "upper joint limits, one per joint (default: the URDF's)"))
    max_joint_step_rad: float | None = field(default=None, metadata=_doc("joint interfaces: largest change per command"))
    stale_image_s: float | None = field(default=None, metadata=_doc("a camera frame older than this holds the arm"))
    stale_joint_state_s: float | None = field(default=None, metadata=_doc("a joint state / EE pose older than this holds the arm"))
    stale_command_s: float | None = field(default=None, metadata=_doc("no command for this long holds the arm"))
    future_stamp_tolerance_s: float | None = field(default=None, metadata=_doc("a stamp further ahead than this is stale"))
    command_settle_s: float | None = field(default=None, metadata=_doc(
        "a command this old is taken as shown in a measurement (default: two control periods)"))


@dataclass
class Task:
    """One direction of a task pair."""

    label: str = field(metadata=_doc("the task's name: the success label of its episodes (stand-in: a robot_calql.sim task)"))
    instruction: str = field(metadata=_doc("the language instruction the policy and the reward classifier get"))


@dataclass
class TaskPair:
    """A forward task and the backward task that undoes it (reset-free)."""

    forward: Task = field(metadata=_doc("the task to learn"))
    backward: Task = field(metadata=_doc("the task that resets it"))


@dataclass
class SimArm:
    """The MuJoCo stand-in's model of the arm (robot_calql.sim.kinematics.ArmSpec); `standin: true` needs it."""

    mjcf: str = field(metadata=_doc("the cell's MJCF: the arm, table, cube, bowl and cameras (relative: as kinematics.urdf)"))
    finger_joints: list[str] = field(metadata=_doc("the MJCF's finger slide joints (actuators of the same names)"))
    ee_site: str = field(metadata=_doc("the MJCF site between the fingertips (x: approach axis, y: finger axis)"))
    home_q: list[float] = field(metadata=_doc("arm joints near home, pointing down (the IK's seed), one per joint"))
    finger_open_m: float = field(default=0.03, metadata=_doc("finger slide position when fully open (m)"))
    cameras: list[str] | None = field(default=None, metadata=_doc(
        "the MJCF cameras rendered, main first (default: the names of `cameras`, else [front])"))


@dataclass
class RobotConfig:
    """configs/robot/<name>.yaml."""

    name: str = field(metadata=_doc("the robot's name (configs/robot/<name>.yaml)"))
    control_hz: float = field(metadata=_doc("policy / command rate (Hz)"))
    frames: Frames = field(metadata=_doc("TF frame names"))
    joints: list[str] = field(metadata=_doc("the arm's joint names, in command order"))
    gripper_joint: str = field(metadata=_doc("the gripper's joint name in the joint states"))
    gripper_range: list[float] = field(metadata=_doc("gripper joint position at fully closed, fully open"))
    topics: Topics = field(metadata=_doc("topic names"))
    command_interface: CommandInterface = field(metadata=_doc(
        "delta_ee_twist: TwistStamped (MoveIt Servo); joint_position_array: Float64MultiArray (ros2_control "
        "position controller); joint_trajectory: JointTrajectory"))
    limits: Limits = field(metadata=_doc("safety limits"))
    standin: bool = field(default=False, metadata=_doc("the MuJoCo stand-in (sim=true runs it)"))
    camera_hz: float = field(default=30.0, metadata=_doc("camera frame rate (Hz)"))
    joint_state_hz: float = field(default=50.0, metadata=_doc("joint state rate (Hz; the stand-in publishes at it)"))
    image_size: int = field(default=64, metadata=_doc("the policy's square image (px), after crop and resize"))
    calibration: str | None = field(default=None, metadata=_doc("folder with camera_info.yaml, workspace.yaml, crop.yaml"))
    cameras: dict[str, Camera] | None = field(default=None, metadata=_doc(
        "cameras by name (first: the main view); absent: topics.image"))
    ee_pose: EePoseSource = field(default="topic", metadata=_doc(
        "where the EE pose comes from: topic (topics.ee_pose), fk (the joint states through `kinematics`), "
        "tf (frames.base -> frames.ee from /tf and /tf_static; needs ROS 2's tf2_msgs)"))
    home_service: str | None = field(default=None, metadata=_doc("std_srvs/Trigger that homes the arm (absent: none)"))
    kinematics: Union[Literal["standin"], UrdfModel, None] = field(default=None, metadata=_doc(
        "FK/IK model: standin (robot_calql.sim.kinematics) or {urdf, base, ee}; joint interfaces and ee_pose: fk need one"))
    action_scale: ActionScale = field(default_factory=ActionScale, metadata=_doc("action units"))
    tasks: dict[str, TaskPair] | None = field(default=None, metadata=_doc(
        "task pairs by name (launch task=<pair or label>)"))
    bag_topics: dict[str, Any] | None = field(default=None, metadata=_doc(
        "which bag topic holds what, for robot-calql ingest (checked there; docs/bags.md)"))
    sim: SimArm | None = field(default=None, metadata=_doc("the stand-in's MuJoCo model of the arm (standin: true)"))

    def node_params(self) -> dict:
        """The config as the nodes' `robot` parameter: plain values, defaults filled in, unset
        (None) keys left out, without `tasks` and `bag_topics` (the node set passes what the
        nodes need of those)."""
        d = _plain(self)
        d.pop("tasks", None)
        d.pop("bag_topics", None)
        return d

    def task_pair(self, name: str) -> tuple[str, TaskPair]:
        """(pair name, pair) of a pair name or of one of its tasks' labels; RobotConfigError otherwise."""
        pairs = self.tasks or {}
        if name in pairs:
            return name, pairs[name]
        for pname, pair in pairs.items():
            if name in (pair.forward.label, pair.backward.label):
                return pname, pair
        known = [f"{p} ({t.forward.label} / {t.backward.label})" for p, t in pairs.items()]
        raise RobotConfigError(f"robot config '{self.name}': task '{name}' is not in its `tasks`"
                               + (f" (known: {', '.join(known)})" if known else " (it has none)"))

    def kinematics_links(self) -> tuple[str, str]:
        """(base, ee) link names of a URDF model (its own, else frames.base / frames.ee)."""
        k = self.kinematics
        if not isinstance(k, UrdfModel):
            return self.frames.base, self.frames.ee
        return k.base or self.frames.base, k.ee or self.frames.ee


def _plain(obj: Any) -> Any:
    """Dataclasses and dicts as plain dicts without None values; lists as lists."""
    if dataclasses.is_dataclass(obj):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------- checking
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list ({_type_name(typing.get_args(tp)[0])} each)"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({', '.join(f.name for f in dataclasses.fields(tp))})"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


class _Mismatch(Exception):
    """The value does not have the type; raised inside _convert, turned into one RobotConfigError."""


def _convert(value: Any, tp: Any, key: str) -> Any:
    """`value` as type `tp`; RobotConfigError naming `key` for a value of another type."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise RobotConfigError(f"{key}: must be {_type_name(tp)}, got null")
        candidates = [a for a in args if a is not type(None)]
        if len(candidates) == 1:  # Optional[X]: X's own error is the precise one
            return _convert(value, candidates[0], key)
        errors = []
        for a in candidates:
            try:
                return _convert(value, a, key)
            except RobotConfigError as e:
                errors.append(e)
        # a mapping for a dataclass candidate: that candidate's error is the precise one
        for a, e in zip(candidates, errors, strict=True):
            if dataclasses.is_dataclass(a) and isinstance(value, dict):
                raise e
        raise RobotConfigError(f"{key}: must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise RobotConfigError(f"{key}: '{value}' is not one of {', '.join(map(str, choices))}")
        return value
    if value is None:
        raise RobotConfigError(f"{key}: must be {_type_name(tp)}, got null")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RobotConfigError(f"{key}: must be {_type_name(tp)}, got {value!r}")
        return _build(tp, value, key + ".")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise RobotConfigError(f"{key}: must be {_type_name(tp)}, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RobotConfigError(f"{key}: must be a mapping, got {value!r}")
        _, item = typing.get_args(tp)
        return {str(k): (v if item is Any else _convert(v, item, f"{key}.{k}")) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise RobotConfigError(f"{key}: must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RobotConfigError(f"{key}: must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RobotConfigError(f"{key}: must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise RobotConfigError(f"{key}: must be a string, got {value!r}")
        return value
    raise TypeError(f"schema type {tp} of {key} is not supported")  # a bug in the schema


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    """Instance of dataclass `cls` from mapping `data`, every key checked (names the bad one)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [str(k) for k in data if k not in fields]
    if unknown:
        raise RobotConfigError(f"{prefix}{unknown[0]}: unknown key (known: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RobotConfigError(f"{prefix}{name}: missing required key ({f.metadata.get('doc', '')})")
            continue
        kwargs[name] = _convert(data[name], hints[name], prefix + name)
    return cls(**kwargs)


def _check_values(r: RobotConfig) -> None:
    """Checks across keys, each naming the key."""
    if r.control_hz <= 0 or r.camera_hz <= 0:
        raise RobotConfigError("control_hz: must be > 0" if r.control_hz <= 0 else "camera_hz: must be > 0")
    if not r.joints or len(set(r.joints)) != len(r.joints):
        raise RobotConfigError(f"joints: must name each arm joint once, got {r.joints}")
    if r.gripper_joint in r.joints:
        raise RobotConfigError(f"gripper_joint: '{r.gripper_joint}' is one of the arm's joints")
    if len(r.gripper_range) != 2 or r.gripper_range[0] == r.gripper_range[1]:
        raise RobotConfigError(f"gripper_range: must be [closed, open], two different positions, got {r.gripper_range}")
    for side in ("joint_lower", "joint_upper"):
        v = getattr(r.limits, side)
        if v is not None and len(v) != len(r.joints):
            raise RobotConfigError(f"limits.{side}: {len(v)} values for {len(r.joints)} joints {r.joints}")
    if (r.limits.joint_lower is None) != (r.limits.joint_upper is None):
        raise RobotConfigError("limits.joint_lower and limits.joint_upper: give both or neither (the URDF's)")
    if r.ee_pose == "fk" and r.kinematics is None:
        raise RobotConfigError("ee_pose: fk needs `kinematics` (a URDF: {urdf: <file>} or standin)")
    for name, cam in (r.cameras or {}).items():
        if not name.isidentifier():
            raise RobotConfigError(f"cameras.{name}: a camera name must be a plain identifier (letters, digits, _)")
        if isinstance(cam.crop, Crop) and (cam.crop.width <= 0 or cam.crop.height <= 0 or cam.crop.x < 0 or cam.crop.y < 0):
            raise RobotConfigError(f"cameras.{name}.crop: x, y >= 0 and width, height > 0, got {_plain(cam.crop)}")
    if r.cameras is not None and not r.cameras:
        raise RobotConfigError("cameras: name at least one camera (or leave the key out and use topics.image)")
    if isinstance(r.kinematics, UrdfModel) and not resolve_path(r.kinematics.urdf).is_file():
        raise RobotConfigError(f"kinematics.urdf: no file {r.kinematics.urdf} (looked in the working folder and "
                               f"{REPO_ROOT})")
    if r.standin and r.sim is None:
        raise RobotConfigError("sim: standin: true needs the arm's MuJoCo model (sim: {mjcf, finger_joints, ee_site, home_q})")
    if r.sim is not None:
        if len(r.sim.home_q) != len(r.joints):
            raise RobotConfigError(f"sim.home_q: {len(r.sim.home_q)} values for {len(r.joints)} joints {r.joints}")
        if not resolve_path(r.sim.mjcf).is_file():
            raise RobotConfigError(f"sim.mjcf: no file {r.sim.mjcf} (looked in the working folder and {REPO_ROOT})")
    for pname, pair in (r.tasks or {}).items():
        if pair.forward.label == pair.backward.label:
            raise RobotConfigError(f"tasks.{pname}: forward and backward need different labels")


def resolve_path(path: str | Path) -> Path:
    """A config's path: absolute as given, else from the working folder when it exists there,
    else from the repository (installed: the package data) root."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    return p.resolve() if p.exists() else data_path(p)


def load_robot_config(source: Any) -> RobotConfig:
    """A checked RobotConfig from a dict, an OmegaConf node or a YAML file path; RobotConfigError
    (one line naming the key, prefixed with the robot's name) when it does not fit the schema."""
    if isinstance(source, (str, Path)):
        from robot_calql.config import read_robot_file

        try:
            data = read_robot_file(source)
        except ConfigError as e:
            raise RobotConfigError(str(e)) from None
    else:
        data = source
    if not isinstance(data, dict):
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(data, DictConfig):
                data = OmegaConf.to_container(data, resolve=True)
        except ImportError:  # pragma: no cover
            pass
    if not isinstance(data, dict):
        raise RobotConfigError(f"a robot config must be a mapping, got {type(data).__name__}")
    name = data.get("name", "?")
    try:
        cfg = _build(RobotConfig, data)
        _check_values(cfg)
    except RobotConfigError as e:
        raise RobotConfigError(f"robot config '{name}': {e}") from None
    return cfg


def build_kinematics(robot: RobotConfig | dict):
    """The robot's kinematics model (fk, pose, ik, lower, upper), or None without `kinematics`:
    robot_calql.sim.kinematics.ArmKinematics for `standin`, else UrdfKinematics of its URDF.
    `robot` may be the nodes' `robot` parameter (RobotConfig.node_params())."""
    if isinstance(robot, dict):
        robot = load_robot_config(robot)
    k = robot.kinematics
    if k is None:
        return None
    if k == "standin":  # the simulated arm's MJCF (its `sim` section), else the stand-in's 5-joint arm
        from robot_calql.sim.kinematics import ARM_JOINTS, ArmKinematics, KinematicsError, arm_spec

        if robot.sim is not None:
            try:
                return ArmKinematics(arm=arm_spec(robot))
            except KinematicsError as e:
                raise RobotConfigError(f"robot config '{robot.name}': kinematics: standin: {e}") from None
        if tuple(robot.joints) != ARM_JOINTS:
            raise RobotConfigError(f"robot config '{robot.name}': kinematics: standin is the stand-in arm's, "
                                   f"joints {list(ARM_JOINTS)}; joints are {robot.joints}")
        return ArmKinematics()
    from robot_calql.control.urdf_kinematics import UrdfError, UrdfKinematics

    base, ee = robot.kinematics_links()
    try:
        return UrdfKinematics(resolve_path(k.urdf), robot.joints, base, ee)
    except ImportError:
        raise RobotConfigError(f"robot config '{robot.name}': kinematics: a URDF needs Pinocchio: "
                               "pip install 'robot-calql[urdf]' (the `pin` package)") from None
    except UrdfError as e:
        raise RobotConfigError(f"robot config '{robot.name}': kinematics: {e}") from None


def describe_fields(cls: type = RobotConfig, prefix: str = "") -> list[str]:
    """One line per key: `key: type (default) - description`, nested sections included."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if f.default is not dataclasses.MISSING:
            default = f" = {f.default!r}"
        elif f.default_factory is not dataclasses.MISSING:
            default = " (section)"
        else:
            default = " (required)"
        lines.append(f"{prefix}{f.name}: {_type_name(tp)}{default} - {f.metadata.get('doc', '')}")
        inner = [a for a in (typing.get_args(tp) or (tp,)) if dataclasses.is_dataclass(a)]
        for a in inner:
            if a is not cls:
                lines += describe_fields(a, prefix + f.name + ".")
    return lines


def main(argv: list[str] | None = None) -> int:
    """`python -m robot_calql.robot_config <robot.yaml>`: check it, load its kinematics and print
    a summary (FK at zero joints and the URDF's joint limits); `--keys` lists every key."""
    import numpy as np

    args = sys.argv[1:] if argv is None else argv
    if args == ["--keys"]:
        print("\n".join(describe_fields()))
        return 0
    if len(args) != 1:
        print("usage: python -m robot_calql.robot_config configs/robot/<name>.yaml | --keys", file=sys.stderr)
        return 2
    try:
        r = load_robot_config(args[0])
        kin = build_kinematics(r)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"robot config '{r.name}': OK ({len(r.joints)} joints {r.joints}, {r.command_interface}, "
          f"EE pose from {r.ee_pose}, tasks {list(r.tasks or {})})")
    if kin is not None:
        pos, yaw = kin.pose(np.zeros(len(r.joints)))
        print(f"kinematics: {r.kinematics if isinstance(r.kinematics, str) else r.kinematics.urdf}; "
              f"EE at zero joints {np.round(pos, 4).tolist()} m, yaw {yaw:.3f} rad")
        print(f"joint limits (model): lower {np.round(kin.lower, 4).tolist()} upper {np.round(kin.upper, 4).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
