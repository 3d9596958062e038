"""Cal-QL agent: CQL with the Cal-QL switch (calql.py), networks and observation encoders."""

from robot_calql.agent.calql import CalQL, CalQLConfig, CheckpointError, exploration_temperature
from robot_calql.agent.cpu import configure_cpu_process
from robot_calql.agent.encoders import ObsSpecError

__all__ = ["CalQL", "CalQLConfig", "CheckpointError", "ObsSpecError", "configure_cpu_process", "exploration_temperature"]
