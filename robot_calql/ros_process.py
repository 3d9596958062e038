"""Run a module of the ROS 2 package (robot_calql_ros) in a child process.

The core library never imports robot_calql_ros or rclpy (tests/test_layering.py checks it). The
commands that need the ROS side, the demo's ROS 2 stage and `calibrate-workspace live=true`,
start it the way a user would: `python -m robot_calql_ros.<module> ...` with this interpreter.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROS_PACKAGE = "robot_calql_ros"


class RosProcessError(ValueError):
    """A ROS-side child process failed; the message says which and how."""


def ros_unavailable() -> str | None:
    """Why the ROS side cannot start here ("No module named 'rclpy'"), or None when it can.

    Looks rclpy and robot_calql_ros up on the module path without importing them."""
    for name in ("rclpy", ROS_PACKAGE):
        if importlib.util.find_spec(name) is None:
            return f"No module named '{name}'"
    return None


def _child_env() -> dict[str, str]:
    """This process's environment, with the folder that holds robot_calql_ros first on
    PYTHONPATH (it may be on sys.path here without a .pth file, e.g. inserted by a test)."""
    env = dict(os.environ)
    spec = importlib.util.find_spec(ROS_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        root = str(Path(next(iter(spec.submodule_search_locations))).resolve().parent)
        rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
        env["PYTHONPATH"] = os.pathsep.join([root, *rest])
    return env


def run_ros_module(module: str, args: Sequence[str]) -> int:
    """Run `python -m robot_calql_ros.<module> *args`, wait for it and return its exit code.

    The child writes to this process's stdout and stderr. It runs in a session of its own, and a
    SIGINT or SIGTERM that reaches this process (Ctrl-C) is passed on to it once, so it stops the
    way it would when run by hand (the launcher stops its nodes cleanly). When the child fails
    after a SIGINT, KeyboardInterrupt is raised here, as if it had run in this process.
    """
    proc = subprocess.Popen([sys.executable, "-m", f"{ROS_PACKAGE}.{module}", *map(str, args)],
                            env=_child_env(), start_new_session=True)
    got: list[int] = []

    def forward(signum: int, _frame) -> None:
        got.append(signum)
        if proc.poll() is None:
            proc.send_signal(signum)

    previous: dict[int, object] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, forward)
            except ValueError:  # not the main thread: signals stay with this process
                break
        rc = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:  # this process is failing: do not leave the child behind
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if rc != 0 and signal.SIGINT in got:
        raise KeyboardInterrupt
    return rc
