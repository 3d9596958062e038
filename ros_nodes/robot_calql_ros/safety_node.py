"""safety: the last node before the arm (a lifecycle node: motion only while active).

Every policy command (`topics.policy_command`, std_msgs/Float64MultiArray, layout
robot_calql.control.conversions.POLICY_COMMAND_LAYOUT) goes through
robot_calql.control.safety before anything reaches `topics.command`:

- finite values and a known end-effector position, else the arm holds;
- at most `limits.max_translation_step_m` / `max_rotation_step_rad` per command;
- the target stays inside the workspace box of calibration/<cell>/workspace.yaml (clipped), for
  every position the arm may be at: the last EE pose (by its stamp) plus the translations sent
  since that it may not show yet (`limits.command_settle_s`);
- joint interfaces: the arm is taken to be at the joints it was last sent to (while the joint
  state may not show them yet, `limits.command_settle_s`) or else at the measured joints; IK of
  that position plus the delta, then joint limits and `max_joint_step_rad`, then the forward
  kinematics of the result must be inside the box and within `max_translation_step_m`, else
  the joint step is cut (halved up to three times) or the arm held;
- the EE pose comes from `topics.ee_pose`, or (robot config `ee_pose: fk`) from each joint state
  through the robot's `kinematics` (robot_calql.robot_config.build_kinematics: standin or a URDF),
  with the joint state's stamp, or (`ee_pose: tf`) from /tf and /tf_static, frames.base ->
  frames.ee (robot_calql_ros.common.TfPoseSource), with its oldest moving link's stamp (the
  tf2_msgs package is needed: without it configuring fails in one line saying so); the joint
  interfaces use the same model for IK and FK;
- a watchdog: camera frames of the main camera (robot config `cameras`' first, raw or compressed,
  else `topics.image`; of the expected size), joint states (finite) and the EE pose must
  be fresh (by their stamps when stamped), and the command must come from a fresh frame;
  otherwise the arm holds (zero twist, or the joints it was last sent to / the measured joints),
  checked at 4x the control rate, so within one period. A stamp more than
  `limits.future_stamp_tolerance_s` ahead of the clock is stale; a pose or joint state older than
  the one held is ignored;
- an e-stop (`topics.estop`, std_msgs/Bool): true holds the arm and latches until the node is
  deactivated and activated again (`ros2 lifecycle set /safety deactivate` then `activate`).
- while the arm is homing (episode event `home` until the next `start` or `help`, at most
  `home_timeout_s`) the robot's own home routine owns the arm: the node sends no holds (a hold
  at the current joints would cancel a homing trajectory) and refuses policy commands. An e-stop
  still holds at once.

Human takeover (robot_calql.control.teleop.TakeoverArbiter): while the teleop node's newest
command (`topics.teleop_command`, same layout, stamped with the time of the device input; a held key:
the tick's time while its hold lasts) is at
most one control period old, it replaces each policy command and goes through exactly the same
checks (an e-stop still wins); a teleop command arriving alone moves nothing. When a takeover's
input goes stale (dead-man released, device unplugged) the node holds the arm within one control
period and publishes `{"stamp": null, "sent": false, "source": "policy", "reason": "takeover
ended"}` on `topics.command_status`, and the policy's next command is checked as before.

Everything actually sent (commands and holds) is echoed on `topics.sent_command` (same type).
Each policy command gets a verdict on `topics.command_status` (std_msgs/String JSON
`{"stamp": <the command's frame stamp>, "sent": bool, "reason": "" or why it was held,
"source": "policy" or "human", "action": the executed delta + gripper or null}`).
Problems are logged as throttled warnings that name them.
"""

from __future__ import annotations

import json

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, Float64, Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from robot_calql.control.cameras import camera_specs, decode_frame
from robot_calql.control.conversions import (
    CommandFormatError,
    delta_to_twist,
    joint_state_to_positions,
    unpack_policy_command,
)
from robot_calql.control.safety import (
    SafetyLimits,
    SinceMeasurement,
    Watchdog,
    check_delta,
    check_joint_command,
    check_stamp,
    load_workspace,
    position_bounds,
)
from robot_calql.control.teleop import TakeoverArbiter
from robot_calql_ros.common import (
    COMMAND_QOS,
    SENSOR_QOS,
    TfPoseSource,
    ThrottledWarner,
    node_params,
    require_tf2_msgs,
    required_topic,
    s_to_stamp,
    stamp_to_s,
    topic_names,
    wall_s,
)

