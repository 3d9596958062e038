"""`agent.policy=diffusion` through the real entry points: pre-training clones the demos into
the diffusion policy, fine-tuning distills improved actions into it, evaluation acts with it."""

from __future__ import annotations

import json

from robot_calql.cli import main
from robot_calql.train import checkpoint as ckpt
from robot_calql.train.logger import read_metrics

from .conftest import QUIET, TINY_AGENT

PA_RL = ["agent.policy=diffusion", "+agent.pa_rl={hidden: [32, 32], num_samples: 4, top_k: 2, grad_steps: 2}"]


def test_pretrain_and_finetune_with_the_diffusion_policy(tmp_path, tiny_dataset):
    pre, ft = tmp_path / "pre", tmp_path / "ft"
    assert main(["pretrain", f"dataset={tiny_dataset}", f"out={pre}", "steps=10", "log_every=5", *PA_RL,
                 *TINY_AGENT]) == 0
    rows = read_metrics(pre / "metrics.jsonl", "pretrain")
    assert rows[-1]["loss_diffusion"] > 0 and "pa_rl_q_improved" not in rows[-1]  # BC on the data only
    state = ckpt.load_checkpoint(pre)
    assert state["meta"]["agent"]["policy"] == "diffusion"
    assert any(k.startswith("diffusion.") for k in state["agent_state"])
    assert main(["finetune", f"checkpoint={pre}", f"out={ft}", "steps=12", "max_episode_steps=4", "eval_every=12",
                 "eval_episodes=1", "log_every=12", *QUIET]) == 0
    rows = read_metrics(ft / "metrics.jsonl", "finetune")
    assert rows[-1]["pa_rl_q_improved"] >= rows[-1]["pa_rl_q_samples"]  # online batches: distillation
    assert json.loads((ft / "summary.json").read_text())["steps"] == 12
