"""Shared pieces of the nodes: QoS profiles, parameters as a nested dict, topic names, the
policy image of a camera frame, stamps, warnings.

Parameters: every node is created with `automatically_declare_parameters_from_overrides`, so it
takes exactly the parameters the node-set definition (robot_calql_ros.nodeset) or a
`--params-file` gives it; nothing about topics, rates or limits is hard-coded in a node.
`node_params(node)` turns the dotted ROS names (`topics.image`) back into a nested dict.

Topics: `topic_names(robot["topics"])` is the one place for default topic names. robot_calql's
own topics (DEFAULT_TOPICS) have defaults a robot config may leave out; the robot's own topics
(camera, joint states, commands, EE pose) and the stand-in's (ground truth, expert action,
privileged state) have none: absent, null or "" means the robot has no such topic, and a node
that needs one refuses to start naming it (`required_topic`).

TF (robot config `ee_pose: tf`): `TfPoseSource` keeps /tf and /tf_static in a
robot_calql.control.tf_tree.TfTree and hands the EE pose (frames.base -> frames.ee) to the node;
`require_tf2_msgs` refuses, in one line, a machine without the tf2_msgs package.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

from robot_calql.control.tf_tree import TfError, TfTree
from robot_calql.robot_config import OWN_TOPICS

# camera, joint states, EE pose: best effort, keep the newest few (the usual driver QoS)
SENSOR_QOS = qos_profile_sensor_data
# the policy's camera input: only the newest frame matters (a lagging node never works off a queue)
NEWEST_FRAME_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                              history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.VOLATILE)
# commands, events, success flags: reliable, shallow queue (only fresh commands matter)
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.VOLATILE)
# instruction and the latest weights: a late joiner gets the last message
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.TRANSIENT_LOCAL)


# robot_calql's own topics: the name each gets when the robot config does not give one (the
# robot config schema's defaults: robot_calql.robot_config.OWN_TOPICS)
DEFAULT_TOPICS = dict(OWN_TOPICS)
# what a missing topic stops, for the error that names it
TOPIC_NEEDED_FOR = {
    "ee_pose": "the end-effector pose (geometry_msgs/PoseStamped in the base frame: a TF-to-pose relay or the "
               "driver) is part of the policy's observation and of the safety node's watchdog; or set "
               "ee_pose: fk to compute it from the joint states through the robot's `kinematics` (a URDF)",
    "ground_truth_success": "reward.model=ground_truth reads the stand-in's ground truth; on a real robot train a "
                            "classifier (robot-calql reward-train) and pass reward.model=<its folder>",
    "expert_action": "policy.action_source=expert acts with the stand-in's scripted demonstrator; on a real robot "
                     "use policy.action_source=agent",
}


def topic_names(topics: Any) -> dict[str, str | None]:
    """The robot config's topics with DEFAULT_TOPICS filled in; a topic that is absent, null or ""
    and has no default maps to None (the robot has none)."""
    out: dict[str, str | None] = dict(DEFAULT_TOPICS)
    for key, name in dict(topics or {}).items():
        if name:
            out[key] = str(name)
        elif key not in DEFAULT_TOPICS:
            out[key] = None
    return out


def required_topic(topics: dict, key: str, who: str) -> str:
    """topics[key], or ConfigError naming the key, `who` needs it and why (TOPIC_NEEDED_FOR)."""
    if topics.get(key):
        return str(topics[key])
    from robot_calql.config import ConfigError

    why = TOPIC_NEEDED_FOR.get(key, "")
    raise ConfigError(f"the robot config has no topics.{key}, which {who} needs" + (f": {why}" if why else ""))


def crop_param(params: dict):
    """The `crop` parameter (x, y, width, height: the robot's calibrated crop, set by
    robot_calql_ros.nodeset) as a CropRegion, or None (the whole frame)."""
    from robot_calql.calibration.crop import CropRegion

    c = params.get("crop")
    if not c:
        return None
    try:
        return CropRegion(*(int(c[k]) for k in ("x", "y", "width", "height")))
    except (KeyError, TypeError, ValueError):
        from robot_calql.config import ConfigError

        raise ConfigError(f"parameter crop must hold integers x, y, width, height, got {c}") from None


def frame_to_policy_image(msg, crop, size: int) -> np.ndarray:
    """A sensor_msgs/Image -> the policy's (size, size, 3) RGB uint8 image: the calibrated crop
    and resize of robot_calql.calibration.crop.crop_and_resize, as bag ingestion applies it.
    ImageFormatError names a frame that cannot be converted or does not fit the crop."""
    from robot_calql.calibration import CalibrationError
    from robot_calql.calibration.crop import crop_and_resize
    from robot_calql.control.conversions import ImageFormatError, image_to_rgb

    rgb = image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data)
    try:
        return crop_and_resize(rgb, crop, size)
    except CalibrationError as e:
        raise ImageFormatError(str(e)) from None


def transitions_qos(depth: int) -> QoSProfile:
    """Reliable + transient local with a deep history: a learner that restarts receives the
    transitions it missed (up to `depth`, i.e. depth / control_hz seconds of downtime) and drops
    the duplicates by (actor, seq)."""
    return QoSProfile(depth=int(depth), reliability=ReliabilityPolicy.RELIABLE,
                      history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def node_params(node) -> dict:
    """All parameters of a node as a nested dict ('topics.image' -> {'topics': {'image': ...}})."""
    out: dict = {}
    for name, param in node.get_parameters_by_prefix("").items():
        if name == "use_sim_time":
            continue
        cur = out
        *path, leaf = name.split(".")
        for p in path:
            cur = cur.setdefault(p, {})
        v = param.value
        cur[leaf] = list(v) if isinstance(v, (list, tuple)) or hasattr(v, "tolist") else v
    return out


def agent_params(d: dict | None, where: str) -> dict:
    """CalQLConfig settings from a node's nested agent parameters (`where`: their prefix, e.g.
    learner.agent), '' (how flatten_params writes None) back to None, checked by building the typed
    CalQLConfig: an unknown key or a bad value is a ConfigError naming `where`."""
    from robot_calql.agent import CalQLConfig
    from robot_calql.config import ConfigError

    out = {k: None if v == "" else v for k, v in (d or {}).items()}
    try:
        CalQLConfig.from_dict(out)
    except (ConfigError, TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None
    return out


def flatten_params(d: dict, prefix: str = "") -> dict:
    """Nested dict -> {'a.b': value} with ROS-friendly values (None -> '', tuples -> lists)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_params(v, key + "."))
        elif v is None:
            out[key] = ""
        elif isinstance(v, (list, tuple)):
            if len(v) == 0:
                continue  # ROS cannot type an empty list: leave it out, nodes treat it as absent
            if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                out[key] = [float(x) for x in v] if any(isinstance(x, float) for x in v) else list(v)
            else:
                out[key] = [str(x) for x in v]
        else:
            out[key] = v
    return out


