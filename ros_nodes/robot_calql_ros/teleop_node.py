"""teleop: a person takes over the arm with a gamepad, a spacemouse or the keyboard.

Inputs (device mapping: the `teleop` parameters, configs/teleop/*.yaml; robot_calql.control.teleop):
`teleop.joy_topic` (sensor_msgs/Joy: dead-man and gripper buttons, and the motion for
`motion: joy`), `teleop.twist_topic` (geometry_msgs/Twist, `motion: twist`: a spacemouse driver),
the keyboard on stdin (`teleop.keyboard: true`, only when stdin is a terminal and the node is in
its foreground process group, not a background job; `motion: keyboard` drives with keys alone), and `topics.joint_states` (the measured gripper seeds the gripper state
at a takeover's start, so taking over never drops what the arm holds).

Output: while the dead-man is held and the input is fresh (`TeleopMapper.driving`), the human's
command on `topics.teleop_command` (std_msgs/Float64MultiArray, the policy command's layout
robot_calql.control.conversions.POLICY_COMMAND_LAYOUT, stamped with the time of the newest
device input; keyboard: the tick's time while a key's `key_hold_s` lasts) at 4x the control rate.
The safety node decides: it replaces the policy's command with it while it is fresh and checks
it like any other (robot_calql_ros/safety_node.py).
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading

from geometry_msgs.msg import Twist
from rclpy.node import Node
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Float64MultiArray

from robot_calql.control.conversions import (
    CommandFormatError,
    gripper_opening,
    joint_state_to_positions,
)
from robot_calql.control.teleop import TeleopConfig, TeleopMapper, teleop_command
from robot_calql_ros.common import COMMAND_QOS, SENSOR_QOS, node_params, topic_names, wall_s


def in_foreground(fd: int) -> bool:
    """Whether this process may change the terminal `fd` without being stopped: it is in the
    terminal's foreground process group (not a background job, `ros2 run ... &`, where tcsetattr
    raises SIGTTOU and reading raises SIGTTIN). True when `fd` is not this process's controlling
    terminal (no job control applies)."""
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return True


class TeleopNode(Node):
    def __init__(self, name: str = "teleop", **kwargs):
        self._stop = threading.Event()
        self._keyboard: threading.Thread | None = None
        self._tty_state = None
        super().__init__(name, automatically_declare_parameters_from_overrides=True, **kwargs)
        p = node_params(self)
        r = p["robot"]
        tp = dict(p.get("teleop") or {})
        self.topics = topic_names(r["topics"])
        self.period = 1.0 / float(r["control_hz"])
        self.scale = (float(r["action_scale"]["translation_m"]), float(r["action_scale"]["rotation_rad"]))
        self.gripper_joint = r["gripper_joint"]
        self.gripper_range = [float(x) for x in r["gripper_range"]]  # [closed, open]
        self.mapper = TeleopMapper(TeleopConfig.from_dict(tp), timeout_s=self.period)
        self.measured_gripper: float | None = None   # +1 closed / -1 open, from the joint states
        self.commands = 0
        self._driving = False
        self.pub = self.create_publisher(Float64MultiArray, self.topics["teleop_command"], COMMAND_QOS)
        cfg = self.mapper.cfg
        if cfg.motion != "keyboard":
            self.create_subscription(Joy, str(tp.get("joy_topic") or "/joy"), self._on_joy, SENSOR_QOS)
        if cfg.motion == "twist":
            self.create_subscription(Twist, str(tp.get("twist_topic") or "/spacenav/twist"), self._on_twist,
                                     SENSOR_QOS)
        if self.topics.get("joint_states"):
            self.create_subscription(JointState, self.topics["joint_states"], self._on_joints, SENSOR_QOS)
        if bool(tp.get("keyboard", cfg.motion == "keyboard")):
            self._start_keyboard()
        self.create_timer(0.25 * self.period, self._tick)
        self.get_logger().info(f"teleop ({cfg.motion}) -> {self.topics['teleop_command']}; dead-man button "
                               f"{cfg.deadman_button}" + (" (keyboard on stdin)" if self._keyboard else ""))

    # ------------------------------------------------------------------ inputs
    def _on_joy(self, msg: Joy) -> None:
        self.mapper.joy(msg.axes, msg.buttons, wall_s())

    def _on_twist(self, msg: Twist) -> None:
        lin, ang = msg.linear, msg.angular
        self.mapper.twist((lin.x, lin.y, lin.z), (ang.x, ang.y, ang.z), wall_s())

    def _on_joints(self, msg: JointState) -> None:
        try:
            g = joint_state_to_positions(msg.name, msg.position, [self.gripper_joint])[0]
        except CommandFormatError:
            return
        self.measured_gripper = 1.0 if gripper_opening(g, self.gripper_range) < 0.5 else -1.0

    def _start_keyboard(self) -> None:
        if not sys.stdin.isatty():
            self.get_logger().warning("teleop.keyboard: stdin is not a terminal; keyboard input off")
            return
        import termios
        import tty

        fd = sys.stdin.fileno()
        if not in_foreground(fd):
            self.get_logger().warning("teleop.keyboard: the node runs in the background (not in its terminal's "
                                      "foreground process group); keyboard input off: run it in the foreground")
            return
        self._tty_state = termios.tcgetattr(fd)
        tty.setcbreak(fd)   # keys arrive one at a time, without Enter
        self._keyboard = threading.Thread(target=self._read_keys, name="teleop_keys", daemon=True)
        self._keyboard.start()

    def _read_keys(self) -> None:
        fd = sys.stdin.fileno()
        # sent to a background job (moved there by Ctrl-Z + `bg`) on a read, SIGTTIN would stop the
        # node; blocked in this thread, the read fails instead and the keys wait for the foreground
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTIN})
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    ch = os.read(fd, 1).decode(errors="ignore")
                except OSError:
                    self._stop.wait(0.1)
                    continue
                if ch:
                    self.mapper.key(ch, wall_s())

    # ------------------------------------------------------------------ output
    def _tick(self) -> None:
        now = wall_s()
        action = self.mapper.action(now, start_gripper=self.measured_gripper)
        if (action is not None) != self._driving:
            self._driving = action is not None
            self.get_logger().info("dead-man held: the human drives" if self._driving
                                   else "dead-man released or input stale: the policy drives")
        if action is None:
            return
        self.pub.publish(Float64MultiArray(data=teleop_command(action, *self.scale, self.mapper.input_stamp(now))))
        self.commands += 1

    def destroy_node(self):
        self._stop.set()
        if self._keyboard is not None:
            self._keyboard.join(timeout=1.0)
        if self._tty_state is not None:
            import termios

            # put the terminal back even from the background (Ctrl-Z + `bg`): SIGTTOU, blocked,
            # does not stop the node (the kernel then lets the change through)
            old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
            try:
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._tty_state)
            except (termios.error, OSError) as e:
                self.get_logger().warning(f"teleop.keyboard: could not restore the terminal: {e}")
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return super().destroy_node()


def main(args=None):
    from robot_calql_ros.run import run_single

    run_single(TeleopNode, "teleop", args)


if __name__ == "__main__":
    main()
