"""ROS 2 adapters of robot_calql (ament package `robot_calql`): thin nodes, the node-set
definition shared by launch/finetune.launch.py and `robot-calql launch`, and the launcher.

Each node converts messages, calls the core library (robot_calql, which never imports rclpy)
and publishes. See docs/ros.md.
"""
