"""reward: success probability and a debounced success flag from camera frames.

With `reward.model` set to a classifier folder (robot-calql reward-train), every frame (at most
`reward.rate_hz`) of the camera the classifier judges goes through robot_calql.reward's
classifier with the current instruction. That camera is `reward.camera` (a name in the robot
config's `cameras`), by default the main camera, whose images (dataset key `image`) reward-train
learns from; its frames (sensor_msgs/Image or CompressedImage, per camera) are decoded, cropped
(its camera's crop; the main camera: parameter `crop`, the calibrated crop.yaml) and resized by
robot_calql.control.cameras.camera_image, the policy node's and bag ingestion's functions.
With `reward.model: ground_truth` (stand-in only) the probability is the simulator's
ground-truth success (`topics.ground_truth_success`, std_msgs/String JSON: task, instruction,
success; a robot config without that topic stops the node at start, naming it); the node says
so in its log, and takes only the verdicts for the running try's
instruction (the simulator may still judge the previous task for a step after a switch). Either
way the flag is debounced (robot_calql.reward.calibrate.Debouncer, `reward.debounce_k` positive
frames in a row) and reset at each episode start, which publishes a False flag at once: the
episode controller counts a success only after a False since the start (stale flags).

Release gate: a classifier trained with `gripper_open_min` (reward_model.json; placing tasks succeed
only once the object is let go) also needs the gripper open: the node then subscribes to
`topics.joint_states` and a debounced success is published only while the gripper joint's latest
position, normalized by the robot config's `gripper_range` (0 closed .. 1 open, as in proprio), is
>= gripper_open_min. A firing held back keeps the debouncer's count, so the first frame with the
gripper open succeeds. With no joint state yet, or none received in the last JOINT_STATE_MAX_AGE_S
(0.5 s), the node declares no success (safe side) and warns (throttled). Without a gate it
neither subscribes nor checks.

Publishes `topics.success_prob` (std_msgs/Float32) and `topics.success` (std_msgs/Bool), and on
`~/status` (/reward/status, String JSON, 1 Hz) its counts: `scored` (frames or verdicts judged),
`successes` (rising edges of the flag), `held_by_gate` (debounced firings the release gate held
back), `gripper_open_min` (the gate, null: none) and `model`.
"""

from __future__ import annotations

import json

from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, Float32, String

from robot_calql.config import ConfigError
from robot_calql.control.cameras import camera_image, camera_specs
from robot_calql.control.conversions import (
    CommandFormatError,
    ImageFormatError,
    gripper_opening,
    joint_state_to_positions,
)
from robot_calql_ros.common import (
    COMMAND_QOS,
    LATCHED_QOS,
    SENSOR_QOS,
    ThrottledWarner,
    crop_param,
    node_params,
    required_topic,
    topic_names,
    wall_s,
)

# the release gate: a joint state older than this (received, wall clock) does not say the gripper is open
JOINT_STATE_MAX_AGE_S = 0.5


