"""A 1-D reaching task small enough to learn in seconds, shared by the learning tests: the agent
moves x by STEP * action and succeeds (reward REWARD, terminal) within TOL of GOAL."""

import numpy as np

GOAL, TOL, STEP, HORIZON, REWARD = 0.0, 0.1, 0.2, 15, 10.0


def rollout(policy, x0, rng=None):
    """One episode of `policy(x, rng) -> action` from x0: (xs, actions, rewards, terminals)."""
    xs, acts, rews, terms = [x0], [], [], []
    x = x0
    for _ in range(HORIZON):
        a = float(np.clip(policy(x, rng), -1, 1))
        x = float(np.clip(x + STEP * a, -1.5, 1.5))
        done = abs(x - GOAL) < TOL
        xs.append(x)
        acts.append(a)
        rews.append(REWARD * float(done))
        terms.append(done)
        if done:
            break
    return np.array(xs, np.float32), np.array(acts, np.float32), np.array(rews, np.float32), np.array(terms, bool)
