"""The learner session (robot_calql.train.session) that finetune, the ROS learner node and
benchmarks/bench_online_warmup.py start from: agent, replays, resume state."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from robot_calql.config import ConfigError
from robot_calql.data.replay import MixedReplay, OnlineReplay
from robot_calql.train import checkpoint as ckpt
from robot_calql.train.session import open_session

REPO = Path(__file__).resolve().parents[2]


def test_session_from_a_checkpoint_has_its_weights_optimizer_and_data(pretrained):
    state = ckpt.load_checkpoint(pretrained)
    s = open_session(state["meta"], state, agent_overrides={"policy_lr": 3e-5}, online_capacity=50,
                     dataset=state["meta"]["dataset"], mixing_ratio=0.5, online_seed=2, offline_seed=1)
    sd = s.agent.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in state["agent_state"].items())
    assert s.agent.opt_actor.state_dict()["state"], "Adam's moments come from the checkpoint"
    assert s.agent.opt_actor.param_groups[0]["lr"] == 3e-5 and s.meta["agent"]["policy_lr"] == 3e-5
    assert isinstance(s.replay, MixedReplay) and s.offline is not None and len(s.offline) > 0
    assert s.online.capacity == 50 and len(s.online) == 0
    batch = s.replay.sample(8)  # all offline until an online episode has ended
    assert batch["action"].shape == (8, 5)
    # without offline data the online buffer is the replay
    bare = open_session(state["meta"], state, online_capacity=10)
    assert isinstance(bare.replay, OnlineReplay) and bare.replay is bare.online and bare.dataset is None


def test_session_refuses_a_deleted_agent_setting_by_name(pretrained):
    state = ckpt.load_checkpoint(pretrained)
    with pytest.raises(ConfigError, match="'td_target_max' was removed"):
        open_session(state["meta"], state, agent_overrides={"td_target_max": 5.0}, online_capacity=10)


def test_session_resume_restores_the_buffer_and_names_a_bad_one(pretrained):
    state = ckpt.load_checkpoint(pretrained)
    s = open_session(state["meta"], state, online_capacity=20, online_seed=0)
    obs = {"state": np.zeros(s.spec["state"], np.float32)}
    for t in range(4):
        s.online.add(obs, np.zeros(5, np.float32), 0.0, obs, False, t == 3, "put the cube in the bowl")
    snap = s.online.state_dict()
    again = open_session(state["meta"], {**state, "trainer": {}}, online_capacity=20, online_seed=0)
    again.resume(snap)
    assert len(again.online) == 4
    small = open_session(state["meta"], state, online_capacity=2)
    with pytest.raises(ckpt.CheckpointError, match="buffer.npz"):
        small.resume(snap)


def test_bench_online_warmup_replays_a_session_log(tmp_path, pretrained, monkeypatch):
    """The benchmark at its smallest: a 30-transition log through the learner's schedule
    (min_online 10), the weights evaluated after 0 and 5 updates."""
    from robot_calql.control.transport import TransitionLog, pack_transition

    S = ckpt.load_meta(pretrained)["obs_spec"]["state"][0]
    rng = np.random.default_rng(0)
    log = TransitionLog(tmp_path / "transitions.log")
    cur = rng.normal(size=S).astype(np.float32)
    for i in range(30):
        done, nxt = i % 10 == 9, rng.normal(size=S).astype(np.float32)
        log.append(pack_transition({"actor": "a", "seq": i, "episode": i // 10, "step": i % 10, "reward": float(done),
                                    "done": done, "truncated": False, "instruction": "put the cube in the bowl"},
                                   {"state": cur, "next_state": nxt, "action": rng.uniform(-1, 1, 5).astype(np.float32)}))
        cur = rng.normal(size=S).astype(np.float32) if done else nxt
    log.close()
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    monkeypatch.setattr(sys, "argv", ["bench_online_warmup.py", "--checkpoint", str(pretrained), "--transitions",
                                      str(tmp_path / "transitions.log"), "--warmups", "0", "--seeds", "0",
                                      "--eval-at", "0", "5", "--episodes", "1", "--batch", "8",
                                      "--out", str(tmp_path / "out")])
    import bench_online_warmup

    monkeypatch.setattr(bench_online_warmup, "compose", lambda name, overrides: _learner_config(name, overrides))
    assert bench_online_warmup.main() == 0
    rows = json.loads((tmp_path / "out" / "bench_online_warmup.json").read_text())["results"]["0"][0]
    assert [r["updates"] for r in rows] == [0, 5]
    assert rows[1]["online_steps"] >= 10 and rows[1]["transitions"] >= 10


def _learner_config(name, overrides):
    from robot_calql.config import compose

    return compose(name, [*overrides, "learner.min_online=10"])