INTERFACES = {"delta_ee_twist": TwistStamped, "joint_position_array": Float64MultiArray,
              "joint_trajectory": JointTrajectory}


class SafetyNode(LifecycleNode):
    def __init__(self, name: str = "safety", **kwargs):
        super().__init__(name, automatically_declare_parameters_from_overrides=True, **kwargs)
        self.active = False
        self.estopped = False
        self.holding_reason = ""
        self.sent_count = 0
        self.hold_count = 0
        self.homing_until = 0.0   # wall time: the arm's home routine owns it until then
        self.warn = ThrottledWarner(self)
        self._subs, self._pubs, self._timers = [], [], []
        self.configure_error = ""  # why the last configure failed
        self._autostarting = False

    def autostart(self) -> None:
        """Configure and activate right away (parameter `autostart`, used in the stand-in). A
        configuration that fails is then a start error (ValueError naming the problem), so
        `run_single` and the launchers stop with one line instead of running an unconfigured node."""
        if bool(node_params(self).get("autostart", False)):
            self._autostarting = True
            try:
                if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                    raise ValueError(f"cannot configure: {self.configure_error}")
            finally:
                self._autostarting = False
            self.trigger_activate()

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            p = node_params(self)
            r = p["robot"]
            self.topics = topic_names(r["topics"])
            self.interface = r["command_interface"]
            if self.interface not in INTERFACES:
                raise ValueError(f"unknown command_interface '{self.interface}' (known: {', '.join(INTERFACES)})")
            self.control_hz = float(r["control_hz"])
            self.joints = list(r["joints"])
            self.gripper_joint = r["gripper_joint"]
            self.frame = r["frames"]["base"]
            lim = r["limits"]
            self.limits = SafetyLimits.from_config(lim, self.control_hz)
            self.image_size = (int(lim["camera_height"]), int(lim["camera_width"]))
            self.home_timeout_s = float(p.get("home_timeout_s", 30.0))
            self.workspace = load_workspace(p["workspace_file"])
            # the EE pose: from topics.ee_pose, or (ee_pose: fk) the joint states through the kinematics
            self.pose_from_fk = r.get("ee_pose", "topic") == "fk"
            self.pose_from_tf = r.get("ee_pose", "topic") == "tf"   # frames.base -> frames.ee from /tf
            if self.pose_from_tf:
                require_tf2_msgs()
            self.kin = None
            if self.interface != "delta_ee_twist" or self.pose_from_fk:
                self.kin = self._kinematics(r)
            self.camera = next(iter(camera_specs(r)), None)  # the watched camera: the main one
            for key in (() if self.camera else ("image",)) + ("joint_states", "command", "sent_command") + (
                    () if self.pose_from_fk or self.pose_from_tf else ("ee_pose",)):
                required_topic(self.topics, key, "the safety node")
        except (ValueError, KeyError) as e:
            self.configure_error = str(e)
            if not self._autostarting:  # autostart raises it as the node's start error instead
                self.get_logger().error(f"cannot configure: {e}")
            return TransitionCallbackReturn.FAILURE
        self.watchdog = Watchdog({"image": self.limits.stale_image_s,
                                  "joint_states": self.limits.stale_joint_state_s,
                                  "ee_pose": self.limits.stale_joint_state_s,
                                  "command": self.limits.stale_command_s})
        self.q = None
        self.ee = None
        # the last EE pose / joint state and what was sent since (translations / joint targets)
        self.pose_track = SinceMeasurement(self.limits.command_settle_s)
        self.tf_source = TfPoseSource(r["frames"]["base"], r["frames"]["ee"], self.limits.stale_joint_state_s,
                                      self._on_tf_pose, self.warn) if self.pose_from_tf else None
        self.joint_track = SinceMeasurement(self.limits.command_settle_s)
        self._last_hold = -1e9
        self.arbiter = TakeoverArbiter(1.0 / self.control_hz)   # the human's command while fresh
        self._executed: list[float] | None = None   # the delta + gripper last sent to the arm
        self._takeovers_logged = 0
        self.pub_cmd = self.create_publisher(INTERFACES[self.interface], self.topics["command"], COMMAND_QOS)
        self.pub_sent = self.create_publisher(INTERFACES[self.interface], self.topics["sent_command"], COMMAND_QOS)
        self.pub_grip = self.create_publisher(Float64, self.topics["gripper_command"], COMMAND_QOS)
        self.pub_status = self.create_publisher(String, self.topics["command_status"], COMMAND_QOS)
        # e-stop and sensors before the command: rclpy serves ready subscriptions in creation
        # order, so a bad frame or joint state that is waiting is seen before a waiting command
        self._subs = [
            self.create_subscription(Bool, self.topics["estop"], self._on_estop, COMMAND_QOS),
            self.create_subscription(String, self.topics["episode_event"], self._on_episode_event, COMMAND_QOS),
            self.create_subscription(CompressedImage if self.camera.compressed else Image, self.camera.topic,
                                     self._on_image, SENSOR_QOS),
            self.create_subscription(JointState, self.topics["joint_states"], self._on_joints, SENSOR_QOS),
            *([] if self.pose_from_fk or self.pose_from_tf else
              [self.create_subscription(PoseStamped, self.topics["ee_pose"], self._on_pose, SENSOR_QOS)]),
            *(self.tf_source.subscribe(self) if self.tf_source else []),
            self.create_subscription(Float64MultiArray, self.topics["teleop_command"], self._on_teleop_command,
                                     COMMAND_QOS),
            self.create_subscription(Float64MultiArray, self.topics["policy_command"], self._on_policy_command, COMMAND_QOS),
        ]
        self._timers = [self.create_timer(0.25 / self.control_hz, self._check_watchdog)]
        self.get_logger().info(
            f"configured: {self.interface} -> {self.topics['command']}, workspace {self.workspace.min.tolist()}"
            f" .. {self.workspace.max.tolist()} ({self.workspace.frame})")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self.active = True
        self.estopped = False
        self.get_logger().info("active: motion enabled")
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._hold("deactivated")
        self.active = False
        self.get_logger().info("inactive: motion disabled")
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        for s in self._subs:
            self.destroy_subscription(s)
        for t in self._timers:
            self.destroy_timer(t)
        for pub in (self.pub_cmd, self.pub_sent, self.pub_grip, self.pub_status):
            self.destroy_publisher(pub)
        self._subs, self._timers = [], []
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        if self.active:
            self._hold("shutting down")
        self.active = False
        return TransitionCallbackReturn.SUCCESS

    def _kinematics(self, robot: dict):
        """The robot config's kinematics model (robot_calql.robot_config.build_kinematics)."""
        from robot_calql.robot_config import build_kinematics

        kin = build_kinematics(robot)
        if kin is None:
            need = "ee_pose: fk" if self.interface == "delta_ee_twist" else f"command_interface {self.interface}"
            raise ValueError(f"{need} needs a kinematics model: the robot config's `kinematics` (standin, or "
                             "{urdf: <file>} of the arm's URDF)")
        return kin

    # ------------------------------------------------------------------ inputs
    def _future_stamp(self, name: str, stamp, now: float) -> bool:
        """True (input invalidated, warning) when a sensor stamp lies in the future."""
        problem = check_stamp(stamp_to_s(stamp), now, self.limits, name)
        if problem:
            self.watchdog.invalidate(name)
            self.warn.warn("future_" + name, problem + "; arm held")
        return bool(problem)

    def _measured_at(self, stamp, now: float) -> tuple[float, float]:
        """(time the measurement was taken, time to feed the watchdog) of a joint state / pose.

        An unstamped one (stamp 0) is taken as the oldest a fresh one may be: a command sent
        since then may not show in it yet.
        """
        t = stamp_to_s(stamp)
        if t == 0.0:
            return now - self.limits.stale_joint_state_s, now
        return min(t, now), min(t, now)

    def _on_image(self, msg: Image | CompressedImage) -> None:
        now = wall_s()
        if isinstance(msg, CompressedImage):  # its size is known once decoded
            try:
                (h, w), enc, short = decode_frame(msg).shape[:2], msg.format, False
            except ValueError:
                (h, w), enc, short = (0, 0), msg.format, True
        else:
            (h, w), enc, short = (msg.height, msg.width), msg.encoding, len(msg.data) < msg.height * msg.step
        if (h, w) != self.image_size or short:
            self.watchdog.invalidate("image")
            self.warn.warn("image_size", f"camera frame {w}x{h} ({enc}) is not the "
                           f"expected {self.image_size[1]}x{self.image_size[0]}: treated as no image, arm held")
            return
        if self._future_stamp("image", msg.header.stamp, now):
            return
        self.watchdog.feed("image", now)

    def _on_joints(self, msg: JointState) -> None:
        now = wall_s()
        try:
            q = joint_state_to_positions(msg.name, msg.position, self.joints)
        except CommandFormatError as e:
            self.q = None
            self.joint_track.invalidate()
            self.watchdog.invalidate("joint_states")
            self.warn.warn("joint_states", f"bad joint state: {e}; arm held")
            return
        if self._future_stamp("joint_states", msg.header.stamp, now):
            return
        t_meas, t_feed = self._measured_at(msg.header.stamp, now)
        if not self.joint_track.measure(q, t_meas):
            self.warn.warn("joint_states_order", "joint state older than the one held: ignored")
            return
        self.q = q
        if np.any(q < self.limits.joint_lower - 0.05) or np.any(q > self.limits.joint_upper + 0.05):
            self.warn.warn("joint_limits", f"joint state outside the joint limits: {np.round(q, 3).tolist()}")
        self.watchdog.feed("joint_states", t_feed)
        if self.pose_from_fk:  # the EE pose of these joints, measured when they were
            self._pose_measured(self.kin.fk(q)[0], msg.header.stamp, now)

    def _on_pose(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        self._pose_measured(np.array([p.x, p.y, p.z]), msg.header.stamp, wall_s())

    def _on_tf_pose(self, pos: np.ndarray, yaw: float, stamp_s: float) -> None:
        stamp = Time()
        s_to_stamp(stamp_s, stamp)
        self._pose_measured(pos, stamp, wall_s())

    def _pose_measured(self, pos: np.ndarray, stamp, now: float) -> None:
        """An EE position (from topics.ee_pose, or FK of a joint state) with its stamp."""
        if not np.all(np.isfinite(pos)):
            self.ee = None
            self.pose_track.invalidate()
            self.watchdog.invalidate("ee_pose")
            self.warn.warn("ee_pose", f"non-finite end-effector pose {pos.tolist()}; arm held")
            return
        if self._future_stamp("ee_pose", stamp, now):
            return
        t_meas, t_feed = self._measured_at(stamp, now)
        if not self.pose_track.measure(pos, t_meas):
            self.warn.warn("ee_pose_order", "end-effector pose older than the one held: ignored")
            return
        self.ee = pos
        self.watchdog.feed("ee_pose", t_feed)

    def _on_estop(self, msg: Bool) -> None:
        if msg.data and not self.estopped:
            self.estopped = True
            self.get_logger().error("E-STOP: arm held; motion stays disabled until the node is "
                                    "deactivated and activated again")
            self._hold("e-stop")

    def _on_episode_event(self, msg: String) -> None:
        try:
            kind = json.loads(msg.data).get("event")
        except (ValueError, AttributeError):
            return
        if kind == "home":
            self.homing_until = wall_s() + self.home_timeout_s
            self.get_logger().info("arm homing: no holds, policy commands refused until the next episode starts")
        elif kind in ("start", "help") and self.homing_until:
            self.homing_until = 0.0
            self.watchdog.invalidate("command")  # the first command after homing starts afresh

    @property
    def homing(self) -> bool:
        return wall_s() < self.homing_until

    # ------------------------------------------------------------------ commands
    def _on_teleop_command(self, msg: Float64MultiArray) -> None:
        """The human's newest command: kept for the arbitration, never sent on its own."""
        try:
            delta, stamp = unpack_policy_command(msg.data)
        except CommandFormatError as e:
            self.warn.warn("teleop", f"ignored teleop command: {e}")
            return
        problem = self.arbiter.human(delta, stamp, wall_s())
        if problem:
            self.warn.warn("teleop_stale", f"ignored teleop command: {problem}")

    def _on_policy_command(self, msg: Float64MultiArray) -> None:
        stamp = float(msg.data[-1]) if len(msg.data) else float("nan")
        human = self.arbiter.current(wall_s())
        if human is not None:  # a takeover: the human's command, at the policy's tick and frame stamp
            if self._takeovers_logged != self.arbiter.takeovers:
                self._takeovers_logged = self.arbiter.takeovers
                self.get_logger().info("human takeover: teleop commands replace the policy's")
            msg = Float64MultiArray(data=[float(x) for x in human] + [stamp])
        self._executed = None
        reason = self._handle_policy_command(msg)
        # the verdict on every policy command: the policy node turns only sent commands into
        # transitions (an action that was held never happened on the arm), with the human's
        # executed action while a takeover runs
        self.pub_status.publish(String(data=json.dumps(
            {"stamp": stamp if np.isfinite(stamp) else None, "sent": not reason, "reason": reason,
             "source": "policy" if human is None else "human", "action": None if reason else self._executed})))

    def _handle_policy_command(self, msg: Float64MultiArray) -> str:
        """Check one policy command and send it or hold; returns "" when sent, else why not."""
        now = wall_s()
        if not self.active or self.estopped:
            why = "e-stop latched" if self.estopped else "safety node not active"
            self.warn.warn("inactive", "command ignored: " + why)
            return why
        if self.homing:
            self.warn.warn("homing", "command refused: the arm is homing (episode event 'home', no 'start' yet)")
            return "homing"
        try:
            delta, stamp = unpack_policy_command(msg.data)
        except CommandFormatError as e:
            self.warn.warn("command", f"rejected command: {e}; arm held")
            self._hold("bad command")
            return "bad command"
        stale = [n for n in self.watchdog.stale(now) if n != "command"]
        if stale:
            self.warn.warn("stale", f"command not sent: stale or invalid {', '.join(stale)}; arm held")
            self._hold("stale " + ", ".join(stale))
            return "stale " + ", ".join(stale)
        problem = check_stamp(stamp, now, self.limits, "command frame", max_age_s=self.limits.stale_image_s)
        if problem:
            why = "future frame" if stamp > now else "old frame"
            self.warn.warn(why.replace(" ", "_"), f"{problem}; arm held")
            self._hold(why)
            return why
        if self.interface == "delta_ee_twist":
            # every position the arm may be at: the pose plus the translations it may not show yet
            bounds = position_bounds(self.ee, self.pose_track.pending()) if self.ee is not None else None
            safe, problems = self._check_delta(delta, self.ee, bounds)
            if safe is None:
                return "unsafe command"
            out = self._twist(safe[:4], stamp)
            self.pose_track.record(now, safe[:3])
        else:
            # absolute targets: the arm is at, or on its way to, the joints it was last sent to
            q_ref = self.joint_track.latest()
            if q_ref is None:
                self._hold("joint state unknown")
                return "joint state unknown"
            p_ref, yaw_ref = self.kin.pose(q_ref)
            safe, problems = self._check_delta(delta, p_ref, None)
            if safe is None:
                return "unsafe command"
            q_target = self.kin.ik(p_ref + safe[:3], yaw_ref + safe[3], q_ref)
            q_safe, jproblems = check_joint_command(q_target, q_ref, lambda q: self.kin.fk(q)[0],
                                                    self.workspace, self.limits)
            for pr in jproblems:
                self.warn.warn("joints:" + pr[:12], pr)
            if q_safe is None:
                self._hold("unsafe joint targets")
                return "unsafe joint targets"
            out = self._joints(q_safe, safe[4], stamp)
            self.joint_track.record(now, q_safe)
        self.watchdog.feed("command", now)
        self.holding_reason = ""
        self._executed = [float(x) for x in safe[:5]]
        self._send(out, safe[4])
        return ""

    def _check_delta(self, delta, ee, bounds):
        """check_delta with its problems logged; holds the arm when the command is unsafe."""
        safe, problems = check_delta(delta, ee, self.workspace, self.limits, bounds)
        for pr in problems:
            self.warn.warn(pr.split(" ")[0] + pr.split(" ")[1], pr)
        if safe is None:
            self._hold("unsafe command")
        return safe, problems

    def _twist(self, d4, stamp: float) -> TwistStamped:
        lin, ang = delta_to_twist(d4, self.control_hz)
        msg = TwistStamped()
        s_to_stamp(stamp, msg.header.stamp)
        msg.header.frame_id = self.frame
        msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = lin
        msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = ang
        return msg

    def _joints(self, q, gripper: float, stamp: float):
        if self.interface == "joint_position_array":
            return Float64MultiArray(data=[float(x) for x in q] + [float(gripper)])
        msg = JointTrajectory()
        s_to_stamp(stamp, msg.header.stamp)
        msg.joint_names = self.joints + [self.gripper_joint]
        pt = JointTrajectoryPoint(positions=[float(x) for x in q] + [float(gripper)])
        pt.time_from_start.nanosec = int(1e9 / self.control_hz)
        msg.points = [pt]
        return msg

    def _send(self, msg, gripper: float | None) -> None:
        self.pub_cmd.publish(msg)
        self.pub_sent.publish(msg)
        if gripper is not None and self.interface == "delta_ee_twist":
            self.pub_grip.publish(Float64(data=float(gripper)))
        self.sent_count += 1

    def _hold(self, reason: str) -> None:
        """Send a hold command at most once a period: a zero twist, or the joints the arm was last
        sent to when its joint state may not show that yet (else the measured joints)."""
        now = wall_s()
        if not self.holding_reason:  # log the change from moving to holding, not every hold
            self.get_logger().info(f"holding the arm: {reason}")
        self.holding_reason = reason
        if now - self._last_hold < 0.9 / self.control_hz:
            return
        self._last_hold = now
        if self.interface == "delta_ee_twist":
            msg = self._twist(np.zeros(4), now)
        elif (q_hold := self.joint_track.latest()) is not None:
            if not self.joint_track.sent:
                self.joint_track.record(now, q_hold)   # a hold is a target too
            msg = self._joints(q_hold, float("nan"), now)
            if isinstance(msg, Float64MultiArray):
                msg.data = msg.data[:-1]  # hold: arm joints only, the gripper keeps its command
            else:
                msg.joint_names = msg.joint_names[:-1]
                msg.points[0].positions = msg.points[0].positions[:-1]
        else:
            return  # joint interface without a valid joint state: send nothing (the driver holds)
        self.pub_cmd.publish(msg)
        self.pub_sent.publish(msg)
        self.hold_count += 1

    def _check_watchdog(self) -> None:
        if not self.active:
            return
        if self.arbiter.ended(wall_s()):  # dead-man released or the device stopped: hold, tell the graph
            self.get_logger().info("human takeover ended (teleop input stale or released): arm held")
            if not self.homing:  # (a hold would fight the home routine)
                self._hold("takeover ended")
            self.pub_status.publish(String(data=json.dumps(
                {"stamp": None, "sent": False, "reason": "takeover ended", "source": "policy", "action": None})))
        stale = self.watchdog.stale(wall_s())
        if self.estopped:
            self._hold("e-stop")
        elif self.homing:
            return  # the home routine moves the arm; a hold would fight it
        elif stale and "command" in self.watchdog.last:
            # was moving (a command got through before) and an input went stale
            self._hold("stale " + ", ".join(stale))


def main(args=None):
    from robot_calql_ros.run import run_single

    run_single(SafetyNode, "safety", args)


if __name__ == "__main__":
    main()
