"""Monte-Carlo return-to-go, the lower bound that Cal-QL puts under the policy's Q-values.

    G_t = r_t + gamma * G_{t+1} * (1 - terminal_t)

computed backwards over ONE episode. How the episode ended matters:

- terminal (the task really ended, e.g. success): nothing comes after the last step, G_T = 0.
- truncated (time limit, recording stopped): the future is unknown; the return is bootstrapped
  with `truncated_value` (default 0.0, as the official Cal-QL code does: it treats the end of a
  trajectory as the end of the return). Pass a value estimate to bootstrap instead.

Sparse rewards: with `failure_reward` set (after any reward scale/bias, e.g. 0.0 for 0/1 rewards
or -5.0 for Cal-QL's antmaze scaling r*10-5), an episode whose every reward equals it never
succeeded; its return-to-go is the infinite-horizon value of failing forever,
`failure_reward / (1 - gamma)`, at every step (official Cal-QL `is_sparse_reward` fill). Without
the fill a failed episode's early steps would get a return that depends only on its length.
"""

from __future__ import annotations

import numpy as np


class ReturnsError(ValueError):
    """Inputs to the return computation that do not make sense (names the problem)."""


def mc_return_to_go(
    rewards: np.ndarray,
    terminals: np.ndarray,
    discount: float,
    truncated_value: float = 0.0,
    failure_reward: float | None = None,
) -> np.ndarray:
    """Discounted return-to-go of one episode, float32 (T,).

    rewards (T,), terminals (T,) bool (true where the episode really ended; a step after a
    terminal starts from zero again). The episode counts as truncated when terminals[-1] is
    false; then `truncated_value` is the value after its last step.
    """
    r = np.asarray(rewards, dtype=np.float64)
    d = np.asarray(terminals, dtype=bool)
    if r.ndim != 1 or d.shape != r.shape:
        raise ReturnsError(f"rewards and terminals must both be (T,), got {r.shape} and {d.shape}")
    if not 0.0 <= discount < 1.0:
        raise ReturnsError(f"discount must be in [0, 1), got {discount}")
    if not np.all(np.isfinite(r)):
        raise ReturnsError(f"reward has a NaN or infinite value at step {int(np.argmax(~np.isfinite(r)))}")
    T = r.shape[0]
    if T == 0:
        return np.zeros(0, dtype=np.float32)
    if failure_reward is not None and np.all(r == failure_reward):
        return np.full(T, failure_reward / (1.0 - discount), dtype=np.float32)
    out = np.empty(T, dtype=np.float64)
    g = 0.0 if d[-1] else float(truncated_value)
    for t in range(T - 1, -1, -1):
        g = r[t] + discount * g * (1.0 - d[t])
        out[t] = g
    return out.astype(np.float32)


def n_step_returns(rewards: np.ndarray, terminals: np.ndarray, n: int, discount: float) -> tuple[np.ndarray, np.ndarray]:
    """n-step TD pieces of one episode: (sum_{i<m} gamma^i r_{t+i} as float32 (T,), m as int64 (T,)).

    m_t = min(n, steps left in the episode, steps up to and including the next terminal): the
    window never runs past the episode's end or a terminal. The TD target of step t is then
    sum + gamma^m * (1 - terminal_{t+m-1}) * V(s_{t+m}). n = 1 gives (r_t, 1).
    """
    r = np.asarray(rewards, dtype=np.float64)
    d = np.asarray(terminals, dtype=bool)
    if r.ndim != 1 or d.shape != r.shape:
        raise ReturnsError(f"rewards and terminals must both be (T,), got {r.shape} and {d.shape}")
    if int(n) < 1:
        raise ReturnsError(f"n-step must be >= 1, got {n}")
    T = r.shape[0]
    sums, m = np.zeros(T, dtype=np.float64), np.zeros(T, dtype=np.int64)
    for t in range(T):
        g, k = 0.0, 0
        while k < n and t + k < T:
            g += discount**k * r[t + k]
            k += 1
            if d[t + k - 1]:
                break
        sums[t], m[t] = g, k
    return sums.astype(np.float32), m


def takeover_starts(intervention: np.ndarray) -> np.ndarray:
    """Indices of the first human step of each takeover from the policy (a step flagged
    `intervention` after one that is not) in one episode's (T,) flags."""
    h = np.asarray(intervention, dtype=bool)
    return np.flatnonzero(~h[:-1] & h[1:]) + 1


def takeover_penalties(intervention: np.ndarray, penalty: float) -> np.ndarray:
    """Per-step reward changes (T,) float32 of one episode: `-penalty` on each policy step that a
    human step follows (the step after which a person took over), 0 elsewhere. RLIF (Luo et al.
    2023) learns from that signal alone; here it is added to the task reward (CalQLConfig's
    `takeover_penalty`). `intervention` (T,) bool."""
    out = np.zeros(np.shape(intervention), dtype=np.float32)
    if penalty:
        out[takeover_starts(intervention) - 1] = -float(penalty)
    return out


def success_rows(succeeded: bool, intervention: np.ndarray | None, length: int) -> np.ndarray:
    """Which steps (T,) bool of one episode count as its success, for success-filtered BC
    (CalQLConfig `bc_success_only`): all of a successful episode's steps, except the policy's
    steps before a human takeover. A try that a person had to rescue is the person's success,
    not the policy's: cloning the policy's actions up to the takeover (a hover, a stall) would
    teach it to wait for help. The human's own steps stay (their actions are demonstrations), and
    so do the policy's after the last takeover (it finished on its own from there)."""
    rows = np.full(length, bool(succeeded))
    if not succeeded or intervention is None:
        return rows
    starts = takeover_starts(intervention)
    if len(starts):
        last = int(starts[-1])
        rows[:last] = np.asarray(intervention, dtype=bool)[:last]
    return rows


def episode_rewards_and_returns(
    rewards: np.ndarray,
    terminals: np.ndarray,
    discount: float,
    truncated_value: float = 0.0,
    failure_reward: float | None = None,
    intervention: np.ndarray | None = None,
    takeover_penalty: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One episode's rewards as the agent learns from them and their MC return-to-go, both (T,)
    float32: `rewards` (already scaled) plus the takeover penalties. The return is that of the
    task rewards (with the sparse failure fill, decided on the task rewards alone: a failed try
    that a person took over is still a failed try) plus the discounted penalties still ahead."""
    r = np.asarray(rewards, dtype=np.float32)
    mc = mc_return_to_go(r, terminals, discount, truncated_value, failure_reward)
    if intervention is None or not takeover_penalty:
        return r, mc
    p = takeover_penalties(intervention, takeover_penalty)
    if not p.any():
        return r, mc
    return r + p, mc + mc_return_to_go(p, terminals, discount)
