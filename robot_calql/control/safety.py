"""Safety limits applied to every command before it reaches the arm (message-free logic).

The safety node (ros_nodes/robot_calql_ros/safety_node.py) is a thin adapter over this module:

- `Workspace`: the box the end effector must stay in, read from calibration/<cell>/workspace.yaml
  (`frame`, `min: [x, y, z]`, `max: [x, y, z]` in metres, margin already applied) by
  `load_workspace`; both, and `SafetyError`, are defined with the file format in
  robot_calql.calibration.workspace and re-exported here.
- `SafetyLimits`: maximum translation / rotation per command, joint limits, staleness thresholds,
  how far ahead of the clock a stamp may be, how long a command takes to show in a measurement
  (robot config `limits`).
- `check_stamp`: a stamp that is not finite, too far in the future or too old -> the problem.
- `SinceMeasurement`: the last measurement of the arm (EE position or joint positions) with its
  stamp, plus the commands sent since then that it may not reflect yet.
- `position_bounds`: per-axis range of where the end effector may be, given a measured position
  and the translations commanded since (any part of each may have been executed).
- `check_delta`: a physical delta-EE command (dx, dy, dz, dyaw, gripper) -> the command that may
  be sent, plus the list of problems found. The step is scaled down to the limit, and the
  translation clipped so that every position the arm may be at stays inside the box (motion back
  toward the box stays allowed for an arm that is outside it).
- `check_joint_targets`: joint targets clipped to the joint limits, then to `max_joint_step_rad`
  from the joints the arm is at or was last sent to (a joint outside its limits moves back
  toward them by at most the step).
- `check_joint_command`: `check_joint_targets`, then forward kinematics of the result: the EE must
  stay inside the box and within `max_translation_step_m` of where the arm is; the joint step is
  halved up to three times to meet that, else the command is held.
- `Watchdog`: tracks when images, joint states and commands last arrived and says which input
  is stale; the node holds the arm while any is.
- `Throttle`: at most one warning per problem kind per period, so a 30 Hz fault does not flood
  the log.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from robot_calql.calibration.workspace import SafetyError, Workspace, load_workspace

__all__ = ["SafetyError", "Workspace", "SafetyLimits", "check_stamp", "SinceMeasurement",
           "position_bounds", "box_excess", "check_delta", "check_joint_targets", "check_joint_command",
           "Watchdog", "Throttle", "load_workspace"]


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
    # a stamp (command, image, joint state, EE pose) further ahead of the node's clock is stale
    future_stamp_tolerance_s: float = 0.05
    # a command sent at least this long before a measurement's stamp is taken as reflected in it
    # (the driver's latency plus the time it takes to execute one command)
    command_settle_s: float = 0.2

    @classmethod
    def from_config(cls, limits: dict, control_hz: float | None = None) -> SafetyLimits:
        """Limits from the robot config; `command_settle_s` defaults to two control periods
        when `control_hz` is given (else 0.2 s)."""
        settle_default = 2.0 / float(control_hz) if control_hz else 0.2
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
                future_stamp_tolerance_s=float(limits.get("future_stamp_tolerance_s", 0.05)),
                command_settle_s=float(limits.get("command_settle_s", settle_default)),
            )
        except KeyError as e:
            raise SafetyError(f"robot config limits lack {e}") from None
        if lo.shape != hi.shape or np.any(lo >= hi):
            raise SafetyError(f"joint limits do not make sense: lower {lo.tolist()} upper {hi.tolist()}")
        if out.max_translation_step_m <= 0 or out.max_rotation_step_rad <= 0 or out.max_joint_step_rad <= 0:
            raise SafetyError("max_translation_step_m, max_rotation_step_rad and max_joint_step_rad must be positive")
        if not (out.future_stamp_tolerance_s >= 0 and out.command_settle_s >= 0):
            raise SafetyError("future_stamp_tolerance_s and command_settle_s must be >= 0")
        return out


def check_stamp(stamp: float, now: float, limits: SafetyLimits, what: str,
                max_age_s: float | None = None) -> str:
    """"" if `stamp` (seconds) is usable at `now`, else the problem naming `what`.

    A stamp more than `future_stamp_tolerance_s` ahead of `now` is from the future (a wrong clock,
    a garbled message) and counts as stale; with `max_age_s`, a stamp older than that is too.
    """
    if not np.isfinite(stamp):
        return f"{what} stamp {stamp} is not finite"
    ahead = stamp - now
    if ahead > limits.future_stamp_tolerance_s:
        return (f"{what} stamp is {ahead:.3f} s ahead of the clock (> {limits.future_stamp_tolerance_s} s): "
                "treated as stale")
    if max_age_s is not None and -ahead > max_age_s:
        return f"{what} is {-ahead:.3f} s old (> {max_age_s} s)"
    return ""


@dataclass
class SinceMeasurement:
    """The last measurement of the arm (EE position or joint positions) and the commands since.

    `measure(value, stamp)` takes a measurement stamped at `stamp` (a measurement older than the
    one held is ignored: False) and forgets the commands sent more than `settle_s` before it,
    which it reflects. `record(t, command)` notes a command sent at `t`. `pending()` lists the
    commands the measurement may not reflect yet, oldest first.
    """

    settle_s: float
    value: np.ndarray | None = None
    stamp: float = -np.inf
    sent: list[tuple[float, np.ndarray]] = field(default_factory=list)

    def measure(self, value: np.ndarray, stamp: float) -> bool:
        if stamp < self.stamp:
            return False
        self.value = np.asarray(value, float).copy()
        self.stamp = float(stamp)
        self.sent = [(t, c) for t, c in self.sent if t > self.stamp - self.settle_s]
        return True

    def invalidate(self) -> None:
        """The measurement became unusable (NaN); the commands since it stay pending."""
        self.value = None

    def record(self, t: float, command: np.ndarray) -> None:
        self.sent.append((float(t), np.asarray(command, float).copy()))

    def pending(self) -> list[np.ndarray]:
        return [c for _, c in self.sent]

    def latest(self) -> np.ndarray | None:
        """For absolute commands (joint targets): the last one sent since the measurement, where
        the arm is or is heading, else the measurement; None while the measurement is unusable."""
        if self.value is None:
            return None
        return self.sent[-1][1] if self.sent else self.value


def position_bounds(position: np.ndarray, pending: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis range (lo, hi) of where the EE may be: the measured position plus any part of
    each translation commanded since (exact for an axis-aligned box)."""
    p = np.asarray(position, float)
    if not len(pending):
        return p.copy(), p.copy()
    d = np.asarray(pending, float).reshape(-1, 3)
    return p + np.minimum(d, 0.0).sum(axis=0), p + np.maximum(d, 0.0).sum(axis=0)