def stamp_to_s(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def s_to_stamp(t: float, stamp) -> None:
    """Write seconds into a builtin_interfaces/Time in place."""
    stamp.sec = int(t)
    stamp.nanosec = int(round((t - int(t)) * 1e9)) % 1_000_000_000


def wall_s() -> float:
    """Wall-clock seconds (the stamp clock of every node here: system time, as camera drivers)."""
    return time.time()


class ThrottledWarner:
    """`warn(key, msg)` logs a warning at most once per `period_s` per key (names the problem)."""

    def __init__(self, node, period_s: float = 2.0):
        self.node = node
        self.period_s = period_s
        self._last: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.last_message: dict[str, str] = {}

    def warn(self, key: str, msg: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1
        self.last_message[key] = msg
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.period_s:
            self._last[key] = now
            n = self.counts[key]
            self.node.get_logger().warning(f"{msg}" + (f" ({n} times so far)" if n > 1 else ""))


TF2_MSGS_MISSING = ("ee_pose: tf needs the tf2_msgs package (ROS 2's tf2_msgs/TFMessage for /tf and /tf_static, "
                    "installed with a system ROS 2, e.g. ros-<distro>-tf2-msgs); use ee_pose: fk with the URDF "
                    "or a PoseStamped topic (ee_pose: topic)")
# /tf: reliable, volatile, deep (tf2_ros's listener); /tf_static: latched, every static transform once
TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                    durability=DurabilityPolicy.VOLATILE)
TF_STATIC_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)


