"""PA-RL's maths on tiny cases (robot_calql/agent/pa_rl.py, diffusion.py) and the agent option
`policy=diffusion` end to end: BC pre-training, distillation, checkpoints, acting."""

import numpy as np
import pytest
import torch
from toy_task import GOAL, rollout

from robot_calql.agent import CalQL, CalQLConfig
from robot_calql.agent.diffusion import DiffusionPolicy
from robot_calql.agent.pa_rl import PARLConfig, optimize_actions, rerank, select_best
from robot_calql.config import ConfigError
from robot_calql.data.returns import mc_return_to_go


def test_rerank_keeps_the_best_samples_best_first():
    actions = torch.tensor([[[0.1], [0.9], [-0.5], [0.3]], [[0.0], [0.2], [0.4], [-0.9]]])
    q = torch.tensor([[1.0, 5.0, -2.0, 3.0], [0.5, -1.0, 0.2, 7.0]])
    top, q_top = rerank(q, actions, 2)
    assert top.shape == (2, 2, 1)
    # element 0 is the argmax-Q sample, then the runner-up
    assert top[:, 0, 0].tolist() == pytest.approx([0.9, -0.9])
    assert top[:, 1, 0].tolist() == pytest.approx([0.3, 0.0])
    assert q_top.tolist() == [[5.0, 3.0], [7.0, 0.5]]
    assert select_best(actions, q)[:, 0].tolist() == pytest.approx([0.9, -0.9])


def test_gradient_steps_increase_q_and_stay_in_bounds():
    # Q peaks at a* = (2.0, -0.3): outside the bounds on the first axis, inside on the second
    peak = torch.tensor([2.0, -0.3])

    def q_fn(a):
        return -((a - peak) ** 2).sum(-1)

    start = torch.tensor([[[0.0, 0.5], [-0.8, -0.9], [0.95, -0.3]]])  # (B=1, N=3, A=2)
    best, best_q = optimize_actions(q_fn, start, steps=40, step_size=0.1)
    assert best.shape == start.shape
    assert (best_q > q_fn(start)).all()  # every kept action improved
    assert best.abs().max() <= 1.0  # clipped to the action bounds
    # the constrained optimum is (1, -0.3); the paths got close to it
    assert torch.allclose(best, torch.tensor([1.0, -0.3]).expand_as(best), atol=0.1)
    # zero steps change nothing
    same, q0 = optimize_actions(q_fn, start, steps=0, step_size=0.1)
    assert torch.equal(same, start) and torch.equal(q0, q_fn(start))


def _fit(policy, f, target, steps, lr=3e-3):
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    for _ in range(steps):
        loss = policy.loss(f, target)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_diffusion_policy_learns_a_1d_behaviour_cloning_target():
    torch.manual_seed(0)
    policy = DiffusionPolicy(1, 1, (64, 64), steps=5)
    x = torch.linspace(-1, 1, 21)[:, None]
    with torch.no_grad():
        before = (policy.sample(x, 0.0) + 0.8 * x).abs().mean()
    for _ in range(1500):
        xb = torch.rand(128, 1) * 2 - 1
        _fit(policy, xb, -0.8 * xb, 1)
    with torch.no_grad():
        det = policy.sample(x, 0.0)
        sto = policy.sample(x.repeat(10, 1), 1.0).view(10, 21, 1)
    assert before > 0.2  # it did not know the target before
    assert (det + 0.8 * x).abs().max() < 0.05
    assert (sto + 0.8 * x).abs().mean() < 0.05
    assert det.abs().max() <= 1.0


def test_distillation_moves_the_base_policys_samples_toward_the_improved_actions():
    torch.manual_seed(1)
    policy = DiffusionPolicy(2, 2, (64, 64), steps=5)
    f = torch.randn(32, 2)
    base = torch.full((32, 2), -0.5)
    _fit(policy, f, base, 300)  # the base policy: about (-0.5, -0.5) everywhere
    improved = torch.tensor([0.4, 0.1]).expand(32, 2)  # what rerank + gradient steps found

    def dist():
        with torch.no_grad():
            return (policy.sample(f.repeat(4, 1), 1.0) - improved.repeat(4, 1)).norm(dim=1).mean().item()

    d0 = dist()
    _fit(policy, f, improved, 30, lr=1e-3)  # a few distillation steps
    d1 = dist()
    assert d1 < 0.7 * d0, (d0, d1)


def _toy_batch(rng, n, discount, online):
    """Transitions of the 1-D reaching task from a noisy demonstrator, as an agent batch."""
    rows = []
    while sum(len(r[1]) for r in rows) < n:
        x0 = float(rng.choice([-1, 1]) * rng.uniform(0.5, 1.0))
        xs, acts, rews, terms = rollout(lambda x, r: 2.0 * (GOAL - x) + r.normal(0, 1.0), x0, rng)
        rows.append((xs[:-1], acts, rews, terms, xs[1:], mc_return_to_go(rews, terms, discount, failure_reward=0.0)))
    s, a, r, d, s2, mc = (torch.as_tensor(np.concatenate(c)[:n]) for c in zip(*rows, strict=True))
    return {"obs": {"state": s[:, None]}, "next_obs": {"state": s2[:, None]}, "action": a[:, None], "reward": r,
            "done": d.float(), "mc_return": mc, "online": torch.full((n,), online)}


