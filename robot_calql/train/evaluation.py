"""Evaluation of a policy in the stand-in: deterministic actions, full resets, ground-truth success.

Evaluation uses its own environment instance, so it never disturbs the scene of a reset-free
training run, and seeds every episode (`seed + i`), so two evaluations of the same policy see the
same object placements. A policy that samples while it acts (PA-RL's best of K samples, or a
temperature above 0) draws from torch's random numbers seeded with the same `seed + i`, inside a
fork of torch's generator: the same checkpoint scores the same on the same placements, and the
training run that evaluates keeps its own stream of random numbers. Used by pretrain, finetune
and `robot-calql evaluate` (robot_calql.train.evaluate). `calibration_points` pairs the
critic's Q(s, pi(s)) with the Monte-Carlo return along held-out episodes (the calibration plots
of pretrain and finetune).

Every episode also gets an *outcome*, from the simulator's ground truth, so a success rate that
stalls says why (these are logged next to it during training, `<outcome>_rate`):

| outcome              | meaning                                                                 |
| -------------------- | ----------------------------------------------------------------------- |
| `success`            | the task's success check passed                                         |
| `never_grasped`      | the cube never rose `LIFT_M` above where it started                     |
| `held_at_timeout`    | time ran out with the cube lifted and the gripper closed on it (too slow, or it never let go) |
| `released_elsewhere` | the cube was lifted, then let go (or dropped) where the task does not count it |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from robot_calql.train.common import agent_obs, shaped_returns

LIFT_M = 0.015  # the cube counts as lifted once it is this far above its start height
FAILURES = ("never_grasped", "held_at_timeout", "released_elsewhere")
OUTCOMES = ("success", *FAILURES)


def episode_outcome(success: bool, lifted: bool, holding_at_end: bool) -> str:
    """The outcome (OUTCOMES) of one episode from three ground-truth facts about it."""
    if success:
        return "success"
    if not lifted:
        return "never_grasped"
    return "held_at_timeout" if holding_at_end else "released_elsewhere"


def run_episode(agent: Any, env: Any, spec: dict[str, tuple[int, ...]], vocab: Any, seed: int,
                temperature: Any = 0.0, frames: list | None = None) -> dict[str, Any]:
    """One full-reset episode (seeded) with the policy's mean action (temperature 0) or
    tanh(mean + T * std * eps) (T: one number or one per action axis). With `frames`, each
    env.render() frame is appended to it.

    Returns {"seed", "success", "outcome", "length", "return"}, plus, for an agent with a critic
    (`q_values` and a `cfg` with the reward shaping), "q_mean" and "mc_return_mean": the critic's
    Q(s_t, pi(s_t)) and the episode's discounted return-to-go (rewards shaped and failures filled as
    in training) averaged over its steps. Q far above the return is an over-estimating critic.
    Sampled actions are seeded with `seed` (module docstring): a replay repeats the episode.
    """
    import torch

    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):  # the episode's own random numbers; the caller's stream is kept
        torch.manual_seed(seed)
        return _episode(agent, env, spec, vocab, seed, temperature, frames)


def _episode(agent: Any, env: Any, spec: dict[str, tuple[int, ...]], vocab: Any, seed: int,
             temperature: Any, frames: list | None) -> dict[str, Any]:
    from robot_calql.sim.tasks import RELEASED

    obs, _ = env.reset(seed=seed)
    start_z = float(env.scene().cube_pos[2])
    done, ret, n, success, lifted = False, 0.0, 0, False, False
    critic = hasattr(agent, "q_values") and hasattr(agent, "cfg")
    seen: list[dict[str, Any]] = []
    rewards: list[float] = []
    if frames is not None:
        frames.append(env.render())
    while not done:
        o = agent_obs(obs, spec, vocab)
        if critic:
            seen.append(o)
        if np.any(np.asarray(temperature) > 0):
            action = agent.act(o, deterministic=False, temperature=temperature)
        else:
            action = agent.act(o, deterministic=True)
        obs, reward, terminated, truncated, info = env.step(np.asarray(action, dtype=np.float32))
        ret += float(reward)
        rewards.append(float(reward))
        n += 1
        success = success or bool(info.get("success", terminated))
        done = terminated or truncated
        scene = env.scene()
        lifted = lifted or float(scene.cube_pos[2]) > start_z + LIFT_M
        if frames is not None:
            frames.append(env.render())
    holding = float(scene.cube_pos[2]) > start_z + LIFT_M and scene.gripper_open <= RELEASED
    res = {"seed": int(seed), "success": bool(success), "outcome": episode_outcome(success, lifted, holding),
           "length": n, "return": ret}
    if critic and seen:
        res.update(_calibration(agent, seen, rewards, bool(terminated)))
    return res


def _calibration(agent: Any, seen: list[dict[str, Any]], rewards: list[float], terminated: bool) -> dict[str, float]:
    """Mean Q(s_t, pi(s_t)) and mean discounted return-to-go over one episode's steps."""
    terminal = np.zeros(len(rewards), dtype=bool)
    terminal[-1] = terminated
    mc = shaped_returns(rewards, terminal, agent.cfg)
    q = agent.q_values({k: np.stack([o[k] for o in seen]) for k in seen[0]})
    return {"q_mean": float(np.mean(q)), "mc_return_mean": float(np.mean(mc))}


