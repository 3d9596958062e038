"""The policy node acts with the acting policy (robot_calql.train.acting): its process holds the
encoder and actor only (no critic, agent or optimiser), from the checkpoint and after the
learner's weights; an unknown instruction is said when it arrives and the node keeps running.

Before: the node held a whole CalQL agent (critics, targets, four optimisers) per weights
message, and an unknown instruction raised ValueError inside the camera callback, which ended the
node's spin at the first frame.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import wait_for

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[2]
INSTRUCTIONS = ["put the cube in the bowl", "take the cube out"]
SMALL = {"actor_hidden": [16, 16], "critic_hidden": [16, 16], "encoder_latent_dim": 8}


def _checkpoint(run: Path, seed: int = 0, agent_cfg: dict | None = None):
    """A small pixel agent's checkpoint for the stand-in (64 px, proprio 10, 5 actions; agent
    settings `agent_cfg`, default SMALL); returns the agent and its meta."""
    from robot_calql.agent import CalQL, CalQLConfig
    from robot_calql.train import checkpoint as ckpt

    agent_cfg = SMALL if agent_cfg is None else agent_cfg
    meta = {"obs": "pixels", "obs_spec": {"image": [64, 64, 3], "proprio": [10]}, "action_dim": 5,
            "instructions": INSTRUCTIONS, "agent": agent_cfg}
    torch.manual_seed(seed)
    agent = CalQL({"image": (64, 64, 3), "proprio": (10,)}, 5, CalQLConfig.from_dict(agent_cfg), num_instructions=2)
    ckpt.save_checkpoint(run, 3, agent.state_dict(), {"optimizer": agent.optimizer_state_dict()}, meta)
    return agent, meta


# Runs in a fresh process: builds the policy node from the checkpoint, hands it a weights message
# (the decoder thread's path), then lists every torch module, parameter and optimiser alive.
PROBE = r"""
import gc, json, sys, time
import rclpy, torch
from std_msgs.msg import UInt8MultiArray
from robot_calql.config import compose
from robot_calql_ros.launcher import build_nodes
from robot_calql_ros.nodeset import node_set

checkpoint, payload_file, run_dir = sys.argv[1:4]
cfg = compose("launch_finetune", ["sim=true", "nodes=[policy]", f"checkpoint={checkpoint}", f"run_dir={run_dir}"])
rclpy.init()
(node,) = build_nodes(node_set(cfg))
node._on_weights(UInt8MultiArray(data=open(payload_file, "rb").read()))
t0 = time.monotonic()
while node.weights_received < 1 and time.monotonic() - t0 < 60:
    time.sleep(0.05)
gc.collect()
objs = gc.get_objects()
modules = [o for o in objs if isinstance(o, torch.nn.Module)]
params = {id(p): p.numel() for m in modules for p in m.parameters()}
print("PROBE " + json.dumps({
    "weights_received": node.weights_received, "weights_step": node.weights_step,
    "actor_type": type(node.actor).__name__,
    "module_types": sorted({type(m).__name__ for m in modules}),
    "optimizers": sum(isinstance(o, torch.optim.Optimizer) for o in objs),
    "agents": sum(type(o).__name__ == "CalQL" for o in objs),
    "parameters": sum(params.values())}))
node.destroy_node()
rclpy.shutdown()
"""


def run_probe(tmp_path: Path, agent, meta: dict) -> dict:
    """PROBE in a fresh process on the checkpoint in tmp_path/pre, after a weights message (step 11)
    from `agent`; returns what it found alive."""
    from robot_calql.train.acting import weights_payload

    (tmp_path / "weights.bin").write_bytes(weights_payload(agent, meta, 11))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "ros_nodes"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "pre"), str(tmp_path / "weights.bin"),
                           str(tmp_path / "run")], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(lines[0][len("PROBE "):])


def test_policy_node_process_holds_no_critic_or_optimiser(tmp_path):
    agent, meta = _checkpoint(tmp_path / "pre")
    want = sum(p.numel() for m in (agent.encoder, agent.actor) for p in m.parameters())
    found = run_probe(tmp_path, agent, meta)
    print(found)
    assert found["weights_received"] == 1 and found["weights_step"] == 11
    assert "EnsembleCritic" not in found["module_types"] and found["agents"] == 0
    assert found["optimizers"] == 0
    assert found["actor_type"] == "ActingPolicy"
    # every parameter alive in the process is the acting policy's: encoder + actor, once
    assert found["parameters"] == want


def test_unknown_instruction_is_said_when_it_arrives_and_the_node_keeps_running(ros, tmp_path, capfd):
    from robot_calql_ros.launcher import NodeSpinners, build_nodes
    from robot_calql_ros.nodeset import node_set
    from std_msgs.msg import String
    from test_policy_transitions import Cell

    from robot_calql.config import compose

    _checkpoint(tmp_path / "pre")
    cfg = compose("launch_finetune", ["sim=true", "nodes=[policy]", f"checkpoint={tmp_path / 'pre'}",
                                      f"run_dir={tmp_path / 'run'}"])
    (policy,) = build_nodes(node_set(cfg))
    cell = Cell(ros, cfg)
    status: list[dict] = []
    cell.node.create_subscription(String, "/policy/status", lambda m: status.append(json.loads(m.data)), 10)
    spinners = NodeSpinners([policy])
    try:
        wait_for(lambda: cell.pub_event.get_subscription_count() >= 1, 20, "the policy subscribing to events")
        wait_for(policy.ready, 20, "the policy ready (weights, frames, joint states, pose)")
        capfd.readouterr()
        n = len(status)
        cell.pub_event.publish(String(data=json.dumps(
            {"event": "start", "episode": 0, "instruction": "stack the cubes", "direction": "forward"})))
        # frames keep coming: the node keeps spinning (its status goes on) and does not act
        wait_for(lambda: len(status) >= n + 3, 15, "status messages while the instruction is unknown")
        assert policy.steps == 0
        err = capfd.readouterr().err
        assert "policy cannot act: instruction 'stack the cubes' unknown to the policy" in err, err
        assert "stack the cubes" in status[-1]["instruction_error"] and "take the cube out" in status[-1]["instruction_error"]

        cell.pub_event.publish(String(data=json.dumps(
            {"event": "start", "episode": 1, "instruction": INSTRUCTIONS[1], "direction": "backward"})))
        wait_for(lambda: policy.steps >= 3, 20, "the policy acting on a known instruction")
        assert policy.instruction_error == ""
        assert np.isfinite(policy.status()["act_ms_p50"])
    finally:
        spinners.stop()
        policy.destroy_node()
