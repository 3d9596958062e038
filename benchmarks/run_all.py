"""Run the speed benchmarks one after another and print their figures (`make bench`).

Each benchmark is its own script (run one alone for details and options). The learning
benchmark (hours on a CPU) and the ROS fine-tuning session (10 minutes) run only with
--learning. Figures depend on how loaded the machine is: run on an otherwise idle machine and
compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FAST = [
    ("env steps/s (one core)", ["bench_env.py"]),
    ("dataset write/read MB/s", ["bench_dataset.py"]),
    ("learner updates/s vs a per-critic reference", ["bench_learner.py", "--mode", "all"]),
    ("policy latency (one thread)", ["bench_policy_latency.py"]),
    ("reward classifier latency (one thread)", ["bench_reward.py"]),
    ("bag ingestion frames/s and peak memory", ["bench_ingest.py"]),
    ("ROS camera-to-command latency", ["bench_ros_latency.py"]),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--learning", action="store_true",
                    help="also run the (hours-long) learning benchmark and the 10-minute ROS session benchmark")
    ap.add_argument("--only", nargs="*", default=None, help="script names to run, e.g. bench_env.py")
    args = ap.parse_args()
    slow = [("learning: Cal-QL vs CQL vs no pre-training", ["bench_learning.py"]),
            ("ROS fine-tuning session: success before and after", ["bench_ros_finetune.py"])]
    jobs = FAST + (slow if args.learning else [])
    if args.only:
        jobs = [j for j in jobs if j[1][0] in args.only]
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), PYTHONUNBUFFERED="1")
    failed = []
    for title, cmd in jobs:
        print(f"\n=== {title}: {' '.join(cmd)}", flush=True)
        t0 = time.time()
        rc = subprocess.call([sys.executable, str(HERE / cmd[0]), *cmd[1:]], env=env)
        print(f"=== {cmd[0]}: exit {rc}, {time.time() - t0:.0f} s", flush=True)
        if rc:
            failed.append(cmd[0])
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
