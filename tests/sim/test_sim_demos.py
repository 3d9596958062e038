"""Scripted demonstrators: forward demos succeed, failures fail, the env-bound expert follows the task."""

import numpy as np
import pytest

from robot_calql.sim import TASKS, make_env
from robot_calql.sim.collect import iter_episodes
from robot_calql.sim.demonstrators import FAILURES, ScriptedDemonstrator, make_demonstrator


@pytest.mark.parametrize("task", list(TASKS))
def test_demonstrator_succeeds_on_most_episodes(task):
    eps = list(iter_episodes(task, 10, image_size=0, seed=5))
    rate = np.mean([e.success for e in eps])
    print(f"{task}: demonstrator success {rate:.0%}")
    assert rate >= 0.8
    for e in eps:
        assert len(e) <= 60 and e.terminal[-1] == e.success and e.reward.sum() == float(e.success)


def test_demos_are_noisy_not_a_fixed_script():
    a, b = iter_episodes("cube_in_bowl", 2, image_size=0, seed=0)
    assert len(a) != len(b) or not np.allclose(a.action, b.action)
    # per-step noise: consecutive actions in free motion are not constant
    assert np.std(np.diff(a.action[:, :3], axis=0)) > 0.05


@pytest.mark.parametrize("mode", FAILURES)
def test_failure_demonstrator_fails(mode):
    eps = list(iter_episodes("cube_in_bowl", 6, image_size=0, seed=1, failure=mode, source="failure"))
    assert np.mean([e.success for e in eps]) <= 0.34
    assert all(e.source == "failure" and e.extra["failure_mode"] == mode for e in eps)
    with pytest.raises(ValueError, match="unknown failure mode"):
        ScriptedDemonstrator("cube_in_bowl", failure="explode")


def test_env_bound_demonstrator_follows_task_switch():
    env = make_env("cube_in_bowl", image_size=0, seed=2, max_episode_steps=60)
    expert = make_demonstrator(env, noise=0.1, seed=0)
    obs, _ = env.reset()
    for task in ("cube_in_bowl", "cube_out_of_bowl"):  # reset-free: forward, then backward
        env.set_task(task)
        obs, _ = env.reset(options={"full": False})
        for _ in range(60):
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            if terminated or truncated:
                break
        assert info["success"], task
