"""policy: acts at the control rate on the newest camera frame and joint state.

Inputs: the cameras (robot config `cameras`, else `topics.image`; sensor_msgs/Image or
CompressedImage per camera), `topics.joint_states`, `topics.ee_pose`, the
instruction and episode events of the episode controller, the safety node's verdicts
(`topics.command_status`), the learner's weights (`topics.weights`, transient local), and in the
stand-in `topics.sim_state` (privileged state, for state-mode checkpoints; optional) and
`topics.expert_action` (only with `policy.action_source=expert`). Topic names:
robot_calql_ros.common.topic_names; with robot config `ee_pose: fk` the EE pose is the forward
kinematics of each joint state (robot_calql.robot_config.build_kinematics), with `ee_pose: tf` the
transform frames.base -> frames.ee from /tf and /tf_static (robot_calql_ros.common.TfPoseSource;
refused in one line without the tf2_msgs package), and no `topics.ee_pose` is read; otherwise a
robot config without `topics.ee_pose` stops the node at start with a line naming it.

Image: each frame is decoded (raw or jpeg/png), cropped to its camera's crop (the main camera:
parameter `crop`, x/y/width/height, from calibration/<cell>/crop.yaml through
robot_calql_ros.nodeset, unless its `cameras` entry sets one; none: the whole frame) and resized
to `image_size` by robot_calql.control.cameras, the functions bag ingestion applies to training
frames. Several cameras: the main camera's frame triggers a step; every other camera's newest
frame goes with it under `image_<name>` if it is stamped within `limits.stale_image_s` (0.2 s
when unset) of the main frame, else the node does not act and warns naming the stale camera.

Timing: the node acts on the first camera frame at or after each control tick (1/control_hz),
so the camera-to-command latency is the processing time only, and it stops acting as soon as
frames stop (the safety watchdog then holds the arm) and resumes when they return.

Output: `topics.policy_command` (std_msgs/Float64MultiArray, physical delta + gripper + the
frame's stamp; the safety node checks it) and one transition per executed step on
`topics.transitions` (robot_calql.control.transport payload: obs, action, next obs, reward,
done, truncated, instruction, episode, step, frame stamp, actor id, sequence number, intervention:
a step the safety node executed the human's command for, with the human's action). Reward is
sparse: 1 on the step that ends an episode with success (the controller's `end` event with
reason `success`).

Only executed commands become transitions: the safety node answers every command on
`topics.command_status` (String JSON: stamp, sent, reason), and a step is sent to the learner
once its next observation is known and its verdict said sent. A step the safety node held
(stale joint states or pose, e-stop, unsafe command, ...) or whose verdict did not come within
two control periods, at least 0.5 s (VERDICT_TIMEOUT_S; no safety node) of the command is
dropped and counted; the next transition starts from its own observation
(robot_calql.control.transitions.TransitionAssembler).

Action source (`policy.action_source`): `agent` (the Cal-QL actor, weights from
`policy.checkpoint` and then from the learner, held as robot_calql.train.acting.ActingPolicy:
encoder + actor only, no targets or optimisers in this process, and no critics except a PA-RL
policy's, forward only, to rank its samples) or `expert` (the
stand-in's scripted demonstrator, used by tests and demos to make successes happen fast; the
agent still runs when it has weights, so inference and weight swaps are exercised). New weights are decoded in a thread of their own
and swapped in with one reference assignment: control never waits for them, and the node spins
on a single-threaded executor (cheapest dispatch for the 30 Hz camera + 50 Hz joint states).

Status on `~/status` (String JSON, 1 Hz, and at once when readiness changes): steps,
transitions sent, steps dropped (`held_dropped`: the safety node held the command;
`no_verdict_dropped`: no verdict in time) and the last hold reason, weights received,
`instruction_error` (the running instruction is unknown to the policy's vocabulary: logged as an
error when the instruction or new weights arrive, and the agent does not act on it), the last
200 steps' frame-to-command latency and actor time (p50/p99, ms), and `ready`: whether the node could act now (an action source: weights, or the
stand-in's expert action; a joint state and end-effector pose; a main camera frame received
within the last second, and every other camera's newest frame stamped within the last second).
The episode controller starts no try until it reads ready.
"""

