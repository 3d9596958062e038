"""Record joint positions from a live sensor_msgs/JointState topic (for calibrate-workspace live=true).

    python -m robot_calql_ros.joint_recorder --topic /joint_states --joints j1 j2 j3 --duration-s 60 --out q.npy

writes the (N, J) positions, in the order of `--joints`, to a .npy file; `robot-calql
calibrate-workspace live=true` runs it in a child process, so the core library never imports rclpy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m robot_calql_ros.joint_recorder",
                                description="record joint positions from a live JointState topic")
    p.add_argument("--topic", required=True, help="the sensor_msgs/JointState topic")
    p.add_argument("--joints", nargs="+", required=True, help="joint names, in the order of the output columns")
    p.add_argument("--duration-s", type=float, required=True, help="how long to listen, in seconds")
    p.add_argument("--out", type=Path, required=True, help="the .npy file for the (N, J) positions")
    a = p.parse_args(argv)
    rows = record_joint_states(a.topic, a.joints, a.duration_s)
    q = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(a.joints))
    tmp = a.out.with_name(f".{a.out.name}.tmp.npy")
    np.save(tmp, q)
    os.replace(tmp, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
