"""`agent.discrete_gripper`: the critics choose the gripper (open -1 or closed +1) at the actor's arm
action, in acting, in the TD target and in the actor's objective. The choice's maths on hand-made
Q-values, the agent and the acting policy acting alike, and a carry-and-release task small enough
to learn in seconds, where the gripper must stay closed on the way and open at the goal."""

import dataclasses

import numpy as np
import pytest
import torch
from toy_task import GOAL, carry_rollout

from robot_calql.agent import CalQL, CalQLConfig
from robot_calql.agent.calql import (
    best_gripper,
    both_grippers,
    gripper_candidates,
    policy_modules,
    td_backup,
)
from robot_calql.config import ConfigError
from robot_calql.data.returns import mc_return_to_go
from robot_calql.train.acting import ActingPolicy


def test_candidates_are_each_action_open_then_closed():
    a = torch.tensor([[[0.1, 0.2, 0.5], [0.3, 0.4, -0.2]]])  # (B=1, K=2, A=3)
    c = gripper_candidates(a)
    assert c.shape == (1, 4, 3)
    assert c[0, :, -1].tolist() == [-1.0, -1.0, 1.0, 1.0]
    assert torch.equal(c[0, :2, :2], a[0, :, :2]) and torch.equal(c[0, 2:, :2], a[0, :, :2])
    assert a[0, 0, -1] == 0.5  # the input is not changed


def test_cql_policy_samples_take_each_gripper_in_half_of_them():
    a = torch.rand(2, 10, 3) * 2 - 1
    b = both_grippers(a)
    assert b[:, :5, -1].eq(-1).all() and b[:, 5:, -1].eq(1).all()
    assert torch.equal(b[..., :2], a[..., :2])


def test_best_gripper_takes_the_higher_q_and_keeps_the_arm():
    a = torch.tensor([[0.3, -0.7, 0.2], [0.1, 0.1, -0.9], [0.0, 0.5, 0.0]])

    def q(c):  # closed better for row 0, open for row 1, a tie for row 2 (-> open)
        table = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
        assert c.shape == (3, 2, 3)
        return table
    out = best_gripper(a, q)
    assert out[:, -1].tolist() == [1.0, -1.0, -1.0]
    assert torch.equal(out[:, :2], a[:, :2])


def test_backup_over_candidates_is_the_better_gripper_of_the_min_over_critics():
    """With one next action (k = 1) and its two grippers, V(s') = max over the gripper of the
    minimum over the critics."""
    q = torch.tensor([[[1.0, 4.0]], [[2.0, 3.0]]])  # (E=2, B=1, 2 candidates: open, closed)
    y = td_backup(q, torch.zeros(1, 2), torch.tensor([0.5]), torch.tensor([1.0]), 0.9)
    assert y.item() == pytest.approx(0.5 + 0.9 * 3.0)


def test_the_setting_is_checked_and_the_policy_holds_the_critics():
    with pytest.raises(ConfigError, match="discrete_gripper"):
        CalQLConfig.from_dict({"discrete_gripper": True, "policy": "diffusion"})
    assert policy_modules(CalQLConfig(discrete_gripper=True)) == ("encoder", "actor", "critic")
    assert policy_modules(CalQLConfig()) == ("encoder", "actor")


