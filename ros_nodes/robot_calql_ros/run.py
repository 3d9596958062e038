"""`main()` helper shared by the node entry points (`ros2 run robot_calql <node>`)."""

from __future__ import annotations

import sys


def run_single(node_cls, name: str, args=None) -> None:
    """rclpy.init, build the node (parameters from --ros-args), spin until Ctrl-C, clean up."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    rclpy.init(args=sys.argv if args is None else args)
    node = None
    try:
        node = node_cls(name)
        if hasattr(node, "autostart"):
            node.autostart()
        ex = MultiThreadedExecutor(num_threads=3)
        ex.add_node(node)
        ex.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
