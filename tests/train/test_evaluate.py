"""evaluate(): counts ground-truth successes of a policy over seeded full-reset episodes, and says
how each failure happened; `robot-calql evaluate` reports it for a saved checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

from robot_calql.data.replay import InstructionVocab
from robot_calql.sim import make_env
from robot_calql.sim.demonstrators import ScriptedDemonstrator
from robot_calql.train.evaluation import episode_outcome, evaluate, wilson_interval


class _ScriptedAgent:
    """The scripted demonstrator behind the agent's act() interface (state observations).
    failure="drop_early" lets go on the way; hold=True never opens the gripper once it has the cube."""

    def __init__(self, env, task, failure=False, hold=False):
        self.demo = ScriptedDemonstrator(task, noise=0.0, rng=np.random.default_rng(0), failure=failure)
        self.hold = hold
        reset = env.reset

        def reset_both(**kw):  # the demonstrator is a state machine: restart it with the episode
            self.demo.reset()
            return reset(**kw)

        env.reset = reset_both

    def act(self, obs, deterministic=True):
        a = self.demo.act(obs["state"])
        if self.hold and self.demo.phase in ("lower", "release", "retreat"):
            a = np.array([0, 0, 0, 0, 1.0], np.float32)  # stop above the bowl, keep the fingers closed
        return a


@pytest.fixture
def env():
    e = make_env("cube_in_bowl", image_size=0, max_episode_steps=60)
    yield e
    e.close()


def _spec_vocab(env):
    return {"state": (23,)}, InstructionVocab([env.instruction])


def test_evaluate_counts_successes_and_failures(env):
    spec, vocab = _spec_vocab(env)
    good = evaluate(_ScriptedAgent(env, "cube_in_bowl"), env, "cube_in_bowl", 4, spec, vocab)
    assert good["success_rate"] >= 0.75 and good["mean_length"] < 60

    class Still:
        def act(self, obs, deterministic=True):
            return np.zeros(5, dtype=np.float32)

    idle = evaluate(Still(), env, "cube_in_bowl", 2, spec, vocab)
    assert idle == {"success_rate": 0.0, "mean_return": 0.0, "mean_length": 60.0, "never_grasped_rate": 1.0,
                    "held_at_timeout_rate": 0.0, "released_elsewhere_rate": 0.0}


def test_failures_are_told_apart_from_ground_truth(env):
    spec, vocab = _spec_vocab(env)
    details: list = []
    held = evaluate(_ScriptedAgent(env, "cube_in_bowl", hold=True), env, "cube_in_bowl", 2, spec, vocab,
                    details=details)
    assert held["held_at_timeout_rate"] == 1.0, details
    assert [d["seed"] for d in details] == [10_000, 10_001] and all(d["length"] == 60 for d in details)
    dropped = evaluate(_ScriptedAgent(env, "cube_in_bowl", failure="drop_early"), env, "cube_in_bowl", 3, spec,
                       vocab)
    assert dropped["released_elsewhere_rate"] > 0 and dropped["success_rate"] < 1.0


class _CriticAgent(_ScriptedAgent):
    """The demonstrator with a critic that says Q = -7 everywhere, and training's reward shaping."""

    class cfg:  # noqa: N801 - stands in for CalQLConfig
        reward_scale, reward_bias, failure_reward, discount = 10.0, -5.0, -5.0, 0.9

    def q_values(self, obs):
        return np.full(len(obs["state"]), -7.0)


