"""Two cameras (front: sensor_msgs/CompressedImage jpeg, wrist: raw sensor_msgs/Image with a crop
of its own): the same frames give identical pixels through a bag (rosbag2 file, ingest) and live
(the real policy and reward nodes over DDS), for both cameras; a wrist camera that stops makes the
policy stop acting with a warning naming it.

Before: the live nodes subscribed to one sensor_msgs/Image topic (`topics.image`): a compressed
camera was never received and a wrist camera was silently dropped.
"""

import json
import time

import cv2
import numpy as np
import pytest
from conftest import wait_for

pytestmark = pytest.mark.ros

FRONT_W, FRONT_H = 160, 120
WRIST_W, WRIST_H = 96, 72
SIZE = 64
FWD = "put the cube in the bowl"
FRONT, WRIST = "/test_cam/front/image_raw/compressed", "/test_cam/wrist/image_raw"
CAMERAS = (f"+robot.cameras={{front:{{topic:{FRONT}}},"
           f"wrist:{{topic:{WRIST},compressed:false,crop:{{x:20,y:6,width:60,height:60}}}}}}")


def _frames():
    r = np.random.default_rng(3)
    front = np.repeat(np.repeat(r.integers(0, 256, (FRONT_H // 8, FRONT_W // 8, 3), dtype=np.uint8), 8, 0), 8, 1)
    wrist = r.integers(0, 256, (WRIST_H, WRIST_W, 3), dtype=np.uint8)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(front, cv2.COLOR_RGB2BGR))
    assert ok
    return jpeg.reshape(-1).astype(np.uint8), wrist


def _bag_images(tmp_path, jpeg, wrist) -> tuple[np.ndarray, np.ndarray]:
    """Record the frames (the same jpeg bytes, the same raw wrist frame) in a rosbag2 file, ingest it
    with the same robot cameras, return the first step's (front, wrist) images."""
    from robot_calql.bags import synthetic as S
    from robot_calql.bags.ingest import ingest, settings_from
    from robot_calql.bags.messages import COMPRESSED_IMAGE, BagRecorder
    from robot_calql.config import compose
    from robot_calql.data.dataset import Dataset

    path = tmp_path / "bag"
    with BagRecorder(path) as rec:
        f = rec.msgs
        rec.write("/robot_calql/instruction", f.string(FWD), 1)
        for k in range(4):
            t = 1_000_000_000 + k * 100_000_000
            rec.write(FRONT, f.t[COMPRESSED_IMAGE](header=f.header(t), format="jpeg", data=jpeg), t)
            rec.write(WRIST, f.image(t, wrist, "bgr8"), t)
            rec.write("/joint_states", f.joint_state(t, [*S.JOINTS, S.GRIPPER], np.zeros(6)), t)
            rec.write("/robot_calql/sent_command", f.twist(t, np.zeros(3), np.zeros(3)), t)
    s = settings_from(compose("ingest", ["bags=unused", "out=unused", "robot.bag_topics.ee_pose=null",
                                         "robot.calibration=null", f"robot.bag_topics.image={FRONT}", CAMERAS]))
    ingest([path], s, tmp_path / "ds", progress=False)
    ep = Dataset(tmp_path / "ds")[0]
    return ep.image[0], ep.camera_images["image_wrist"][0]


class Cell:
    """Plays both cameras, the arm (joint states, EE pose), the stand-in's expert and the safety
    node (every command gets a 'sent' verdict); records the policy's transitions."""

    def __init__(self, ros, cfg, jpeg, wrist):
        import rclpy
        from geometry_msgs.msg import PoseStamped
        from robot_calql_ros.common import COMMAND_QOS, SENSOR_QOS, transitions_qos
        from sensor_msgs.msg import CompressedImage, Image, JointState
        from std_msgs.msg import Float64MultiArray, String, UInt8MultiArray

        from robot_calql.control.conversions import rgb_to_image

        t = cfg.robot.topics
        self.node = rclpy.create_node("cell")
        self.obs: list[dict] = []   # the obs images of the transitions the policy sent
        self.node.create_subscription(UInt8MultiArray, t.transitions, self._on_transition,
                                      transitions_qos(int(cfg.policy.transition_history)))
        self.node.create_subscription(Float64MultiArray, t.policy_command, self._on_command, 10)
        self.pub_verdict = self.node.create_publisher(String, t.command_status, COMMAND_QOS)
        self.pub_front = self.node.create_publisher(CompressedImage, FRONT, SENSOR_QOS)
        self.pub_wrist = self.node.create_publisher(Image, WRIST, SENSOR_QOS)
        self.pub_js = self.node.create_publisher(JointState, t.joint_states, SENSOR_QOS)
        self.pub_pose = self.node.create_publisher(PoseStamped, t.ee_pose, SENSOR_QOS)
        self.pub_expert = self.node.create_publisher(Float64MultiArray, t.expert_action, COMMAND_QOS)
        self.pub_event = self.node.create_publisher(String, t.episode_event, COMMAND_QOS)
        self.String = String
        self.front = CompressedImage(format="jpeg", data=jpeg.tobytes())
        f = rgb_to_image(wrist, "bgr8")
        self.wrist = Image(height=WRIST_H, width=WRIST_W, encoding="bgr8", step=f["step"], data=f["data"])
        self.wrist_on = True
        self.js = JointState(name=[*cfg.robot.joints, cfg.robot.gripper_joint], position=[0.0, 0.0, 0.3, 1.2, 0.0, 0.5])
        self.pose = PoseStamped()
        self.pose.pose.position.x, self.pose.pose.position.z = 0.25, 0.1
        self.pose.pose.orientation.w = 1.0
        self.expert = Float64MultiArray(data=[0.1, 0.0, 0.0, 0.0, 0.0])
        self.node.create_timer(1.0 / 30, self._tick)
        ros.add(self.node)

    def _tick(self):
        from robot_calql_ros.common import s_to_stamp

        now = time.time()
        if self.wrist_on:
            s_to_stamp(now, self.wrist.header.stamp)
            self.pub_wrist.publish(self.wrist)
        s_to_stamp(now, self.front.header.stamp)
        self.pub_front.publish(self.front)
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
        self.obs.append({k: np.asarray(v) for k, v in arrays.items()})


def test_two_cameras_compressed_and_raw_identical_live_and_bag(ros, tmp_path):
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set

    from robot_calql.calibration.crop import CropRegion, crop_and_resize
    from robot_calql.config import compose
    from robot_calql.reward.model import build_classifier
    from robot_calql.sim import TASKS

    jpeg, wrist = _frames()
    want_wrist = crop_and_resize(wrist, CropRegion(20, 6, 60, 60), SIZE)
    bag_front, bag_wrist = _bag_images(tmp_path, jpeg, wrist)
    np.testing.assert_array_equal(bag_wrist, want_wrist)

    clf_dir = build_classifier("cnn", (SIZE, SIZE, 3), [t.instruction for t in TASKS.values()]).save(tmp_path / "clf")
    overrides = ["sim=true", "policy.action_source=expert", "robot.calibration=null", CAMERAS,
                 f"robot.limits.camera_width={FRONT_W}", f"robot.limits.camera_height={FRONT_H}",
                 f"reward.model={clf_dir}", "reward.rate_hz=30", f"run_dir={tmp_path / 'run'}"]
    cfg = compose("launch_finetune", ["nodes=[policy,reward]", *overrides])
    policy, reward = build_nodes(node_set(cfg))
    (wrist_spec,) = node_set(compose("launch_finetune", ["nodes=[reward]", "+reward.camera=wrist", *overrides]))
    wrist_spec.name = "reward_wrist"   # a second reward node, judging the wrist camera
    (reward_wrist,) = build_nodes([wrist_spec])

    def spy(node) -> list[np.ndarray]:
        seen: list[np.ndarray] = []
        classify = node.clf.predict_proba

        def predict(images, instruction):
            seen.append(np.array(images[0]))
            return classify(images, instruction)

        node.clf.predict_proba = predict
        return seen

    seen_by_reward, seen_by_wrist_reward = spy(reward), spy(reward_wrist)
    cell = Cell(ros, cfg, jpeg, wrist)
    ros.add(policy, reward, reward_wrist)
    wait_for(lambda: cell.pub_event.get_subscription_count() >= 3, 20, "policy and reward nodes subscribing to events")
    wait_for(policy.ready, 20, "the policy ready (frames, joint state, pose, expert action)")
    cell.pub_event.publish(cell.String(data=json.dumps(
        {"event": "start", "episode": 0, "instruction": FWD, "direction": "forward"})))
    wait_for(lambda: len(cell.obs) >= 2 and len(seen_by_reward) >= 2 and len(seen_by_wrist_reward) >= 2, 30,
             "transitions from the policy and frames classified by the reward node")
    for obs in cell.obs[:2]:   # live policy observation == bag frame, for both cameras
        np.testing.assert_array_equal(obs["image"], bag_front)
        np.testing.assert_array_equal(obs["image_wrist"], bag_wrist)
        np.testing.assert_array_equal(obs["next_image_wrist"], bag_wrist)
    for img in seen_by_reward[:2]:  # the reward classifier judges the main (front) camera by default
        np.testing.assert_array_equal(img, bag_front)
    for img in seen_by_wrist_reward[:2]:  # ... or the camera reward.camera names, with its crop
        np.testing.assert_array_equal(img, bag_wrist)

    # the wrist camera stops: the policy stops acting and names it
    cell.wrist_on = False
    wait_for(lambda: policy.warn.counts.get("stale_camera", 0) >= 1, 10, "a stale-camera warning")
    assert "camera 'wrist'" in policy.warn.last_message["stale_camera"]
    steps, warned = policy.steps, policy.warn.counts["stale_camera"]
    wait_for(lambda: policy.warn.counts["stale_camera"] >= warned + 5, 10, "more main-camera frames without acting")
    assert policy.steps == steps
    wait_for(lambda: not policy.ready(), 10, "the policy not ready without the wrist camera")
