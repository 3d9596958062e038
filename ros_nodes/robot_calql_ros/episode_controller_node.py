"""episode_controller: the reset-free forward/backward schedule (robot_calql.control.episode_controller).

Subscribes to the debounced success flag (`topics.success`, std_msgs/Bool); publishes the current
instruction (`topics.instruction`, std_msgs/String, transient local so late joiners get it),
episode boundaries (`topics.episode_event`, std_msgs/String JSON: event start/end/help, episode,
direction, task, instruction, reason, stats) and calls for a human (`topics.human_help`,
std_msgs/String, plus an error in the log). Service `~/set_paused` (std_srvs/SetBool): true
pauses, false resumes (also after a call for help).

Homing (`controller.home`: after_failure / always / never; nodeset resolves `auto`): on the
core controller's `home` event the node calls `controller.home_service` (std_srvs/Trigger, the
robot's `robot.home_service`: a driver routine that moves the arm to its home pose) and starts
the next try when it answers success. No service, a failed answer or none within
`home_timeout_s` pauses the controller and asks for a human. The policy does not act between an
episode's end and the next start, so nothing else commands the arm while it homes.

Waiting for the policy (`controller.policy_node`, set by the node set when it has a policy node;
"" = start at once): no try starts until that node's `~/status` reports `ready` and the node
subscribes to the episode events (else it would miss the start). A try running when the status
says not ready, or none has come for `policy_timeout_s`, ends with reason `policy_lost` (neither
a try nor a failure), and a fresh one starts when the policy is back.

Human takeovers: the node reads the safety node's verdicts (`topics.command_status`, their
`source`) and publishes `{"event": "intervention", "reason": "start"}` when the first human
command of a try is checked and `"reason": "end"` when the policy's are again (the safety node
says so at once when the teleop input goes stale) or the try ends; `robot-calql ingest` marks
the steps between them `intervention` (robot_calql/bags/events.py).

Stale success flags: a try ends on success only after the flag has said False at least once since
its start. The reward node publishes False when it resets at a start, so a True still in flight
from the previous phase (sent before the reward node heard of the start) cannot end the new try.
A success source of your own must publish False while the task is not done (the reward node
does, with every frame). `min_phase_s` stays as a second guard.
"""

from __future__ import annotations

import json

from rclpy.node import Node
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger

from robot_calql.control.episode_controller import ControllerConfig, ResetFreeController
from robot_calql_ros.common import COMMAND_QOS, LATCHED_QOS, node_params, topic_names, wall_s


