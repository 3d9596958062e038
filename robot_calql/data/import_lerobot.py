"""`robot-calql import-lerobot path=<LeRobot dataset> robot=<config> out=<dir>`: a LeRobotDataset
v3.0 folder to a robot_calql dataset (robot_calql/data/lerobot.py, configs/import_lerobot.yaml)."""

from robot_calql.data.lerobot import import_main as main
from robot_calql.data.lerobot import require_deps

require_deps()  # no pyarrow / av: the command says which extra to install

__all__ = ["main"]
