"""Tiny-budget smoke runs of every training entry point through the real CLI:
collect -> pretrain -> finetune (state and pixels) -> demo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from robot_calql.cli import main
from robot_calql.config import compose
from robot_calql.data.dataset import Dataset
from robot_calql.train.logger import read_metrics

QUIET = ["progress=false", "tensorboard=false", "threads=1", "batch_size=8"]
TINY = ["agent.actor_hidden=[16,16]", "agent.critic_hidden=[16,16]"]


def test_collect_pretrain_finetune_state(tmp_path):
    data, pre, ft = tmp_path / "data", tmp_path / "pre", tmp_path / "ft"
    assert main(["collect", "task=cube_bowl", "episodes=2", "image_size=0", "max_episode_steps=20", f"out={data}"]) == 0
    assert len(Dataset(data)) == 4
    assert main(["pretrain", f"dataset={data}", f"out={pre}", "steps=5", "log_every=5", *QUIET, *TINY]) == 0
    assert (pre / "plots" / "calibration.png").stat().st_size > 0
    rows = read_metrics(pre, "pretrain")
    assert rows and {"loss_td", "loss_cql", "calql_bound_rate", "alpha", "q_data"} <= set(rows[-1])
    assert main(["finetune", f"checkpoint={pre}", f"out={ft}", "steps=12", "eval_every=6", "eval_episodes=1",
                 "max_episode_steps=5", "log_every=4", *QUIET]) == 0
    summary = json.loads((ft / "summary.json").read_text())
    assert [e[0] for e in summary["evals"]] == [0, 6, 12]
    last = summary["last_eval"]  # how the final evaluation's episodes ended, as fractions that sum to 1
    assert last["success_rate"] + sum(last[f"{f}_rate"] for f in ("never_grasped", "held_at_timeout",
                                                                   "released_elsewhere")) == pytest.approx(1.0)
    assert summary["online_episodes"] >= 2  # 12 steps of 5-step episodes, reset-free
    cal = summary["online_calibration"]  # Q against MC return on the policy's own finished online steps
    assert 5 <= cal["states"] <= 12 and np.isfinite([cal["mean_q"], cal["mean_mc_return"]]).all()
    assert (ft / "plots" / "success.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pretrain_finetune_pixels(tmp_path):
    data, pre, ft = tmp_path / "data", tmp_path / "pre", tmp_path / "ft"
    assert main(["collect", "task=cube_bowl", "episodes=1", "image_size=64", "max_episode_steps=10", f"out={data}"]) == 0
    assert main(["pretrain", f"dataset={data}", f"out={pre}", "steps=2", "obs=pixels", *QUIET, *TINY]) == 0
    assert main(["finetune", f"checkpoint={pre}", f"out={ft}", "steps=3", "eval_every=3", "eval_episodes=1",
                 "max_episode_steps=3", *QUIET]) == 0
    assert json.loads((ft / "summary.json").read_text())["steps"] == 3


def test_demo_smoke(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "experiment=demo_smoke", f"out={out}", "threads=1", "seed=3"]) == 0
    result = json.loads((out / "demo_summary.json").read_text())
    assert result["success_before"] is not None and result["success_after"] is not None
    for p in result["plots"].values():
        assert Path(p).is_file() and Path(p).suffix == ".png"
    for p in result["checkpoints"].values():
        assert (Path(p) / "model.safetensors").is_file()
    stages = result["stage_minutes"]  # where the wall time went, stage by stage
    assert list(stages) == ["collect", "classifier", "pretrain", "finetune", "ros"]
    assert all(v >= 0 for v in stages.values()) and sum(stages.values()) == pytest.approx(result["minutes"], abs=0.06)
    # the default path: pixels, a success classifier trained on the demos, fine-tuning on its rewards
    assert (out / "reward" / "train_report.json").is_file()
    ft = json.loads((out / "finetune" / "summary.json").read_text())
    assert {"clf_successes", "clf_false_positives", "clf_missed_successes"} <= set(ft)
    ft_cfg = (out / "finetune" / "config.yaml").read_text().splitlines()
    assert "reward_source: classifier" in ft_cfg
    demo = compose("demo")  # the demo's online settings reach fine-tuning
    assert f"home: {demo.home}" in ft_cfg and f"  policy_lr: {demo.finetune_policy_lr}" in ft_cfg
    latest = out / "pretrain" / "checkpoints" / "LATEST"
    meta = json.loads((latest.parent / latest.read_text().strip() / "meta.json").read_text())
    assert meta["obs"] == "pixels" and meta["agent"]["encoder_frozen"] is True
    ros = result["ros_session"]  # the ROS 2 node set over real DDS from the pre-trained checkpoint
    assert ros["transitions_stored"] > 0 and ros["transitions_stored"] == ros["transitions_received"]
    assert ros["weights_received"] >= 1 and ros["policy_steps"] > 0
    sim_params = (out / "ros_session" / "launch" / "sim_robot.params.yaml").read_text().splitlines()
    assert "      seed: 3" in sim_params  # the stand-in's placements follow the demo's seed


def test_demo_smoke_state_baseline_with_simulator_rewards(tmp_path):
    """The privileged-state baseline (obs=state reward_source=sim): no classifier stage, the
    demo's pixel-encoder settings are ignored by a state agent, and the checkpoint is state-mode."""
    out = tmp_path / "demo"
    assert main(["demo", "experiment=demo_smoke", f"out={out}", "threads=1", "obs=state", "reward_source=sim",
                 "ros_session_s=0"]) == 0
    assert not (out / "reward").exists()
    ft = json.loads((out / "finetune" / "summary.json").read_text())
    assert "clf_successes" not in ft and ft["success_after"] is not None
    latest = out / "pretrain" / "checkpoints" / "LATEST"
    assert json.loads((latest.parent / latest.read_text().strip() / "meta.json").read_text())["obs"] == "state"


