"""The same raw camera frame gives the same policy pixels through a bag (rosbag2 file, ingest) and
live (the real policy and reward nodes over DDS), with the robot's calibrated crop (crop.yaml of
its calibration folder) applied in both.

Before: ingestion cropped, the live nodes did not (nodeset never passed the crop, the reward node
never cropped), so a real cell's training and deployed pixels differed.
"""

import json
import time

import numpy as np
import pytest
from conftest import wait_for

pytestmark = pytest.mark.ros

RAW_W, RAW_H = 160, 120     # the raw camera frame
SIZE = 64                   # the policy image (the stand-in robot's image_size)
FWD = "put the cube in the bowl"


def _raw_frame() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (RAW_H, RAW_W, 3), dtype=np.uint8)


def _calibration(tmp_path):
    """A calibration folder whose crop.yaml is written by calibrate-crop's writer."""
    from robot_calql.calibration import write_yaml_atomic
    from robot_calql.calibration.crop import CropRegion, crop_dict

    cell = tmp_path / "cell"
    crop = CropRegion(30, 10, 96, 96)
    write_yaml_atomic(cell / "crop.yaml", crop_dict(crop, RAW_W, RAW_H, SIZE, "test"))
    return cell, crop


def _bag_image(tmp_path, cell, frame) -> np.ndarray:
    """Record `frame` in a rosbag2 file with the project's recorder, ingest it, return its first image."""
    from robot_calql.bags import synthetic as S
    from robot_calql.bags.ingest import ingest, settings_from
    from robot_calql.bags.messages import BagRecorder
    from robot_calql.config import compose
    from robot_calql.data.dataset import Dataset

    path = tmp_path / "bag"
    with BagRecorder(path) as rec:
        f = rec.msgs
        rec.write("/robot_calql/instruction", f.string(FWD), 1)
        for k in range(4):
            t = 1_000_000_000 + k * 100_000_000
            rec.write("/camera/image_raw", f.image(t, frame), t)
            rec.write("/joint_states", f.joint_state(t, [*S.JOINTS, S.GRIPPER], np.zeros(6)), t)
            rec.write("/robot_calql/sent_command", f.twist(t, np.zeros(3), np.zeros(3)), t)
    s = settings_from(compose("ingest", ["bags=unused", "out=unused", "robot.bag_topics.ee_pose=null",
                                         f"robot.calibration={cell}"]))
    ingest([path], s, tmp_path / "ds", progress=False)
    ep = Dataset(tmp_path / "ds")[0]
    assert len(ep.image) >= 2
    return ep.image[0]


class Cell:
    """Plays the camera (the raw frame), the arm (joint states, EE pose), the stand-in's expert and
    the safety node (every command gets a 'sent' verdict); records the policy's transitions."""

    def __init__(self, ros, cfg, frame):
        import rclpy
        from geometry_msgs.msg import PoseStamped
        from robot_calql_ros.common import COMMAND_QOS, SENSOR_QOS, transitions_qos
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float64MultiArray, String, UInt8MultiArray

        from robot_calql.control.conversions import rgb_to_image

        t = cfg.robot.topics
        self.node = rclpy.create_node("cell")
        self.images: list[np.ndarray] = []   # the obs images of the transitions the policy sent
        self.node.create_subscription(UInt8MultiArray, t.transitions, self._on_transition,
                                      transitions_qos(int(cfg.policy.transition_history)))
        self.node.create_subscription(Float64MultiArray, t.policy_command, self._on_command, 10)
        self.pub_verdict = self.node.create_publisher(String, t.command_status, COMMAND_QOS)
        self.pub_img = self.node.create_publisher(Image, t.image, SENSOR_QOS)
        self.pub_js = self.node.create_publisher(JointState, t.joint_states, SENSOR_QOS)
        self.pub_pose = self.node.create_publisher(PoseStamped, t.ee_pose, SENSOR_QOS)
        self.pub_expert = self.node.create_publisher(Float64MultiArray, t.expert_action, COMMAND_QOS)
        self.pub_event = self.node.create_publisher(String, t.episode_event, COMMAND_QOS)
        self.String = String
        f = rgb_to_image(frame)
        self.img = Image(height=RAW_H, width=RAW_W, encoding="rgb8", step=f["step"], data=f["data"])
        self.js = JointState(name=[*cfg.robot.joints, cfg.robot.gripper_joint], position=[0.0, 0.0, 0.3, 1.2, 0.0, 0.5])
        self.pose = PoseStamped()
        self.pose.pose.position.x, self.pose.pose.position.z = 0.25, 0.1
        self.pose.pose.orientation.w = 1.0
        self.expert = Float64MultiArray(data=[0.1, 0.0, 0.0, 0.0, 0.0])
        self.node.create_timer(1.0 / 30, self._tick)
        ros.add(self.node)

    def _tick(self):
        from robot_calql_ros.common import s_to_stamp

        s_to_stamp(time.time(), self.img.header.stamp)
        self.pub_img.publish(self.img)
        self.pub_js.publish(self.js)
        self.pub_pose.publish(self.pose)
        self.pub_expert.publish(self.expert)

    def _on_command(self, msg):
        from robot_calql.control.conversions import unpack_policy_command

        _, stamp = unpack_policy_command(msg.data)
        self.pub_verdict.publish(self.String(data=json.dumps({"stamp": stamp, "sent": True, "reason": ""})))

    def _on_transition(self, msg):
        from robot_calql.control.transport import unpack_transition

        _, arrays = unpack_transition(msg.data)
        self.images.append(np.asarray(arrays["image"]))


