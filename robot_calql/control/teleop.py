"""Human takeover: device mapping (gamepad, spacemouse, keyboard) and the safety node's arbitration.

No ROS here: the teleop node (ros_nodes/robot_calql_ros/teleop_node.py) passes plain message
fields to `TeleopMapper`, and the safety node asks `TakeoverArbiter` whose command to check.

Mapping (`TeleopConfig.from_dict`, the keys of configs/teleop/*.yaml, docs/ros.md "Taking over"):

- `motion`: where the motion comes from: `joy` (sensor_msgs/Joy axes) or `twist`
  (geometry_msgs/Twist, a spacemouse driver); `keyboard`: keys only (no Joy).
- `axes`: for each of dx, dy, dz, dyaw (the policy's action axes, base frame) the source (a Joy
  axis index for `joy`, a Twist field such as `linear.x` for `twist`) and a `scale`; the
  normalised action is `scale * value` after the `deadzone` (values below it are 0, the rest is
  rescaled to start at 0), clipped to [-1, 1]. Axes left out stay 0.
- `deadman_button`: the Joy button that must be held for any command (all devices but the
  keyboard). `close_button` / `open_button`: Joy buttons that close / open the gripper; the
  gripper keeps its last state (at a takeover's start: the measured state, `start_gripper`);
  with `gripper_hold: true` it closes when `close_button` is pressed and opens when it is released
  (a spacemouse; a gripper key in between holds until the button's next change).
- `input_timeout_s`: the newest input must be at most this old (null: one control period).
- `keys`: keyboard fallback, a key -> {axis, value} table (axis one of dx, dy, dz, dyaw, or
  `gripper` with +1 close / -1 open; keys are letters or digits); a key press drives for
  `key_hold_s` (a held key repeats). Null values may come as "" (ROS parameters). Keys next to a
  device (`motion: joy` / `twist` with `keyboard: true`; the dead-man is still needed): a deflected
  stick (any axis outside the `deadzone`) wins over the keys; a device at rest (it publishes zeros
  at its rate) does not wipe out a key's motion while its `key_hold_s` lasts.

`TakeoverArbiter`: the human's command replaces the policy's while its input is at most
`fresh_s` old (one control period); when a takeover's input goes stale the arbiter reports the
end once, and the safety node holds the arm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_calql.control.conversions import ACTION_AXES, action_to_delta, pack_policy_command

__all__ = ["TeleopConfigError", "AxisMap", "TeleopConfig", "TeleopMapper", "TakeoverArbiter",
           "apply_deadzone", "joy_for_action", "teleop_command"]

MOTION_AXES = ACTION_AXES[:4]  # dx, dy, dz, dyaw
MOTIONS = ("joy", "twist", "keyboard")
TWIST_FIELDS = ("linear.x", "linear.y", "linear.z", "angular.x", "angular.y", "angular.z")


class TeleopConfigError(ValueError):
    """A teleop mapping that cannot work (names the key)."""


@dataclass(frozen=True)
class AxisMap:
    """One action axis from one device value: Joy axis index (int) or Twist field (str)."""

    source: int | str
    scale: float = 1.0


@dataclass(frozen=True)
class TeleopConfig:
    """A device mapping; see the module docstring for each key."""

    motion: str = "joy"
    axes: dict[str, AxisMap] = field(default_factory=dict)
    deadman_button: int | None = 4
    close_button: int | None = None
    open_button: int | None = None
    deadzone: float = 0.1
    input_timeout_s: float | None = None
    keys: dict[str, tuple[str, float]] = field(default_factory=dict)
    key_hold_s: float = 0.6
    gripper_hold: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TeleopConfig:
        """Check a mapping (a configs/teleop/*.yaml section) and build it; TeleopConfigError names a bad key."""
        d = {k: (None if v == "" else v) for k, v in dict(d or {}).items()}  # ROS parameters carry None as ""
        known = {"motion", "axes", "deadman_button", "close_button", "open_button", "deadzone", "input_timeout_s",
                 "keys", "key_hold_s", "gripper_hold"}
        extra = set(d) - known - {"device", "joy_topic", "twist_topic", "keyboard", "rate_hz", "simulated_human"}
        if extra:
            raise TeleopConfigError(f"teleop: unknown keys {sorted(extra)} (known: {sorted(known)})")
        motion = str(d.get("motion", "joy"))
        if motion not in MOTIONS:
            raise TeleopConfigError(f"teleop.motion must be one of {MOTIONS}, got '{motion}'")
        axes: dict[str, AxisMap] = {}
        for name, spec in dict(d.get("axes") or {}).items():
            if name not in MOTION_AXES:
                raise TeleopConfigError(f"teleop.axes.{name}: not an action axis (one of {MOTION_AXES})")
            spec = dict(spec or {})
            src = spec.get("index", spec.get("field"))
            if motion == "twist":
                if src not in TWIST_FIELDS:
                    raise TeleopConfigError(f"teleop.axes.{name}.field must be one of {TWIST_FIELDS}, got {src!r}")
            elif motion == "joy":
                if not isinstance(src, int) or isinstance(src, bool) or src < 0:
                    raise TeleopConfigError(f"teleop.axes.{name}.index must be a Joy axis index (int >= 0), got {src!r}")
            scale = float(spec.get("scale", 1.0))
            if not math.isfinite(scale):
                raise TeleopConfigError(f"teleop.axes.{name}.scale must be finite, got {scale}")
            axes[name] = AxisMap(src, scale)

        def button(key: str) -> int | None:
            v = d.get(key, cls.__dataclass_fields__[key].default)
            if v is None:
                return None
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise TeleopConfigError(f"teleop.{key} must be a Joy button index (int >= 0) or null, got {v!r}")
            return v

        deadman = button("deadman_button")
        if motion != "keyboard" and deadman is None:
            raise TeleopConfigError("teleop.deadman_button is required for Joy and Twist devices: nothing moves "
                                    "unless it is held")
        deadzone = float(d.get("deadzone", 0.1))
        if not 0.0 <= deadzone < 1.0:
            raise TeleopConfigError(f"teleop.deadzone must be in [0, 1), got {deadzone}")
        timeout = d.get("input_timeout_s")
        if timeout is not None and not float(timeout) > 0:
            raise TeleopConfigError(f"teleop.input_timeout_s must be > 0 or null, got {timeout}")
        keys: dict[str, tuple[str, float]] = {}
        for k, v in dict(d.get("keys") or {}).items():
            v = dict(v) if isinstance(v, dict) else {}
            if len(str(k)) != 1 or not str(k).isalnum() or v.get("axis") not in ACTION_AXES or "value" not in v:
                raise TeleopConfigError(f"teleop.keys.{k}: want a letter or digit -> {{axis, value}} with axis one of "
                                        f"{ACTION_AXES}, got {v!r}")
            keys[str(k)] = (str(v["axis"]), float(v["value"]))
        if motion == "keyboard" and not keys:
            raise TeleopConfigError("teleop.motion=keyboard needs teleop.keys")
        hold = float(d.get("key_hold_s", 0.6))
        if not hold > 0:
            raise TeleopConfigError(f"teleop.key_hold_s must be > 0, got {hold}")
        return cls(motion, axes, deadman, button("close_button"), button("open_button"), deadzone,
                   None if timeout is None else float(timeout), keys, hold, bool(d.get("gripper_hold", False)))


def apply_deadzone(v: float, deadzone: float) -> float:
    """0 inside the deadzone; outside, rescaled so the output starts at 0 and reaches 1 at 1."""
    if abs(v) <= deadzone:
        return 0.0
    return math.copysign((abs(v) - deadzone) / (1.0 - deadzone), v)


def _twist_value(linear, angular, name: str) -> float:
    part, axis = name.split(".")
    vec = linear if part == "linear" else angular
    return float(vec["xyz".index(axis)])


class TeleopMapper:
    """Device inputs -> the human's normalised action (dx, dy, dz, dyaw, gripper), or None.

    Feed it `joy(axes, buttons, now)`, `twist(linear, angular, now)` and `key(ch, now)` as inputs
    arrive; `action(now)` is the human's action while the dead-man is held and the input is fresh
    (Joy within `timeout_s`; for `twist` motion a stale Twist gives zero motion), else None.
    """

    def __init__(self, cfg: TeleopConfig, timeout_s: float):
        if not timeout_s > 0:
            raise TeleopConfigError(f"input timeout must be > 0, got {timeout_s}")
        self.cfg = cfg
        self.timeout = float(cfg.input_timeout_s or timeout_s)
        self.motion = np.zeros(4)       # the device's (Joy axes or Twist)
        self.key_motion = np.zeros(4)   # the newest key's
        self.gripper: float | None = None   # +1 closed, -1 open; None: take the measured state
        self.deadman = False
        self.t_joy = -math.inf          # newest Joy (dead-man) input
        self.t_motion = -math.inf       # newest device motion input (Joy axes or Twist)
        self.t_key = -math.inf          # newest mapped key press
        self._was_driving = False
        self._close_held: bool | None = None  # gripper_hold: the close button's last state

    def _axes(self, value_of) -> np.ndarray:
        out = np.zeros(4)
        for i, name in enumerate(MOTION_AXES):
            m = self.cfg.axes.get(name)
            if m is not None:
                try:
                    v = float(value_of(m.source))
                except (IndexError, ValueError):
                    v = 0.0
                out[i] = m.scale * apply_deadzone(v if math.isfinite(v) else 0.0, self.cfg.deadzone)
        return np.clip(out, -1.0, 1.0)

    def joy(self, axes, buttons, now: float) -> None:
        """A sensor_msgs/Joy: dead-man, gripper buttons and (motion `joy`) the axes."""
        buttons = list(buttons)

        def pressed(i: int | None) -> bool:
            return i is not None and i < len(buttons) and bool(buttons[i])

        self.deadman = pressed(self.cfg.deadman_button)
        self.t_joy = now
        if self.cfg.gripper_hold:
            # closed while held: act on the button's changes (and the first message), so a gripper
            # key between them sticks although the device repeats the button's state at its rate
            held = pressed(self.cfg.close_button)
            if held != self._close_held:
                self.gripper = 1.0 if held else -1.0
            self._close_held = held
        elif pressed(self.cfg.close_button):
            self.gripper = 1.0
        elif pressed(self.cfg.open_button):
            self.gripper = -1.0
        if self.cfg.motion == "joy":
            axes = list(axes)
            self.motion = self._axes(lambda i: axes[i])
            self.t_motion = now

    def twist(self, linear, angular, now: float) -> None:
        """A geometry_msgs/Twist (linear, angular as 3 numbers each); motion `twist` only."""
        if self.cfg.motion == "twist":
            self.motion = self._axes(lambda name: _twist_value(linear, angular, name))
            self.t_motion = now

    def key(self, ch: str, now: float) -> bool:
        """A key press (keyboard fallback); True when the key is mapped."""
        if ch not in self.cfg.keys:
            return False
        axis, value = self.cfg.keys[ch]
        motion = np.zeros(4)
        if axis == "gripper":
            self.gripper = 1.0 if value > 0 else -1.0
        else:
            motion[MOTION_AXES.index(axis)] = float(np.clip(value, -1.0, 1.0))
        self.key_motion = motion   # one assignment: keys arrive on another thread than action()
        self.t_key = now
        return True

    def driving(self, now: float) -> bool:
        """Whether the human has the arm: dead-man held on a fresh Joy (keyboard: a key within key_hold_s)."""
        if self.cfg.motion == "keyboard":
            return now - self.t_key <= self.cfg.key_hold_s
        return self.deadman and now - self.t_joy <= self.timeout

    def action(self, now: float, start_gripper: float | None = None) -> np.ndarray | None:
        """The human's action now, or None. `start_gripper` (+1 closed / -1 open, the measured
        gripper) seeds the gripper at a takeover's start when no gripper button was pressed yet."""
        if not self.driving(now):
            self._was_driving = False
            return None
        if not self._was_driving:
            self._was_driving = True
            if self.gripper is None and start_gripper is not None:
                self.gripper = float(start_gripper)
        return np.concatenate([self.current_motion(now), [self.gripper if self.gripper is not None else -1.0]]
                              ).astype(np.float64)

    def current_motion(self, now: float) -> np.ndarray:
        """dx, dy, dz, dyaw now: a fresh, deflected device (an axis outside the deadzone) wins; else
        the newest key's while its key_hold_s lasts; else the device's (zeros when stale)."""
        device = self.motion if now - self.t_motion <= self.timeout else np.zeros(4)
        if device.any() or now - self.t_key > self.cfg.key_hold_s:
            return device
        return self.key_motion

    def input_stamp(self, now: float | None = None) -> float:
        """Time of the newest input that keeps the takeover alive: the newest Joy. Keyboard: a key
        press holds for key_hold_s, so within that hold it is `now` (the safety node takes a command
        for one control period after its stamp); the key's time when `now` is None."""
        if self.cfg.motion != "keyboard":
            return self.t_joy
        if now is None:
            return self.t_key
        return min(now, self.t_key + self.cfg.key_hold_s)


def teleop_command(action: np.ndarray, translation_m: float, rotation_rad: float, input_stamp: float) -> list[float]:
    """The human's action as a command in POLICY_COMMAND_LAYOUT; the stamp is the input's time."""
    return pack_policy_command(action_to_delta(np.asarray(action, np.float64), translation_m, rotation_rad),
                               input_stamp)


def joy_for_action(cfg: TeleopConfig, action: np.ndarray, n_axes: int = 8, n_buttons: int = 12,
                   deadman: bool = True) -> tuple[list[float], list[int]]:
    """Joy axes and buttons that `TeleopMapper` turns into `action` (a simulated operator's stick
    positions): the inverse of the deadzone and scale per mapped axis, the gripper as the close /
    open button. Needs motion `joy`."""
    if cfg.motion != "joy":
        raise TeleopConfigError(f"joy_for_action needs teleop.motion=joy, got {cfg.motion}")
    a = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
    used = [m.source for m in cfg.axes.values()] + [b for b in (cfg.deadman_button, cfg.close_button,
                                                                cfg.open_button) if b is not None]
    axes = [0.0] * max(n_axes, 1 + max([m.source for m in cfg.axes.values()], default=0))
    buttons = [0] * max(n_buttons, 1 + max([b for b in used if isinstance(b, int)], default=0))
    for i, name in enumerate(MOTION_AXES):
        m = cfg.axes.get(name)
        if m is None or m.scale == 0:
            continue
        out = float(np.clip(a[i] / m.scale, -1.0, 1.0))
        axes[int(m.source)] = 0.0 if out == 0 else math.copysign(cfg.deadzone + abs(out) * (1 - cfg.deadzone), out)
    if deadman and cfg.deadman_button is not None:
        buttons[cfg.deadman_button] = 1
    grip = cfg.close_button if a[4] > 0 else cfg.open_button
    if grip is not None:
        buttons[grip] = 1
    return axes, buttons


class TakeoverArbiter:
    """Whose command the safety node checks. `human(delta, input_stamp, now)` stores the human's
    newest command; `current(now)` is that command while its input is at most `fresh_s` old (the
    takeover then starts, `active`), else None; `ended(now)` is True once when an active takeover's
    input has gone stale (released dead-man, unplugged device): the node then holds the arm."""

    def __init__(self, fresh_s: float):
        if not fresh_s > 0:
            raise ValueError(f"fresh_s must be > 0, got {fresh_s}")
        self.fresh_s = float(fresh_s)
        self.delta: np.ndarray | None = None
        self.stamp = -math.inf
        self.active = False
        self.takeovers = 0

    def human(self, delta: np.ndarray, input_stamp: float, now: float) -> str:
        """Store a human command; returns "" or why it was ignored (stale or future input)."""
        if input_stamp > now + self.fresh_s:
            return f"teleop input stamped {input_stamp - now:.3f} s ahead of the clock"
        if now - input_stamp > self.fresh_s:
            return f"teleop input {now - input_stamp:.3f} s old (more than {self.fresh_s:.3f} s)"
        if input_stamp >= self.stamp:
            self.delta, self.stamp = np.asarray(delta, np.float64), float(input_stamp)
        return ""

    def fresh(self, now: float) -> bool:
        return self.delta is not None and now - self.stamp <= self.fresh_s

    def current(self, now: float) -> np.ndarray | None:
        """The human's command (physical delta + gripper) while fresh; starts a takeover."""
        if not self.fresh(now):
            return None
        if not self.active:
            self.active = True
            self.takeovers += 1
        return self.delta

    def ended(self, now: float) -> bool:
        """True once when an active takeover's input went stale."""
        if self.active and not self.fresh(now):
            self.active = False
            return True
        return False
