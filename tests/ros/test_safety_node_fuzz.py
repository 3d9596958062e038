"""Fault campaign through a real SafetyNode over DDS (issue #24 item 5): >= 2,000 commands.

A fake driver (the test's arm) applies every message the safety node puts on `topics.command` to
its state at once (a twist for one control period, or the joint targets) and reports joint states
and the EE pose, fresh, 1-2 commands late, at 6 Hz or with gaps, sometimes NaN, from the future
or out of order. Each state is stamped with the stamp of the command that produced it (a frame
stamp or the hold's time, both taken before the node sent it), so a state never claims to show a
command it does not; the node runs with `command_settle_s: 0` to match. The policy side sends
commands in lockstep and in bursts at tiny dt, with NaN, inf, huge values, wrong lengths, stamps
from the future or too old, and a closed loop pushing against the walls; each episode starts the
arm anywhere, sometimes outside the box or past its joint limits.

Offline, every message the driver got must keep the EE inside the box (an arm outside it: no
farther out on any axis) and within the step limits of where the arm was, and every policy
command must have exactly one verdict, sent=True exactly for those that reached the driver.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from conftest import wait_for

pytestmark = pytest.mark.ros

TOL = 1e-9
HOME_Q = np.array([0.0, -0.1, 0.35, 1.32, 0.0])


class FakeArm:
    """The test's driver: applies each command on `topics.command`, reports (late) states."""

    def __init__(self, node, cfg, interface: str, kin, state, t0: float):
        from geometry_msgs.msg import PoseStamped
        from robot_calql_ros.common import COMMAND_QOS, SENSOR_QOS
        from robot_calql_ros.safety_node import INTERFACES
        from sensor_msgs.msg import JointState

        self.cfg, self.interface, self.kin = cfg, interface, kin
        self.hz = float(cfg.robot.control_hz)
        self.joints = list(cfg.robot.joints)
        t = cfg.robot.topics
        self.pub_js = node.create_publisher(JointState, t.joint_states, SENSOR_QOS)
        self.pub_pose = node.create_publisher(PoseStamped, t.ee_pose, SENSOR_QOS)
        self.JointState, self.PoseStamped = JointState, PoseStamped
        self.lock = threading.Lock()
        self.records: list[tuple[str, float, np.ndarray, np.ndarray]] = []   # (kind, stamp, before, after)
        self.moves: set[float] = set()   # stamps (rounded to 1 us) of the policy commands received
        self.expected: set[float] = set()   # stamps of the policy commands published
        self.teleport(state, t0)
        node.create_subscription(INTERFACES[interface], t.command, self._on_command, COMMAND_QOS)

    def teleport(self, state, t: float) -> None:
        """Put the arm somewhere (an episode start, not a command); older commands are ignored."""
        with self.lock:
            self.t_teleport = t
            self.history = [(t, np.asarray(state, float).copy())]

    @property
    def state(self) -> np.ndarray:
        return self.history[-1][1]

    def _on_command(self, msg) -> None:
        from robot_calql_ros.common import stamp_to_s

        from robot_calql.control.conversions import twist_to_delta

        stamp = stamp_to_s(msg.header.stamp)
        with self.lock:
            if stamp < self.t_teleport:
                return   # sent before the episode began
            before = self.state
            if self.interface == "delta_ee_twist":
                lin, ang = msg.twist.linear, msg.twist.angular
                d = twist_to_delta([lin.x, lin.y, lin.z], [ang.x, ang.y, ang.z], self.hz)
                after = before + d[:3]
                is_move = round(stamp, 6) in self.expected
            else:
                pos = msg.points[0].positions
                after = np.array(pos[: len(self.joints)], float)
                is_move = len(pos) == len(self.joints) + 1   # holds carry no gripper value
            self.records.append(("move" if is_move else "hold", stamp, before, after))
            if is_move:
                self.moves.add(round(stamp, 6))
            self.history.append((stamp, after))
            del self.history[:-16]

    def publish_state(self, lag: int = 0, nan: bool = False, stamp_ahead: float = 0.0) -> None:
        """Report the state of `lag` commands ago, stamped with the stamp of the command behind it."""
        from robot_calql_ros.common import s_to_stamp

        with self.lock:
            stamp, s = self.history[max(0, len(self.history) - 1 - lag)]
        stamp += stamp_ahead
        q = s if self.interface != "delta_ee_twist" else HOME_Q
        p = self.kin.fk(s)[0] if self.interface != "delta_ee_twist" else s
        if nan:
            p = np.array([np.nan, 0.0, 0.1])
        js = self.JointState(name=self.joints + [self.cfg.robot.gripper_joint], position=[*map(float, q), 0.5])
        s_to_stamp(stamp, js.header.stamp)
        ps = self.PoseStamped()
        ps.header.stamp = js.header.stamp
        ps.pose.position.x, ps.pose.position.y, ps.pose.position.z = map(float, p)
        ps.pose.orientation.w = 1.0
        self.pub_js.publish(js)
        self.pub_pose.publish(ps)


