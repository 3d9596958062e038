"""Scripted demonstrators: forward demos succeed, failures fail, the env-bound expert follows the task."""

import numpy as np
import pytest

from robot_calql.sim import TASKS, make_env
from robot_calql.sim.collect import iter_episodes
from robot_calql.sim.demonstrators import (
    FAILURES,
    ScriptedDemonstrator,
    cube_in_hand,
    make_demonstrator,
)


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


def test_backward_demos_put_the_cube_down_anywhere_a_reset_would():
    """put_down="front" leaves the cube in one band in front of the bowl; "anywhere" spreads it over
    the table (beside and behind the bowl too), and every demo still succeeds."""
    spread, lay = {}, make_env("cube_out_of_bowl", image_size=0).layout
    for put_down in ("front", "anywhere"):
        eps = list(iter_episodes("cube_out_of_bowl", 12, image_size=0, seed=0, noise=0.1, max_episode_steps=80,
                                 put_down=put_down))
        assert all(e.success for e in eps), put_down
        rel = np.array([e.state[-1][lay.cube][:2] - e.state[-1][lay.bowl][:2] for e in eps])
        spread[put_down] = rel
    front, anywhere = spread["front"], spread["anywhere"]
    assert np.all(np.abs(front[:, 0] + 0.14) < 0.03) and np.all(np.abs(front[:, 1]) < 0.07)
    assert np.ptp(anywhere[:, 1]) > 0.25 and np.ptp(anywhere[:, 0]) > 0.1      # across the table
    assert np.any(np.abs(anywhere[:, 1]) > 0.1)                                # beside the bowl
    with pytest.raises(ValueError, match="unknown put_down"):
        ScriptedDemonstrator("cube_out_of_bowl", put_down="shelf")


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


@pytest.mark.parametrize("task", ["cube_out_of_bowl", "cube_in_bowl"])
def test_taking_over_with_the_cube_already_in_the_hand_carries_it_on(task):
    """The simulated human resets the demonstrator when it takes over. Over a policy that lifted the
    cube and stalls, a fresh demonstrator must carry the cube on, not open the hand and start over."""
    env = make_env(task, image_size=0, seed=3, max_episode_steps=80)
    obs, _ = env.reset(seed=3)
    first = ScriptedDemonstrator(task, noise=0.0, rng=np.random.default_rng(0), action_scale=env.action_scale,
                                 layout=env.layout)
    while first.phase != "carry":                              # the "policy" grasps and lifts the cube
        obs, *_ = env.step(first.act(obs["state"]))
    held_z = obs["state"][env.layout.cube][2]
    for _ in range(5):                                         # then stalls with it in the hand
        obs, *_ = env.step(np.array([0, 0, 0, 0, 1.0], np.float32))
    assert cube_in_hand(obs["state"], env.layout)              # what finetune's `takeover` rows record
    human = ScriptedDemonstrator(task, noise=0.0, rng=np.random.default_rng(1), action_scale=env.action_scale,
                                 layout=env.layout)            # a takeover: a demonstrator from its first phase
    grip, done = [], False
    for _ in range(60):
        a = human.act(obs["state"])
        grip.append(a[4])
        obs, _, done, truncated, info = env.step(a)
        if done or truncated:
            break
    assert min(grip[:10]) > 0, "the hand opened right after the takeover (the cube dropped)"
    assert held_z > 0.05 and done and info["success"]
    assert not cube_in_hand(obs["state"], env.layout)          # let go at the goal