def test_demo_smoke_with_a_wrist_camera(tmp_path):
    """robot=sim_standin_wrist: the demos record the wrist camera too, and the frozen-encoder agent
    pre-trains and fine-tunes on both cameras (the classifier sees the front camera)."""
    out = tmp_path / "demo"
    assert main(["demo", "experiment=demo_smoke", f"out={out}", "threads=1", "robot=sim_standin_wrist",
                 "ros_session_s=0"]) == 0
    ds = json.loads((out / "data" / "dataset.json").read_text())
    assert ds["robot"] == "sim_standin_wrist" and ds["extra_cameras"] == ["wrist"]
    latest = out / "finetune" / "checkpoints" / "LATEST"
    meta = json.loads((latest.parent / latest.read_text().strip() / "meta.json").read_text())
    assert "image_wrist" in meta["obs_spec"] and meta["agent"]["encoder_frozen"] is True
    assert json.loads((out / "finetune" / "summary.json").read_text())["steps"] == 20


def test_demo_refuses_a_robot_without_a_simulated_cell(tmp_path, capsys):
    assert main(["demo", "experiment=demo_smoke", f"out={tmp_path / 'demo'}", "robot=widowx250_example"]) == 1
    assert "robot=widowx250_example: the demo runs in the MuJoCo stand-in" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()  # refused before anything was written


def test_bad_inputs_get_clear_errors(tmp_path, capsys):
    assert main(["pretrain", f"dataset={tmp_path / 'missing'}", f"out={tmp_path / 'r'}", "steps=1", *QUIET]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["finetune", f"checkpoint={tmp_path / 'nope'}", "steps=1", *QUIET]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["pretrain", "obs=rgb", f"dataset={tmp_path}", f"out={tmp_path / 'r'}", *QUIET]) == 1
    assert "obs=" in capsys.readouterr().err


def test_demo_agent_settings_reach_pretrain_even_when_pretrain_yaml_does_not_list_them():
    from robot_calql.config import ConfigError
    from robot_calql.demo import agent_overrides
    from robot_calql.train.common import agent_config

    demo = compose("demo", ["+agent.bc_success_only=true", "+agent.bc_z_clip=3.0"])
    acfg = agent_config(compose("pretrain", agent_overrides(demo)))
    assert acfg.bc_success_only is True and acfg.bc_z_clip == 3.0 and acfg.bc_weight == demo.agent.bc_weight
    with pytest.raises(ConfigError, match="bogus"):
        agent_config(compose("pretrain", agent_overrides(compose("demo", ["+agent.bogus=1"]))))
