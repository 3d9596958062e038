"""Only commands the arm executed reach the learner, over real rclpy + DDS: the real policy and
safety nodes, a probe playing the camera, the arm driver (joint states, EE pose), the stand-in's
expert action and the episode controller's start event.

Before the safety node's verdicts were used, the policy kept turning every command into a
transition while the joint states and pose were stale (the safety node held the arm): about 25
transitions in the last 2.5 s of a 3 s stale window, for actions that never happened.
"""

import json
import threading
import time

import numpy as np
import pytest
from conftest import wait_for

pytestmark = pytest.mark.ros

EE = (0.25, 0.0, 0.1)
STALE_S = 3.0
SETTLE_S = 0.5  # commands within the safety node's stale_joint_state_s (0.2 s) still go out


class Cell:
    """Publishes camera frames (always), joint states + EE pose (unless `arm_alive` is cleared)
    and the expert action at 30 Hz; records the transitions the policy sends."""

    def __init__(self, ros, cfg):
        import rclpy
        from geometry_msgs.msg import PoseStamped
        from robot_calql_ros.common import COMMAND_QOS, SENSOR_QOS, transitions_qos
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Bool, Float64MultiArray, String, UInt8MultiArray

        from robot_calql.control.conversions import rgb_to_image

        self.cfg, t = cfg, cfg.robot.topics
        self.node = rclpy.create_node("cell")
        self.arm_alive = threading.Event()
        self.arm_alive.set()
        self.received = []  # (receive time, meta)
        self.node.create_subscription(UInt8MultiArray, t.transitions, self._on_transition,
                                      transitions_qos(int(cfg.policy.transition_history)))
        self.pub_img = self.node.create_publisher(Image, t.image, SENSOR_QOS)
        self.pub_js = self.node.create_publisher(JointState, t.joint_states, SENSOR_QOS)
        self.pub_pose = self.node.create_publisher(PoseStamped, t.ee_pose, SENSOR_QOS)
        self.pub_expert = self.node.create_publisher(Float64MultiArray, t.expert_action, COMMAND_QOS)
        self.pub_event = self.node.create_publisher(String, t.episode_event, COMMAND_QOS)
        self.pub_estop = self.node.create_publisher(Bool, t.estop, COMMAND_QOS)
        self.String, self.Bool = String, Bool
        h, w = int(cfg.robot.limits.camera_height), int(cfg.robot.limits.camera_width)
        f = rgb_to_image(np.full((h, w, 3), 90, np.uint8))
        self.img = Image(height=h, width=w, encoding="rgb8", step=f["step"], data=f["data"])
        self.js = JointState(name=[*cfg.robot.joints, cfg.robot.gripper_joint], position=[0.0, 0.0, 0.3, 1.2, 0.0, 0.5])
        self.pose = PoseStamped()
        self.pose.pose.position.x, self.pose.pose.position.y, self.pose.pose.position.z = EE
        self.pose.pose.orientation.w = 1.0
        self.expert = Float64MultiArray(data=[0.1, 0.0, 0.0, 0.0, 0.0])
        self.node.create_timer(1.0 / 30, self._tick)
        ros.add(self.node)

    def _tick(self):
        from robot_calql_ros.common import s_to_stamp

        s_to_stamp(time.time(), self.img.header.stamp)
        self.pub_img.publish(self.img)
        if self.arm_alive.is_set():
            self.pub_js.publish(self.js)
            self.pub_pose.publish(self.pose)
        self.pub_expert.publish(self.expert)

    def _on_transition(self, msg):
        from robot_calql.control.transport import unpack_transition

        meta, _ = unpack_transition(msg.data)
        self.received.append((time.time(), meta))

    def between(self, t0, t1):
        return [m for t, m in self.received if t0 <= t < t1]


def test_no_transition_for_commands_the_safety_node_held(ros, tmp_path):
    from robot_calql_ros.launcher import NodeSpinners, build_nodes
    from robot_calql_ros.nodeset import node_set

    from robot_calql.config import compose

    cfg = compose("launch_finetune", ["sim=true", "nodes=[policy,safety]", "policy.action_source=expert",
                                      f"run_dir={tmp_path}"])
    policy, safety = build_nodes(node_set(cfg))
    assert safety.active, "the stand-in launch activates the safety node"
    cell = Cell(ros, cfg)
    spinners = NodeSpinners([policy, safety])
    try:
        wait_for(lambda: cell.pub_event.get_subscription_count() >= 2, 20, "policy and safety subscribing to events")
        wait_for(policy.ready, 20, "the policy ready (frames, joint states, pose, expert action)")
        cell.pub_event.publish(cell.String(data=json.dumps(
            {"event": "start", "episode": 0, "instruction": "put the cube in the bowl", "direction": "forward"})))
        wait_for(lambda: len(cell.received) >= 5, 20, "transitions while every input is fresh")
        assert all(m["episode"] == 0 for _, m in cell.received)

        # --- the arm driver stops (joint states and pose go stale), the camera goes on
        cell.arm_alive.clear()
        t0 = time.time()
        steps0 = policy.steps
        time.sleep(STALE_S)
        cell.arm_alive.set()
        t1 = time.time()
        acted = policy.steps - steps0
        # by the frame stamp of the step (a step commanded before the window may arrive in it)
        during = [m for _, m in cell.received if t0 + SETTLE_S <= m["stamp"] < t1]
        status = policy.status()
        print(f"stale window: policy acted {acted} times, {len(during)} transitions from frames of the last "
              f"{STALE_S - SETTLE_S:.1f} s, held_dropped {status.get('held_dropped')}, "
              f"reason {status.get('last_hold_reason')!r}")
        assert acted >= 15, "the policy kept acting on fresh camera frames (the test's premise)"
        assert during == [], f"{len(during)} transitions for commands the safety node held"
        assert status["held_dropped"] >= acted - 5
        assert "stale" in status["last_hold_reason"] and "joint_states" in status["last_hold_reason"]

        # --- fresh again: transitions resume, and none carries an action from the stale window
        wait_for(lambda: len(cell.between(t1, time.time() + 1)) >= 5, 20, "transitions once the arm is back")
        stamps = [m["stamp"] for _, m in cell.received]
        assert not [s for s in stamps if t0 + 0.35 < s < t1], "a transition from a frame of the stale window"
        after = [m for _, m in cell.received if m["stamp"] >= t1]
        assert after and all(m["episode"] == 0 for m in after)
        seqs = [m["seq"] for _, m in cell.received]
        assert seqs == list(range(len(seqs))), "sequence numbers stay gapless for the learner's dedup"

        # --- e-stop: latched, every command is held, nothing reaches the learner
        cell.pub_estop.publish(cell.Bool(data=True))
        wait_for(lambda: safety.estopped, 5, "the safety node latching the e-stop")
        t2 = time.time()
        time.sleep(1.5)
        assert cell.between(t2 + SETTLE_S, time.time()) == [], "transitions while the e-stop was latched"
        assert policy.status()["last_hold_reason"] == "e-stop latched"
    finally:
        spinners.stop()
        for n in (policy, safety):
            n.destroy_node()
