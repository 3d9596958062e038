"""evaluate(): counts ground-truth successes of a policy over seeded full-reset episodes."""

from __future__ import annotations

import numpy as np

from robot_calql.data.replay import InstructionVocab
from robot_calql.sim import make_env
from robot_calql.sim.demonstrators import ScriptedDemonstrator
from robot_calql.train.evaluate import evaluate


class _ScriptedAgent:
    """The scripted demonstrator behind the agent's act() interface (state observations)."""

    def __init__(self, env, task):
        self.demo = ScriptedDemonstrator(task, noise=0.0, rng=np.random.default_rng(0))
        reset = env.reset

        def reset_both(**kw):  # the demonstrator is a state machine: restart it with the episode
            self.demo.reset()
            return reset(**kw)

        env.reset = reset_both

    def act(self, obs, deterministic=True):
        return self.demo.act(obs["state"])


def test_evaluate_counts_successes_and_failures():
    env = make_env("cube_in_bowl", image_size=0, max_episode_steps=60)
    vocab = InstructionVocab([env.instruction])
    spec = {"state": (23,)}

    good = evaluate(_ScriptedAgent(env, "cube_in_bowl"), env, "cube_in_bowl", 4, spec, vocab)
    assert good["success_rate"] >= 0.75 and good["mean_length"] < 60

    class Still:
        def act(self, obs, deterministic=True):
            return np.zeros(5, dtype=np.float32)

    idle = evaluate(Still(), env, "cube_in_bowl", 2, spec, vocab)
    assert idle == {"success_rate": 0.0, "mean_return": 0.0, "mean_length": 60.0}