class EpisodeControllerNode(Node):
    def __init__(self, name: str = "episode_controller", **kwargs):
        super().__init__(name, automatically_declare_parameters_from_overrides=True, **kwargs)
        p = node_params(self)
        topics = topic_names(p["robot"]["topics"])
        c = p["controller"]
        self.ctl = ResetFreeController(ControllerConfig(
            forward_task=c["forward_task"], backward_task=c["backward_task"],
            forward_instruction=c["forward_instruction"], backward_instruction=c["backward_instruction"],
            phase_time_limit_s=float(c["phase_time_limit_s"]), max_failures=int(c["max_failures"]),
            min_phase_s=float(c["min_phase_s"]), home=str(c.get("home", "never")),
            home_timeout_s=float(c.get("home_timeout_s", 30.0))))
        self.home_client = None
        if self.ctl.cfg.home != "never":
            if not c.get("home_service"):
                raise ValueError(f"controller.home={self.ctl.cfg.home} needs controller.home_service "
                                 "(a std_srvs/Trigger service that moves the arm home)")
            self.home_client = self.create_client(Trigger, str(c["home_service"]))
        self.success = False
        self.armed = False   # a False flag came since the running try started (see the module doc)
        self.stale_flags = 0  # True flags ignored because none had said False since the start
        self.policy_node = str(c.get("policy_node") or "").strip("/")
        self.policy_timeout_s = float(c.get("policy_timeout_s", 3.0))
        self.policy_status_t: float | None = None   # wall time of the last ready status
        self._waiting_logged = 0.0
        self.events: list[dict] = []  # every published event (tests and the launcher's summary)
        self.pub_instr = self.create_publisher(String, topics["instruction"], LATCHED_QOS)
        self.pub_event = self.create_publisher(String, topics["episode_event"], COMMAND_QOS)
        self.pub_help = self.create_publisher(String, topics["human_help"], COMMAND_QOS)
        self.create_subscription(Bool, topics["success"], self._on_success, COMMAND_QOS)
        self.create_subscription(String, topics["command_status"], self._on_verdict, COMMAND_QOS)
        self.create_service(SetBool, "~/set_paused", self._on_set_paused)
        if self.policy_node:
            self.create_subscription(String, f"/{self.policy_node}/status", self._on_policy_status, COMMAND_QOS)
        self.create_timer(1.0 / float(c["rate_hz"]), self._tick)
        self.get_logger().info(f"reset-free schedule: '{c['forward_instruction']}' <-> "
                               f"'{c['backward_instruction']}', {c['phase_time_limit_s']} s per try, arm home "
                               + ("never" if self.home_client is None else
                                  f"{self.ctl.cfg.home.replace('_', ' ')} via {c['home_service']}"))

    def _on_success(self, msg: Bool) -> None:
        if not msg.data:
            self.armed = True
        elif not self.armed:
            self.stale_flags += 1
        self.success = bool(msg.data) and self.armed

    def _on_verdict(self, msg: String) -> None:
        """A safety verdict: who commanded the arm (human takeovers start / end)."""
        try:
            source = json.loads(msg.data).get("source")
        except (ValueError, AttributeError):
            return
        if source in ("policy", "human"):
            self._publish(self.ctl.command_source(source))

    def _on_policy_status(self, msg: String) -> None:
        try:
            ready = bool(json.loads(msg.data).get("ready", False))
        except (ValueError, AttributeError):
            ready = False
        self.policy_status_t = wall_s() if ready else None

    def policy_ready(self, now: float) -> bool:
        """The policy node reported ready within policy_timeout_s and listens to episode events."""
        if not self.policy_node:
            return True
        if self.policy_status_t is None or now - self.policy_status_t > self.policy_timeout_s:
            return False
        return any(i.node_name == self.policy_node
                   for i in self.get_subscriptions_info_by_topic(self.pub_event.topic_name))

    def _tick(self) -> None:
        now = wall_s()
        ready = self.policy_ready(now)
        if not ready and not self.ctl.running and not self.ctl.paused and now - self._waiting_logged > 10.0:
            self._waiting_logged = now
            self.get_logger().info(f"waiting for the policy node '/{self.policy_node}' to report ready "
                                   "before the next try")
        self._publish(self.ctl.update(now, self.success, policy_ready=ready))

    def _publish(self, events) -> None:
        for ev in events:
            d = ev.to_dict()
            self.events.append(d)
            if ev.kind == "start":
                self.success = self.armed = False  # a flag from the previous phase must not end this one
                self.pub_instr.publish(String(data=ev.instruction))
                self.get_logger().info(f"episode {ev.episode}: {ev.direction} '{ev.instruction}'")
            elif ev.kind == "end":
                self.get_logger().info(f"episode {ev.episode} ended: {ev.reason}")
            elif ev.kind == "intervention":
                self.get_logger().info(f"episode {ev.episode}: human takeover {ev.reason}s")
            elif ev.kind == "home":
                self._call_home()
            elif ev.kind == "help":
                self.get_logger().error(f"HUMAN HELP NEEDED: {ev.reason}")
                self.pub_help.publish(String(data=ev.reason))
            self.pub_event.publish(String(data=json.dumps(d)))

    def _call_home(self) -> None:
        client = self.home_client
        if client is None or not client.service_is_ready():
            name = client.srv_name if client is not None else "(none)"
            self._publish(self.ctl.homed(wall_s(), ok=False, message=f"home service {name} is not available"))
            return
        self.get_logger().info("sending the arm home before the next try")
        client.call_async(Trigger.Request()).add_done_callback(self._on_homed)

    def _on_homed(self, future) -> None:
        try:
            r = future.result()
            ok, msg = bool(r.success), str(r.message)
        except Exception as e:  # the service died mid-call
            ok, msg = False, repr(e)
        self._publish(self.ctl.homed(wall_s(), ok=ok, message=msg))

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
