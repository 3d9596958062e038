"""ROS test helpers: a private DDS domain per test process, rclpy init/shutdown, spinning."""

import os
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "ros_nodes"))
# DDS kept on this machine; each test gets its own domain (no cross-talk with other test runs
# or with a previous test's leftover participants)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
_DOMAIN_BASE = 110 + (os.getpid() % 20) * 5
_count = [0]

rclpy = pytest.importorskip("rclpy")


@pytest.fixture
def ros():
    """rclpy initialised for one test; yields a helper that spins nodes in a background thread on
    one SingleThreadedExecutor, as the nodes themselves run (robot_calql_ros.run). rclpy's
    MultiThreadedExecutor spins hot on a 2-core machine and added 0.15-0.5 s (p50) to a
    publish-to-callback round trip here, against 0.7 ms single-threaded."""
    from rclpy.executors import SingleThreadedExecutor

    domain = _DOMAIN_BASE + _count[0] % 5
    _count[0] += 1
    os.environ["ROS_DOMAIN_ID"] = str(domain)  # subprocesses started by the test inherit it
    rclpy.init(domain_id=domain)
    ex = SingleThreadedExecutor()
    thread = threading.Thread(target=ex.spin, daemon=True)
    added = []

    class Helper:
        executor = ex

        def add(self, *nodes):
            for n in nodes:
                ex.add_node(n)
                added.append(n)
            if not thread.is_alive():
                thread.start()
            return nodes[0] if len(nodes) == 1 else nodes

    try:
        yield Helper()
    finally:
        ex.shutdown()
        for n in added:
            n.destroy_node()
        rclpy.shutdown()


class ProcessOutput:
    """A child process's merged stdout/stderr lines (text mode), collected in a thread."""

    def __init__(self, proc):
        self.lines: list[str] = []
        self._t = threading.Thread(target=lambda: self.lines.extend(iter(proc.stdout.readline, "")), daemon=True)
        self._t.start()

    def has(self, part: str) -> bool:
        return any(part in line for line in list(self.lines))

    def text(self) -> str:
        self._t.join(timeout=10)
        return "".join(self.lines)


def wait_for(cond, timeout: float, what: str, period: float = 0.05):
    """Poll cond() until true; fail naming `what` after timeout seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(period)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
