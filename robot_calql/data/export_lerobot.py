"""`robot-calql export-lerobot dataset=<dir> out=<dir>`: a robot_calql dataset to a LeRobotDataset
v3.0 folder (robot_calql/data/lerobot.py, configs/export_lerobot.yaml)."""

from robot_calql.data.lerobot import export_main as main
from robot_calql.data.lerobot import require_deps

require_deps()  # no pyarrow / av: the command says which extra to install

__all__ = ["main"]
