"""End-effector pose conventions shared by every kinematics model (the stand-in's
robot_calql.sim.kinematics and a URDF's robot_calql.control.urdf_kinematics).

The gripper frame's x axis is its approach axis and its y axis the axis the fingers open along.
"Pointing down" is x along -z of the base; the EE's yaw is the heading of the finger axis in the
base's xy plane, 0 when the fingers open along the base y axis.
"""

from __future__ import annotations

import numpy as np


class KinematicsError(ValueError):
    """Bad joint vector (wrong length, NaN)."""


def down_rotation(yaw: float) -> np.ndarray:
    """Rotation of the gripper frame pointing straight down with heading `yaw` (columns = axes)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[0.0, -s, c], [0.0, c, s], [-1.0, 0.0, 0.0]])


def yaw_of(rot: np.ndarray) -> float:
    """Heading of a gripper rotation matrix: angle of the finger axis (hand y) in the table plane."""
    y = rot[:, 1]
    return float(wrap_angle(np.arctan2(y[1], y[0]) - np.pi / 2))


def wrap_angle(a):
    """Wrap an angle (or array) to [-pi, pi)."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi
