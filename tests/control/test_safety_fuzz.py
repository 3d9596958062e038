"""Fault campaign through robot_calql.control.safety (issue #24 item 5): >= 100,000 commands.

A simulated arm executes every command the checks let through (a delta after a latency below
`command_settle_s`, joint targets likewise), and the checks see it only through late, slow or
missing measurements stamped with the time they were taken. The commands carry the faults of the
issue: NaN, inf, huge values, wrong lengths, stamps from the future or too old, accumulation
against the walls, bursts at tiny dt, arms outside the box or outside their joint limits. No sent
command may put the arm outside the box (for an arm already outside: farther out on any axis) or
move it more than the step limits.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from robot_calql.control.safety import (
    SafetyLimits,
    SinceMeasurement,
    Workspace,
    box_excess,
    check_delta,
    check_joint_command,
    check_stamp,
    position_bounds,
)

HZ = 10.0
LIMITS = SafetyLimits.from_config({
    "max_translation_step_m": 0.035, "max_rotation_step_rad": 0.2, "max_joint_step_rad": 0.25,
    "joint_lower": [-3.1, -1.8, -1.7, -1.7, -3.1], "joint_upper": [3.1, 1.8, 1.6, 2.1, 3.1]}, control_hz=HZ)
BOX = Workspace(np.array([0.10, -0.28, 0.015]), np.array([0.46, 0.28, 0.25]))
TOL = 1e-12


class Arm:
    """True state of the arm over time: each executed command or teleport, with when it took effect."""

    def __init__(self, state: np.ndarray, t: float):
        self.history = [(t, np.asarray(state, float).copy())]

    @property
    def now(self) -> np.ndarray:
        return self.history[-1][1]

    def execute(self, state: np.ndarray, t: float) -> None:
        self.history.append((max(t, self.history[-1][0]), np.asarray(state, float).copy()))
        del self.history[:-64]

    def at(self, t: float) -> np.ndarray:
        """The state a sensor measures at time t."""
        for ts, s in reversed(self.history):
            if ts <= t:
                return s
        return self.history[0][1]


class Faults:
    """The fault draws of one command, pre-drawn for all n commands (cheap loops)."""

    LAG_MODES = ("fresh", "late", "6hz", "gaps")

    def __init__(self, rng: np.random.Generator, n: int):
        self.u = rng.random((n, 16))
        self.burst = 0
        self.lag_mode = "fresh"

    def next_dt(self, u: np.ndarray) -> float:
        if self.burst > 0:
            self.burst -= 1
            return 1e-4 + 2e-3 * u[1]                   # a burst at tiny dt
        if u[0] < 0.05:
            self.burst = 2 + int(8 * u[1])
        return 1.0 / HZ

    def measured_at(self, t: float, u: np.ndarray) -> float | None:
        """When the measurement the checks hold at t was taken (None: none arrives this tick)."""
        if self.lag_mode == "fresh":
            return t - 1e-3
        if self.lag_mode == "late":                      # 1-2 ticks late
            return t - (1 + int(2 * u[2])) / HZ - 1e-3
        if self.lag_mode == "6hz":
            return math.floor(t * 6.0) / 6.0
        return None if u[2] < 0.7 else t - 1e-3          # "gaps": most ticks bring nothing

    @staticmethod
    def stamp(t: float, u: np.ndarray) -> float:
        if u[12] < 0.02:
            return t + 10 ** (9 * u[13])                 # +1 s .. +1e9 s
        if u[12] < 0.03:
            return t + 0.051 + 0.45 * u[13]              # just past the tolerance
        if u[12] < 0.05:
            return t - 0.21 - 100 * u[13]                # too old
        return t - 0.05 * u[13]

    @staticmethod
    def corrupt(x: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Sometimes NaN, inf, huge or the wrong length."""
        if u[10] < 0.02:
            x = x.copy()
            x[int(u[11] * x.size)] = (np.nan, np.inf, -np.inf)[int(3 * u[14])]
        elif u[10] < 0.04:
            x = x * 10 ** (2 + 6 * u[11])
        elif u[10] < 0.05:
            x = np.append(x, 0.0) if u[11] < 0.5 else x[:-1]
        return x


def _counts():
    return {"commands": 0, "sent": 0, "held": 0, "box_violations": 0, "step_violations": 0}


def delta_campaign(n: int, seed: int) -> dict:
    """n delta-EE commands (the twist interface) against a simulated arm."""
    rng = np.random.default_rng(seed)
    f = Faults(rng, n)
    c = _counts()
    t = 0.0
    arm = Arm(np.array([0.3, 0.0, 0.1]), t)
    track = SinceMeasurement(LIMITS.command_settle_s)
    goal = np.zeros(3)
    scale = np.array([0.12, 0.12, 0.12, 0.6, 3.0])
    for i in range(n):
        u = f.u[i]
        if i % 200 == 0:   # a new episode: the arm may start anywhere, 10% outside the box
            t += 1.0
            lo, hi = (BOX.min - 0.05, BOX.max + 0.05) if rng.random() < 0.1 else (BOX.min, BOX.max)
            arm.execute(rng.uniform(lo, hi), t)
            track.measure(arm.now, t)
            f.lag_mode = f.LAG_MODES[int(rng.integers(4))]
        if i % 25 == 0:
            goal = rng.uniform(BOX.min - 0.08, BOX.max + 0.08)
        t += f.next_dt(u)
        tm = f.measured_at(t, u)
        if tm is not None and u[3] < 0.01:
            track.invalidate()                            # a NaN pose
        elif tm is not None:
            track.measure(arm.at(tm), tm)
        d = (u[5:10] - 0.5) * scale                       # random: up to 6 cm, 0.3 rad, gripper 1.5
        if u[4] < 0.5 and track.value is not None:       # closed loop, accumulating against the walls
            d[:3] = np.clip(goal - track.value, -0.05, 0.05)
        d = f.corrupt(d, u)
        c["commands"] += 1
        if check_stamp(f.stamp(t, u), t, LIMITS, "command frame", max_age_s=LIMITS.stale_image_s):
            c["held"] += 1
            continue
        bounds = position_bounds(track.value, track.pending()) if track.value is not None else None
        out, _ = check_delta(d, track.value, BOX, LIMITS, bounds)
        if out is None:
            c["held"] += 1
            continue
        c["sent"] += 1
        track.record(t, out[:3])
        before = arm.now
        after = before + out[:3]
        arm.execute(after, t + 0.05 * u[15])              # executed within command_settle_s
        c["step_violations"] += int(math.sqrt(out[:3] @ out[:3]) > LIMITS.max_translation_step_m + TOL)
        c["box_violations"] += int((box_excess(after, BOX) > box_excess(before, BOX) + TOL).any())
    return c


def _joint_excess(q):
    return np.maximum(np.maximum(LIMITS.joint_lower - q, q - LIMITS.joint_upper), 0.0)


def joint_campaign(n: int, seed: int, ik_every: int = 5) -> dict:
    """n joint-target commands (the joint interfaces, stand-in kinematics) against a simulated arm;
    every `ik_every`-th target comes from IK of a delta, as on the WidowX path."""
    from robot_calql.sim.env import HOME_Q
    from robot_calql.sim.kinematics import ArmKinematics

    kin = ArmKinematics()

    def fk(q):
        return kin.fk(q)[0]

    rng = np.random.default_rng(seed)
    f = Faults(rng, n)
    c = _counts()
    c["joint_step_violations"] = 0
    t = 0.0
    arm = Arm(HOME_Q, t)
    track = SinceMeasurement(LIMITS.command_settle_s)
    for i in range(n):
        u = f.u[i]
        if i % 50 == 0:   # a new episode: a realistic arm state, 20% with joints past their limits
            t += 1.0
            q = kin.ik(rng.uniform(BOX.min, BOX.max), rng.uniform(-1.5, 1.5), HOME_Q, iters=30)
            if rng.random() < 0.2:
                past = rng.random(5) < 0.5
                q = np.where(past, np.where(q > 0, LIMITS.joint_upper + rng.uniform(0, 0.5, 5),
                                            LIMITS.joint_lower - rng.uniform(0, 0.5, 5)), q)
            arm.execute(q, t)
            track.measure(arm.now, t)
            f.lag_mode = f.LAG_MODES[int(rng.integers(4))]
        t += f.next_dt(u)
        tm = f.measured_at(t, u)
        if tm is not None and u[3] < 0.01:
            track.invalidate()                            # a NaN joint state
        elif tm is not None:
            track.measure(arm.at(tm), tm)
        c["commands"] += 1
        q_ref = track.latest()                            # the joints last sent to, or measured
        if q_ref is None:
            c["held"] += 1
            continue
        if i % ik_every == 0:                             # the WidowX path: IK of a delta
            q_target = kin.ik(fk(q_ref) + 0.07 * (u[5:8] - 0.5), 3.0 * (u[8] - 0.5), q_ref)
        else:                                             # up to 0.6 rad on some joints
            q_target = q_ref + 1.2 * (rng.random(5) - 0.5) * (u[5:10] < 0.6)
        q_target = f.corrupt(q_target, u)
        if check_stamp(f.stamp(t, u), t, LIMITS, "command frame", max_age_s=LIMITS.stale_image_s):
            c["held"] += 1
            continue
        q, _ = check_joint_command(q_target, q_ref, fk, BOX, LIMITS)
        if q is None:
            c["held"] += 1
            continue
        c["sent"] += 1
        track.record(t, q)
        before = arm.now
        arm.execute(q, t + 0.05 * u[15])
        p0, p1 = fk(before), fk(q)
        c["joint_step_violations"] += int((np.abs(q - before) > LIMITS.max_joint_step_rad + TOL).any()
                                          or (_joint_excess(q) > _joint_excess(before) + TOL).any())
        c["step_violations"] += int(np.linalg.norm(p1 - p0) > LIMITS.max_translation_step_m + TOL)
        c["box_violations"] += int((box_excess(p1, BOX) > box_excess(p0, BOX) + TOL).any())
    return c


@pytest.mark.parametrize("campaign, n, min_sent", [(delta_campaign, 100_000, 0.6), (joint_campaign, 5_000, 0.6)])
def test_fault_campaign_never_leaves_the_box_or_the_step_limits(campaign, n, min_sent):
    t0 = time.perf_counter()
    c = campaign(n, seed=24)
    print(f"\n{campaign.__name__}: {c} in {time.perf_counter() - t0:.1f} s")
    assert c["commands"] == n and c["sent"] + c["held"] == n
    assert c["sent"] >= min_sent * n, f"too few commands got through: {c}"
    assert c["held"] >= 0.05 * n, f"the faults did not make the checks hold: {c}"
    violations = {k: v for k, v in c.items() if k.endswith("violations") and v}
    assert not violations, f"commands outside the box or the step limits: {c}"
