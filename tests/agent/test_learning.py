"""Cal-QL pre-training learns a small continuous-control task from noisy offline data.

A point on a line starts at 0.5 to 1 from the goal, on either side, and must reach the goal
region |x| < 0.1 within 15 steps (x += 0.2 * a, a in [-1, 1]), so the policy has to pick the
direction from the state. Reward 10 (Cal-QL-style reward scaling) and terminal on success. The offline data
comes from a noisy demonstrator (about half its episodes fail) plus random-action episodes.
"""

import numpy as np
import torch
from toy_task import GOAL, rollout

from robot_calql.agent import CalQL, CalQLConfig
from robot_calql.data.returns import mc_return_to_go


def _start(rng):
    return float(rng.choice([-1, 1]) * rng.uniform(0.5, 1.0))


def _offline_data(rng, discount):
    def noisy(x, r):
        return 2.0 * (GOAL - x) + r.normal(0, 3.0)

    def random(x, r):
        return r.uniform(-1, 1)

    rows = []
    for i in range(80):
        xs, acts, rews, terms = rollout(noisy if i < 60 else random, _start(rng), rng)
        mc = mc_return_to_go(rews, terms, discount, failure_reward=0.0)
        rows.append((xs[:-1], acts, rews, terms, xs[1:], mc))
    cat = [np.concatenate(c) for c in zip(*rows, strict=True)]
    success = np.mean([r[3].any() for r in rows[:60]])
    return cat, success


def _success_rate(agent, starts):
    wins = 0
    for x0 in starts:
        _, _, _, terms = rollout(lambda x, _: agent.act({"state": np.array([x], np.float32)})[0], x0)
        wins += int(terms.any())
    return wins / len(starts)


def _pretrain(enable_calql: bool, seed: int = 0, precision: str = "fp32"):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = CalQLConfig(actor_hidden=(64, 64), critic_hidden=(64, 64), cql_alpha=5.0, discount=0.9,
                      policy_lr=3e-4, critic_lr=1e-3, enable_calql=enable_calql, precision=precision)
    (s, a, r, d, s2, mc), demo_success = _offline_data(rng, cfg.discount)
    agent = CalQL({"state": (1,)}, 1, cfg)
    t = {k: torch.as_tensor(v) for k, v in dict(s=s, a=a, r=r, d=d, s2=s2, mc=mc).items()}
    n = len(s)
    untrained = _success_rate(agent, STARTS)
    for _ in range(1000):
        i = torch.randint(0, n, (128,))
        m = agent.update({"obs": {"state": t["s"][i, None]}, "next_obs": {"state": t["s2"][i, None]},
                          "action": t["a"][i, None], "reward": t["r"][i], "done": t["d"][i].float(),
                          "mc_return": t["mc"][i]})
    assert np.isfinite(list(m.values())).all()
    q = agent.q_values({"state": s[:, None]})  # Q(s, pi(s)) on the data's states
    return {"demo_success": demo_success, "untrained": untrained, "success": _success_rate(agent, STARTS),
            "frac_q_below_mc": float(np.mean(q < mc)), "mean_q": float(q.mean()), "mean_mc": float(mc.mean())}


STARTS = np.concatenate([np.linspace(-1, -0.5, 10), np.linspace(0.5, 1, 10)])


def test_calql_pretraining_solves_the_line_task_and_stays_calibrated():
    calql = _pretrain(enable_calql=True)
    assert 0.2 < calql["demo_success"] < 0.9  # the demonstrator is genuinely noisy
    assert calql["untrained"] < 0.5  # an untrained policy does not solve it
    assert calql["success"] >= 0.9
    # Same data, same seed, bound off: CQL's strong push-down (alpha 5) leaves Q(s, pi(s))
    # below the data's Monte-Carlo return far more often; Cal-QL's bound keeps it up.
    cql = _pretrain(enable_calql=False)
    assert calql["frac_q_below_mc"] < cql["frac_q_below_mc"] - 0.05, (calql, cql)
    assert calql["mean_q"] > cql["mean_q"], (calql, cql)


def test_bf16_precision_learns_the_line_task_too():
    assert _pretrain(enable_calql=True, precision="bf16")["success"] >= 0.9
