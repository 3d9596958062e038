"""episode_controller: the reset-free forward/backward schedule (robot_calql.control.episode_controller).

Subscribes to the debounced success flag (`topics.success`, std_msgs/Bool); publishes the current
instruction (`topics.instruction`, std_msgs/String, transient local so late joiners get it),
episode boundaries (`topics.episode_event`, std_msgs/String JSON: event start/end/help, episode,
direction, task, instruction, reason, stats) and calls for a human (`topics.human_help`,
std_msgs/String, plus an error in the log). Service `~/set_paused` (std_srvs/SetBool): true
pauses, false resumes (also after a call for help).
"""

from __future__ import annotations

import json

from rclpy.node import Node
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool

from robot_calql.control.episode_controller import ControllerConfig, ResetFreeController
from robot_calql_ros.common import COMMAND_QOS, LATCHED_QOS, node_params, wall_s


class EpisodeControllerNode(Node):
    def __init__(self, name: str = "episode_controller", **kwargs):
        super().__init__(name, automatically_declare_parameters_from_overrides=True, **kwargs)
        p = node_params(self)
        topics = p["robot"]["topics"]
        c = p["controller"]
        self.ctl = ResetFreeController(ControllerConfig(
            forward_task=c["forward_task"], backward_task=c["backward_task"],
            forward_instruction=c["forward_instruction"], backward_instruction=c["backward_instruction"],
            phase_time_limit_s=float(c["phase_time_limit_s"]), max_failures=int(c["max_failures"]),
            min_phase_s=float(c["min_phase_s"])))
        self.success = False
        self.events: list[dict] = []  # every published event (tests and the launcher's summary)
        self.pub_instr = self.create_publisher(String, topics["instruction"], LATCHED_QOS)
        self.pub_event = self.create_publisher(String, topics["episode_event"], COMMAND_QOS)
        self.pub_help = self.create_publisher(String, topics["human_help"], COMMAND_QOS)
        self.create_subscription(Bool, topics["success"], self._on_success, COMMAND_QOS)
        self.create_service(SetBool, "~/set_paused", self._on_set_paused)
        self.create_timer(1.0 / float(c["rate_hz"]), self._tick)
        self.get_logger().info(f"reset-free schedule: '{c['forward_instruction']}' <-> "
                               f"'{c['backward_instruction']}', {c['phase_time_limit_s']} s per try")

    def _on_success(self, msg: Bool) -> None:
        self.success = bool(msg.data)

    def _tick(self) -> None:
        self._publish(self.ctl.update(wall_s(), self.success))

    def _publish(self, events) -> None:
        for ev in events:
            d = ev.to_dict()
            self.events.append(d)
            if ev.kind == "start":
                self.success = False  # a flag from the previous phase must not end this one
                self.pub_instr.publish(String(data=ev.instruction))
                self.get_logger().info(f"episode {ev.episode}: {ev.direction} '{ev.instruction}'")
            elif ev.kind == "end":
                self.get_logger().info(f"episode {ev.episode} ended: {ev.reason}")
            elif ev.kind == "help":
                self.get_logger().error(f"HUMAN HELP NEEDED: {ev.reason}")
                self.pub_help.publish(String(data=ev.reason))
            self.pub_event.publish(String(data=json.dumps(d)))

    def _on_set_paused(self, req, resp):
        self._publish(self.ctl.pause() if req.data else self.ctl.resume(wall_s()))
        resp.success = True
        resp.message = "paused" if self.ctl.paused else "running"
        return resp


def main(args=None):
    from robot_calql_ros.run import run_single

    run_single(EpisodeControllerNode, "episode_controller", args)


if __name__ == "__main__":
    main()
