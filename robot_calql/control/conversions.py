"""Message-free conversions between ROS message fields and numpy (no rclpy here).

The ROS nodes pass plain fields (encoding, height, width, step, data bytes) to these functions,
so every conversion is tested without DDS.

Images: `image_to_rgb` turns the fields of a `sensor_msgs/Image` into an RGB uint8 array
(H, W, 3), honouring row padding (`step`), and `rgb_to_image` does the reverse for the
encodings a camera driver commonly publishes. The crop and resize to the policy's square image is
robot_calql.calibration.crop.crop_and_resize (one function for live frames, bags and datasets).

Commands: the policy thinks in normalised delta end-effector actions (dx, dy, dz, dyaw, gripper)
in [-1, 1]. `action_to_delta` scales them to metres / radians per control step (robot config
`action_scale`); `delta_to_twist` / `twist_to_delta` convert to the velocity convention of
MoveIt Servo (`geometry_msgs/TwistStamped`, m/s and rad/s), i.e. delta times the control rate.
The internal policy -> safety command (`std_msgs/Float64MultiArray`) has the layout
`POLICY_COMMAND_LAYOUT`: the physical delta, the gripper command and the stamp of the camera
frame the action was computed from (seconds), so the safety node can measure its age.

Orientation: `yaw_from_quaternion` / `quaternion_from_yaw` convert between a heading about z and a
`geometry_msgs/Quaternion`'s (x, y, z, w); the one definition for the nodes, bags and the stand-in.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "ImageFormatError",
    "CommandFormatError",
    "SUPPORTED_ENCODINGS",
    "POLICY_COMMAND_LAYOUT",
    "ACTION_AXES",
    "image_to_rgb",
    "rgb_to_image",
    "action_to_delta",
    "delta_to_action",
    "delta_to_twist",
    "twist_to_delta",
    "pack_policy_command",
    "unpack_policy_command",
    "joint_state_to_positions",
    "yaw_from_quaternion",
    "quaternion_from_yaw",
]


class ImageFormatError(ValueError):
    """An image message that cannot be turned into the expected RGB array."""


class CommandFormatError(ValueError):
    """A command message with the wrong layout, length or non-finite values."""


# encoding -> (channels, channel order to take RGB from the stored channels)
_ENCODINGS: dict[str, tuple[int, tuple[int, ...]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)

# The internal policy -> safety command (std_msgs/Float64MultiArray), one value per label.
ACTION_AXES = ("dx", "dy", "dz", "dyaw", "gripper")  # the policy's normalised action, in this order
POLICY_COMMAND_LAYOUT = ("dx_m", "dy_m", "dz_m", "dyaw_rad", "gripper", "image_stamp_s")


def image_to_rgb(encoding: str, height: int, width: int, step: int, data) -> np.ndarray:
    """Fields of a sensor_msgs/Image -> RGB uint8 array (height, width, 3) (a copy).

    `data` is anything with the buffer protocol (bytes, array.array from rclpy, numpy).
    Raises ImageFormatError naming the problem: unsupported encoding, zero size, a `step`
    shorter than one row, or a data length that does not match height * step.
    """
    enc = encoding.lower()
    if enc not in _ENCODINGS:
        raise ImageFormatError(
            f"unsupported image encoding '{encoding}' (supported: {', '.join(SUPPORTED_ENCODINGS)})"
        )
    channels, order = _ENCODINGS[enc]
    if height <= 0 or width <= 0:
        raise ImageFormatError(f"image has zero size ({width}x{height})")
    row = width * channels
    if step < row:
        raise ImageFormatError(f"image step {step} is shorter than a {enc} row of {row} bytes")
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    if buf.size != height * step:
        raise ImageFormatError(
            f"image data has {buf.size} bytes, expected height*step = {height}*{step} = {height * step}"
        )
    img = buf.reshape(height, step)[:, :row].reshape(height, width, channels)
    return np.ascontiguousarray(img[:, :, list(order)])


def rgb_to_image(rgb: np.ndarray, encoding: str = "rgb8") -> dict:
    """RGB uint8 (H, W, 3) -> dict of sensor_msgs/Image fields (height, width, encoding, step, data)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageFormatError(f"expected an RGB uint8 array (H, W, 3), got {rgb.dtype} {rgb.shape}")
    enc = encoding.lower()
    if enc == "rgb8":
        out = rgb
    elif enc == "bgr8":
        out = rgb[:, :, ::-1]
    elif enc in ("rgba8", "bgra8"):
        alpha = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
        out = np.concatenate([rgb if enc == "rgba8" else rgb[:, :, ::-1], alpha], axis=2)
    elif enc == "mono8":
        # ITU-R BT.601 luma, the usual grey conversion of camera drivers
        out = (rgb @ np.array([0.299, 0.587, 0.114])).round().clip(0, 255).astype(np.uint8)[:, :, None]
    else:
        raise ImageFormatError(
            f"unsupported image encoding '{encoding}' (supported: {', '.join(SUPPORTED_ENCODINGS)})"
        )
    out = np.ascontiguousarray(out)
    h, w, c = out.shape
    return {"height": h, "width": w, "encoding": enc, "step": w * c, "data": out.tobytes()}