def test_evaluate_sets_the_critic_against_the_returns_it_really_got(env):
    spec, vocab = _spec_vocab(env)
    details = []
    res = evaluate(_CriticAgent(env, "cube_in_bowl"), env, "cube_in_bowl", 2, spec, vocab, details=details)
    assert res["success_rate"] == 1.0 and res["q_mean"] == -7.0
    want = []
    for e in details:  # success at the last step: r = -5 ... -5, +5; return-to-go by hand
        r = [-5.0] * (e["length"] - 1) + [5.0]
        want.append(np.mean([sum(0.9 ** (k - t) * r[k] for k in range(t, len(r))) for t in range(len(r))]))
        assert e["mc_return_mean"] == pytest.approx(want[-1], rel=1e-5)
    assert res["mc_return_mean"] == pytest.approx(np.mean(want), rel=1e-5)
    assert res["q_gap"] == pytest.approx(-7.0 - np.mean(want), rel=1e-5) == res["q_gap_success"]
    held = evaluate(_CriticAgent(env, "cube_in_bowl", hold=True), env, "cube_in_bowl", 1, spec, vocab)
    assert held["success_rate"] == 0.0 and held["mc_return_mean"] == pytest.approx(-50.0)  # failure fill -5 / 0.1
    assert "q_gap_success" not in held  # no success, no exact return to hold the critic to
    assert "q_mean" not in evaluate(_ScriptedAgent(env, "cube_in_bowl"), env, "cube_in_bowl", 1, spec, vocab)


def test_outcome_rules_and_interval():
    assert episode_outcome(True, False, False) == "success"  # e.g. pushed there: success wins
    assert episode_outcome(False, False, True) == "never_grasped"
    assert episode_outcome(False, True, True) == "held_at_timeout"
    assert episode_outcome(False, True, False) == "released_elsewhere"
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and 0.15 < hi < 0.17  # 0/20 still allows ~16%
    lo, hi = wilson_interval(18, 20)
    assert 0.68 < lo < 0.70 and 0.97 < hi < 0.98


def test_evaluate_command_reports_a_checkpoint(tmp_path, capsys):
    from robot_calql.cli import main

    data, pre, out = tmp_path / "data", tmp_path / "pre", tmp_path / "eval"
    assert main(["collect", "task=cube_in_bowl", "episodes=2", "image_size=0", "max_episode_steps=20",
                 f"out={data}"]) == 0
    assert main(["pretrain", f"dataset={data}", f"out={pre}", "steps=3", "progress=false", "tensorboard=false",
                 "batch_size=8", "agent.actor_hidden=[16,16]", "agent.critic_hidden=[16,16]"]) == 0
    capsys.readouterr()
    assert main(["evaluate", f"checkpoint={pre}", "episodes=2", "max_episode_steps=6", f"out={out}",
                 "frame_size=64", "progress=false"]) == 0
    printed = capsys.readouterr().out
    assert "cube_in_bowl:" in printed and "/2 succeeded" in printed and "6-step limit" in printed
    assert "critic along these episodes: mean Q(s, pi(s))" in printed
    report = json.loads((out / "evaluation.json").read_text())
    assert all(np.isfinite([e["q_mean"], e["mc_return_mean"]]).all() for e in report["per_episode"])
    assert len(report["per_episode"]) == 2 and sum(report["outcomes"].values()) == 2
    assert report["outcomes"]["success"] == 0  # 6 steps is too short to put the cube in the bowl
    assert (out / "failures.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the picture shows how it failed
    # from cubes lying on a random face (what a backward success can leave): the same placements
    assert main(["evaluate", f"checkpoint={pre}", "episodes=2", "max_episode_steps=6", f"out={out}",
                 "rolled_start=1.0", "progress=false"]) == 0
    assert "rolled_start=1" in capsys.readouterr().out
    assert json.loads((out / "evaluation.json").read_text())["rolled_start"] == 1.0
    assert main(["evaluate", f"checkpoint={pre}", "rolled_start=1.5"]) == 1
    assert "rolled_start must be a probability in [0, 1], got 1.5" in capsys.readouterr().err
    assert main(["evaluate", f"checkpoint={pre}", "eval_task=cube_sideways"]) == 1
    assert "cube_sideways" in capsys.readouterr().err
    assert main(["evaluate", f"checkpoint={pre}", "temperature=[0.2,0.2]"]) == 1  # 5 action axes
    assert "temperature=[0.2, 0.2]" in (err := capsys.readouterr().err) and "one per action dimension (5)" in err
