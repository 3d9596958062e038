"""Shared pieces of the nodes: QoS profiles, parameters as a nested dict, stamps, warnings.

Parameters: every node is created with `automatically_declare_parameters_from_overrides`, so it
takes exactly the parameters the node-set definition (robot_calql_ros.nodeset) or a
`--params-file` gives it; nothing about topics, rates or limits is hard-coded in a node.
`node_params(node)` turns the dotted ROS names (`topics.image`) back into a nested dict.
"""

from __future__ import annotations

import time

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

# camera, joint states, EE pose: best effort, keep the newest few (the usual driver QoS)
SENSOR_QOS = qos_profile_sensor_data
# the policy's camera input: only the newest frame matters (a lagging node never works off a queue)
NEWEST_FRAME_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                              history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.VOLATILE)
# commands, events, success flags: reliable, shallow queue (only fresh commands matter)
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.VOLATILE)
# instruction and the latest weights: a late joiner gets the last message
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def transitions_qos(depth: int) -> QoSProfile:
    """Reliable + transient local with a deep history: a learner that restarts receives the
    transitions it missed (up to `depth`, i.e. depth / control_hz seconds of downtime) and drops
    the duplicates by (actor, seq)."""
    return QoSProfile(depth=int(depth), reliability=ReliabilityPolicy.RELIABLE,
                      history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def node_params(node) -> dict:
    """All parameters of a node as a nested dict ('topics.image' -> {'topics': {'image': ...}})."""
    out: dict = {}
    for name, param in node.get_parameters_by_prefix("").items():
        if name == "use_sim_time":
            continue
        cur = out
        *path, leaf = name.split(".")
        for p in path:
            cur = cur.setdefault(p, {})
        v = param.value
        cur[leaf] = list(v) if isinstance(v, (list, tuple)) or hasattr(v, "tolist") else v
    return out


def flatten_params(d: dict, prefix: str = "") -> dict:
    """Nested dict -> {'a.b': value} with ROS-friendly values (None -> '', tuples -> lists)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_params(v, key + "."))
        elif v is None:
            out[key] = ""
        elif isinstance(v, (list, tuple)):
            if len(v) == 0:
                continue  # ROS cannot type an empty list: leave it out, nodes treat it as absent
            if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                out[key] = [float(x) for x in v] if any(isinstance(x, float) for x in v) else list(v)
            else:
                out[key] = [str(x) for x in v]
        else:
            out[key] = v
    return out


def stamp_to_s(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def s_to_stamp(t: float, stamp) -> None:
    """Write seconds into a builtin_interfaces/Time in place."""
    stamp.sec = int(t)
    stamp.nanosec = int(round((t - int(t)) * 1e9)) % 1_000_000_000


def wall_s() -> float:
    """Wall-clock seconds (the stamp clock of every node here: system time, as camera drivers)."""
    return time.time()


class ThrottledWarner:
    """`warn(key, msg)` logs a warning at most once per `period_s` per key (names the problem)."""

    def __init__(self, node, period_s: float = 2.0):
        self.node = node
        self.period_s = period_s
        self._last: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.last_message: dict[str, str] = {}

    def warn(self, key: str, msg: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1
        self.last_message[key] = msg
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.period_s:
            self._last[key] = now
            n = self.counts[key]
            self.node.get_logger().warning(f"{msg}" + (f" ({n} times so far)" if n > 1 else ""))