def require_tf2_msgs():
    """The tf2_msgs.msg module; ValueError(TF2_MSGS_MISSING) where it cannot be imported."""
    try:
        from tf2_msgs import msg
    except ImportError:
        raise ValueError(TF2_MSGS_MISSING) from None
    return msg


def add_transform(tree: TfTree, frame_id: str, child_frame_id: str, translation, rotation, stamp_s: float,
                  static: bool) -> None:
    """One geometry_msgs/TransformStamped's fields into `tree` (frame names without a leading '/',
    as tf2 takes them); TfError naming the frames for a bad one."""
    tree.set(frame_id.lstrip("/"), child_frame_id.lstrip("/"), translation, rotation, stamp_s, static)


class TfPoseSource:
    """The EE pose of `ee` in `base` from TF transforms (robot config `ee_pose: tf`).

    `add(transforms, static)` stores (frame_id, child_frame_id, translation, rotation, stamp_s)
    tuples; each call then looks the chain up and calls `on_pose(position, yaw, stamp_s)` when it
    has a newer stamp than the last pose handed over (an all-static chain: every call, stamped
    `now`). A bad transform or a chain that cannot be looked up (unknown frame, stale link older
    than `max_age_s`) is a throttled warning and no pose. `subscribe(node)` feeds it from /tf and
    /tf_static (tf2_msgs/TFMessage) and returns the subscriptions.
    """

    def __init__(self, base: str, ee: str, max_age_s: float, on_pose, warn: ThrottledWarner):
        self.base, self.ee, self.max_age_s = base, ee, float(max_age_s)
        self.on_pose, self.warn = on_pose, warn
        self.tree = TfTree()
        self.last_stamp: float | None = None

    def add(self, transforms, static: bool, now: float | None = None) -> None:
        for frame_id, child, translation, rotation, stamp_s in transforms:
            try:
                add_transform(self.tree, frame_id, child, translation, rotation, stamp_s, static)
            except TfError as e:
                self.warn.warn("tf_bad", f"TF {'static ' if static else ''}transform ignored: {e}")
        now = wall_s() if now is None else now
        try:
            pos, yaw, stamp = self.tree.pose(self.base, self.ee, now, self.max_age_s)
        except TfError as e:
            self.warn.warn("tf_pose", f"no end-effector pose from TF ({self.base} -> {self.ee}): {e}")
            return
        if stamp is not None and self.last_stamp is not None and stamp <= self.last_stamp:
            return  # the chain did not change
        self.last_stamp = stamp
        self.on_pose(pos, yaw, now if stamp is None else stamp)

    def subscribe(self, node) -> list:
        msgs = require_tf2_msgs()

        def callback(static: bool):
            def on_tf(msg) -> None:
                self.add([(t.header.frame_id, t.child_frame_id,
                           (t.transform.translation.x, t.transform.translation.y, t.transform.translation.z),
                           (t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z,
                            t.transform.rotation.w), stamp_to_s(t.header.stamp)) for t in msg.transforms], static)
            return on_tf

        return [node.create_subscription(msgs.TFMessage, "/tf", callback(False), TF_QOS),
                node.create_subscription(msgs.TFMessage, "/tf_static", callback(True), TF_STATIC_QOS)]
