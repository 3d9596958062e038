"""The MuJoCo stand-in robot cell: env, tasks, kinematics, scripted demonstrators, collect.

    from robot_calql.sim import make_env, TASKS, task_pair
    env = make_env("cube_in_bowl", image_size=64, seed=0)

See docs/sim.md. Registered with gymnasium as "RobotCalQL/StandIn-v0" (kwargs as make_env).
"""

import gymnasium as gym

from robot_calql.sim.env import ActionError, StandInEnv, make_env
from robot_calql.sim.tasks import INSTRUCTIONS, PAIRS, TASKS, UnknownTaskError, get_task, task_pair

ENV_ID = "RobotCalQL/StandIn-v0"
if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="robot_calql.sim.env:StandInEnv")

__all__ = [
    "ENV_ID", "INSTRUCTIONS", "PAIRS", "TASKS", "ActionError", "StandInEnv", "UnknownTaskError",
    "get_task", "make_env", "task_pair",
]