def evaluate(
    agent: Any,
    env: Any,
    task: str,
    episodes: int,
    spec: dict[str, tuple[int, ...]],
    vocab: Any,
    seed: int = 10_000,
    temperature: Any = 0.0,
    details: list | None = None,
    on_episode: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, float]:
    """Run `episodes` full-reset episodes of `task` (seeds seed + i) with the policy's mean action,
    or sampled at `temperature` (run_episode). The one evaluation of the stand-in: training's
    evaluations, `robot-calql evaluate` and the benchmarks call it.

    Returns {"success_rate", "mean_return", "mean_length", "<failure>_rate" for each of FAILURES}
    and the critic's summary (critic_summary); with `details`, each episode's run_episode() record
    is appended to it; `on_episode` is called with each record as it finishes (e.g. a progress bar).
    """
    env.set_task(task)
    eps = []
    for i in range(int(episodes)):
        eps.append(run_episode(agent, env, spec, vocab, seed + i, temperature))
        if on_episode is not None:
            on_episode(eps[-1])
    if details is not None:
        details.extend(eps)
    res = {
        "success_rate": float(np.mean([e["success"] for e in eps])) if eps else 0.0,
        "mean_return": float(np.mean([e["return"] for e in eps])) if eps else 0.0,
        "mean_length": float(np.mean([e["length"] for e in eps])) if eps else 0.0,
    }
    for f in FAILURES:
        res[f"{f}_rate"] = float(np.mean([e["outcome"] == f for e in eps])) if eps else 0.0
    res.update(critic_summary(eps))
    return res


def critic_summary(eps: list[dict[str, Any]]) -> dict[str, float]:
    """The critic against what the policy really got, over run_episode() records: "q_mean",
    "mc_return_mean", "q_gap" (their difference) over all episodes, and the same three with a
    "_success" suffix over the successes alone, where the return is exact (no failure fill).
    Empty for an agent without a critic; no "_success" keys without a success."""
    out: dict[str, float] = {}
    if not eps or "q_mean" not in eps[0]:
        return out
    for suffix, sel in (("", eps), ("_success", [e for e in eps if e["success"]])):
        if sel:
            q, g = float(np.mean([e["q_mean"] for e in sel])), float(np.mean([e["mc_return_mean"] for e in sel]))
            out.update({f"q_mean{suffix}": q, f"mc_return_mean{suffix}": g, f"q_gap{suffix}": q - g})
    return out


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate k/n (honest at 0/n and n/n, unlike k/n +- 2 se)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def calibration_points(agent: Any, episodes: list[Any], spec: dict, vocab: Any, cfg_agent: Any,
                       max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(Q(s, pi(s)), MC return-to-go) for every state of the given episodes (subsampled)."""
    qs, mcs = [], []
    for ep in episodes:
        mc = shaped_returns(ep.reward, ep.terminal, cfg_agent)
        T = len(ep)
        obs = {k: np.array(ep.obs(k)[:T]) for k in spec}  # a writable copy of the memory map
        obs["instruction"] = np.full(T, vocab.id(ep.instruction), dtype=np.int64)
        qs.append(np.asarray(agent.q_values(obs)))
        mcs.append(mc)
    if not qs:
        return np.zeros(0), np.zeros(0)
    q, mc = np.concatenate(qs), np.concatenate(mcs)
    if len(q) > max_points:
        pick = np.random.default_rng(0).choice(len(q), max_points, replace=False)
        q, mc = q[pick], mc[pick]
    return q, mc
