"""robot_calql: reset-free real-robot fine-tuning with Cal-QL (after RoboFuME).

The core library never imports rclpy; the ROS 2 adapters live in ros_nodes/ (module robot_calql_ros).
"""

__version__ = "0.1.0"
