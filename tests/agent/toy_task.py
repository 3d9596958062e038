"""Tasks on a line small enough to learn in seconds, shared by the learning tests.

- `rollout`: reaching. The agent moves x by STEP * action and succeeds (reward REWARD, terminal)
  within TOL of GOAL.
- `carry_rollout`: carry and release. Action (move, grip): x moves by STEP * move; grip > 0 holds
  the object, grip <= 0 lets it go. Letting go within TOL of GOAL succeeds (reward, terminal);
  anywhere else drops the object (terminal, no reward). Holding on at the goal goes on (the
  stand-in's hover, in miniature).
"""

import numpy as np

GOAL, TOL, STEP, HORIZON, REWARD = 0.0, 0.1, 0.2, 15, 10.0


def _episode(policy, x0, rng, step):
    """One episode of `policy(x, rng) -> action` (clipped to [-1, 1]) from x0 under
    `step(x, a) -> (x', reward, terminal)`: (xs, actions, rewards, terminals)."""
    xs, acts, rews, terms = [x0], [], [], []
    x = x0
    for _ in range(HORIZON):
        a = np.clip(np.asarray(policy(x, rng), np.float32), -1, 1)
        x, r, done = step(x, a)
        xs.append(x)
        acts.append(a)
        rews.append(r)
        terms.append(done)
        if done:
            break
    return np.array(xs, np.float32), np.array(acts, np.float32), np.array(rews, np.float32), np.array(terms, bool)


def _move(x, move):
    return float(np.clip(x + STEP * float(move), -1.5, 1.5))


def rollout(policy, x0, rng=None):
    """One reaching episode from x0 (actions: one number)."""
    def step(x, a):
        x = _move(x, a)
        done = abs(x - GOAL) < TOL
        return x, REWARD * float(done), done
    return _episode(lambda x, r: float(np.clip(policy(x, r), -1, 1)), x0, rng, step)  # (a number or one of 1)


def carry_rollout(policy, x0, rng=None):
    """One carry-and-release episode from x0 (actions: move, grip)."""
    def step(x, a):
        x = _move(x, a[0])
        released = bool(a[1] <= 0)
        return x, REWARD * float(released and abs(x - GOAL) < TOL), released
    return _episode(policy, x0, rng, step)
