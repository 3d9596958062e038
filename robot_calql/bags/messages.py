"""Message conversions for bags, in both directions, with no ROS installation.

Decoding turns a deserialised rosbags message into numpy (images, joint vectors, actions);
encoding builds rosbags message objects from numpy for `sim-to-bag` and the tests. Message
classes come from a rosbags typestore (Humble, Jazzy or Kilted definitions).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rosbags.typesys import Stores, get_typestore

from robot_calql.control.cameras import decode_frame
from robot_calql.control.conversions import (
    ImageFormatError,
    quaternion_from_yaw,
    yaw_from_quaternion,
)

DISTROS = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY, "kilted": Stores.ROS2_KILTED}

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
JOINT_STATE = "sensor_msgs/msg/JointState"
TWIST_STAMPED = "geometry_msgs/msg/TwistStamped"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
JOINT_TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
FLOAT64_ARRAY = "std_msgs/msg/Float64MultiArray"
FLOAT64 = "std_msgs/msg/Float64"
STRING = "std_msgs/msg/String"
BOOL = "std_msgs/msg/Bool"

# An image encoding or compressed format that cannot become an RGB uint8 frame (one error type
# for bags and live frames: robot_calql.control.cameras.decode_frame raises it).
UnsupportedEncoding = ImageFormatError


@functools.cache
def typestore_for(distro: str):
    """The rosbags typestore of a ROS 2 distro name (humble, jazzy, kilted); built once (0.4 s)."""
    try:
        return get_typestore(DISTROS[str(distro).lower()])
    except KeyError:
        raise ValueError(f"unknown ROS distro '{distro}'; one of {sorted(DISTROS)}") from None


def stamp_ns(msg: Any) -> int:
    """Header stamp of a message in nanoseconds."""
    s = msg.header.stamp
    return int(s.sec) * 1_000_000_000 + int(s.nanosec)


# --------------------------------------------------------------------------- decoding


def decode_image(msg: Any, msgtype: str) -> np.ndarray:
    """RGB uint8 (H, W, 3) from a sensor_msgs/Image or CompressedImage: the live nodes' decoder,
    robot_calql.control.cameras.decode_frame. UnsupportedEncoding names the encoding or format."""
    if msgtype not in (IMAGE, COMPRESSED_IMAGE):
        raise UnsupportedEncoding(f"{msgtype} is not an image message ({IMAGE} or {COMPRESSED_IMAGE})")
    return decode_frame(msg)


def pose_xyz_yaw(msg: Any) -> np.ndarray:
    """(x, y, z, yaw) of a geometry_msgs/PoseStamped."""
    p, q = msg.pose.position, msg.pose.orientation
    return np.array([p.x, p.y, p.z, yaw_from_quaternion(q.x, q.y, q.z, q.w)], dtype=np.float64)


# --------------------------------------------------------------------------- encoding


class MessageFactory:
    """Build rosbags message objects for one typestore (used by sim-to-bag and the tests)."""

    def __init__(self, distro: str = "kilted"):
        self.typestore = typestore_for(distro)
        t = self.typestore.types
        self._T, self._H = t["builtin_interfaces/msg/Time"], t["std_msgs/msg/Header"]
        self.t = t

    def header(self, t_ns: int, frame_id: str = "") -> Any:
        return self._H(stamp=self._T(sec=int(t_ns // 1_000_000_000), nanosec=int(t_ns % 1_000_000_000)),
                       frame_id=frame_id)

    def image(self, t_ns: int, rgb: np.ndarray, encoding: str = "rgb8", frame_id: str = "camera") -> Any:
        """sensor_msgs/Image from an RGB uint8 frame, stored as rgb8, bgr8 or mono8 (or any
        encoding name, with the RGB bytes, to test rejection)."""
        if encoding == "bgr8":
            arr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        elif encoding == "mono8":
            arr = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None]
        else:
            arr = rgb
        h, w, ch = arr.shape
        return self.t[IMAGE](header=self.header(t_ns, frame_id), height=h, width=w, encoding=encoding,
                             is_bigendian=0, step=w * ch, data=np.ascontiguousarray(arr).reshape(-1))

    def compressed_image(self, t_ns: int, rgb: np.ndarray, fmt: str = "jpeg", frame_id: str = "camera") -> Any:
        ext = ".png" if fmt == "png" else ".jpg"
        ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError(f"cannot encode a {rgb.shape} frame as {fmt}")
        return self.t[COMPRESSED_IMAGE](header=self.header(t_ns, frame_id), format=fmt,
                                        data=buf.reshape(-1).astype(np.uint8))

    def joint_state(self, t_ns: int, names: list[str], position: np.ndarray) -> Any:
        pos = np.ascontiguousarray(position, dtype=np.float64)
        empty = np.zeros(0, dtype=np.float64)
        return self.t[JOINT_STATE](header=self.header(t_ns), name=list(names), position=pos,
                                   velocity=empty, effort=empty)

    def twist(self, t_ns: int, linear: np.ndarray, angular: np.ndarray, frame_id: str = "base_link") -> Any:
        V = self.t["geometry_msgs/msg/Vector3"]
        tw = self.t["geometry_msgs/msg/Twist"](linear=V(x=float(linear[0]), y=float(linear[1]), z=float(linear[2])),
                                               angular=V(x=float(angular[0]), y=float(angular[1]), z=float(angular[2])))
        return self.t[TWIST_STAMPED](header=self.header(t_ns, frame_id), twist=tw)

    def pose(self, t_ns: int, xyz: np.ndarray, yaw: float, frame_id: str = "base_link") -> Any:
        P, Q = self.t["geometry_msgs/msg/Point"], self.t["geometry_msgs/msg/Quaternion"]
        qx, qy, qz, qw = quaternion_from_yaw(yaw)
        pose = self.t["geometry_msgs/msg/Pose"](
            position=P(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2])),
            orientation=Q(x=qx, y=qy, z=qz, w=qw))
        return self.t[POSE_STAMPED](header=self.header(t_ns, frame_id), pose=pose)

    def joint_trajectory(self, t_ns: int, names: list[str], q: np.ndarray, dt_s: float) -> Any:
        D = self.t["builtin_interfaces/msg/Duration"]
        pt = self.t["trajectory_msgs/msg/JointTrajectoryPoint"](
            positions=np.ascontiguousarray(q, np.float64), velocities=np.zeros(0), accelerations=np.zeros(0),
            effort=np.zeros(0), time_from_start=D(sec=int(dt_s), nanosec=int((dt_s % 1) * 1e9)))
        return self.t[JOINT_TRAJECTORY](header=self.header(t_ns), joint_names=list(names), points=[pt])

    def float64_array(self, values: np.ndarray) -> Any:
        layout = self.t["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
        return self.t[FLOAT64_ARRAY](layout=layout, data=np.ascontiguousarray(values, np.float64))

    def float64(self, value: float) -> Any:
        return self.t[FLOAT64](data=float(value))

    def string(self, text: str) -> Any:
        return self.t[STRING](data=text)

    def bool(self, value: bool) -> Any:
        return self.t[BOOL](data=bool(value))


class BagRecorder:
    """Write messages into a new rosbag2 (sqlite3 or mcap), one connection per topic.

    with BagRecorder(path, storage="mcap") as rec:
        rec.write("/joint_states", rec.msgs.joint_state(t, names, q), t)
    """

    def __init__(self, path: str | Path, storage: str = "sqlite3", distro: str = "kilted"):
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugins = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
        if storage not in plugins:
            raise ValueError(f"storage '{storage}' is not one of {sorted(plugins)}")
        self.path = Path(path)
        self.msgs = MessageFactory(distro)
        self._writer = Writer(self.path, version=9, storage_plugin=plugins[storage])
        self._conns: dict[str, Any] = {}

    def __enter__(self) -> BagRecorder:
        self._writer.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._writer.close()

    def write(self, topic: str, msg: Any, t_ns: int, msgtype: str | None = None) -> None:
        """Serialise and write `msg` on `topic` with receive time `t_ns`."""
        msgtype = msgtype or msg.__msgtype__
        conn = self._conns.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=self.msgs.typestore)
            self._conns[topic] = conn
        self._writer.write(conn, int(t_ns), self.msgs.typestore.serialize_cdr(msg, msgtype))