def _small_agent(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = CalQLConfig(**{"actor_hidden": (32, 32), "critic_hidden": (32, 32), "discrete_gripper": True, **kw})
    return CalQL({"state": (4,)}, 3, cfg)


def test_agent_and_acting_policy_pick_the_same_gripper():
    """Deterministic and sampled actions: the gripper is exactly -1 or +1, the one the agent's
    critics rank higher (q_values of both), and the acting policy (built from the agent, holding
    the critics) gives the same actions with the same random numbers."""
    agent = _small_agent()
    policy = ActingPolicy.from_agent(agent, ["task"])
    assert policy.modules == ("encoder", "actor", "critic")
    rng = np.random.default_rng(0)
    grippers = set()
    for i in range(20):
        obs = {"state": rng.normal(size=4).astype(np.float32)}
        for temp in (0.0, 1.0):
            torch.manual_seed(i)
            a = agent.act(obs, deterministic=temp == 0, temperature=temp)
            torch.manual_seed(i)
            np.testing.assert_array_equal(policy.act(obs, explore_temperature=temp), a)
            grippers.add(float(a[-1]))
            q_open, q_closed = (agent.q_values(obs, np.array([*a[:2], g], np.float32)) for g in (-1.0, 1.0))
            assert a[-1] == (1.0 if q_closed > q_open else -1.0)
    assert grippers <= {-1.0, 1.0}


def test_weights_of_another_gripper_or_critic_are_refused():
    """A policy that picks its gripper with the critics takes no weights message from an agent
    without them, nor from one whose critics differ; naming the setting."""
    from robot_calql.train.acting import weights_payload

    policy = ActingPolicy.from_agent(_small_agent(), ["task"])
    meta = {"obs_spec": {"state": [4]}, "action_dim": 3, "instructions": ["task"]}
    plain = CalQL({"state": (4,)}, 3, CalQLConfig(actor_hidden=(32, 32), critic_hidden=(32, 32)))
    wider = _small_agent(critic_hidden=(48, 48))
    for other, key in ((plain, "discrete_gripper"), (wider, "critic_hidden")):
        payload = weights_payload(other, {**meta, "agent": dataclasses.asdict(other.cfg)}, step=3)
        with pytest.raises(ValueError, match=key):
            policy.load_weights(payload)
    same = _small_agent(seed=5)
    policy.load_weights(weights_payload(same, {**meta, "agent": dataclasses.asdict(same.cfg)}, step=4))
    obs = {"state": np.ones(4, np.float32)}
    np.testing.assert_array_equal(policy.act(obs), same.act(obs))


# ----------------------------------------------------------------------------- learning
def _carry_data(rng, discount):
    def noisy(x, r):  # heads for the goal with noise; lets go near it, and drops it now and then
        move = 2.0 * (GOAL - x) + r.normal(0, 2.0)
        grip = -1.0 if abs(x + 0.2 * np.clip(move, -1, 1) - GOAL) < 0.15 else 1.0
        return [move, -grip if r.random() < 0.05 else grip]

    def random(x, r):
        return [r.uniform(-1, 1), r.choice([-1.0, 1.0]) if r.random() < 0.2 else 1.0]

    rows = []
    for i in range(100):
        x0 = float(rng.choice([-1, 1]) * rng.uniform(0.5, 1.0))
        xs, acts, rews, terms = carry_rollout(noisy if i < 70 else random, x0, rng)
        mc = mc_return_to_go(rews, terms, discount, failure_reward=0.0)
        rows.append((xs[:-1], acts, rews, terms, xs[1:], mc))
    success = np.mean([r[2].sum() > 0 for r in rows[:70]])
    return [np.concatenate(c) for c in zip(*rows, strict=True)], success


def _pretrain_carry(discrete_gripper: bool, seed: int = 0) -> tuple[float, float, float]:
    """(the demonstrator's success, the untrained and the pre-trained policy's success from 20 starts)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = CalQLConfig(actor_hidden=(64, 64), critic_hidden=(64, 64), cql_alpha=1.0, discount=0.9, policy_lr=3e-4,
                      critic_lr=3e-3, max_target_backup=False, discrete_gripper=discrete_gripper)
    (s, a, r, d, s2, mc), demo_success = _carry_data(rng, cfg.discount)
    agent = CalQL({"state": (1,)}, 2, cfg)
    t = {k: torch.as_tensor(v) for k, v in dict(s=s, a=a, r=r, d=d, s2=s2, mc=mc).items()}

    def success_rate():
        starts = np.concatenate([np.linspace(-1, -0.5, 10), np.linspace(0.5, 1, 10)])
        act = lambda x, _: agent.act({"state": np.array([x], np.float32)})  # noqa: E731
        return float(np.mean([carry_rollout(act, x0)[2].sum() > 0 for x0 in starts]))

    untrained = success_rate()
    for _ in range(2000):
        i = torch.randint(0, len(s), (128,))
        agent.update({"obs": {"state": t["s"][i, None]}, "next_obs": {"state": t["s2"][i, None]},
                      "action": t["a"][i], "reward": t["r"][i], "done": t["d"][i].float(), "mc_return": t["mc"][i]})
    return float(demo_success), untrained, success_rate()


def test_the_critics_gripper_learns_to_carry_and_release_where_the_actors_hovers():
    """Pre-trained on noisy offline data (the demonstrator drops the object now and then and lets
    go a little early or late), the discrete-gripper agent holds on while it travels and lets go at
    the goal from every start. The same agent with the actor's tanh-Gaussian gripper, on the same
    data and seed, carries the object to the goal and never lets go there: the stand-in's hover
    (docs/training.md, "What limits fine-tuning here")."""
    demo, untrained, discrete = _pretrain_carry(True)
    assert 0.2 < demo < 0.95  # the demonstrator is genuinely noisy
    assert untrained < 0.5
    assert discrete >= 0.9
    assert _pretrain_carry(False)[2] < 0.5
