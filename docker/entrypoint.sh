#!/bin/bash
# Source ROS 2 and the colcon workspace, then run the command (default: ros2 launch ...).
set -e
source /opt/ros/kilted/setup.bash
source /opt/ros_ws/install/setup.bash
cd /opt/robot_calql
exec "$@"
