"""ament_python package `robot_calql` (Python module robot_calql_ros).

Build in a workspace that contains this repository: `colcon build --packages-select robot_calql`.
The core library `robot_calql` is installed separately (`pip install -e <repo>`), see docs/ros.md.
"""

from glob import glob

from setuptools import setup

PACKAGE = "robot_calql"
NODES = ["sim_robot", "policy", "reward", "episode_controller", "safety", "learner", "teleop", "sim_human"]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=["robot_calql_ros"],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="robot_calql maintainers",
    maintainer_email="robot-calql@example.com",
    description="ROS 2 nodes of robot_calql (reset-free Cal-QL fine-tuning)",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            f"{name} = robot_calql_ros.{name}_node:main" for name in NODES
        ] + ["launch_finetune = robot_calql_ros.launcher:cli"],
    },
)
