# The robot computer: ROS 2 Kilted, this project (CPU torch), the ROS package built with colcon.
#   docker compose -f docker/compose.yaml up robot        (or build: see docker/README.md)
# Default command: the whole fine-tuning node set, stand-in cell included (sim:=true).
FROM ros:kilted-ros-base-noble

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    MUJOCO_GL=egl \
    PYOPENGL_PLATFORM=egl \
    RMW_IMPLEMENTATION=rmw_fastrtps_cpp

# venv + colcon; EGL/Mesa for headless MuJoCo rendering; libglib for OpenCV
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3-venv python3-pip python3-colcon-common-extensions \
        libegl1 libegl-mesa0 libgl1 libgles2 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

# A venv that still sees the system ROS 2 Python packages (rclpy, message types).
RUN python3 -m venv --system-site-packages /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv

# CPU build of torch first, so the project's `torch` requirement does not pull the CUDA build.
# constraints.txt keeps numpy < 2: the system ROS 2 message modules are compiled against numpy 1.x.
COPY docker/constraints.txt /tmp/constraints.txt
RUN pip install -c /tmp/constraints.txt --index-url https://download.pytorch.org/whl/cpu torch

WORKDIR /opt/robot_calql
COPY pyproject.toml README.md ./
COPY robot_calql/ robot_calql/
COPY configs/ configs/
COPY calibration/ calibration/
COPY ros_nodes/ ros_nodes/
# editable: configs/ and calibration/ are found beside the package (robot_calql.config.REPO_ROOT)
RUN pip install -c /tmp/constraints.txt -e .

# The ament_python package `robot_calql` (module robot_calql_ros) in a colcon workspace.
RUN mkdir -p /opt/ros_ws/src && ln -s /opt/robot_calql/ros_nodes /opt/ros_ws/src/robot_calql \
    && cd /opt/ros_ws && . /opt/ros/kilted/setup.sh \
    && colcon build --packages-select robot_calql \
    && rm -rf build log

COPY docker/entrypoint.sh /entrypoint.sh
RUN chmod +x /entrypoint.sh
ENTRYPOINT ["/entrypoint.sh"]
CMD ["ros2", "launch", "robot_calql", "finetune.launch.py"]
