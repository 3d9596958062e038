"""The launcher's before/after evaluation (robot_calql_ros.launcher.evaluate_policy) runs the
checkpoint's policy on the simulated arm of the robot the checkpoint records (meta `robot`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.ros

SMALL = {"actor_hidden": [16, 16], "critic_hidden": [16, 16]}


def _state_checkpoint(run: Path, robot: str, state_dim: int) -> None:
    """A small state-observation agent's checkpoint recording `robot` as its data's robot."""
    from robot_calql.agent import CalQL, CalQLConfig
    from robot_calql.train import checkpoint as ckpt

    meta = {"obs": "state", "obs_spec": {"state": [state_dim]}, "action_dim": 5, "robot": robot,
            "instructions": ["put the cube in the bowl", "take the cube out"], "agent": SMALL}
    torch.manual_seed(0)
    agent = CalQL({"state": (state_dim,)}, 5, CalQLConfig.from_dict(SMALL), num_instructions=2)
    ckpt.save_checkpoint(run, 1, agent.state_dict(), {"optimizer": agent.optimizer_state_dict()}, meta)


def test_evaluate_policy_uses_the_checkpoints_robot(tmp_path, monkeypatch):
    from robot_calql_ros.launcher import evaluate_policy

    import robot_calql.sim as sim
    from robot_calql.sim.kinematics import STANDIN_ARM, sim_arm

    second = sim_arm("kestrel6")
    assert second != STANDIN_ARM
    made = []
    real_make_env = sim.make_env

    def recording_make_env(*args, **kwargs):
        made.append(kwargs.get("arm"))
        return real_make_env(*args, **kwargs)

    monkeypatch.setattr(sim, "make_env", recording_make_env)
    # the second arm's state has 24 numbers (the stand-in's 23): only its own cell fits the policy
    _state_checkpoint(tmp_path / "k6", "kestrel6", 24)
    rate = evaluate_policy(tmp_path / "k6", "cube_in_bowl", episodes=1, max_episode_steps=3)
    assert made == [second] and rate in (0.0, 1.0)
    # a stand-in checkpoint (and one of a robot without a simulated arm) still gets the stand-in
    _state_checkpoint(tmp_path / "si", "sim_standin", 23)
    evaluate_policy(tmp_path / "si", "cube_in_bowl", episodes=1, max_episode_steps=3)
    assert made[-1] == STANDIN_ARM
