"""sim_human: the stand-in's simulated operator, driving through the same topics as a person.

Once per control period while an episode runs (episode events `start` .. `end`) it passes the
end-effector pose (`topics.ee_pose`) to robot_calql.sim.simulated_human.SimulatedHuman, and with
`simulated_human.watch_steps` > 0 the policy's latest command (`topics.policy_command`, back in
normalised action units) beside the demonstrator's action for the same scene (the wrong-way rule),
and with `simulated_human.progress_steps` > 0 the try's distance from its goal that the stand-in
publishes on `topics.goal_distance` (the no-progress rule). While that says the human drives, it
publishes sensor_msgs/Joy on `teleop.joy_topic` at 4x the control rate: the dead-man held and
the sticks / gripper buttons set so that the teleop node's mapping (`teleop`,
configs/teleop/gamepad.yaml) gives the stand-in's scripted demonstrator action
(`topics.expert_action`). The teleop node turns that into `topics.teleop_command` and the safety
node checks it like a person's; nothing here reaches the arm any other way. When it lets go it
simply stops publishing, as a released gamepad's dead-man does.
"""

from __future__ import annotations

import json

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import Joy
from std_msgs.msg import Float64, Float64MultiArray, String

from robot_calql.control.conversions import (
    CommandFormatError,
    delta_to_action,
    unpack_policy_command,
)
from robot_calql.control.safety import load_workspace
from robot_calql.control.teleop import TeleopConfig, joy_for_action
from robot_calql.sim.simulated_human import SimulatedHuman, SimulatedHumanConfig
from robot_calql_ros.common import (
    COMMAND_QOS,
    SENSOR_QOS,
    node_params,
    required_topic,
    topic_names,
    wall_s,
)


class SimulatedHumanNode(Node):
    def __init__(self, name: str = "sim_human", **kwargs):
        super().__init__(name, automatically_declare_parameters_from_overrides=True, **kwargs)
        p = node_params(self)
        r = p["robot"]
        tp = dict(p.get("teleop") or {})
        self.topics = t = topic_names(r["topics"])
        for key in ("ee_pose", "expert_action"):
            required_topic(t, key, "the simulated human")
        self.period = 1.0 / float(r["control_hz"])
        self.mapping = TeleopConfig.from_dict({k: v for k, v in tp.items() if k != "simulated_human"})
        sh = dict(tp.get("simulated_human") or {})
        if p.get("workspace_file"):
            box = load_workspace(p["workspace_file"])
            sh.setdefault("workspace_min", [float(x) for x in box.min])
            sh.setdefault("workspace_max", [float(x) for x in box.max])
        self.human = SimulatedHuman(SimulatedHumanConfig.from_dict(sh))
        self.ee: np.ndarray | None = None
        self.expert: np.ndarray | None = None
        self.policy_action: np.ndarray | None = None   # the policy's latest command, unseen by the wrong-way rule yet
        self.goal: float | None = None   # the try's latest distance from its goal, unseen by the no-progress rule yet
        self.scale = (float(r["action_scale"]["translation_m"]), float(r["action_scale"]["rotation_rad"]))
        self.running = False
        self.joy_sent = 0
        self.pub = self.create_publisher(Joy, str(tp.get("joy_topic") or "/joy"), SENSOR_QOS)
        self.create_subscription(PoseStamped, t["ee_pose"], self._on_pose, SENSOR_QOS)
        self.create_subscription(Float64MultiArray, t["expert_action"], self._on_expert, COMMAND_QOS)
        self.create_subscription(String, t["episode_event"], self._on_event, COMMAND_QOS)
        if self.human.cfg.watch_steps > 0:
            required_topic(t, "policy_command", "the simulated human's wrong-way rule")
            self.create_subscription(Float64MultiArray, t["policy_command"], self._on_policy_command, COMMAND_QOS)
        if self.human.cfg.progress_steps > 0:
            required_topic(t, "goal_distance", "the simulated human's no-progress rule")
            self.create_subscription(Float64, t["goal_distance"], self._on_goal, COMMAND_QOS)
        self.create_timer(self.period, self._decide)
        self.create_timer(0.25 * self.period, self._publish)
        c = self.human.cfg
        watch = (f", or when {c.watch_share:.0%} of the policy's last {c.watch_steps} commands went another way than "
                 "the demonstrator's" if c.watch_steps > 0 else "")
        watch += (f", or when the try came no {c.progress_m} m closer to its goal in {c.progress_steps} steps"
                  if c.progress_steps > 0 else "")
        self.get_logger().info(f"simulated human: takes over after {c.patience_steps} stuck or outward steps{watch}, "
                               f"for at most {c.takeover_steps} steps; budget {c.budget_steps} steps")

    def _on_pose(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        self.ee = np.array([p.x, p.y, p.z])

    def _on_expert(self, msg: Float64MultiArray) -> None:
        self.expert = np.asarray(msg.data, np.float64)

    def _on_goal(self, msg: Float64) -> None:
        if np.isfinite(msg.data):
            self.goal = float(msg.data)

    def _on_policy_command(self, msg: Float64MultiArray) -> None:
        try:
            delta, _ = unpack_policy_command(msg.data)
        except CommandFormatError:
            return   # the safety node rejects and reports it; there is nothing to judge
        self.policy_action = delta_to_action(delta, *self.scale)

    def _on_event(self, msg: String) -> None:
        try:
            kind = json.loads(msg.data).get("event")
        except (ValueError, AttributeError):
            return
        if kind == "start":
            self.running = True
            self.human.reset()
            self.goal = None
        elif kind in ("end", "help", "home"):
            self.running = False
            self.human.reset()

    def _decide(self) -> None:
        if not self.running or self.ee is None:
            return
        was = self.human.driving
        if self.policy_action is not None and self.expert is not None and self.expert.shape == (5,):
            self.human.watch(self.policy_action, self.expert)   # ignored while it drives or with watch_steps 0
            self.policy_action = None
        self.human.step(self.ee, self.goal)   # (goal: None with progress_steps 0, or when none came this period)
        self.goal = None
        if self.human.driving != was:
            self.get_logger().info(f"simulated human {'takes over' if self.human.driving else 'lets go'} "
                                   f"({self.human.used_steps} of {self.human.cfg.budget_steps} steps used)")

    def _publish(self) -> None:
        if not (self.running and self.human.driving) or self.expert is None or self.expert.shape != (5,):
            return
        axes, buttons = joy_for_action(self.mapping, self.expert)
        msg = Joy(axes=[float(a) for a in axes], buttons=[int(b) for b in buttons])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub.publish(msg)
        self.joy_sent += 1

    def status(self) -> dict:
        return {"driving": self.human.driving, "used_steps": self.human.used_steps,
                "takeovers": self.human.takeovers, "joy_sent": self.joy_sent, "t": wall_s()}


def main(args=None):
    from robot_calql_ros.run import run_single

    run_single(SimulatedHumanNode, "sim_human", args)


if __name__ == "__main__":
    main()
