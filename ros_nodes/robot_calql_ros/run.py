"""`main()` helper shared by the node entry points (`ros2 run robot_calql <node>`)."""

from __future__ import annotations

import sys


def run_single(node_cls, name: str, args=None) -> None:
    """rclpy.init, build the node (parameters from --ros-args), spin until Ctrl-C, clean up.

    A node spins on a SingleThreadedExecutor (the cheapest dispatch in rclpy: at 100+ sensor
    messages per second a thread pool's overhead shows up in the command latency) unless its
    class sets EXECUTOR_THREADS > 1 (the policy: weights decode beside control). Long work (the
    learner's updates, the stand-in's physics) runs in the nodes' own threads anyway."""
    import rclpy
    from rclpy.executors import (
        ExternalShutdownException,
        MultiThreadedExecutor,
        SingleThreadedExecutor,
    )

    rclpy.init(args=sys.argv if args is None else args)
    node = None
    try:
        node = node_cls(name)
        if hasattr(node, "autostart"):
            node.autostart()
        threads = int(getattr(node_cls, "EXECUTOR_THREADS", 1))
        ex = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
        ex.add_node(node)
        ex.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
