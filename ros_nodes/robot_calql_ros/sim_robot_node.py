"""sim_robot: the MuJoCo stand-in cell behind the same topics as a real arm.

The simulated arm is the robot config's `sim:` section (its MJCF cell and the names in it,
robot_calql.sim.kinematics.arm_spec). Publishes every camera of the robot config (`cameras`, else
`topics.image`) at camera_hz, each rendered from its MJCF camera (`sim.cameras`, in order):
`sensor_msgs/CompressedImage` (jpeg) where the camera is compressed, else `sensor_msgs/Image`;
`sensor_msgs/JointState` (the gripper joint at its position in `gripper_range`) and, when the
config has `topics.ee_pose`, the end-effector `geometry_msgs/PoseStamped` (joint_state_hz); takes
the command message of the robot config's `command_interface` on `topics.command`:

- delta_ee_twist: `geometry_msgs/TwistStamped` (m/s, rad/s about z, held for one control
  period) + `std_msgs/Float64` gripper on `topics.gripper_command`;
- joint_position_array: `std_msgs/Float64MultiArray` = arm joint targets then gripper;
- joint_trajectory: `trajectory_msgs/JointTrajectory`, the last point's positions by joint name
  (the gripper joint optional).

Physics advances at control_hz with the newest command (none fresh: the arm holds). The camera
timer publishes the newest rendered frame. For evaluation only it publishes the ground-truth
success of the current task on `topics.ground_truth_success` (std_msgs/String JSON: task,
instruction, success; the reward node keeps only the running try's) and, when `publish_expert` is set,
the scripted demonstrator's action on `topics.expert_action` (used by tests and demos as the
policy's action source, and by the simulated human) with, where the config names
`topics.goal_distance`, the try's distance from its goal (std_msgs/Float64,
robot_calql.sim.simulated_human.goal_distance: what an operator watching the cell sees; the
simulated human's no-progress rule). The service `~/set_camera` (std_srvs/SetBool) stops and restarts the
camera, to exercise the safety watchdog.

Stand-in human (`sim.stand_in_human`, on in the stand-in launch): what a person does in a real
cell. When the episode controller asks for help (`topics.human_help`), or the cube is out of the
arm's reach or off the table (`env.needs_reset()`), the scene is fully reset to the current
task's start; after a call for help the controller is resumed through its `set_paused` service
(`sim.controller_pause_service`). Without it a reset-free session stops at the first call for
help.

Homing: the service `robot.home_service` (std_srvs/Trigger; `~/home` when it is unset) opens the
fingers and puts the arm at home, the objects left where they are (a held cube falls), and
answers when that is done. The episode controller calls it between tries (`controller.home`).
"""

from __future__ import annotations

import json
import threading
import time

import cv2
import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float32MultiArray, Float64, Float64MultiArray, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from robot_calql.control.cameras import camera_specs
from robot_calql.control.conversions import (
    delta_to_action,
    quaternion_from_yaw,
    rgb_to_image,
    twist_to_delta,
)
from robot_calql.sim.simulated_human import goal_distance
from robot_calql_ros.common import (
    COMMAND_QOS,
    LATCHED_QOS,
    SENSOR_QOS,
    ThrottledWarner,
    node_params,
    s_to_stamp,
    wall_s,
)