def test_diffusion_agent_bc_then_distill_checkpoint_and_act():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = CalQLConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), discount=0.9, cql_n_actions=4,
                      policy="diffusion", pa_rl={"hidden": [32, 32], "num_samples": 8, "top_k": 2, "grad_steps": 2,
                                                 "distill_rows": 16, "lr": 3e-3,
                                                 "act_samples": 1})
    agent = CalQL({"state": (1,)}, 1, cfg)
    offline = _toy_batch(rng, 64, cfg.discount, False)
    m = {}
    for _ in range(300):  # BC pre-training of the diffusion policy (offline-only batches)
        m = agent.update(offline)
    assert "loss_diffusion" in m and "pa_rl_q_improved" not in m
    # the demonstrator moves toward the goal: so does the cloned policy, from either side
    a_left = agent.act({"state": np.array([-0.8], np.float32)})
    a_right = agent.act({"state": np.array([0.8], np.float32)})
    assert a_left.shape == (1,) and a_left[0] > 0.3 and a_right[0] < -0.3
    m = agent.update(_toy_batch(rng, 64, cfg.discount, True))  # an online batch: distillation
    assert m["pa_rl_q_improved"] >= m["pa_rl_q_samples"]
    assert np.isfinite(list(m.values())).all()
    # checkpoints carry the diffusion policy and its optimiser; the policy weights carry it too
    sd, osd = agent.state_dict(), agent.optimizer_state_dict()
    assert any(k.startswith("diffusion.") for k in agent.policy_state_dict()) and "diffusion" in osd
    other = CalQL({"state": (1,)}, 1, cfg)
    other.load_state_dict(sd)
    other.load_optimizer_state_dict(osd)
    obs = {"state": np.linspace(-1, 1, 7, dtype=np.float32)[:, None]}
    assert np.allclose(other.act(obs), agent.act(obs), atol=1e-6)
    actor_only = CalQL({"state": (1,)}, 1, cfg)
    actor_only.load_policy_state_dict(agent.policy_state_dict())
    assert np.allclose(actor_only.act(obs), agent.act(obs), atol=1e-6)
    explore = agent.act(obs, deterministic=False)
    assert explore.shape == (7, 1) and np.abs(explore).max() <= 1.0


def test_bad_pa_rl_settings_are_named():
    with pytest.raises(ConfigError, match="policy must be gaussian or diffusion"):
        CalQLConfig.from_dict({"policy": "transformer"})
    with pytest.raises(ConfigError, match=r"unknown keys \['topk'\]"):
        CalQLConfig.from_dict({"policy": "diffusion", "pa_rl": {"topk": 3}})
    with pytest.raises(ValueError, match="top_k <= num_samples"):
        PARLConfig.from_dict({"num_samples": 4, "top_k": 8})


def test_fast_sampler_equals_the_plain_reverse_process():
    """sample() splits the denoiser's first layer (features and time once per call); it must give
    exactly the K reverse steps written with eps()."""
    torch.manual_seed(2)
    policy = DiffusionPolicy(6, 3, (32, 32), steps=5)
    f = torch.randn(9, 6)
    a = torch.zeros(9, 3)
    with torch.no_grad():
        for t in range(4, -1, -1):
            e = policy.eps(a, torch.full((9,), t), f)
            a0 = ((a - (1 - policy.abar[t]).sqrt() * e) / policy.abar[t].sqrt()).clamp(-1, 1)
            a = policy.c0[t] * a0 + policy.ct[t] * a
        assert torch.allclose(policy.sample(f, 0.0), a.clamp(-1, 1), atol=1e-5)


def test_acting_with_the_best_of_several_samples_picks_the_highest_q():
    torch.manual_seed(3)
    cfg = CalQLConfig(actor_hidden=(16, 16), critic_hidden=(16, 16), policy="diffusion",
                      pa_rl={"hidden": [16, 16], "act_samples": 8})
    agent = CalQL({"state": (2,)}, 2, cfg)
    obs = {"state": np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)}
    a = agent.act(obs)
    with torch.no_grad():
        f = agent.encoder(agent._obs_to_tensors(obs)[0])
        det = agent.pa_rl.policy.sample(f, 0.0)
    q_chosen = agent.q_values(obs, a)
    assert (q_chosen >= agent.q_values(obs, det.numpy()) - 1e-5).all()  # never worse than the base action
    # the policy weights carry the critics it ranks with
    sd = agent.policy_state_dict()
    assert any(k.startswith("critic.") for k in sd)
    other = CalQL({"state": (2,)}, 2, cfg)
    other.load_policy_state_dict(sd)
    assert np.allclose(other.q_values(obs, a), q_chosen)


def test_bc_anchor_keeps_the_distilled_policy_near_the_data():
    """Online updates distill the critic's preferred action (+0.9); the BC anchor on the offline
    rows (data action -0.5) holds the policy between the two, without it the policy follows Q."""
    from robot_calql.agent.pa_rl import PARL

    def q_fn(f, a):
        return -((a - 0.9) ** 2).sum(-1)

    means = {}
    for anchor in (0.0, 1.0):
        torch.manual_seed(4)
        parl = PARL(2, 1, {"hidden": [32, 32], "lr": 3e-3, "num_samples": 8, "top_k": 2, "grad_steps": 2,
                           "step_size": 0.2, "bc_anchor": anchor}, torch.device("cpu"))
        f, data = torch.randn(64, 2), torch.full((64, 1), -0.5)
        for _ in range(200):  # BC pre-training
            parl.update(f, data, False, q_fn)
        for _ in range(60):  # online: distillation (+ the anchor)
            m = parl.update(f, data, True, q_fn, torch.ones(64))
        assert m["pa_rl_q_improved"] >= m["pa_rl_q_samples"]
        with torch.no_grad():
            means[anchor] = float(parl.act(f, 0.0).mean())
    assert means[0.0] > 0.3, means  # distillation alone moved toward the critic's optimum
    assert -0.5 < means[1.0] < means[0.0] - 0.2, means  # the anchor kept it nearer the data