def _violations(arm: FakeArm, limits, workspace, kin) -> dict:
    """Count the messages that left the box (or went farther out) or broke a step limit."""
    def box_excess(p, ws):
        return np.maximum(np.maximum(ws.min - p, p - ws.max), 0.0)

    out = {"box": 0, "step": 0, "joint_step": 0, "joint_limits": 0}
    for _, _, before, after in arm.records:
        if arm.interface == "delta_ee_twist":
            p0, p1 = before, after
        else:
            p0, p1 = kin.fk(before)[0], kin.fk(after)[0]
            out["joint_step"] += int(np.any(np.abs(after - before) > limits.max_joint_step_rad + TOL))
            jex = lambda q: np.maximum(np.maximum(limits.joint_lower - q, q - limits.joint_upper), 0)  # noqa: E731
            out["joint_limits"] += int(np.any(jex(after) > jex(before) + TOL))
        out["box"] += int(np.any(box_excess(p1, workspace) > box_excess(p0, workspace) + TOL))
        out["step"] += int(np.linalg.norm(p1 - p0) > limits.max_translation_step_m + TOL)
    return out


def _campaign(ros, interface: str, n: int, seed: int) -> dict:
    import json

    import rclpy
    from robot_calql_ros.common import COMMAND_QOS, SENSOR_QOS, s_to_stamp
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set
    from sensor_msgs.msg import Image
    from std_msgs.msg import Float64MultiArray, String

    from robot_calql.config import compose
    from robot_calql.control.conversions import rgb_to_image
    from robot_calql.sim.kinematics import ArmKinematics

    cfg = compose("launch_finetune", ["sim=true", "nodes=[safety]", f"robot.command_interface={interface}",
                                      "+robot.limits.command_settle_s=0.0"])
    (spec,) = node_set(cfg)
    spec.params["autostart"] = False
    (safety,) = build_nodes([spec])
    kin = ArmKinematics()
    rng = np.random.default_rng(seed)
    node = rclpy.create_node("fuzz_driver")
    arm = FakeArm(node, cfg, interface, kin, HOME_Q if interface != "delta_ee_twist" else np.array([0.3, 0, 0.1]),
                  time.time())
    t = cfg.robot.topics
    verdicts: list[dict] = []
    node.create_subscription(String, t.command_status, lambda m: verdicts.append(json.loads(m.data)), COMMAND_QOS)
    pub_cmd = node.create_publisher(Float64MultiArray, t.policy_command, COMMAND_QOS)
    pub_img = node.create_publisher(Image, t.image, SENSOR_QOS)
    h, w = int(cfg.robot.limits.camera_height), int(cfg.robot.limits.camera_width)
    f = rgb_to_image(np.zeros((h, w, 3), np.uint8))
    ros.add(safety, node)
    safety.trigger_configure()
    ws, limits = safety.workspace, safety.limits

    def image(ahead: float = 0.0) -> None:
        img = Image(height=h, width=w, encoding="rgb8", step=f["step"], data=f["data"])
        s_to_stamp(time.time() + ahead, img.header.stamp)
        pub_img.publish(img)

    def settled() -> bool:
        with arm.lock:
            return len(verdicts) == published and {v["stamp"] for v in verdicts if v["sent"]} <= arm.moves

    def new_episode() -> None:
        """Deactivate, put the arm somewhere (10-20% outside the box / past joint limits), go on."""
        if safety.active:
            safety.trigger_deactivate()
        if interface == "delta_ee_twist":
            lo, hi = (ws.min - 0.05, ws.max + 0.05) if rng.random() < 0.1 else (ws.min, ws.max)
            state = rng.uniform(lo, hi)
        else:
            state = kin.ik(rng.uniform(ws.min, ws.max), rng.uniform(-1.5, 1.5), HOME_Q, iters=30)
            if rng.random() < 0.2:
                past = rng.random(5) < 0.5
                state = np.where(past, np.where(state > 0, limits.joint_upper + rng.uniform(0, 0.4, 5),
                                                limits.joint_lower - rng.uniform(0, 0.4, 5)), state)
        arm.teleport(state, time.time())
        seen = (lambda: safety.ee is not None and np.allclose(safety.ee, state)) if interface == "delta_ee_twist" \
            else (lambda: safety.q is not None and np.allclose(safety.q, state))

        def fresh():
            arm.publish_state()
            image()
            return seen()
        wait_for(fresh, 10, "the safety node seeing the new episode's arm state", period=0.01)
        safety.trigger_activate()

    published = 0
    stamps_used: set[float] = set()
    lag_mode, last_state_pub, last_img = "fresh", 0.0, 0.0
    goal = np.zeros(3)
    t0 = time.perf_counter()
    while published < n:
        if published % 100 == 0:
            new_episode()
            lag_mode = str(rng.choice(["fresh", "late", "6hz", "gaps"]))
        if published % 20 == 0:
            goal = rng.uniform(ws.min - 0.08, ws.max + 0.08)
        now = time.time()
        if now - last_img > 0.05:
            image(ahead=float(10 ** rng.uniform(0, 9)) if rng.random() < 0.01 else 0.0)
            last_img = now
        u = rng.random()
        if lag_mode == "fresh" or (lag_mode == "6hz" and now - last_state_pub >= 1 / 6) \
                or (lag_mode == "gaps" and rng.random() < 0.3) or lag_mode == "late":
            arm.publish_state(lag=int(rng.integers(1, 3)) if lag_mode == "late" else 0, nan=u < 0.01,
                              stamp_ahead=float(10 ** rng.uniform(0, 9)) if 0.01 <= u < 0.02 else 0.0)
            last_state_pub = now
        burst = int(rng.integers(2, 9)) if rng.random() < 0.05 else 1
        for _ in range(burst):
            p_known = arm.state if interface == "delta_ee_twist" else kin.fk(arm.state)[0]
            d = np.r_[rng.uniform(-0.06, 0.06, 3), rng.uniform(-0.3, 0.3), rng.uniform(-1.5, 1.5)]
            if rng.random() < 0.5:   # closed loop against the walls
                d[:3] = np.clip(goal - p_known, -0.05, 0.05)
            v = rng.random()
            if v < 0.02:
                d[rng.integers(5)] = rng.choice([np.nan, np.inf, -np.inf])
            elif v < 0.04:
                d = d * 10 ** rng.uniform(2, 8)
            elif v < 0.05:
                d = np.append(d, 0.0) if rng.random() < 0.5 else d[:-1]
            s = rng.random()
            stamp = time.time() - rng.uniform(0.0, 0.03)
            if s < 0.03:
                stamp = time.time() + (rng.uniform(0.06, 0.5) if s < 0.01 else 10 ** rng.uniform(0, 9))
            elif s < 0.05:
                stamp = time.time() - rng.uniform(0.21, 100.0)
            stamp = round(max(stamp, arm.t_teleport + 1e-3), 6)   # whole microseconds: survives the header
            while stamp in stamps_used:
                stamp = round(stamp + 1e-6, 6)
            stamps_used.add(stamp)
            with arm.lock:
                arm.expected.add(stamp)
            pub_cmd.publish(Float64MultiArray(data=[float(x) for x in d] + [stamp]))
            published += 1
        wait_for(settled, 10, f"a verdict for each of {published} commands and the sent ones at the arm", period=0.001)
    elapsed = time.perf_counter() - t0
    time.sleep(0.3)   # the last holds
    sent = sum(v["sent"] for v in verdicts)
    with arm.lock:
        moves = [r for r in arm.records if r[0] == "move"]
        holds = len(arm.records) - len(moves)
        viol = _violations(arm, limits, ws, kin)
    verdict_stamps = [v["stamp"] for v in verdicts]
    assert len(verdicts) == published and len(set(verdict_stamps)) == published, "one verdict per command"
    assert set(verdict_stamps) == stamps_used
    assert {v["stamp"] for v in verdicts if v["sent"]} == arm.moves and len(moves) == sent, \
        "sent=True exactly for the commands that reached the arm"
    reasons: dict[str, int] = {}
    for v in verdicts:
        if not v["sent"]:
            reasons[v["reason"]] = reasons.get(v["reason"], 0) + 1
    return {"interface": interface, "commands": published, "sent": sent, "held": published - sent,
            "holds_at_arm": holds, "violations": viol, "seconds": round(elapsed, 1), "held_because": reasons}


@pytest.mark.parametrize("interface, n", [("delta_ee_twist", 1200), ("joint_trajectory", 1000)])
def test_fault_campaign_through_the_safety_node(ros, interface, n):
    c = _campaign(ros, interface, n, seed=24)
    print(f"\n{c}")
    assert not any(c["violations"].values()), f"commands outside the box or the step limits: {c}"
    assert c["sent"] >= 0.3 * n and c["held"] >= 0.05 * n, c   # the faults hold some, not all
    assert math.isfinite(c["seconds"])