class SimRobotNode(Node):
    def __init__(self, name: str = "sim_robot", **kwargs):
        self._stop = threading.Event()   # destroy_node's, before anything that can fail
        self._thread: threading.Thread | None = None
        super().__init__(name, automatically_declare_parameters_from_overrides=True, **kwargs)
        from robot_calql.sim import TASKS, make_env
        from robot_calql.sim.kinematics import arm_spec

        self.p = node_params(self)
        r = self.p["robot"]
        self.topics = r["topics"]
        self.interface = r["command_interface"]
        self.control_hz = float(r["control_hz"])
        self.scale = (float(r["action_scale"]["translation_m"]), float(r["action_scale"]["rotation_rad"]))
        self.joints = list(r["joints"])
        self.gripper_joint = r["gripper_joint"]
        self.gripper_range = [float(x) for x in r["gripper_range"]]
        self.frames = r["frames"]
        self.encoding = self.p.get("image_encoding", "rgb8")
        sim = self.p["sim"]
        # The env (and its EGL context, which is bound to one thread) lives in one physics thread.
        self.env = make_env(sim["task"], image_size=int(r["image_size"]), seed=int(sim["seed"]),
                            max_episode_steps=10**9, action_scale=self.scale, arm=arm_spec(r))
        # the robot's cameras (main first), each rendered by the env's camera of the same position
        self.cameras = camera_specs(r)
        keys = list(self.env.camera_keys.values())
        if len(self.cameras) != len(keys):
            raise ValueError(f"robot config: {len(self.cameras)} cameras but the MJCF renders {len(keys)} "
                             f"({list(self.env.camera_keys)}; sim.cameras)")
        self.camera_keys = dict(zip((c.name for c in self.cameras), keys, strict=True))
        self.obs = None
        self._ready = threading.Event()
        self._by_instruction = {t.instruction: name for name, t in TASKS.items()}
        self.warn = ThrottledWarner(self)
        self.camera_enabled = True
        self.steps = 0
        self._cmd = None          # ("delta", delta(4), gripper) or ("joints", q, gripper)
        self._cmd_fresh = False
        self._gripper = -1.0      # open
        # command timing as the cell saw it: a tick inside a running command stream without a
        # fresh command holds the arm (missed), a command overwritten before any tick used it is
        # lost (replaced). Both mean the policy's actions did not reach the arm one per period.
        self._last_cmd_t = -1e9
        self.cmd_received = self.cmd_applied = self.ticks_missed = self.cmd_replaced = 0
        self.expert = None
        if sim.get("publish_expert", False):
            self.expert = self._make_expert()

        self.pub_images = {c.name: self.create_publisher(CompressedImage if c.compressed else Image, c.topic, SENSOR_QOS)
                           for c in self.cameras}
        self.pub_joints = self.create_publisher(JointState, self.topics["joint_states"], SENSOR_QOS)
        self.pub_pose = (self.create_publisher(PoseStamped, self.topics["ee_pose"], SENSOR_QOS)
                         if self.topics.get("ee_pose") else None)
        self.pub_gt = self.create_publisher(String, self.topics["ground_truth_success"], COMMAND_QOS)
        self.pub_expert = self.create_publisher(Float64MultiArray, self.topics["expert_action"], COMMAND_QOS)
        self.pub_goal = (self.create_publisher(Float64, self.topics["goal_distance"], COMMAND_QOS)
                         if self.expert is not None and self.topics.get("goal_distance") else None)
        # the privileged state only on request (debug, state-mode checkpoints): a real cell has none
        self.pub_state = (self.create_publisher(Float32MultiArray, self.topics["sim_state"], SENSOR_QOS)
                          if sim.get("publish_sim_state", False) else None)
        cmd_type = {"delta_ee_twist": TwistStamped, "joint_position_array": Float64MultiArray,
                    "joint_trajectory": JointTrajectory}.get(self.interface)
        if cmd_type is None:
            raise ValueError(f"unknown command_interface '{self.interface}' (delta_ee_twist, "
                             "joint_position_array, joint_trajectory)")
        self.create_subscription(cmd_type, self.topics["command"], self._on_command, COMMAND_QOS)
        self.create_subscription(Float64, self.topics["gripper_command"], self._on_gripper, COMMAND_QOS)
        self.create_subscription(String, self.topics["instruction"], self._on_instruction, LATCHED_QOS)
        self.create_service(SetBool, "~/set_camera", self._on_set_camera)
        self.create_service(Trigger, r.get("home_service") or "~/home", self._on_home)
        self._home_requested = threading.Event()
        self._home_done = threading.Event()
        self.homes = 0
        self._reset_requested = threading.Event()
        self._resume_pending = False
        self.human_resets = 0
        if sim.get("stand_in_human", False):
            self.create_subscription(String, self.topics["human_help"], self._on_help, COMMAND_QOS)
            self.resume_client = self.create_client(SetBool, sim["controller_pause_service"])
            self.create_timer(0.5, self._resume_controller)
        self._thread = threading.Thread(target=self._physics_loop, name="sim_physics", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30.0)
        self.create_timer(1.0 / float(r["camera_hz"]), self._publish_image)
        self.create_timer(1.0 / float(r["joint_state_hz"]), self._publish_joints)
        self.pub_status = self.create_publisher(String, "~/status", COMMAND_QOS)
        self.create_timer(1.0, self._publish_status)
        self.get_logger().info(
            f"stand-in cell: task {self.env.task.name}, {self.interface} on {self.topics['command']}, "
            f"cameras {[c.topic for c in self.cameras]} {r['image_size']} px @ {r['camera_hz']} Hz, "
            f"control {self.control_hz} Hz")

    def _make_expert(self):
        try:
            from robot_calql.sim.demonstrators import make_demonstrator
        except ImportError as e:
            self.get_logger().warning(f"no scripted demonstrator available ({e}); expert_action off")
            return None
        return make_demonstrator(self.env, noise=float(self.p["sim"].get("expert_noise", 0.0)),
                                 seed=int(self.p["sim"]["seed"]))

    # ------------------------------------------------------------------ commands in
    def _on_command(self, msg) -> None:
        try:
            if isinstance(msg, TwistStamped):
                lin, ang = msg.twist.linear, msg.twist.angular
                d = twist_to_delta([lin.x, lin.y, lin.z], [ang.x, ang.y, ang.z], self.control_hz)
                self._cmd = ("delta", d, None)
            elif isinstance(msg, Float64MultiArray):
                v = np.asarray(msg.data, float)
                if v.shape not in ((len(self.joints),), (len(self.joints) + 1,)) or not np.all(np.isfinite(v)):
                    raise ValueError(f"joint command needs {len(self.joints)} (+1 gripper) finite values, got {v.tolist()}")
                self._cmd = ("joints", v[: len(self.joints)], float(v[-1]) if v.size > len(self.joints) else None)
            else:  # JointTrajectory
                if not msg.points:
                    raise ValueError("joint trajectory without points")
                pos = dict(zip(msg.joint_names, msg.points[-1].positions, strict=False))
                missing = [j for j in self.joints if j not in pos]
                if missing:
                    raise ValueError(f"joint trajectory lacks joints {missing}")
                q = np.array([pos[j] for j in self.joints], float)
                if not np.all(np.isfinite(q)):
                    raise ValueError("joint trajectory has non-finite positions")
                self._cmd = ("joints", q, pos.get(self.gripper_joint))
            if self._cmd_fresh:
                self.cmd_replaced += 1
            self._cmd_fresh = True
            self.cmd_received += 1
            self._last_cmd_t = time.monotonic()
        except ValueError as e:
            self.warn.warn("command", f"stand-in ignores a command: {e}")

    def _on_gripper(self, msg: Float64) -> None:
        if np.isfinite(msg.data):
            self._gripper = float(np.clip(msg.data, -1.0, 1.0))

    def _on_instruction(self, msg: String) -> None:
        task = self._by_instruction.get(msg.data)
        if task is None:
            self.warn.warn("instruction", f"unknown instruction '{msg.data}': ground truth keeps task {self.env.task.name}")
        elif task != self.env.task.name:
            self.env.set_task(task)
            if self.expert is not None and hasattr(self.expert, "reset"):
                self.expert.reset()

    def _on_set_camera(self, req, resp):
        self.camera_enabled = bool(req.data)
        resp.success = True
        resp.message = f"camera {'on' if self.camera_enabled else 'off'}"
        self.get_logger().info(resp.message)
        return resp

    def _on_home(self, req, resp):
        """Home the arm in the physics thread (it owns the env) and answer once it is there."""
        self._home_done.clear()
        self._home_requested.set()
        resp.success = self._home_done.wait(timeout=max(1.0, 5.0 / self.control_hz))
        resp.message = "arm at home" if resp.success else "the stand-in did not step (physics thread stalled?)"
        return resp

    def _on_help(self, msg: String) -> None:
        self.get_logger().info("stand-in human: resetting the scene, then resuming the episode controller")
        self._resume_pending = True
        self._reset_requested.set()

    def _resume_controller(self) -> None:
        if self._resume_pending and not self._reset_requested.is_set() and self.resume_client.service_is_ready():
            self._resume_pending = False
            self.resume_client.call_async(SetBool.Request(data=False))

    # ------------------------------------------------------------------ physics + outputs
    def _physics_loop(self) -> None:
        """Step the cell at control_hz with the newest command (wall-clock paced)."""
        self.obs, _ = self.env.reset(seed=int(self.p["sim"]["seed"]))
        self._ready.set()
        period = 1.0 / self.control_hz
        t_next = time.monotonic() + period
        while not self._stop.is_set():
            delay = t_next - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            t_next = max(t_next + period, time.monotonic())
            if not self._stop.is_set():
                try:
                    self._step()
                except Exception as e:  # keep the cell alive; a node test sees the warning
                    self.warn.warn("step", f"stand-in step failed: {e!r}")
        self.env.close()

    def _full_reset(self, why: str) -> None:
        self.obs, _ = self.env.reset()
        self.human_resets += 1
        self._cmd, self._cmd_fresh, self._gripper = None, False, -1.0
        if self.expert is not None and hasattr(self.expert, "reset"):
            self.expert.reset()
        self.get_logger().info(f"stand-in human: full reset of the scene ({why}; {self.human_resets} so far)")

    def _step(self) -> None:
        if self._reset_requested.is_set():
            self._full_reset("the episode controller asked for help")
            self._reset_requested.clear()
        elif self.p["sim"].get("stand_in_human", False) and self.env.needs_reset():
            self._full_reset("cube out of reach or off the table")
        if self._home_requested.is_set():
            self._home_requested.clear()
            self.env.home_arm()
            self._cmd, self._cmd_fresh, self._gripper = None, False, -1.0
            self.homes += 1
            self._home_done.set()
        cmd = self._cmd if self._cmd_fresh else None
        self._cmd_fresh = False
        if cmd is not None:
            self.cmd_applied += 1
        elif time.monotonic() - self._last_cmd_t < 2.5 / self.control_hz:
            self.ticks_missed += 1
        if cmd is not None and cmd[2] is not None:
            self._gripper = float(np.clip(cmd[2], -1.0, 1.0))
        if cmd is not None and cmd[0] == "joints":
            self.obs, *_ , info = self.env.step_joint_targets(cmd[1], self._gripper)
        else:
            d = cmd[1] if cmd is not None else np.zeros(4)
            a = delta_to_action(np.append(d, self._gripper), *self.scale)
            self.obs, *_, info = self.env.step(a)
        self.steps += 1
        task = self.env.task
        self.pub_gt.publish(String(data=json.dumps({"task": task.name, "instruction": task.instruction,
                                                    "success": bool(info["success"])})))
        if self.pub_state is not None:
            self.pub_state.publish(Float32MultiArray(data=[float(x) for x in self.obs["state"]]))
        if self.expert is not None:
            a = np.asarray(self.expert.act(self.obs), float)
            self.pub_expert.publish(Float64MultiArray(data=[float(x) for x in a]))
        if self.pub_goal is not None:
            d = goal_distance(self.obs["state"], task.name, getattr(self.env, "layout", None))
            if d is not None:
                self.pub_goal.publish(Float64(data=float(d)))

    def status(self) -> dict:
        """Physics steps and how the commands reached them (published on ~/status at 1 Hz)."""
        return {"steps": self.steps, "commands_received": self.cmd_received, "commands_applied": self.cmd_applied,
                "ticks_missed": self.ticks_missed, "commands_replaced": self.cmd_replaced,
                "human_resets": self.human_resets, "homes": self.homes}

    def _publish_status(self) -> None:
        self.pub_status.publish(String(data=json.dumps(self.status())))

    def _publish_image(self) -> None:
        if not self.camera_enabled or self.obs is None or "image" not in self.obs:
            return
        obs, now = self.obs, wall_s()
        for cam in self.cameras:
            rgb = obs[self.camera_keys[cam.name]]
            if cam.compressed:
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
                if not ok:  # pragma: no cover - cv2 encodes any uint8 image
                    continue
                msg = CompressedImage(format="jpeg", data=buf.tobytes())
            else:
                f = rgb_to_image(rgb, self.encoding)
                msg = Image(height=f["height"], width=f["width"], encoding=f["encoding"], is_bigendian=0,
                            step=f["step"], data=f["data"])
            s_to_stamp(now, msg.header.stamp)
            msg.header.frame_id = (self.frames.get("camera") or cam.name) if cam.main else cam.name
            self.pub_images[cam.name].publish(msg)

    def _publish_joints(self) -> None:
        if self.obs is None:
            return
        now = wall_s()
        js = JointState()
        s_to_stamp(now, js.header.stamp)
        js.name = self.joints + [self.gripper_joint]
        lo, hi = self.gripper_range
        js.position = [float(x) for x in self.env.joint_positions()] + [lo + self.env.gripper_opening() * (hi - lo)]
        js.velocity = [float(x) for x in self.env.joint_velocities()] + [0.0]
        self.pub_joints.publish(js)
        if self.pub_pose is None:
            return
        pos, yaw = self.env.ee_pose()
        ps = PoseStamped()
        ps.header.stamp = js.header.stamp
        ps.header.frame_id = self.frames["base"]
        ps.pose.position.x, ps.pose.position.y, ps.pose.position.z = (float(x) for x in pos)
        q = ps.pose.orientation
        q.x, q.y, q.z, q.w = quaternion_from_yaw(yaw)
        self.pub_pose.publish(ps)

    def destroy_node(self):
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=5.0)
        return super().destroy_node()


def main(args=None):
    from robot_calql_ros.run import run_single

    run_single(SimRobotNode, "sim_robot", args)


if __name__ == "__main__":
    main()