from __future__ import annotations

import json
import threading
import uuid

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float32MultiArray, Float64MultiArray, String, UInt8MultiArray

from robot_calql.control.cameras import FrameSet, StaleCamera, camera_specs
from robot_calql.control.conversions import (
    ACTION_AXES,
    CommandFormatError,
    ImageFormatError,
    action_to_delta,
    delta_to_action,
    gripper_opening,
    joint_state_to_positions,
    pack_policy_command,
    yaw_from_quaternion,
)
from robot_calql.control.transitions import Transition, TransitionAssembler
from robot_calql.control.transport import pack_transition
from robot_calql_ros.common import (
    COMMAND_QOS,
    LATCHED_QOS,
    NEWEST_FRAME_QOS,
    SENSOR_QOS,
    TfPoseSource,
    ThrottledWarner,
    crop_param,
    node_params,
    require_tf2_msgs,
    required_topic,
    stamp_to_s,
    topic_names,
    transitions_qos,
    wall_s,
)

# the safety node's verdict on a command must come within max(this, two control periods)
VERDICT_TIMEOUT_S = 0.5


class PolicyNode(Node):
    def __init__(self, name: str = "policy", **kwargs):
        # what destroy_node uses, before anything that can fail (rclpy destroys a half-built node too)
        self._stop = threading.Event()
        self._decoder: threading.Thread | None = None
        super().__init__(name, automatically_declare_parameters_from_overrides=True, **kwargs)
        p = node_params(self)
        r = p["robot"]
        self.cfg = p["policy"]
        self.topics = t = topic_names(r["topics"])
        self.period = 1.0 / float(r["control_hz"])
        self.camera_period = 1.0 / float(r["camera_hz"])
        self.scale = (float(r["action_scale"]["translation_m"]), float(r["action_scale"]["rotation_rad"]))
        self.joints = list(r["joints"])
        self.gripper_joint = r["gripper_joint"]
        self.gripper_range = [float(x) for x in r["gripper_range"]]
        self.image_size = int(r["image_size"])
        self.expected_hw = (int(r["limits"]["camera_height"]), int(r["limits"]["camera_width"]))
        self.crop = crop_param(p)
        # the cameras, main first (robot_calql.control.cameras); the main camera's frame triggers a step
        self.cameras = camera_specs(r, self.crop)
        max_skew = float((r.get("limits") or {}).get("stale_image_s") or 0.2)
        self.frames = FrameSet(self.cameras, self.image_size, max_skew, self.expected_hw) if self.cameras else None
        self.source = self.cfg["action_source"]
        from robot_calql.agent import exploration_temperature

        if "explore_temperature" not in self.cfg:  # configs/launch_finetune.yaml holds the one default
            raise ValueError("policy.explore_temperature is not set (the node set passes configs/launch_finetune.yaml's)")
        try:  # one number, or one per action axis (dx, dy, dz, dyaw, gripper)
            self.temperature = exploration_temperature(self.cfg["explore_temperature"], len(ACTION_AXES))
        except ValueError as e:
            raise ValueError(f"policy.explore_temperature: {e}") from None
        if self.source not in ("agent", "expert"):
            raise ValueError(f"policy.action_source must be 'agent' or 'expert', got '{self.source}'")
        self.kin = None  # ee_pose: fk -> the EE pose from the joint states
        if r.get("ee_pose", "topic") == "fk":
            from robot_calql.robot_config import build_kinematics

            self.kin = build_kinematics(r)
        self.tf = None  # ee_pose: tf -> the EE pose from /tf and /tf_static (frames.base -> frames.ee)
        if r.get("ee_pose", "topic") == "tf":
            require_tf2_msgs()
            self.tf = TfPoseSource(r["frames"]["base"], r["frames"]["ee"],
                                   float((r.get("limits") or {}).get("stale_joint_state_s") or 0.2),
                                   self._on_tf_pose, ThrottledWarner(self))
        pose_key = () if self.kin is not None or self.tf is not None else ("ee_pose",)
        cam_key = () if self.cameras else ("image",)  # no camera: the error names topics.image
        for key in (*cam_key, "joint_states", *pose_key) + (("expert_action",) if self.source == "expert" else ()):
            required_topic(t, key, "the policy node")
        self.warn = ThrottledWarner(self)
        self.actor_id = uuid.uuid4().hex[:12]
        self.seq = 0

        self.joint_obs = None      # (q, gripper opening)
        self.ee = None             # (pos, yaw)
        self.sim_state = None
        self.expert_action = None
        self.instruction = ""
        self.episode = None        # id of the running episode (None: paused / not started)
        self.step_in_episode = 0
        # steps waiting for their next observation and the safety node's verdict
        self.assembler = TransitionAssembler(max(VERDICT_TIMEOUT_S, 2 * self.period))
        self.next_tick = 0.0
        self.actor = None          # robot_calql.train.acting.ActingPolicy: encoder + actor (PA-RL: + critics to rank)
        self.instruction_error = ""  # the running instruction is unknown to the policy (said when it arrived)
        self.weights_step = -1
        self.weights_received = 0
        self.steps = 0
        self.last_frame_t = -1.0   # wall time of the newest camera frame
        self._was_ready = False
        self._no_verdict_warned = 0
        self.latencies: list[float] = []   # frame stamp -> command published (s)
        self.act_times: list[float] = []   # time in the actor per step (s)
        self._lock = threading.Lock()

        if int(self.cfg.get("threads", 0)) > 0:
            import torch

            torch.set_num_threads(int(self.cfg["threads"]))
        if self.cfg.get("checkpoint"):
            from robot_calql_ros.agent_io import ActingPolicy

            self.actor = ActingPolicy.from_checkpoint(self.cfg["checkpoint"], device=self.cfg.get("device", "cpu"),
                                                      threads=None)  # threads: set above (policy.threads)
            self.weights_step = self.actor.step
            self.get_logger().info(f"policy weights from {self.cfg['checkpoint']} (step {self.actor.step})")

        self.pub_cmd = self.create_publisher(Float64MultiArray, t["policy_command"], COMMAND_QOS)
        self.pub_tr = self.create_publisher(UInt8MultiArray, t["transitions"],
                                            transitions_qos(int(self.cfg["transition_history"])))
        for cam in self.cameras:
            cb = self._on_image if cam.main else (lambda msg, name=cam.name: self._on_other_camera(name, msg))
            self.create_subscription(CompressedImage if cam.compressed else Image, cam.topic, cb, NEWEST_FRAME_QOS)
        self.create_subscription(JointState, t["joint_states"], self._on_joints, SENSOR_QOS)
        if self.tf is not None:
            self.tf.subscribe(self)
        elif self.kin is None:
            self.create_subscription(PoseStamped, t["ee_pose"], self._on_pose, SENSOR_QOS)
        self.create_subscription(String, t["instruction"], self._on_instruction, LATCHED_QOS)
        self.create_subscription(String, t["episode_event"], self._on_event, COMMAND_QOS)
        self.create_subscription(String, t["command_status"], self._on_verdict, COMMAND_QOS)
        if t.get("sim_state"):
            self.create_subscription(Float32MultiArray, t["sim_state"], self._on_state, SENSOR_QOS)
        if self.source == "expert":
            self.create_subscription(Float64MultiArray, t["expert_action"], self._on_expert, COMMAND_QOS)
        # weights: the callback only hands the payload over; a decoder thread builds the new actor
        self._new_weights = None
        self._weights_ready = threading.Event()
        self._decoder = threading.Thread(target=self._decode_loop, name="policy_weights", daemon=True)
        self._decoder.start()
        self.create_subscription(UInt8MultiArray, t["weights"], self._on_weights, LATCHED_QOS)
        # ~/status (/policy/status): steps, weights received, weights' update number (1 Hz, String JSON)
        self.pub_status = self.create_publisher(String, "~/status", COMMAND_QOS)
        self.create_timer(1.0, self._publish_status)
        self.create_timer(0.1, self._check_ready)
        self.get_logger().info(f"policy ({self.source}) at {1 / self.period:.1f} Hz, actor id {self.actor_id}")

    def status(self) -> dict:
        """Counters plus the last 200 steps' timing: frame stamp -> command published (latency)
        and the time spent in the actor (act), in ms."""
        lat = np.asarray(self.latencies[-200:]) * 1e3
        act = np.asarray(self.act_times[-200:]) * 1e3

        def pct(x, q):
            return round(float(np.percentile(x, q)), 2) if x.size else None
        c = self.assembler.counts
        return {"ready": self.ready(), "steps": self.steps, "transitions_sent": self.seq,
                "held_dropped": c["held"], "no_verdict_dropped": c["no_verdict"],
                "last_hold_reason": self.assembler.last_held_reason,
                "weights_received": self.weights_received, "weights_step": self.weights_step, "source": self.source,
                "instruction_error": self.instruction_error,
                "latency_ms_p50": pct(lat, 50), "latency_ms_p99": pct(lat, 99),
                "act_ms_p50": pct(act, 50), "act_ms_p99": pct(act, 99)}

    def ready(self) -> bool:
        """Whether the node could act on the next frame (see the module docstring)."""
        source = self.expert_action is not None if self.source == "expert" else self.actor is not None
        return (source and self.joint_obs is not None and self.ee is not None
                and wall_s() - self.last_frame_t < 1.0 and not self.frames.stale(wall_s(), 1.0))

    def _publish_status(self) -> None:
        with self._lock:  # steps whose verdict is overdue are dropped even while no frame comes
            self._send(self.assembler.expire(wall_s()))
        missing = self.assembler.counts["no_verdict"]
        if missing > self._no_verdict_warned:
            self._no_verdict_warned = missing
            self.warn.warn("no_verdict", f"{missing} steps dropped so far: no verdict from the safety node on "
                           f"{self.topics['command_status']} in time (is the safety node running?)")
        self.pub_status.publish(String(data=json.dumps(self.status())))

    def _check_ready(self) -> None:
        if self.ready() != self._was_ready:  # tell the episode controller now, not at the next 1 Hz status
            self._was_ready = not self._was_ready
            self._publish_status()

    # ------------------------------------------------------------------ inputs
    def _on_joints(self, msg: JointState) -> None:
        try:
            q = joint_state_to_positions(msg.name, msg.position, self.joints)
            g = joint_state_to_positions(msg.name, msg.position, [self.gripper_joint])[0]
        except CommandFormatError as e:
            self.joint_obs = None
            self.warn.warn("joints", f"policy not acting: bad joint state ({e})")
            return
        self.joint_obs = (q, gripper_opening(g, self.gripper_range))
        if self.kin is not None:
            self.ee = self.kin.pose(q)

    def _on_pose(self, msg: PoseStamped) -> None:
        p, o = msg.pose.position, msg.pose.orientation
        pos = np.array([p.x, p.y, p.z])
        self.ee = (pos, yaw_from_quaternion(o.x, o.y, o.z, o.w)) if np.all(np.isfinite(pos)) else None

    def _on_tf_pose(self, pos: np.ndarray, yaw: float, stamp_s: float) -> None:
        self.ee = (pos, yaw)

    def _on_state(self, msg: Float32MultiArray) -> None:
        self.sim_state = np.asarray(msg.data, np.float32)

    def _on_expert(self, msg: Float64MultiArray) -> None:
        self.expert_action = np.asarray(msg.data, np.float64)

    def _on_instruction(self, msg: String) -> None:
        self.instruction = msg.data
        self._check_instruction()

    def _check_instruction(self) -> None:
        """Say at once (an error in the log and `instruction_error` in the status) when the running
        instruction is one the policy was not trained with; called when an instruction or new
        weights arrive. The node then does not act with the agent until it knows the instruction."""
        from robot_calql_ros.agent_io import UnknownInstructionError

        actor, error = self.actor, ""
        if actor is not None and self.instruction:
            try:
                actor.instruction_id(self.instruction)
            except UnknownInstructionError as e:
                error = str(e)
        if error and error != self.instruction_error:
            self.get_logger().error(f"policy cannot act: {error}")
        self.instruction_error = error

    def _on_event(self, msg: String) -> None:
        ev = json.loads(msg.data)
        with self._lock:
            if ev["event"] == "start":
                self.episode = int(ev["episode"])
                self.instruction = ev["instruction"]
                self._check_instruction()
                self.step_in_episode = 0
                self._send(self.assembler.start(wall_s()))
            elif ev["event"] == "end" and self.episode == int(ev["episode"]):
                # the last step of the episode: its next obs is the newest observation
                success = ev["reason"] == "success"
                if self.last_obs is not None:
                    self._send(self.assembler.end(self.last_obs, reward=1.0 if success else 0.0, done=success,
                                                  truncated=not success, now=wall_s()))
                self.episode = None

    def _on_verdict(self, msg: String) -> None:
        """The safety node's verdict on one command: sent to the arm, or held (and why)."""
        try:
            v = json.loads(msg.data)
            if v["stamp"] is None:
                return  # a command without a readable stamp: it was never one of ours
            stamp, sent, reason = float(v["stamp"]), bool(v["sent"]), str(v.get("reason", ""))
            source = str(v.get("source") or "policy")
            # a takeover: the human's executed delta, normalised like the policy's actions
            human = delta_to_action(np.asarray(v["action"], np.float64), *self.scale) \
                if source == "human" and sent else None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            self.warn.warn("verdict", f"unreadable command verdict {msg.data[:80]!r} ({e})")
            return
        with self._lock:
            try:
                self._send(self.assembler.verdict(stamp, sent, wall_s(), reason, source, human))
            except ValueError as e:
                self.warn.warn("verdict", f"unusable command verdict {msg.data[:80]!r} ({e})")

    def _on_weights(self, msg: UInt8MultiArray) -> None:
        self._new_weights = msg.data  # only the newest payload matters
        self._weights_ready.set()

    def _decode_loop(self) -> None:
        from robot_calql_ros.agent_io import ActingPolicy

        while not self._stop.is_set():
            if not self._weights_ready.wait(0.2):
                continue
            self._weights_ready.clear()
            payload, self._new_weights = self._new_weights, None
            if payload is None:
                continue
            try:
                actor = ActingPolicy.from_payload(payload, device=self.cfg.get("device", "cpu"), threads=None)
            except ValueError as e:
                self.warn.warn("weights", f"ignoring weights: {e}")
                continue
            self.actor = actor  # one reference assignment: the control path never waits
            self._check_instruction()  # the new weights may know other instructions
            self.weights_step = actor.step
            self.weights_received += 1
            self.get_logger().info(f"new weights from the learner (update {actor.step})")

    def destroy_node(self):
        self._stop.set()
        if self._decoder is not None and self._decoder.is_alive():
            self._decoder.join(timeout=5.0)
        return super().destroy_node()

    last_obs = None

    # ------------------------------------------------------------------ control
    def _on_other_camera(self, name: str, msg: Image | CompressedImage) -> None:
        self.frames.put(name, msg, stamp_to_s(msg.header.stamp))  # decoded only when a step uses it

    def _observation(self, msg: Image | CompressedImage) -> dict | None:
        try:  # every camera's policy image: the main frame + the others' newest (robot_calql.control.cameras)
            images = self.frames.images(msg, stamp_to_s(msg.header.stamp))
        except StaleCamera as e:
            self.warn.warn("stale_camera", f"policy not acting: {e}")
            return None
        except ImageFormatError as e:
            self.warn.warn("image", f"policy not acting: {e}")
            return None
        if self.joint_obs is None or self.ee is None:
            self.warn.warn("no_state", "policy not acting: no valid joint state / end-effector pose yet")
            return None
        q, grip = self.joint_obs
        pos, yaw = self.ee
        obs = {**images, "proprio": np.concatenate([q, [grip], pos, [yaw]]).astype(np.float32),
               "instruction": self.instruction}
        if self.sim_state is not None:
            obs["state"] = self.sim_state
        return obs

    def _on_image(self, msg: Image | CompressedImage) -> None:
        now = wall_s()
        self.last_frame_t = now
        if now < self.next_tick - 0.5 * self.camera_period:
            return
        with self._lock:
            if self.episode is None or not self.instruction:
                return
            obs = self._observation(msg)
            if obs is None:
                return
            # next tick one period on; after a stall (or at start) skip the missed ticks
            self.next_tick += self.period
            if self.next_tick < now:
                self.next_tick = now + self.period
            t_act = wall_s()
            action = self._act(obs)
            self.act_times.append(wall_s() - t_act)
            if action is None:
                return
            stamp = stamp_to_s(msg.header.stamp)
            delta = action_to_delta(action, *self.scale)
            self.pub_cmd.publish(Float64MultiArray(data=pack_policy_command(delta, stamp)))
            self.latencies.append(wall_s() - stamp)
            self._send(self.assembler.command(obs, action, stamp, wall_s(), self.episode, self.step_in_episode))
            self.last_obs = obs
            self.steps += 1
            self.step_in_episode += 1

    def _act(self, obs: dict) -> np.ndarray | None:
        from robot_calql_ros.agent_io import UnknownInstructionError

        actor, agent_action = self.actor, None
        if actor is not None:
            try:
                agent_action = actor.act(obs, obs["instruction"], self.temperature)
            except UnknownInstructionError as e:  # logged when the instruction arrived (_check_instruction)
                self.warn.warn("instruction", f"policy not acting with the agent: {e}")
        if self.source == "expert":
            if self.expert_action is None or self.expert_action.shape != (len(ACTION_AXES),):
                self.warn.warn("expert", "policy not acting: no expert action from the stand-in yet")
                return None
            return self.expert_action.astype(np.float32)
        if actor is None:
            self.warn.warn("no_weights", "policy not acting: no weights yet (policy.checkpoint or the learner)")
        return agent_action

    def _send(self, transitions: list[Transition]) -> None:
        """Publish executed steps to the learner (call with the lock held)."""
        for tr in transitions:
            obs, nxt = tr.obs, tr.next_obs
            arrays = {"image": obs["image"], "proprio": obs["proprio"], "action": tr.action,
                      "next_image": nxt["image"], "next_proprio": nxt["proprio"]}
            if "state" in obs and "state" in nxt:
                arrays["state"], arrays["next_state"] = obs["state"], nxt["state"]
            for cam in self.cameras[1:]:  # the other cameras' images (image_<name>)
                arrays[cam.key], arrays["next_" + cam.key] = obs[cam.key], nxt[cam.key]
            meta = {"actor": self.actor_id, "seq": self.seq, "episode": tr.episode, "step": tr.step,
                    "stamp": tr.stamp, "reward": tr.reward, "done": tr.done, "truncated": tr.truncated,
                    "instruction": obs["instruction"], "intervention": tr.intervention}
            self.pub_tr.publish(UInt8MultiArray(data=pack_transition(meta, arrays)))
            self.seq += 1


def main(args=None):
    from robot_calql.agent.cpu import configure_cpu_process
    from robot_calql_ros.run import run_single

    configure_cpu_process()  # process-wide CPU settings for the agent this node runs (agent/cpu.py)
    run_single(PolicyNode, "policy", args)


if __name__ == "__main__":
    main()
