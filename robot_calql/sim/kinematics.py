"""Kinematics of the stand-in arm, computed from the MJCF (assets/standin_cell.xml).

Pure functions of joint positions; they never touch a running simulation. Useful outside the
simulator too, e.g. to turn recorded joint states into end-effector positions for a workspace box:

    >>> from robot_calql.sim.kinematics import ee_position
    >>> ee_position([0.0, 0.3, 0.5, 0.77, 0.0])      # metres, base frame
    array([...])

The end effector is the point between the fingertips (site "ee"). Its yaw is the heading of the
gripper in the table plane: 0 when the waist is at 0 and the gripper points down with the fingers
opening along the base y axis.

Another simulated arm is an `ArmSpec` (its MJCF cell and the names in it), built from a robot
config's `sim:` section by `arm_spec(robot)`; `ArmKinematics(arm=...)` then works for any MJCF arm
(MuJoCo's Jacobian). The module's constants and functions are the stand-in arm's (`STANDIN_ARM`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

# the pose conventions of every kinematics model (re-exported here)
from robot_calql.control.ee_pose import (  # noqa: F401
    KinematicsError,
    dls_step,
    down_rotation,
    rotation_error,
    wrap_angle,
    yaw_of,
)

ASSET = Path(__file__).resolve().parent / "assets" / "standin_cell.xml"
ARM_JOINTS = ("waist", "shoulder", "elbow", "wrist_angle", "wrist_rotate")
FINGER_JOINTS = ("left_finger", "right_finger")
FINGER_OPEN_M = 0.03  # finger slide travel: 0 closed, 0.03 fully open (per finger)
EE_SITE = "ee"
HOME_Q = (0.0, -0.1, 0.35, 1.32, 0.0)  # IK seed near the home EE position, pointing down


@dataclass(frozen=True)
class ArmSpec:
    """A simulated arm: its MJCF cell (arm, table, cube, bowl, cameras) and the names in it."""

    mjcf: Path                        # the cell's MJCF file
    arm_joints: tuple[str, ...]       # arm joints in command order (each has a position actuator of its name)
    finger_joints: tuple[str, ...]    # finger slide joints (each has a position actuator of its name)
    ee_site: str                      # the site between the fingertips (x: approach axis, y: finger axis)
    home_q: tuple[float, ...]         # IK seed near the home EE position, pointing down
    cameras: tuple[str, ...] = ("front",)  # MJCF cameras rendered, main view first
    finger_open_m: float = FINGER_OPEN_M   # finger slide position when fully open (0: closed)

    def __post_init__(self) -> None:
        if len(self.home_q) != len(self.arm_joints):
            raise KinematicsError(f"home_q has {len(self.home_q)} values for the {len(self.arm_joints)} arm joints "
                                  f"{list(self.arm_joints)}")
        if not self.cameras:
            raise KinematicsError("a simulated arm needs at least one camera")


STANDIN_ARM = ArmSpec(ASSET, ARM_JOINTS, FINGER_JOINTS, EE_SITE, HOME_Q)


def arm_spec(robot: Any) -> ArmSpec:
    """The simulated arm of a robot config (a YAML file path, a RobotConfig, or the config as a
    mapping: a dict, an OmegaConf node, the nodes' `robot` parameter) from its `sim:` section and `joints`; ConfigError
    naming the key when it has none or its MJCF is missing. (robot_calql.robot_config checks the
    whole file; sim sits below it and reads only these keys.)"""
    from robot_calql.config import ConfigError, data_path, read_robot_file

    if isinstance(robot, (str, Path)):
        robot = read_robot_file(robot)
    elif hasattr(robot, "node_params"):  # a RobotConfig (robot_calql.robot_config, above sim)
        robot = robot.node_params()
    name = robot.get("name", "?")
    s = robot.get("sim")
    if not s:
        raise ConfigError(f"robot config '{name}': no `sim` section: the MuJoCo stand-in needs the arm's MJCF cell "
                          "and its names (sim: {mjcf, finger_joints, ee_site, home_q, ...})")
    for key in ("mjcf", "finger_joints", "ee_site", "home_q"):
        if not s.get(key):
            raise ConfigError(f"robot config '{name}': sim.{key}: missing")
    mjcf = Path(str(s["mjcf"])).expanduser()
    if not mjcf.is_absolute():
        mjcf = mjcf.resolve() if mjcf.exists() else data_path(mjcf)
    if not mjcf.is_file():
        raise ConfigError(f"robot config '{name}': sim.mjcf: no file {s['mjcf']}")
    cams = robot.get("cameras")
    cameras = tuple(s.get("cameras") or (list(cams) if cams else ["front"]))
    try:
        return ArmSpec(mjcf, tuple(robot["joints"]), tuple(s["finger_joints"]), str(s["ee_site"]),
                       tuple(float(x) for x in s["home_q"]), tuple(str(c) for c in cameras),
                       float(s.get("finger_open_m", FINGER_OPEN_M)))
    except KinematicsError as e:
        raise ConfigError(f"robot config '{name}': sim: {e}") from None


def sim_arm(robot: str | None) -> ArmSpec:
    """The simulated arm of the robot config named `robot` (configs/robot/<robot>.yaml, the name
    datasets and checkpoints record): its `sim:` section; the stand-in's arm for None, a robot
    without a config file here or without a `sim` section (a real arm's data evaluated in the sim)."""
    from robot_calql.config import REPO_ROOT, read_robot_file

    path = REPO_ROOT / "configs" / "robot" / f"{robot}.yaml"
    if not robot or robot == "sim_standin" or not path.is_file():
        return STANDIN_ARM
    data = read_robot_file(path)
    return arm_spec(data) if data.get("sim") else STANDIN_ARM


@functools.lru_cache(maxsize=1)
def load_model() -> mujoco.MjModel:
    """The compiled stand-in model (cached; treat it as read-only)."""
    return mujoco.MjModel.from_xml_path(str(ASSET))


class ArmKinematics:
    """Forward kinematics, Jacobian and damped least-squares IK of a simulated arm (the stand-in's
    5-joint arm unless `arm` says otherwise; `model` is the arm's compiled MJCF when given).

    Holds its own MjData, so it can be used beside a running simulation without disturbing it.
    """

    def __init__(self, model: mujoco.MjModel | None = None, arm: ArmSpec = STANDIN_ARM):
        if model is None:
            model = load_model() if arm.mjcf == ASSET else mujoco.MjModel.from_xml_path(str(arm.mjcf))
        self.model = model
        self.arm = arm
        self.joints = arm.arm_joints
        self.data = mujoco.MjData(self.model)
        m = self.model
        try:
            ids = [m.joint(n).id for n in arm.arm_joints]
            self.site = m.site(arm.ee_site).id
        except KeyError as e:
            raise KinematicsError(f"MJCF {arm.mjcf}: {e}") from None
        self.qpos_adr = np.array([m.jnt_qposadr[i] for i in ids])
        self.dof_adr = np.array([m.jnt_dofadr[i] for i in ids])
        self.lower = np.array([m.jnt_range[i][0] for i in ids])
        self.upper = np.array([m.jnt_range[i][1] for i in ids])
        self._jacp = np.zeros((3, m.nv))
        self._jacr = np.zeros((3, m.nv))

    def _set(self, q: np.ndarray) -> None:
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (len(self.joints),):
            raise KinematicsError(f"joint vector must have shape ({len(self.joints)},) for {self.joints}, got {q.shape}")
        if not np.all(np.isfinite(q)):
            raise KinematicsError(f"joint vector has NaN or infinite values: {q}")
        self.data.qpos[self.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)

    def fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """End-effector position (3,) and rotation matrix (3, 3) for arm joint positions q."""
        self._set(q)
        return self.data.site_xpos[self.site].copy(), self.data.site_xmat[self.site].reshape(3, 3).copy()

    def pose(self, q: np.ndarray) -> tuple[np.ndarray, float]:
        """End-effector position (3,) and yaw (rad) for arm joint positions q."""
        pos, rot = self.fk(q)
        return pos, yaw_of(rot)

    def ik(
        self,
        pos: np.ndarray,
        yaw: float,
        q0: np.ndarray,
        iters: int = 8,
        damping: float = 0.03,
        rot_weight: float = 0.3,
        tol: float = 5e-4,
        max_err: float = 0.05,
    ) -> np.ndarray:
        """Damped least-squares IK: joints putting the EE at `pos`, pointing down with heading `yaw`.

        Starts from q0 (the current joint targets) and takes at most `iters` Gauss-Newton steps
        dq = J^T (J J^T + lambda^2 I)^-1 e on the 6-D pose error (rotation error weighted by
        `rot_weight`, metres vs radians), clipping to the joint limits after each step. The
        position error of one step is capped at `max_err` metres, so a far target is approached
        gradually (more iterations) instead of by one wild step; a target out of reach leaves
        the arm stretched toward it.
        """
        target_r = down_rotation(yaw)
        q = np.clip(np.asarray(q0, dtype=np.float64).copy(), self.lower, self.upper)
        m, d = self.model, self.data
        for _ in range(iters):
            self._set(q)
            err_p = pos - d.site_xpos[self.site]
            r = d.site_xmat[self.site].reshape(3, 3)
            err_r = rotation_error(r, target_r)
            if np.linalg.norm(err_p) < tol and np.linalg.norm(err_r) < 10 * tol:
                break
            mujoco.mj_comPos(m, d)
            mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self.site)
            q = dls_step(q, self._jacp[:, self.dof_adr], self._jacr[:, self.dof_adr], err_p, err_r,
                         self.lower, self.upper, damping, rot_weight, max_err)
        return q


@functools.lru_cache(maxsize=1)
def _shared() -> ArmKinematics:
    return ArmKinematics()


def ee_position(q) -> np.ndarray:
    """End-effector position (metres, base frame) for the 5 arm joint positions q (radians)."""
    return _shared().fk(np.asarray(q, dtype=np.float64))[0]


def ee_pose(q) -> tuple[np.ndarray, float]:
    """End-effector position (3,) and yaw (rad) for the 5 arm joint positions q."""
    pos, rot = _shared().fk(np.asarray(q, dtype=np.float64))
    return pos, yaw_of(rot)


def ee_positions(qs) -> np.ndarray:
    """Vectorised ee_position over an array of joint vectors (N, 5) -> (N, 3)."""
    qs = np.asarray(qs, dtype=np.float64)
    if qs.ndim != 2 or qs.shape[1] != len(ARM_JOINTS):
        raise KinematicsError(f"expected joint positions of shape (N, {len(ARM_JOINTS)}), got {qs.shape}")
    return np.stack([ee_position(q) for q in qs]) if len(qs) else np.zeros((0, 3))