class RewardNode(Node):
    def __init__(self, name: str = "reward", **kwargs):
        super().__init__(name, automatically_declare_parameters_from_overrides=True, **kwargs)
        from robot_calql.reward.calibrate import Debouncer

        p = node_params(self)
        r = p["robot"]
        topics = topic_names(r["topics"])
        cfg = p["reward"]
        self.warn = ThrottledWarner(self)
        self.image_size = int(r["image_size"])
        self.crop = crop_param(p)
        self.min_period = 1.0 / float(cfg["rate_hz"])
        self.instruction = ""
        self._last = 0.0
        self.model = str(cfg["model"])
        self.clf = None
        self.gripper_open_min: float | None = None  # the classifier's release gate (None: off)
        self.gripper: tuple[float, float] | None = None  # (normalized opening, wall time received)
        self.held_by_gate = 0  # debounced successes held back: gripper not open enough, or not known
        if self.model == "ground_truth":
            self.debouncer = Debouncer(k=int(cfg["debounce_k"]))
            self.gt_dropped = 0  # verdicts for another instruction than the running try's
            gt_topic = required_topic(topics, "ground_truth_success", "the reward node")
            self.create_subscription(String, gt_topic, self._on_ground_truth, COMMAND_QOS)
            self.get_logger().warning("reward from the SIMULATOR'S GROUND TRUTH (reward.model=ground_truth): "
                                      "stand-in only, no classifier in the loop")
        else:
            from robot_calql.reward.model import load_classifier

            self.clf = load_classifier(self.model, device=str(cfg.get("device", "cpu")))
            self.debouncer = Debouncer(k=int(cfg["debounce_k"]), threshold=float(self.clf.threshold))
            cams = camera_specs(r, self.crop)
            if not cams:
                required_topic(topics, "image", "the reward node")  # ConfigError naming topics.image
            name = str(cfg.get("camera") or cams[0].name)
            by_name = {c.name: c for c in cams}
            if name not in by_name:
                raise ConfigError(f"reward.camera={name}: not one of the robot's cameras {list(by_name)}")
            self.camera = by_name[name]
            self.create_subscription(CompressedImage if self.camera.compressed else Image, self.camera.topic,
                                     self._on_image, SENSOR_QOS)
            self.gripper_open_min = self.clf.gripper_open_min
            gate = ""
            if self.gripper_open_min is not None:
                self.joint_topic = required_topic(topics, "joint_states", "the reward node's release gate")
                self.gripper_joint = str(r["gripper_joint"])
                self.gripper_range = tuple(float(x) for x in r["gripper_range"])  # [closed, open]
                self.create_subscription(JointState, self.joint_topic, self._on_joints, SENSOR_QOS)
                gate = f", success also needs gripper opening >= {self.gripper_open_min:g}"
            self.get_logger().info(f"reward classifier {self.model} (threshold {self.clf.threshold:.3f}{gate})")
        self.pub_prob = self.create_publisher(Float32, topics["success_prob"], COMMAND_QOS)
        self.pub_flag = self.create_publisher(Bool, topics["success"], COMMAND_QOS)
        self.create_subscription(String, topics["instruction"], self._on_instruction, LATCHED_QOS)
        self.create_subscription(String, topics["episode_event"], self._on_event, COMMAND_QOS)
        self.scored = self.successes = 0
        self._flag = False
        self.pub_status = self.create_publisher(String, "~/status", COMMAND_QOS)
        self.create_timer(1.0, self._publish_status)

    def status(self) -> dict:
        return {"model": self.model, "scored": self.scored, "successes": self.successes,
                "held_by_gate": self.held_by_gate, "gripper_open_min": self.gripper_open_min}

    def _publish_status(self) -> None:
        self.pub_status.publish(String(data=json.dumps(self.status())))

    def _on_instruction(self, msg: String) -> None:
        self.instruction = msg.data

    def _on_event(self, msg: String) -> None:
        ev = json.loads(msg.data)
        if ev.get("event") == "start":
            # the event carries the try's instruction: no wait for the instruction topic
            self.instruction = str(ev.get("instruction") or self.instruction)
            self.debouncer.reset()
            self._flag = False
            self.pub_flag.publish(Bool(data=False))

    def _on_joints(self, msg: JointState) -> None:
        if self.gripper_joint not in msg.name:
            return  # a driver may publish the arm and the gripper in separate messages
        try:
            g = joint_state_to_positions(msg.name, msg.position, [self.gripper_joint])[0]
        except CommandFormatError as e:
            self.warn.warn("joints", f"reward skips a joint state: {e}")
            return
        self.gripper = (gripper_opening(g, self.gripper_range), wall_s())

    def _released(self) -> bool:
        """The release gate on the current gripper opening; False (with a throttled warning) without
        a fresh joint state."""
        if self.gripper is None or wall_s() - self.gripper[1] > JOINT_STATE_MAX_AGE_S:
            age = "none yet" if self.gripper is None else f"the last is {wall_s() - self.gripper[1]:.1f} s old"
            self.warn.warn("gate", f"reward declares no success: the release gate (gripper_open_min "
                                   f"{self.gripper_open_min:g}) needs a joint state on {self.joint_topic} from the "
                                   f"last {JOINT_STATE_MAX_AGE_S} s ({age})")
            return False
        return self.clf.released(self.gripper[0])

    def _on_ground_truth(self, msg: String) -> None:
        try:
            gt = json.loads(msg.data)
            ok, instruction = bool(gt["success"]), str(gt["instruction"])
        except (ValueError, TypeError, KeyError) as e:
            self.warn.warn("ground_truth", f"reward skips a ground-truth message it cannot read ({e!r}): "
                                           f"{msg.data[:80]!r}")
            return
        if self.instruction and instruction != self.instruction:
            self.gt_dropped += 1  # judged for the previous task, sent before the simulator switched
            return
        self._emit(1.0 if ok else 0.0, ok)

    def _on_image(self, msg: Image | CompressedImage) -> None:
        now = wall_s()
        if now - self._last < self.min_period or not self.instruction:
            return
        self._last = now
        try:
            rgb = camera_image(msg, self.camera.crop, self.image_size)
        except ImageFormatError as e:
            self.warn.warn("image", f"reward skips a frame: {e}")
            return
        prob = float(self.clf.predict_proba(rgb[None], self.instruction)[0])
        self._emit(prob, prob)

    def _emit(self, prob: float, value) -> None:
        flag = self.debouncer.update(value)
        if flag and self.gripper_open_min is not None and not self._released():
            flag = False  # held back; the debouncer keeps its count, so an open gripper succeeds at once
            self.held_by_gate += 1
        self.scored += 1
        self.successes += bool(flag) and not self._flag
        self._flag = bool(flag)
        self.pub_prob.publish(Float32(data=float(prob)))
        self.pub_flag.publish(Bool(data=bool(flag)))


def main(args=None):
    from robot_calql_ros.run import run_single

    run_single(RewardNode, "reward", args)


if __name__ == "__main__":
    main()
