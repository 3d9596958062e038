"""The MuJoCo stand-in robot cell: env, tasks, kinematics, scripted demonstrators, episodes, collect.

    from robot_calql.sim import make_env, TASKS, task_pair
    env = make_env("cube_in_bowl", image_size=64, seed=0)

See docs/sim.md. Registered with gymnasium as "RobotCalQL/StandIn-v0" (kwargs as make_env; the
time limit is gymnasium.make's `max_episode_steps`, 60 by default).
"""

import os

# MuJoCo chooses its OpenGL backend when it is first imported, so this must come before any
# `import mujoco`: with no display (a robot PC over ssh, CI, a container), render headless with
# EGL unless the user chose a backend (MUJOCO_GL=egl / osmesa / glfw). Setting it later fails at
# the first rendered frame with "an OpenGL platform library has not been loaded".
if "MUJOCO_GL" not in os.environ and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    os.environ["MUJOCO_GL"] = "egl"

import gymnasium as gym  # noqa: E402

from robot_calql.sim.env import DEFAULT_MAX_EPISODE_STEPS, ActionError, StandInEnv, make_env
from robot_calql.sim.tasks import INSTRUCTIONS, PAIRS, TASKS, UnknownTaskError, get_task, task_pair

ENV_ID = "RobotCalQL/StandIn-v0"
if ENV_ID not in gym.registry:
    # gymnasium.make(ENV_ID, max_episode_steps=N) sets the time limit (TimeLimit); 60 by default
    gym.register(id=ENV_ID, entry_point="robot_calql.sim.env:make_registered_env",
                 max_episode_steps=DEFAULT_MAX_EPISODE_STEPS)

__all__ = [
    "ENV_ID", "INSTRUCTIONS", "PAIRS", "TASKS", "ActionError", "StandInEnv", "UnknownTaskError",
    "get_task", "make_env", "task_pair",
]
