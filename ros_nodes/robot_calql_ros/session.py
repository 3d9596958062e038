"""`python -m robot_calql_ros.session --summary <file> [--duration-s S] [--eval-episodes N] [key=value ...]`

One measured reset-free session of the node set in the stand-in (launcher.run_session), its result
written as JSON to `--summary`. `robot-calql demo` runs its ROS 2 stage this way, in a child process,
so the core library never imports the ROS package. The overrides are those of
configs/launch_finetune.yaml (`checkpoint=<run>`, `run_dir=<dir>`, ...). Where rclpy cannot be
imported, the summary is `{"skipped": "<why>"}`; a bad setting writes `{"error": "<message>"}` and
exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


def write_json_atomic(path: Path, data: dict) -> None:
    """Write `data` as JSON to `path` through a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m robot_calql_ros.session",
                                description="one measured session of the node set in the stand-in")
    p.add_argument("--summary", type=Path, required=True, help="where run_session's result goes (JSON)")
    p.add_argument("--duration-s", type=float, default=300.0, help="session length in seconds")
    p.add_argument("--eval-episodes", type=int, default=10,
                   help="full-reset evaluation episodes before and after (0: none)")
    p.add_argument("overrides", nargs="*", help="key=value overrides of configs/launch_finetune.yaml")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(name)s: %(message)s")
    for noisy in ("OpenGL", "matplotlib", "PIL", "h5py", "absl"):  # as robot-calql does
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        from robot_calql_ros.launcher import run_session
    except ImportError as e:  # rclpy missing or broken here
        write_json_atomic(a.summary, {"skipped": str(e)})
        return 0
    try:
        result = run_session(a.overrides, duration_s=a.duration_s, eval_episodes=a.eval_episodes)
    except ValueError as e:  # ConfigError and the other errors that name their problem
        write_json_atomic(a.summary, {"error": str(e)})
        print(f"robot_calql_ros.session: error: {e}", file=sys.stderr)
        return 1
    write_json_atomic(a.summary, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
