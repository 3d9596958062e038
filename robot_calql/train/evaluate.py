"""Evaluation of a policy in the stand-in: deterministic actions, full resets, ground-truth success.

Evaluation uses its own environment instance, so it never disturbs the scene of a reset-free
training run, and seeds every episode (`seed + i`), so two evaluations of the same policy see the
same object placements.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robot_calql.train.common import agent_obs


def evaluate(
    agent: Any,
    env: Any,
    task: str,
    episodes: int,
    spec: dict[str, tuple[int, ...]],
    vocab: Any,
    seed: int = 10_000,
) -> dict[str, float]:
    """Run `episodes` full-reset episodes of `task` with the deterministic policy.

    Returns {"success_rate", "mean_return", "mean_length"}.
    """
    successes, returns, lengths = [], [], []
    env.set_task(task)
    for i in range(int(episodes)):
        obs, _ = env.reset(seed=seed + i)
        done, ret, n, success = False, 0.0, 0, False
        while not done:
            action = agent.act(agent_obs(obs, spec, vocab), deterministic=True)
            obs, reward, terminated, truncated, info = env.step(np.asarray(action, dtype=np.float32))
            ret += float(reward)
            n += 1
            success = success or bool(info.get("success", terminated))
            done = terminated or truncated
        successes.append(success)
        returns.append(ret)
        lengths.append(n)
    return {
        "success_rate": float(np.mean(successes)) if successes else 0.0,
        "mean_return": float(np.mean(returns)) if returns else 0.0,
        "mean_length": float(np.mean(lengths)) if lengths else 0.0,
    }
