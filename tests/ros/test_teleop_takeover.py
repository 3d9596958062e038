"""A person's takeover over real rclpy + DDS: a scripted gamepad (sensor_msgs/Joy) drives the real
teleop node; the real safety node puts the human's command in place of the policy's, checks it like
any other (box, step, e-stop), and ends the takeover when the Joy stream stops; the real episode
controller publishes the takeover's start and end, and the real policy node's transitions carry the
flag and the human's action. A probe plays the camera, the arm driver (joint states, EE pose) and
the stand-in's expert action.
"""

import json
import threading
import time

import numpy as np
import pytest
from conftest import wait_for

pytestmark = pytest.mark.ros

EE = (0.25, 0.0, 0.1)
HUMAN_DX = 1.0        # left stick fully up: dx = +1 (0.02 m per step)
POLICY_DX = 0.1       # the expert's dx


class Cell:
    """Camera, joint states, EE pose and expert action at 30 Hz; Joy at 20 Hz while `joy_on` is
    set (joy_node's autorepeat rate); records commands, verdicts, events and transitions."""

    def __init__(self, ros, cfg):
        import rclpy
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from robot_calql_ros.common import COMMAND_QOS, SENSOR_QOS, s_to_stamp, transitions_qos
        from sensor_msgs.msg import Image, JointState, Joy
        from std_msgs.msg import Bool, Float64MultiArray, String, UInt8MultiArray

        from robot_calql.control.conversions import rgb_to_image
        from robot_calql.control.teleop import TeleopConfig, joy_for_action

        self.cfg, t = cfg, cfg.robot.topics
        self.node = rclpy.create_node("cell")
        self.lock = threading.Lock()
        self.transitions, self.verdicts, self.events, self.commands = [], [], [], []
        self.node.create_subscription(UInt8MultiArray, t.transitions, self._on_transition,
                                      transitions_qos(int(cfg.policy.transition_history)))
        self.node.create_subscription(String, t.command_status, self._on_verdict, COMMAND_QOS)
        self.node.create_subscription(String, t.episode_event, self._on_event, COMMAND_QOS)
        self.node.create_subscription(TwistStamped, t.command, self._on_command, COMMAND_QOS)
        self.pub_img = self.node.create_publisher(Image, t.image, SENSOR_QOS)
        self.pub_js = self.node.create_publisher(JointState, t.joint_states, SENSOR_QOS)
        self.pub_pose = self.node.create_publisher(PoseStamped, t.ee_pose, SENSOR_QOS)
        self.pub_expert = self.node.create_publisher(Float64MultiArray, t.expert_action, COMMAND_QOS)
        self.pub_estop = self.node.create_publisher(Bool, t.estop, COMMAND_QOS)
        self.pub_joy = self.node.create_publisher(Joy, str(cfg.teleop.joy_topic), SENSOR_QOS)
        self.Bool = Bool
        self.s_to_stamp = s_to_stamp
        h, w = int(cfg.robot.limits.camera_height), int(cfg.robot.limits.camera_width)
        f = rgb_to_image(np.full((h, w, 3), 90, np.uint8))
        self.img = Image(height=h, width=w, encoding="rgb8", step=f["step"], data=f["data"])
        self.js = JointState(name=[*cfg.robot.joints, cfg.robot.gripper_joint], position=[0.0, 0.0, 0.3, 1.2, 0.0, 0.9])
        self.pose = PoseStamped()
        self.set_ee(EE)
        self.pose.pose.orientation.w = 1.0
        self.expert = Float64MultiArray(data=[POLICY_DX, 0.0, 0.0, 0.0, -1.0])
        from omegaconf import OmegaConf

        mapping = TeleopConfig.from_dict(OmegaConf.to_container(cfg.teleop))
        axes, buttons = joy_for_action(mapping, np.array([HUMAN_DX, 0.0, 0.0, 0.0, -1.0]))
        self.joy = Joy(axes=[float(a) for a in axes], buttons=[int(b) for b in buttons])
        self.joy_on = threading.Event()
        self.last_joy = 0.0
        self.node.create_timer(1.0 / 30, self._tick)
        self.node.create_timer(1.0 / 20, self._tick_joy)
        ros.add(self.node)

    def set_ee(self, xyz):
        self.pose.pose.position.x, self.pose.pose.position.y, self.pose.pose.position.z = xyz

    def _tick(self):
        self.s_to_stamp(time.time(), self.img.header.stamp)
        self.pub_img.publish(self.img)
        self.pub_js.publish(self.js)
        self.pub_pose.publish(self.pose)
        self.pub_expert.publish(self.expert)

    def _tick_joy(self):
        if self.joy_on.is_set():
            self.pub_joy.publish(self.joy)
            self.last_joy = time.time()

    def _on_transition(self, msg):
        from robot_calql.control.transport import unpack_transition

        meta, arrays = unpack_transition(msg.data)
        with self.lock:
            self.transitions.append((time.time(), meta, arrays["action"]))

    def _on_verdict(self, msg):
        with self.lock:
            self.verdicts.append((time.time(), json.loads(msg.data)))

    def _on_event(self, msg):
        with self.lock:
            self.events.append((time.time(), json.loads(msg.data)))

    def _on_command(self, msg):
        with self.lock:
            self.commands.append((time.time(), msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z))

    def since(self, what, t0):
        with self.lock:
            return [x for x in getattr(self, what) if x[0] >= t0]


