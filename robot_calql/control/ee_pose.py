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


def rotation_error(r: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Small-angle rotation (3,) from `r` to `target` (both 3x3, columns = axes), base frame."""
    return 0.5 * (np.cross(r[:, 0], target[:, 0]) + np.cross(r[:, 1], target[:, 1]) + np.cross(r[:, 2], target[:, 2]))


def dls_step(q: np.ndarray, jacp: np.ndarray, jacr: np.ndarray, err_p: np.ndarray, err_r: np.ndarray,
             lower: np.ndarray, upper: np.ndarray, damping: float, rot_weight: float, max_err: float) -> np.ndarray:
    """One damped-least-squares IK step of every kinematics model: the position error (clipped to
    `max_err` metres) and the rotation error weighted by `rot_weight`, through the position and
    rotation Jacobians (3, n) of the arm's joints; the result is clipped to the joint limits."""
    jac = np.vstack([jacp, rot_weight * jacr])
    n = np.linalg.norm(err_p)
    if n > max_err:
        err_p = err_p * (max_err / n)
    err = np.concatenate([err_p, rot_weight * err_r])
    dq = jac.T @ np.linalg.solve(jac @ jac.T + damping**2 * np.eye(6), err)
    return np.clip(q + dq, lower, upper)

