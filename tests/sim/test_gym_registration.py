"""gymnasium.make("RobotCalQL/StandIn-v0", ...): the time limit is the one passed to make."""

import gymnasium as gym
import numpy as np
import pytest

from robot_calql.sim import ENV_ID


def _steps_until_done(env, limit: int = 500) -> tuple[int, bool, bool]:
    env.reset(seed=0)
    for i in range(1, limit + 1):
        _, _, terminated, truncated, _ = env.step(np.zeros(5, np.float32))  # the arm holds still
        if terminated or truncated:
            return i, terminated, truncated
    return limit, False, False


@pytest.mark.parametrize("max_steps, expected", [(None, 60), (100, 100), (7, 7)])
def test_make_honours_max_episode_steps(max_steps, expected):
    kwargs = {} if max_steps is None else {"max_episode_steps": max_steps}
    env = gym.make(ENV_ID, task="cube_in_bowl", image_size=0, **kwargs)
    assert env.spec.max_episode_steps == expected
    assert _steps_until_done(env) == (expected, False, True)
    env.close()


def test_make_with_no_time_limit_never_truncates():
    env = gym.make(ENV_ID, task="cube_in_bowl", image_size=0, max_episode_steps=-1)
    assert _steps_until_done(env, limit=150) == (150, False, False)
    env.close()