def test_gamepad_takeover_goes_through_the_safety_checks_and_is_recorded(ros, tmp_path):
    from robot_calql_ros.launcher import NodeSpinners, build_nodes
    from robot_calql_ros.nodeset import node_set

    from robot_calql.config import compose
    from robot_calql.control.safety import load_workspace

    cfg = compose("launch_finetune", ["sim=true", "nodes=[policy,safety,episode_controller]", "teleop=gamepad",
                                      "policy.action_source=expert", "controller.phase_time_limit_s=300",
                                      f"run_dir={tmp_path}"])
    specs = node_set(cfg)
    assert [s.name for s in specs] == ["policy", "safety", "episode_controller", "teleop"]
    nodes = build_nodes(specs)
    policy, safety, controller, teleop = nodes
    box = load_workspace(cfg.workspace_file)
    hz = float(cfg.robot.control_hz)
    step = float(cfg.robot.action_scale.translation_m)
    cell = Cell(ros, cfg)
    spinners = NodeSpinners(nodes)
    try:
        wait_for(lambda: any(e["event"] == "start" for _, e in cell.events), 30, "the controller's first start")
        wait_for(lambda: len(cell.transitions) >= 5, 20, "the policy's transitions")
        with cell.lock:
            assert not any(m["intervention"] for _, m, _ in cell.transitions)
            assert all(v["source"] == "policy" for _, v in cell.verdicts)

        # --- dead-man held, stick up: the human's command replaces the policy's, checked and sent
        cell.joy_on.set()
        t_on = time.time()
        wait_for(lambda: sum(v.get("source") == "human" and v["sent"] for _, v in cell.since("verdicts", t_on)) >= 8,
                 20, "human commands executed by the safety node")
        wait_for(lambda: any(e["event"] == "intervention" and e["reason"] == "start"
                             for _, e in cell.since("events", t_on)), 10, "the intervention start event")
        wait_for(lambda: sum(m["intervention"] for _, m, _ in cell.since("transitions", t_on)) >= 5, 20,
                 "transitions flagged as interventions")
        human = [v for _, v in cell.since("verdicts", t_on) if v.get("source") == "human" and v["sent"]]
        np.testing.assert_allclose([v["action"][0] for v in human], step * HUMAN_DX, atol=1e-9)
        fast = [c for c in cell.since("commands", t_on) if c[1] > 0.9 * step * HUMAN_DX * hz]
        assert len(fast) >= 5, "the human's 0.2 m/s reached topics.command (the policy asks for 0.02 m/s)"
        flagged = [(m, a) for _, m, a in cell.since("transitions", t_on) if m["intervention"]]
        np.testing.assert_allclose([a[0] for _, a in flagged], HUMAN_DX, atol=1e-5)  # the human's action
        with cell.lock:  # the teleop node publishes at 40 Hz, yet every motion on the arm had a sent verdict
            moving = sum(1 for c in cell.commands if any(abs(x) > 1e-9 for x in c[1:]))
            sent = sum(1 for _, v in cell.verdicts if v["sent"])
        assert moving <= sent

        # --- near the +x wall: the human's step is clipped to the box like a policy command
        gap = 0.004
        cell.set_ee((float(box.max[0]) - gap, 0.0, 0.1))
        t_wall = time.time()
        wait_for(lambda: sum(v.get("source") == "human" and v["sent"] for _, v in cell.since("verdicts", t_wall + 0.5))
                 >= 5, 20, "human commands at the wall")
        at_wall = [v for _, v in cell.since("verdicts", t_wall + 0.5) if v.get("source") == "human" and v["sent"]]
        assert max(v["action"][0] for v in at_wall) <= gap + 1e-9, "a human step beyond the workspace box"
        cell.set_ee(EE)

        # --- the gamepad goes quiet (unplugged): the takeover ends and the arm holds
        cell.joy_on.clear()
        time.sleep(0.06)
        t_off = cell.last_joy
        wait_for(lambda: any(v["stamp"] is None and v["reason"] == "takeover ended"
                             for _, v in cell.since("verdicts", t_off)), 10, "the safety node ending the takeover")
        t_end = next(t for t, v in cell.since("verdicts", t_off) if v["stamp"] is None)
        print(f"takeover ended {1e3 * (t_end - t_off):.0f} ms after the last Joy (control period {1e3 / hz:.0f} ms)")
        assert t_end - t_off < 0.5
        assert any(c[0] >= t_end - 0.05 and c[1:] == (0.0, 0.0, 0.0) for c in cell.since("commands", t_off)), \
            "no hold when the takeover ended"
        wait_for(lambda: any(e["event"] == "intervention" and e["reason"] == "end"
                             for _, e in cell.since("events", t_off)), 10, "the intervention end event")
        wait_for(lambda: sum(v.get("source") == "policy" and v["sent"] for _, v in cell.since("verdicts", t_end)) >= 5,
                 10, "the policy's commands again")
        late_human = [v for _, v in cell.since("verdicts", t_end) if v.get("source") == "human"]
        assert late_human == [], "a human command after the takeover ended"
        wait_for(lambda: any(not m["intervention"] for _, m, _ in cell.since("transitions", t_end + 0.5)), 20,
                 "unflagged transitions after the takeover")

        # --- e-stop while the dead-man is held: nothing moves
        cell.joy_on.set()
        t_on2 = time.time()
        wait_for(lambda: any(v.get("source") == "human" for _, v in cell.since("verdicts", t_on2)), 10,
                 "the second takeover")
        cell.pub_estop.publish(cell.Bool(data=True))
        wait_for(lambda: safety.estopped, 5, "the e-stop latched")
        t_stop = time.time()
        wait_for(lambda: sum(v.get("source") == "human" for _, v in cell.since("verdicts", t_stop + 0.2)) >= 5, 10,
                 "human commands while the e-stop is latched")
        after = [v for _, v in cell.since("verdicts", t_stop + 0.2) if v["stamp"] is not None]
        assert after and not any(v["sent"] for v in after)
        assert {v["reason"] for v in after} == {"e-stop latched"}
        assert all(c[1:] == (0.0, 0.0, 0.0) for c in cell.since("commands", t_stop + 0.2)), "motion after the e-stop"
        with cell.lock:
            ev = [e["reason"] for _, e in cell.events if e["event"] == "intervention"]
        assert ev[:2] == ["start", "end"] and ev[2] == "start"
    finally:
        cell.joy_on.clear()
        spinners.stop()
        for n in nodes:
            n.destroy_node()
