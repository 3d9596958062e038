"""Safety limits applied to every command before it reaches the arm (message-free logic).

The safety node (ros_nodes/robot_calql_ros/safety_node.py) is a thin adapter over this module:

- `Workspace`: the box the end effector must stay in, read from calibration/<cell>/workspace.yaml
  (`frame`, `min: [x, y, z]`, `max: [x, y, z]` in metres, margin already applied).
- `SafetyLimits`: maximum translation / rotation per command, joint limits, staleness thresholds
  (robot config `limits`).
- `check_delta`: a physical delta-EE command (dx, dy, dz, dyaw, gripper) -> the command that may
  be sent, plus the list of problems found. A command that would leave the workspace is clipped
  to the box (motion back inside stays allowed); a step larger than the limit is scaled down.
- `check_joint_targets`: joint targets clipped to the joint limits and to a maximum step.
- `Watchdog`: tracks when images, joint states and commands last arrived and says which input
  is stale; the node holds the arm while any is.
- `Throttle`: at most one warning per problem kind per period, so a 30 Hz fault does not flood
  the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["SafetyError", "Workspace", "SafetyLimits", "check_delta", "check_joint_targets",
           "Watchdog", "Throttle", "load_workspace"]


class SafetyError(ValueError):
    """A safety configuration that is missing or makes no sense."""


@dataclass(frozen=True)
class Workspace:
    """Axis-aligned box for the end-effector position in `frame` (metres)."""

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


def load_workspace(path: str | Path) -> Workspace:
    """Read calibration/<cell>/workspace.yaml; raise SafetyError naming what is wrong."""
    from robot_calql.calibration import read_yaml

    d = read_yaml(path, "workspace", SafetyError, " (write it with robot-calql calibrate-workspace)")
    if "min" not in d or "max" not in d:
        raise SafetyError(f"workspace file {path} needs keys 'min' and 'max' ([x, y, z] in metres)")
    try:
        return Workspace(np.asarray(d["min"], float), np.asarray(d["max"], float),
                         str(d.get("frame", "base_link")))
    except (TypeError, ValueError) as e:
        raise SafetyError(f"workspace file {path}: {e}") from None


@dataclass(frozen=True)
class SafetyLimits:
    """Per-command limits (robot config `limits`)."""

    max_translation_step_m: float
    max_rotation_step_rad: float
    joint_lower: np.ndarray
    joint_upper: np.ndarray
    max_joint_step_rad: float = 0.2
    stale_image_s: float = 0.2
    stale_joint_state_s: float = 0.2
    stale_command_s: float = 0.3

    @classmethod
    def from_config(cls, limits: dict) -> SafetyLimits:
        try:
            lo = np.asarray(limits["joint_lower"], float)
            hi = np.asarray(limits["joint_upper"], float)
            out = cls(
                max_translation_step_m=float(limits["max_translation_step_m"]),
                max_rotation_step_rad=float(limits["max_rotation_step_rad"]),
                joint_lower=lo, joint_upper=hi,
                max_joint_step_rad=float(limits.get("max_joint_step_rad", 0.2)),
                stale_image_s=float(limits.get("stale_image_s", 0.2)),
                stale_joint_state_s=float(limits.get("stale_joint_state_s", 0.2)),
                stale_command_s=float(limits.get("stale_command_s", 0.3)),
            )
        except KeyError as e:
            raise SafetyError(f"robot config limits lack {e}") from None
        if lo.shape != hi.shape or np.any(lo >= hi):
            raise SafetyError(f"joint limits do not make sense: lower {lo.tolist()} upper {hi.tolist()}")
        if out.max_translation_step_m <= 0 or out.max_rotation_step_rad <= 0:
            raise SafetyError("max_translation_step_m and max_rotation_step_rad must be positive")
        return out


def check_delta(delta: np.ndarray, ee_position: np.ndarray, workspace: Workspace,
                limits: SafetyLimits) -> tuple[np.ndarray | None, list[str]]:
    """Make a delta-EE command (dx, dy, dz, dyaw, gripper) safe.

    Returns (command to send or None to hold, problems). None means "hold": the input is
    not finite, or the current end effector is unknown. Otherwise the translation is scaled
    down to `max_translation_step_m`, the yaw clipped to `max_rotation_step_rad`, the gripper
    clipped to [-1, 1], and the target position clipped into the workspace box.
    """
    d = np.asarray(delta, float)
    problems: list[str] = []
    if d.shape != (5,) or not np.all(np.isfinite(d)):
        return None, [f"non-finite or malformed command {np.asarray(delta).tolist()}"]
    p = np.asarray(ee_position, float) if ee_position is not None else None
    if p is None or p.shape != (3,) or not np.all(np.isfinite(p)):
        return None, ["end-effector position unknown or non-finite"]
    out = d.copy()
    norm = float(np.linalg.norm(out[:3]))
    if norm > limits.max_translation_step_m:
        out[:3] *= limits.max_translation_step_m / norm
        problems.append(f"translation step {norm:.4f} m > max {limits.max_translation_step_m} m (scaled down)")
    if abs(out[3]) > limits.max_rotation_step_rad:
        problems.append(f"rotation step {out[3]:.3f} rad > max {limits.max_rotation_step_rad} rad (clipped)")
        out[3] = np.clip(out[3], -limits.max_rotation_step_rad, limits.max_rotation_step_rad)
    out[4] = np.clip(out[4], -1.0, 1.0)
    target = p + out[:3]
    clipped = np.clip(target, workspace.min, workspace.max)
    if not np.allclose(clipped, target):
        axes = [f"{ax}={t:.3f} outside [{lo:.3f}, {hi:.3f}]"
                for ax, t, lo, hi in zip("xyz", target, workspace.min, workspace.max, strict=True)
                if t < lo or t > hi]
        problems.append(f"command would leave the workspace ({'; '.join(axes)}): clipped to the box")
        # if the arm is already outside, the clipped target pulls it back: keep that step bounded
        out[:3] = clipped - p
        norm = float(np.linalg.norm(out[:3]))
        if norm > limits.max_translation_step_m:
            out[:3] *= limits.max_translation_step_m / norm
    return out, problems


def check_joint_targets(q_target: np.ndarray, q_current: np.ndarray,
                        limits: SafetyLimits) -> tuple[np.ndarray | None, list[str]]:
    """Clip joint targets to the joint limits and to `max_joint_step_rad` from the current position."""
    q = np.asarray(q_target, float)
    qc = np.asarray(q_current, float)
    if q.shape != limits.joint_lower.shape or not np.all(np.isfinite(q)):
        return None, [f"joint targets non-finite or wrong length: {np.asarray(q_target).tolist()}"]
    if qc.shape != q.shape or not np.all(np.isfinite(qc)):
        return None, ["current joint positions unknown or non-finite"]
    problems = []
    step = q - qc
    if np.any(np.abs(step) > limits.max_joint_step_rad):
        problems.append(f"joint step {np.abs(step).max():.3f} rad > max {limits.max_joint_step_rad} rad (clipped)")
        q = qc + np.clip(step, -limits.max_joint_step_rad, limits.max_joint_step_rad)
    if np.any(q < limits.joint_lower) or np.any(q > limits.joint_upper):
        problems.append("joint targets outside joint limits (clipped)")
        q = np.clip(q, limits.joint_lower, limits.joint_upper)
    return q, problems


@dataclass
class Watchdog:
    """Last arrival time of each input; `stale(now)` names the inputs older than their limit.

    An input that never arrived is stale. Times are seconds on any monotonic clock.
    """

    limits_s: dict[str, float]
    last: dict[str, float] = field(default_factory=dict)

    def feed(self, name: str, now: float) -> None:
        if name not in self.limits_s:
            raise KeyError(f"unknown watchdog input '{name}' (known: {sorted(self.limits_s)})")
        self.last[name] = now

    def invalidate(self, name: str) -> None:
        """Mark an input as missing (e.g. a NaN joint state arrived)."""
        self.last.pop(name, None)

    def stale(self, now: float) -> list[str]:
        return [n for n, lim in self.limits_s.items()
                if n not in self.last or now - self.last[n] > lim]


@dataclass
class Throttle:
    """Allow one message per key every `period_s` seconds."""

    period_s: float = 2.0
    _last: dict[str, float] = field(default_factory=dict)

    def ready(self, key: str, now: float) -> bool:
        t = self._last.get(key)
        if t is not None and now - t < self.period_s:
            return False
        self._last[key] = now
        return True
