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


def test_an_evaluation_of_a_sampling_policy_repeats(tmp_path, tiny_dataset):
    """PA-RL acts with the best of K sampled actions: evaluating one checkpoint twice on the same
    placements gives the same episodes, whatever torch's global random state was before."""
    import torch

    pre = tmp_path / "pre"
    assert main(["pretrain", f"dataset={tiny_dataset}", f"out={pre}", "steps=10", "log_every=5", *PA_RL,
                 "+agent.pa_rl.act_samples=8", *TINY_AGENT]) == 0
    runs = []
    for i, global_seed in enumerate((1, 2)):
        torch.manual_seed(global_seed)
        out = tmp_path / f"eval{i}"
        assert main(["evaluate", f"checkpoint={pre}", f"out={out}", "episodes=2", "max_episode_steps=6",
                     "progress=false", "threads=1"]) == 0
        runs.append(json.loads((out / "evaluation.json").read_text())["per_episode"])
    q = [[e["q_mean"] for e in r] for r in runs]
    assert q[0] == q[1]  # the same actions: the critic saw the same states
    assert q[0][0] != q[0][1]  # two placements, two different episodes
