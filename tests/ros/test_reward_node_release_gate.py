"""The reward node applies the classifier's release gate, over real rclpy + DDS: with the classifier
confident on every frame, no success is published while the gripper joint is closed (or no joint
state has come), and success comes with the first frames once it opens. A real (untrained)
classifier with threshold 0 stands for a confident one."""

import json
import time

import numpy as np
import pytest
from conftest import wait_for

pytestmark = pytest.mark.ros

CLOSED, OPEN = 0.38, 0.8  # normalized openings; the stand-in's gripper_range is [0, 1]


def _reward_node(tmp_path, gate):
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set

    from robot_calql.config import compose
    from robot_calql.reward.model import build_classifier
    from robot_calql.sim import TASKS

    clf = build_classifier("cnn", (64, 64, 3), [t.instruction for t in TASKS.values()], gripper_open_min=gate)
    clf.threshold = 0.0  # every frame positive
    folder = clf.save(tmp_path / f"clf_{gate}")
    cfg = compose("launch_finetune", ["sim=true", "nodes=[reward]", "robot.calibration=null", f"reward.model={folder}",
                                      "reward.rate_hz=100", f"run_dir={tmp_path / 'run'}"])
    (node,) = build_nodes(node_set(cfg))
    return cfg, node


class Probe:
    """Plays the camera, the joint states and the episode controller; records the success flags."""

    def __init__(self, ros, cfg):
        import rclpy
        from robot_calql_ros.common import COMMAND_QOS, SENSOR_QOS
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Bool, String

        self.Image, self.JointState, self.String = Image, JointState, String
        self.cfg = cfg
        self.node = ros.add(rclpy.create_node("gate_probe"))
        t = cfg.robot.topics
        self.pub_image = self.node.create_publisher(Image, t.image, SENSOR_QOS)
        self.pub_joints = self.node.create_publisher(JointState, t.joint_states, SENSOR_QOS)
        self.pub_event = self.node.create_publisher(String, t.episode_event, COMMAND_QOS)
        self.flags: list[bool] = []
        self.node.create_subscription(Bool, t.success, lambda m: self.flags.append(m.data), COMMAND_QOS)
        self.status: list[dict] = []  # /reward/status, what the launcher's session summary reads
        self.node.create_subscription(String, "/reward/status", lambda m: self.status.append(json.loads(m.data)),
                                      COMMAND_QOS)

    def start(self, instruction: str) -> None:
        self.pub_event.publish(self.String(data=json.dumps(
            {"event": "start", "episode": 0, "instruction": instruction, "direction": "forward"})))

    def frame(self, opening: float | None) -> None:
        if opening is not None:
            js = self.JointState(name=[str(self.cfg.robot.gripper_joint)], position=[opening])
            js.header.stamp = self.node.get_clock().now().to_msg()
            self.pub_joints.publish(js)
        img = self.Image(height=64, width=64, encoding="rgb8", step=64 * 3,
                         data=np.full((64, 64, 3), 128, np.uint8).tobytes())
        self.pub_image.publish(img)
        time.sleep(0.03)

    def play(self, opening: float | None, until, what: str, timeout: float = 15.0) -> None:
        t0 = time.monotonic()
        while not until():
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            self.frame(opening)


def test_reward_node_declares_success_only_with_the_gripper_open(ros, tmp_path):
    from robot_calql.sim import TASKS

    cfg, reward = _reward_node(tmp_path, 0.5)
    assert reward.gripper_open_min == 0.5 and int(cfg.reward.debounce_k) == 2
    probe = Probe(ros, cfg)
    ros.add(reward)
    wait_for(lambda: probe.pub_event.get_subscription_count() >= 1 and probe.pub_image.get_subscription_count() >= 1
             and probe.pub_joints.get_subscription_count() >= 1, 20, "the reward node subscribing")
    instruction = TASKS["cube_in_bowl"].instruction
    probe.start(instruction)
    wait_for(lambda: reward.instruction == instruction, 5, "the reward node taking the try's instruction")

    # no joint state yet: confident frames, debounced, held back (safe side), with a warning
    probe.play(None, lambda: reward.held_by_gate >= 3, "debounced firings held without a joint state")
    assert reward.warn.counts.get("gate", 0) >= 3 and "none yet" in reward.warn.last_message["gate"]
    assert True not in probe.flags

    # the cube at the goal, the gripper still closed on it
    held = reward.held_by_gate
    probe.play(CLOSED, lambda: reward.gripper is not None and reward.held_by_gate >= held + 5,
               "debounced firings held with the gripper closed")
    assert reward.gripper[0] == pytest.approx(CLOSED)
    assert True not in probe.flags

    # released: success on the first open frames (the debouncer kept its count)
    probe.play(OPEN, lambda: True in probe.flags, "a success flag once the gripper opens")

    # the joint states stop: a stale opening says nothing, no success again
    time.sleep(0.6)  # > JOINT_STATE_MAX_AGE_S; not a timing assertion, only the age of the last joint state
    probe.start(instruction)
    wait_for(lambda: probe.flags and probe.flags[-1] is False, 5, "the reset's False")
    n, held = len(probe.flags), reward.held_by_gate
    probe.play(None, lambda: reward.held_by_gate >= held + 3, "debounced firings held with a stale joint state")
    assert True not in probe.flags[n:]
    assert "s old" in reward.warn.last_message["gate"]

    # the counts on /reward/status (1 Hz): one success, every held-back firing
    held = reward.held_by_gate
    wait_for(lambda: probe.status and probe.status[-1]["held_by_gate"] == held, 5, "a status with the final counts")
    last = probe.status[-1]
    assert last["successes"] == 1 and last["gripper_open_min"] == 0.5 and last["scored"] >= held + 2


def test_reward_node_without_a_gate_fires_with_the_gripper_closed_and_reads_no_joint_states(ros, tmp_path):
    from robot_calql.sim import TASKS

    cfg, reward = _reward_node(tmp_path, None)
    assert reward.gripper_open_min is None
    probe = Probe(ros, cfg)
    ros.add(reward)
    wait_for(lambda: probe.pub_event.get_subscription_count() >= 1 and probe.pub_image.get_subscription_count() >= 1,
             20, "the reward node subscribing")
    assert probe.pub_joints.get_subscription_count() == 0  # no joint-state subscription without a gate
    instruction = TASKS["cube_in_bowl"].instruction
    probe.start(instruction)
    wait_for(lambda: reward.instruction == instruction, 5, "the reward node taking the try's instruction")
    probe.play(CLOSED, lambda: True in probe.flags, "a success flag with the gripper closed")
    assert reward.held_by_gate == 0
    wait_for(lambda: probe.status and probe.status[-1]["successes"] == 1, 5, "a status counting the success")
    assert probe.status[-1]["held_by_gate"] == 0 and probe.status[-1]["gripper_open_min"] is None