def test_bag_and_live_nodes_give_identical_pixels_with_the_calibrated_crop(ros, tmp_path):
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set

    from robot_calql.calibration.crop import crop_and_resize
    from robot_calql.config import compose
    from robot_calql.reward.model import build_classifier
    from robot_calql.sim import TASKS

    frame = _raw_frame()
    cell_dir, crop = _calibration(tmp_path)
    want = crop_and_resize(frame, crop, SIZE)
    assert not np.array_equal(want, crop_and_resize(frame, None, SIZE)), "the crop must change the pixels"

    bag = _bag_image(tmp_path, cell_dir, frame)
    np.testing.assert_array_equal(bag, want)

    clf_dir = build_classifier("cnn", (SIZE, SIZE, 3), [t.instruction for t in TASKS.values()]).save(tmp_path / "clf")
    cfg = compose("launch_finetune", [
        "sim=true", "nodes=[policy,reward]", "policy.action_source=expert", f"robot.calibration={cell_dir}",
        f"robot.limits.camera_width={RAW_W}", f"robot.limits.camera_height={RAW_H}", f"reward.model={clf_dir}",
        "reward.rate_hz=30", f"run_dir={tmp_path / 'run'}"])
    specs = node_set(cfg)
    for spec in specs:  # the calibrated crop, read from the calibration folder, reaches both nodes
        assert spec.params["crop"] == {"x": crop.x, "y": crop.y, "width": crop.width, "height": crop.height}
    policy, reward = build_nodes(specs)
    seen_by_reward: list[np.ndarray] = []
    classify = reward.clf.predict_proba

    def spy(images, instruction):
        seen_by_reward.append(np.array(images[0]))
        return classify(images, instruction)

    reward.clf.predict_proba = spy
    cell = Cell(ros, cfg, frame)
    ros.add(policy, reward)
    wait_for(lambda: cell.pub_event.get_subscription_count() >= 2, 20, "policy and reward subscribing to events")
    wait_for(policy.ready, 20, "the policy ready (frames, joint state, pose, expert action)")
    cell.pub_event.publish(cell.String(data=json.dumps(
        {"event": "start", "episode": 0, "instruction": FWD, "direction": "forward"})))
    wait_for(lambda: len(cell.images) >= 2 and len(seen_by_reward) >= 2, 30,
             "transitions from the policy and frames classified by the reward node")
    for img in cell.images[:2]:
        np.testing.assert_array_equal(img, want)   # live policy observation == bag frame
    for img in seen_by_reward[:2]:
        np.testing.assert_array_equal(img, want)   # the reward classifier's input too
