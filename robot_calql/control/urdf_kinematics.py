"""Kinematics of an arm from its URDF, through Pinocchio (`pin` on PyPI).

`UrdfKinematics(urdf, joints, base, ee)` reads the URDF, keeps the chain's `joints` (every other
joint, e.g. the fingers, is locked) and offers what the safety checks and the nodes use from the
stand-in's robot_calql.sim.kinematics.ArmKinematics, with the same signatures:

- `fk(q)` -> EE position (3,) and rotation matrix (3, 3) of link `ee` in link `base`;
- `pose(q)` -> EE position and yaw (robot_calql.control.ee_pose.yaw_of: heading of the finger
  axis, the EE frame's y axis, in the base's xy plane);
- `ik(pos, yaw, q0)` -> damped least-squares joints putting the EE at `pos` pointing down (EE x
  axis along -z of the base) with heading `yaw`, clipped to the URDF's joint limits;
- `solve(pos, rot, q0)` -> the same for any target rotation;
- `lower`, `upper` -> the URDF's joint limits of `joints` (radians / metres).

Pinocchio is imported here only, when a URDF is loaded (the `urdf` extra of pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robot_calql.control.ee_pose import (
    KinematicsError,
    dls_step,
    down_rotation,
    rotation_error,
    yaw_of,
)


class UrdfError(ValueError):
    """A URDF that cannot be read, or that lacks the named links or joints."""


class UrdfKinematics:
    """Forward kinematics, Jacobian and damped least-squares IK of the chain base -> ee of a URDF."""

    def __init__(self, urdf: str | Path, joints: list[str] | tuple[str, ...], base: str, ee: str):
        import pinocchio as pin

        self._pin = pin
        path = Path(urdf)
        if not path.is_file():
            raise UrdfError(f"no URDF file {path}")
        try:
            full = pin.buildModelFromUrdf(str(path))
        except (RuntimeError, ValueError) as e:
            raise UrdfError(f"cannot read URDF {path}: {str(e).splitlines()[0] if str(e) else e}") from None
        names = list(full.names)[1:]  # [0] is the universe
        missing = [j for j in joints if j not in names]
        if missing:
            raise UrdfError(f"URDF {path.name} has no joint(s) {missing} (its joints: {names})")
        for j in joints:
            if full.nqs[full.getJointId(j)] != 1:
                raise UrdfError(f"URDF joint '{j}' is not a revolute or prismatic joint (one position)")
        for link in (base, ee):
            if not full.existFrame(link):
                links = [f.name for f in full.frames if f.type == pin.FrameType.BODY]
                raise UrdfError(f"URDF {path.name} has no link '{link}' (its links: {links})")
        lock = [full.getJointId(n) for n in names if n not in joints]
        q_lock = np.clip(pin.neutral(full), full.lowerPositionLimit, full.upperPositionLimit)
        self.model = pin.buildReducedModel(full, lock, q_lock) if lock else full
        self.data = self.model.createData()
        self.joints = tuple(joints)
        # reduced-model position index of each named joint, in the order given
        self._idx = np.array([self.model.idx_qs[self.model.getJointId(j)] for j in joints])
        self._vidx = np.array([self.model.idx_vs[self.model.getJointId(j)] for j in joints])
        if len(set(self._idx.tolist())) != len(joints) or self.model.nq != len(joints):
            raise UrdfError(f"joints {list(joints)} must name {self.model.nq} distinct joints of the URDF")
        self.lower = self.model.lowerPositionLimit[self._idx].copy()
        self.upper = self.model.upperPositionLimit[self._idx].copy()
        self._base = self.model.getFrameId(base)
        self._ee = self.model.getFrameId(ee)
        if not self._on_chain(base, ee):
            raise UrdfError(f"URDF link '{ee}' does not hang below link '{base}'")
        self._q = np.zeros(self.model.nq)

    def _on_chain(self, base: str, ee: str) -> bool:
        """Whether frame `ee` is a descendant of frame `base` (or the same joint's link)."""
        m = self.model
        base_joint = m.frames[self._base].parentJoint
        j = m.frames[self._ee].parentJoint
        while True:
            if j == base_joint:
                return True
            if j == 0:
                return False
            j = m.parents[j]

    def _set(self, q) -> None:
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (len(self.joints),):
            raise KinematicsError(f"joint vector must have shape ({len(self.joints)},) for {self.joints}, got {q.shape}")
        if not np.all(np.isfinite(q)):
            raise KinematicsError(f"joint vector has NaN or infinite values: {q}")
        self._q[self._idx] = q
        self._pin.framesForwardKinematics(self.model, self.data, self._q)

    def _ee_in_base(self):
        return self.data.oMf[self._base].inverse() * self.data.oMf[self._ee]

    def fk(self, q) -> tuple[np.ndarray, np.ndarray]:
        """End-effector position (3,) and rotation matrix (3, 3) in the base link for joints q."""
        self._set(q)
        m = self._ee_in_base()
        return np.array(m.translation), np.array(m.rotation)

    def pose(self, q) -> tuple[np.ndarray, float]:
        """End-effector position (3,) and yaw (rad) in the base link for joints q."""
        pos, rot = self.fk(q)
        return pos, yaw_of(rot)

    def jacobian(self, q) -> np.ndarray:
        """(6, n) Jacobian of the EE (linear; angular) in base-link axes, one column per joint."""
        self._set(q)
        return self._jacobian()

    def _jacobian(self) -> np.ndarray:
        pin = self._pin
        pin.computeJointJacobians(self.model, self.data, self._q)
        j = pin.getFrameJacobian(self.model, self.data, self._ee, pin.ReferenceFrame.LOCAL_WORLD_ALIGNED)
        r_base = np.array(self.data.oMf[self._base].rotation)
        jb = np.vstack([r_base.T @ j[:3], r_base.T @ j[3:]])
        # a base link below some joints: those joints move base and EE together (no relative motion)
        jb[:, self._joints_above(self.model.frames[self._base].parentJoint)] = 0.0
        return jb[:, self._vidx]

    def _joints_above(self, joint: int) -> list[int]:
        out, j = [], joint
        while j != 0:
            out.append(self.model.idx_vs[j])
            j = self.model.parents[j]
        return out

    def solve(self, pos, rot, q0, iters: int = 100, damping: float = 0.03, rot_weight: float = 0.3,
              tol: float = 1e-4, max_err: float = 0.05) -> np.ndarray:
        """Damped least-squares IK toward EE position `pos` (3,) and rotation `rot` (3, 3).

        From q0, at most `iters` steps dq = J^T (J J^T + damping^2 I)^-1 e on the 6-D pose error
        (rotation error weighted by `rot_weight`), clipped to the URDF's joint limits after each
        step; the position error of one step is capped at `max_err` metres. Stops when the
        position error is below `tol` and the rotation error below 10 * tol. A target out of
        reach leaves the arm stretched toward it.
        """
        pos = np.asarray(pos, dtype=np.float64)
        target_r = np.asarray(rot, dtype=np.float64)
        q = np.clip(np.asarray(q0, dtype=np.float64).copy(), self.lower, self.upper)
        for _ in range(iters):
            self._set(q)
            m = self._ee_in_base()
            err_p = pos - np.array(m.translation)
            err_r = rotation_error(np.array(m.rotation), target_r)
            if np.linalg.norm(err_p) < tol and np.linalg.norm(err_r) < 10 * tol:
                break
            jac = self._jacobian()
            q = dls_step(q, jac[:3], jac[3:], err_p, err_r, self.lower, self.upper, damping, rot_weight, max_err)
        return q

    def ik(self, pos, yaw: float, q0, iters: int = 8, damping: float = 0.03, rot_weight: float = 0.3,
           tol: float = 5e-4, max_err: float = 0.05) -> np.ndarray:
        """Joints putting the EE at `pos` pointing down with heading `yaw` (the stand-in's
        ArmKinematics.ik contract: few steps, for the small moves of one command)."""
        return self.solve(pos, down_rotation(yaw), q0, iters=iters, damping=damping, rot_weight=rot_weight,
                          tol=tol, max_err=max_err)
