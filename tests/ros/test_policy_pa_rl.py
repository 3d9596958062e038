"""The policy node runs a PA-RL checkpoint (agent.policy=diffusion, best of pa_rl.act_samples K
by the critics' Q): it starts from the checkpoint and publishes commands over DDS, and its
process holds the encoder, the diffusion policy and, for K > 1, the online critics only (no
target networks, agent or optimiser), also after the learner's weights message.

Before: robot_calql.train.acting.ActingPolicy refused agent.policy=diffusion, so the policy node
could not be built from a PA-RL checkpoint.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_for
from test_policy_acting import INSTRUCTIONS
from test_policy_acting import _checkpoint as acting_checkpoint

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[2]
PA_RL = {"actor_hidden": [16, 16], "critic_hidden": [16, 16], "encoder_latent_dim": 8, "policy": "diffusion",
         "pa_rl": {"hidden": [16, 16], "diffusion_steps": 3, "act_samples": 16}}


def _checkpoint(run: Path, seed: int = 0):
    """A small PA-RL pixel agent's checkpoint for the stand-in (64 px, proprio 10, 5 actions, K = 16)."""
    return acting_checkpoint(run, seed, PA_RL)


def test_policy_node_acts_with_a_pa_rl_checkpoint(ros, tmp_path):
    from robot_calql_ros.launcher import NodeSpinners, build_nodes
    from robot_calql_ros.nodeset import node_set
    from std_msgs.msg import Float64MultiArray, String
    from test_policy_transitions import Cell

    from robot_calql.config import compose
    from robot_calql.control.conversions import unpack_policy_command

    _checkpoint(tmp_path / "pre")
    cfg = compose("launch_finetune", ["sim=true", "nodes=[policy]", f"checkpoint={tmp_path / 'pre'}",
                                      f"run_dir={tmp_path / 'run'}"])
    (policy,) = build_nodes(node_set(cfg))
    assert policy.actor.diffusion is not None and policy.actor.critic is not None and policy.actor.act_samples == 16
    cell = Cell(ros, cfg)
    commands: list[np.ndarray] = []
    cell.node.create_subscription(Float64MultiArray, cfg.robot.topics.policy_command,
                                  lambda m: commands.append(unpack_policy_command(m.data)[0]), 10)
    spinners = NodeSpinners([policy])
    try:
        wait_for(lambda: cell.pub_event.get_subscription_count() >= 1, 20, "the policy subscribing to events")
        wait_for(policy.ready, 20, "the policy ready (weights, frames, joint states, pose)")
        cell.pub_event.publish(String(data=json.dumps(
            {"event": "start", "episode": 0, "instruction": INSTRUCTIONS[1], "direction": "forward"})))
        wait_for(lambda: len(commands) >= 5, 30, "five commands from the PA-RL policy")
        assert policy.steps >= 5 and policy.instruction_error == ""
        assert all(c.shape == (5,) and np.all(np.isfinite(c)) for c in commands)
        assert np.isfinite(policy.status()["act_ms_p50"])
    finally:
        spinners.stop()
        policy.destroy_node()


def test_pa_rl_policy_node_process_holds_critics_but_no_targets_or_optimisers(tmp_path):
    """The probe of test_policy_acting (a fresh process: the node from the checkpoint, then a
    weights message) with a PA-RL K = 16 agent: every parameter alive is the encoder's, the
    diffusion policy's or the online critics' (once): no target copies, actor, agent or optimiser."""
    from test_policy_acting import run_probe

    agent, meta = _checkpoint(tmp_path / "pre")
    want = sum(p.numel() for m in (agent.encoder, agent.pa_rl.policy, agent.critic) for p in m.parameters())
    found = run_probe(tmp_path, agent, meta)
    assert found["weights_received"] == 1 and found["weights_step"] == 11
    assert found["actor_type"] == "ActingPolicy" and found["agents"] == 0 and found["optimizers"] == 0
    assert {"EnsembleCritic", "DiffusionPolicy"} <= set(found["module_types"])
    assert "TanhGaussianActor" not in found["module_types"]
    assert found["parameters"] == want
