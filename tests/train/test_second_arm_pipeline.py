"""collect -> pretrain -> finetune -> evaluate on the second simulated arm (configs/robot/kestrel6.yaml,
6 joints): every command runs that arm's cell, chosen by the robot name the dataset and the
checkpoints record, not the stand-in's. Tiny budgets: this checks the wiring; the learning figures
are benchmarks/bench_sim_robot_learning.py's."""

from __future__ import annotations

import json

from robot_calql.cli import main
from robot_calql.train import checkpoint as ckpt

from .conftest import TINY_AGENT

ROBOT = "kestrel6"


def test_collect_pretrain_finetune_evaluate_on_the_second_arm(tmp_path):
    data, pre, ft = tmp_path / "data", tmp_path / "pre", tmp_path / "ft"
    assert main(["collect", f"robot={ROBOT}", "task=cube_in_bowl", "episodes=3", "failures=1", "image_size=0",
                 "max_episode_steps=40", f"out={data}"]) == 0
    # pretrain's own evaluation runs in the arm's cell (state of 24 = 6 joints + 18)
    assert main(["pretrain", f"dataset={data}", f"out={pre}", "steps=10", "log_every=5", "obs=state",
                 "eval_task=cube_in_bowl", "eval_episodes=1", "max_episode_steps=5", *TINY_AGENT]) == 0
    meta = ckpt.load_checkpoint(pre)["meta"]
    assert meta["robot"] == ROBOT and meta["obs_spec"] == {"state": [24]}
    assert "success_rate" in json.loads((pre / "summary.json").read_text())["eval"]
    assert main(["finetune", f"checkpoint={pre}", f"out={ft}", "steps=12", "max_episode_steps=6", "eval_every=0",
                 "eval_episodes=1", "log_every=6", "forward_task=cube_in_bowl", "backward=false", *TINY_AGENT[2:]]) == 0
    assert ckpt.load_checkpoint(ft)["meta"]["robot"] == ROBOT
    out = tmp_path / "eval"
    assert main(["evaluate", f"checkpoint={ft}", "episodes=1", "max_episode_steps=5", "progress=false",
                 f"out={out}"]) == 0
    assert json.loads((out / "evaluation.json").read_text())["episodes"] == 1
