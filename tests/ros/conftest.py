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
    """rclpy initialised for one test; yields a helper that spins nodes in a background thread
    (a multi-threaded executor: a node's slow callback does not hold up the others)."""
    from rclpy.executors import MultiThreadedExecutor

    yield from _ros(lambda: MultiThreadedExecutor(num_threads=4))


@pytest.fixture
def ros_single():
    """As `ros`, on one SingleThreadedExecutor: the shortest round trips. rclpy's multi-threaded
    executor spins hot on a 2-core machine and can add hundreds of ms to a publish-to-callback
    round trip; tests that wait for a reply to every message use this one."""
    from rclpy.executors import SingleThreadedExecutor

    yield from _ros(SingleThreadedExecutor)


def _ros(make_executor):
    domain = _DOMAIN_BASE + _count[0] % 5
    _count[0] += 1
    os.environ["ROS_DOMAIN_ID"] = str(domain)  # subprocesses started by the test inherit it
    rclpy.init(domain_id=domain)
    ex = make_executor()
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


def wait_for(cond, timeout: float, what: str, period: float = 0.05):
    """Poll cond() until true; fail naming `what` after timeout seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(period)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