def box_excess(p: np.ndarray, workspace: Workspace) -> np.ndarray:
    """How far a position lies outside the box on each axis (0 inside); works on (..., 3) arrays."""
    p = np.asarray(p, float)
    return np.maximum(np.maximum(workspace.min - p, p - workspace.max), 0.0)


def check_delta(delta: np.ndarray, ee_position: np.ndarray, workspace: Workspace, limits: SafetyLimits,
                ee_bounds: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray | None, list[str]]:
    """Make a delta-EE command (dx, dy, dz, dyaw, gripper) safe.

    Returns (command to send or None to hold, problems). None means "hold": the input is
    not finite or malformed, the current end effector is unknown, or the range of positions it
    may be at (`ee_bounds`, from `position_bounds`; default: just `ee_position`) is wider than the
    box on some axis. Otherwise the translation is scaled down to `max_translation_step_m`, the
    yaw clipped to `max_rotation_step_rad`, the gripper clipped to [-1, 1], and the translation
    clipped per axis so that every position in the range, moved by it, stays inside the box. An
    arm that may be outside the box is moved back toward it (never farther out, at most one step).
    """
    d = np.asarray(delta, float)
    problems: list[str] = []
    if d.shape != (5,) or not np.isfinite(d).all():
        return None, [f"non-finite or malformed command {np.asarray(delta).tolist()}"]
    p = np.asarray(ee_position, float) if ee_position is not None else None
    if p is None or p.shape != (3,) or not np.isfinite(p).all():
        return None, ["end-effector position unknown or non-finite"]
    lo, hi = (p, p) if ee_bounds is None else (np.asarray(ee_bounds[0], float), np.asarray(ee_bounds[1], float))
    if lo.shape != (3,) or hi.shape != (3,) or not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        return None, ["end-effector position range unknown or non-finite"]
    allowed_lo, allowed_hi = workspace.min - lo, workspace.max - hi   # translations that keep the range inside
    if (allowed_lo > allowed_hi).any():
        axes = ", ".join(ax for ax, a, b in zip("xyz", allowed_lo, allowed_hi, strict=True) if a > b)
        return None, [f"end-effector position too uncertain ({axes} range {np.round(hi - lo, 3).tolist()} m "
                      "with the commands not yet in the pose) to keep it inside the box"]
    out = d.copy()
    step = limits.max_translation_step_m
    norm = math.sqrt(float(out[:3] @ out[:3]))
    if norm > step:
        out[:3] *= step / norm
        problems.append(f"translation step {norm:.4f} m > max {step} m (scaled down)")
    if abs(out[3]) > limits.max_rotation_step_rad:
        problems.append(f"rotation step {out[3]:.3f} rad > max {limits.max_rotation_step_rad} rad (clipped)")
        out[3] = min(max(out[3], -limits.max_rotation_step_rad), limits.max_rotation_step_rad)
    out[4] = min(max(out[4], -1.0), 1.0)
    v = out[:3]
    below, above = v < allowed_lo, v > allowed_hi
    if below.any() or above.any():
        axes = [f"{ax}={(lo[i] + v[i]) if below[i] else (hi[i] + v[i]):.3f} outside "
                f"[{workspace.min[i]:.3f}, {workspace.max[i]:.3f}]"
                for i, ax in enumerate("xyz") if below[i] or above[i]]
        problems.append(f"command would leave the workspace ({'; '.join(axes)}): clipped to the box")
        out[:3] = np.minimum(np.maximum(v, allowed_lo), allowed_hi)
        # an arm outside the box is pulled back: keep that step bounded too (scaling toward 0
        # keeps every axis inside its allowed range or moving toward it)
        norm = math.sqrt(float(out[:3] @ out[:3]))
        if norm > step:
            out[:3] *= step / norm
    return out, problems


