"""Record joint positions from a live sensor_msgs/JointState topic (for calibrate-workspace live=true)."""

from __future__ import annotations

import time

import rclpy
from sensor_msgs.msg import JointState
from tqdm import tqdm


def record_joint_states(topic: str, joint_names: list[str], duration_s: float) -> list[list[float]]:
    """Positions of `joint_names` (matched by name) from every message on `topic` for `duration_s`."""
    rows: list[list[float]] = []

    def on_msg(msg: JointState) -> None:
        index = {n: i for i, n in enumerate(msg.name)}
        if all(n in index for n in joint_names):
            rows.append([msg.position[index[n]] for n in joint_names])

    own_context = not rclpy.ok()
    if own_context:
        rclpy.init()
    node = rclpy.create_node("calibrate_workspace_recorder")
    try:
        node.create_subscription(JointState, topic, on_msg, 100)
        t_end = time.monotonic() + float(duration_s)
        with tqdm(total=int(duration_s), desc=f"recording {topic}", unit="s") as bar:
            while time.monotonic() < t_end:
                rclpy.spin_once(node, timeout_sec=0.1)
                bar.n = min(int(duration_s), int(duration_s - (t_end - time.monotonic())))
                bar.set_postfix(samples=len(rows))
                bar.refresh()
    finally:
        node.destroy_node()
        if own_context:
            rclpy.shutdown()
    return rows
