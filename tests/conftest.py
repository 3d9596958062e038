"""Shared test settings: headless MuJoCo, one torch thread and the entry points' CPU settings
(robot_calql.agent.cpu), DDS kept on this machine."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

try:  # keep tests lean on a 2-core machine, with the CPU settings every entry point makes
    import torch

    torch.set_num_threads(1)
    from robot_calql.agent.cpu import configure_cpu_process

    configure_cpu_process()
except ImportError:  # pragma: no cover
    pass