def check_joint_targets(q_target: np.ndarray, q_current: np.ndarray,
                        limits: SafetyLimits) -> tuple[np.ndarray | None, list[str]]:
    """Clip joint targets to the joint limits, then to `max_joint_step_rad` from `q_current` (the
    joints the arm is at, or was last sent to: `SinceMeasurement.latest`).

    The step bound comes last, so no joint moves more than the step in one command even when the
    arm is outside its joint limits (it moves back toward them by at most the step).
    """
    q = np.asarray(q_target, float)
    qc = np.asarray(q_current, float)
    if q.shape != limits.joint_lower.shape or not np.isfinite(q).all():
        return None, [f"joint targets non-finite or wrong length: {np.asarray(q_target).tolist()}"]
    if qc.shape != q.shape or not np.isfinite(qc).all():
        return None, ["current joint positions unknown or non-finite"]
    problems = []
    if (q < limits.joint_lower).any() or (q > limits.joint_upper).any():
        problems.append("joint targets outside joint limits (clipped)")
        q = np.clip(q, limits.joint_lower, limits.joint_upper)
    s = limits.max_joint_step_rad
    if (np.abs(q - qc) > s).any():
        problems.append(f"joint step {np.abs(q - qc).max():.3f} rad > max {s} rad (clipped)")
        q = np.clip(q, qc - s, qc + s)
    return q, problems


def check_joint_command(q_target: np.ndarray, q_current: np.ndarray, fk: Callable[[np.ndarray], np.ndarray],
                        workspace: Workspace, limits: SafetyLimits) -> tuple[np.ndarray | None, list[str]]:
    """Joint targets that keep every limit, checked in joint space and through forward kinematics.

    `check_joint_targets` first; then `fk(q)` (EE position) of the result must lie inside the
    workspace box (an arm already outside it: no farther out on any axis) and within
    `max_translation_step_m` of `fk(q_current)`. If it does not, the joint step is halved (up to
    three times); if none passes, None (hold) with the problem named.
    """
    q, problems = check_joint_targets(q_target, q_current, limits)
    if q is None:
        return None, problems
    qc = np.asarray(q_current, float)
    p_now = fk(qc)
    excess_now = box_excess(p_now, workspace)
    why = ""
    for scale in (1.0, 0.5, 0.25, 0.125):
        cand = qc + scale * (q - qc)
        p = fk(cand)
        if (box_excess(p, workspace) > excess_now + 1e-12).any():
            why = (f"FK of the joint targets {np.round(p, 4).tolist()} leaves the workspace "
                   f"[{workspace.min.tolist()}, {workspace.max.tolist()}]")
            continue
        step = math.dist(p, p_now)
        if step > limits.max_translation_step_m:
            why = f"FK step {step:.4f} m > max {limits.max_translation_step_m} m"
            continue
        if scale < 1.0:
            problems.append(f"{why}: joint step scaled by {scale}")
        return cand, problems
    return None, problems + [f"{why} even with 1/8 of the joint step: held"]


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