def action_to_delta(action: np.ndarray, translation_m: float, rotation_rad: float) -> np.ndarray:
    """Normalised action (dx, dy, dz, dyaw, gripper) in [-1, 1] -> physical delta per step.

    Translation and yaw are clipped to [-1, 1] then scaled; the gripper stays normalised.
    """
    a = np.asarray(action, dtype=np.float64)
    if a.shape != (len(ACTION_AXES),):
        raise CommandFormatError(f"action must have shape ({len(ACTION_AXES)},) ({', '.join(ACTION_AXES)}), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise CommandFormatError(f"action has non-finite values: {a.tolist()}")
    a = np.clip(a, -1.0, 1.0)
    return np.array([a[0] * translation_m, a[1] * translation_m, a[2] * translation_m,
                     a[3] * rotation_rad, a[4]])


def delta_to_action(delta: np.ndarray, translation_m: float, rotation_rad: float) -> np.ndarray:
    """Inverse of `action_to_delta` (float32, clipped to [-1, 1])."""
    d = np.asarray(delta, dtype=np.float64)
    a = np.array([d[0] / translation_m, d[1] / translation_m, d[2] / translation_m,
                  d[3] / rotation_rad, d[4]])
    return np.clip(a, -1.0, 1.0).astype(np.float32)


def delta_to_twist(delta_xyz_yaw: np.ndarray, control_hz: float) -> tuple[list[float], list[float]]:
    """Delta per control step (dx, dy, dz, dyaw) -> (linear xyz m/s, angular xyz rad/s)."""
    d = np.asarray(delta_xyz_yaw, dtype=np.float64)[:4] * control_hz
    return [float(d[0]), float(d[1]), float(d[2])], [0.0, 0.0, float(d[3])]


def twist_to_delta(linear, angular, control_hz: float) -> np.ndarray:
    """TwistStamped velocities -> delta per control step (dx, dy, dz, dyaw)."""
    d = np.array([linear[0], linear[1], linear[2], angular[2]], dtype=np.float64) / control_hz
    if not np.all(np.isfinite(d)):
        raise CommandFormatError(f"twist has non-finite values: {d.tolist()}")
    return d


def pack_policy_command(delta: np.ndarray, image_stamp_s: float) -> list[float]:
    """Physical delta (dx, dy, dz, dyaw, gripper) + frame stamp -> Float64MultiArray data."""
    d = np.asarray(delta, dtype=np.float64)
    if d.shape != (len(ACTION_AXES),):
        raise CommandFormatError(f"delta must have shape ({len(ACTION_AXES)},), got {d.shape}")
    return [float(v) for v in d] + [float(image_stamp_s)]


def unpack_policy_command(data) -> tuple[np.ndarray, float]:
    """Float64MultiArray data -> (delta (5,), image stamp in seconds); checks length and NaNs."""
    v = np.asarray(list(data) if not isinstance(data, np.ndarray) else data, dtype=np.float64)
    if v.shape != (len(POLICY_COMMAND_LAYOUT),):
        raise CommandFormatError(
            f"policy command must have {len(POLICY_COMMAND_LAYOUT)} values "
            f"({', '.join(POLICY_COMMAND_LAYOUT)}), got {v.size}"
        )
    if not np.all(np.isfinite(v)):
        bad = [n for n, x in zip(POLICY_COMMAND_LAYOUT, v, strict=True) if not np.isfinite(x)]
        raise CommandFormatError(f"policy command has non-finite {', '.join(bad)}")
    return v[:5].copy(), float(v[5])


def gripper_opening(position: float, gripper_range) -> float:
    """The gripper joint's position as the normalized opening of proprio: 0 closed .. 1 open
    (gripper_range: the robot config's [closed, open] positions), clipped to [0, 1]."""
    lo, hi = (float(x) for x in gripper_range)
    return float(np.clip((float(position) - lo) / (hi - lo), 0.0, 1.0))


def joint_state_to_positions(names, positions, wanted: list[str]) -> np.ndarray:
    """Pick `wanted` joints by name from a JointState (any order); raise if missing or non-finite."""
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in wanted if n not in index]
    if missing:
        raise CommandFormatError(f"joint state lacks joints {missing} (has {list(names)})")
    if len(positions) < len(names):
        raise CommandFormatError(f"joint state has {len(names)} names but {len(positions)} positions")
    q = np.array([positions[index[n]] for n in wanted], dtype=np.float64)
    if not np.all(np.isfinite(q)):
        bad = [n for n, x in zip(wanted, q, strict=True) if not np.isfinite(x)]
        raise CommandFormatError(f"joint state has non-finite positions for {bad}")
    return q


def yaw_from_quaternion(x: float, y: float, z: float, w: float) -> float:
    """Heading about z (radians, in [-pi, pi]) of the unit quaternion (x, y, z, w)."""
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


def quaternion_from_yaw(yaw: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) of the rotation by `yaw` radians about z."""
    return 0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)
