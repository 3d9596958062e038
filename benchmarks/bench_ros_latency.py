"""Camera-to-command latency and control-rate jitter of the stand-in graph (real DDS).

Starts the fine-tuning node set as separate processes (like `robot-calql launch finetune
sim=true`), with a probe node in this process, and prints:

- camera-to-command latency: from the camera frame's stamp (sim_robot) to the safety node's
  command for the action computed from that frame (its header carries the frame stamp),
  taken from the DDS source timestamp of the safety node's message (its publish time); p50 / p99;
- achieved control rate and jitter (interval between successive policy commands) at 10 Hz.

Target: p99 latency < 20 ms on the 2-core dev machine.

    .venv/bin/python benchmarks/bench_ros_latency.py --duration 30 [--source agent|expert] [--no-learner] \
        [checkpoint=runs/pre learner.nice=0 ...]   # any configs/launch_finetune.yaml override
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ros_nodes"))
os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 80))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of measurement")
    ap.add_argument("--source", default="agent", choices=["agent", "expert"], help="policy action source")
    ap.add_argument("--no-learner", action="store_true", help="leave the learner out (control path only)")
    ap.add_argument("overrides", nargs="*", help="launch_finetune overrides, e.g. checkpoint=runs/pre learner.nice=0")
    args = ap.parse_args()

    import rclpy
    from geometry_msgs.msg import TwistStamped
    from robot_calql_ros.common import COMMAND_QOS, stamp_to_s
    from robot_calql_ros.launcher import child_env, node_command, stop_processes, write_params_file
    from robot_calql_ros.nodeset import node_set
    from std_msgs.msg import Float64MultiArray, String

    from robot_calql.config import compose

    nodes = ["sim_robot", "policy", "reward", "episode_controller", "safety"] + ([] if args.no_learner else ["learner"])
    run = Path(tempfile.mkdtemp(prefix="bench_ros_"))
    cfg = compose("launch_finetune", ["sim=true", f"policy.action_source={args.source}", f"run_dir={run}",
                                      f"nodes=[{','.join(nodes)}]", "learner.batch_size=64",
                                      *args.overrides])
    env = child_env(cfg)
    procs = {s.name: subprocess.Popen(node_command(s, write_params_file(s, run / "launch")), env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for s in node_set(cfg)}
    rclpy.init()
    probe = rclpy.create_node("latency_probe")
    lat, cmd_times = [], []
    measuring = [False]

    # DDS source timestamps (set when the node published), so a starved probe does not inflate figures
    def on_sent(m, info):
        if measuring[0] and (m.twist.linear.x or m.twist.linear.y or m.twist.linear.z or m.twist.angular.z):
            lat.append(info["source_timestamp"] * 1e-9 - stamp_to_s(m.header.stamp))

    def on_policy(m, info):
        if measuring[0]:
            cmd_times.append(info["source_timestamp"] * 1e-9)

    t = cfg.robot.topics
    probe.create_subscription(TwistStamped, t.sent_command, on_sent, COMMAND_QOS)
    probe.create_subscription(Float64MultiArray, t.policy_command, on_policy, COMMAND_QOS)
    policy_status: dict = {}
    probe.create_subscription(String, "/policy/status", lambda m: policy_status.update(json.loads(m.data)),
                              COMMAND_QOS)
    try:
        t0 = time.monotonic()
        while not cmd_times and time.monotonic() - t0 < 120:  # warm-up: until commands flow
            measuring[0] = True
            rclpy.spin_once(probe, timeout_sec=0.1)
        if not cmd_times:
            print("no policy commands within 120 s of start-up", file=sys.stderr)
            return 1
        time.sleep(2.0)
        cmd_times.clear()
        lat.clear()
        load0 = os.getloadavg()
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.duration:
            rclpy.spin_once(probe, timeout_sec=0.05)
        load1 = os.getloadavg()
    finally:
        measuring[0] = False
        stop_processes(procs)
        probe.destroy_node()
        rclpy.shutdown()
    lat_ms = np.array(lat) * 1e3
    dt = np.diff(sorted(cmd_times)) * 1e3
    period = 1e3 / cfg.robot.control_hz
    print(f"ROS graph ({args.source} policy, {'no learner' if args.no_learner else 'learner running'}), "
          f"{args.duration:.0f} s, {len(cmd_times)} commands")
    if lat_ms.size:
        print(f"camera-to-command latency: p50 {np.percentile(lat_ms, 50):.2f} ms, p99 {np.percentile(lat_ms, 99):.2f} ms,"
              f" max {lat_ms.max():.2f} ms (n={lat_ms.size}; target p99 < 20 ms)")
    if dt.size:
        print(f"control rate: {1e3 / dt.mean():.2f} Hz (target {cfg.robot.control_hz} Hz); interval jitter: "
              f"std {dt.std():.2f} ms, p99 |interval - {period:.0f} ms| {np.percentile(np.abs(dt - period), 99):.2f} ms")
    if policy_status:
        print("inside the policy (its last 200 steps): frame -> command published p50 "
              f"{policy_status.get('latency_ms_p50')} ms, p99 {policy_status.get('latency_ms_p99')} ms; "
              f"actor p50 {policy_status.get('act_ms_p50')} ms, p99 {policy_status.get('act_ms_p99')} ms")
    print(f"load average (1 min) at start / end of the measurement: {load0[0]:.2f} / {load1[0]:.2f} "
          f"on {os.cpu_count()} CPUs (the machine is shared; other jobs count)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
