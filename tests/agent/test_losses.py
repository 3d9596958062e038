"""Cal-QL / CQL loss pieces pinned on small hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from robot_calql.agent import CalQL, CalQLConfig
from robot_calql.agent.calql import calql_bound, cql_logsumexp, entropy_temperature_loss, td_backup


def test_calql_bound_raises_only_values_below_mc_return():
    q_cur = torch.tensor([[[1.0, 5.0]]])  # (E=1, B=1, n=2)
    q_nxt = torch.tensor([[[3.0, -2.0]]])
    cur, nxt, rate = calql_bound(q_cur, q_nxt, torch.tensor([2.0]))
    assert cur.tolist() == [[[2.0, 5.0]]]
    assert nxt.tolist() == [[[3.0, 2.0]]]
    assert rate.item() == 0.5  # 2 of the 4 policy-action values were raised


def test_importance_weights_hand_computed():
    # A = 2: uniform density on [-1, 1]^2 is 0.25, so uniform samples get q - log(0.25) = q + log 4
    q_rand = torch.tensor([[[0.0]]])
    q_cur = torch.tensor([[[1.0]]])
    q_nxt = torch.tensor([[[2.0]]])
    q_data = torch.tensor([[0.5]])
    logp_cur, logp_nxt = torch.tensor([[-1.0]]), torch.tensor([[0.5]])
    got = cql_logsumexp(q_rand, q_cur, q_nxt, q_data, logp_cur, logp_nxt, action_dim=2)
    want = math.log(math.exp(math.log(4.0)) + math.exp(1.0 + 1.0) + math.exp(2.0 - 0.5))
    assert abs(got.item() - want) < 1e-5
    # temperature 2: 2 * logsumexp(x / 2)
    got_t = cql_logsumexp(q_rand, q_cur, q_nxt, q_data, logp_cur, logp_nxt, action_dim=2, temp=2.0)
    want_t = 2 * math.log(sum(math.exp(x / 2) for x in (math.log(4.0), 2.0, 1.5)))
    assert abs(got_t.item() - want_t) < 1e-5
    # without importance sampling the data action joins and nothing is subtracted
    got_n = cql_logsumexp(q_rand, q_cur, q_nxt, q_data, logp_cur, logp_nxt, action_dim=2, importance_sample=False)
    assert abs(got_n.item() - math.log(sum(math.exp(x) for x in (0.0, 0.5, 2.0, 1.0)))) < 1e-5


def test_td_backup_max_target_min_over_critics_and_done_masking():
    # E=2 critics, B=2 states, k=3 next actions
    q = torch.tensor([[[1.0, 4.0, 2.0], [0.0, 0.0, 0.0]],
                      [[3.0, 3.0, 5.0], [1.0, -1.0, 2.0]]])
    logp = torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.0, 0.0]])
    r = torch.tensor([1.0, 2.0])
    not_done = torch.tensor([1.0, 0.0])
    # min over critics: state 0 -> [1, 3, 2], max = 3 (action 1); state 1 is terminal
    t = td_backup(q, logp, r, not_done, discount=0.5)
    assert t.tolist() == [1.0 + 0.5 * 3.0, 2.0]
    # entropy backup subtracts alpha * log pi of the chosen (argmax) action
    t = td_backup(q, logp, r, not_done, discount=0.5, alpha=2.0, backup_entropy=True)
    assert abs(t[0].item() - (1.0 + 0.5 * (3.0 - 2.0 * 0.2))) < 1e-6


def test_n_step_rows_bootstrap_with_their_own_discount():
    agent = _small_agent()
    b = _batch()
    b["discount"] = torch.zeros(32)  # gamma^m = 0: the target is the window's reward sum alone
    _, m = agent._losses(b)
    assert m["td_target"].item() == pytest.approx(b["reward"].mean().item(), abs=1e-6)
    torch.manual_seed(1)
    b["discount"] = torch.full((32,), agent.cfg.discount)  # gamma^1 on every row: the one-step target
    _, m1 = agent._losses(b)
    del b["discount"]
    torch.manual_seed(1)
    _, m2 = agent._losses(b)
    assert m1["td_target"].item() == pytest.approx(m2["td_target"].item(), rel=1e-6)


def test_entropy_temperature_loss_sign_and_value():
    log_alpha = torch.tensor(0.3, requires_grad=True)
    log_pi = torch.tensor([1.0, 3.0])  # entropy -2 on average, below a target of -1
    loss = entropy_temperature_loss(log_alpha, log_pi, target_entropy=-1.0)
    assert abs(loss.item() - (-0.3 * (2.0 - 1.0))) < 1e-6
    loss.backward()
    assert log_alpha.grad.item() < 0  # gradient descent raises alpha when entropy is too low


def _batch(B=32, S=6, A=3, mc=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": {"state": torch.randn(B, S, generator=g)},
        "next_obs": {"state": torch.randn(B, S, generator=g)},
        "action": torch.rand(B, A, generator=g) * 2 - 1,
        "reward": torch.randn(B, generator=g),
        "done": (torch.rand(B, generator=g) < 0.2).float(),
        "mc_return": torch.full((B,), float(mc)),
    }


def _small_agent(**kw):
    torch.manual_seed(0)
    cfg = CalQLConfig(actor_hidden=(32, 32), critic_hidden=(32, 32), **kw)
    return CalQL({"state": (6,)}, 3, cfg)


def test_huge_mc_return_changes_only_policy_action_terms():
    agent = _small_agent()
    out = {}
    for mc in (-1e9, 1e3):
        torch.manual_seed(1)  # same samples in both runs
        _, m = agent._losses(_batch(mc=mc))
        out[mc] = {k: v.item() for k, v in m.items()}
    lo, hi = out[-1e9], out[1e3]
    assert lo["calql_bound_rate"] == 0.0 and hi["calql_bound_rate"] == 1.0
    for k in ("q_rand", "q_data", "q_cql_current", "q_cql_next", "td_target", "loss_td", "loss_actor", "q_pi"):
        assert lo[k] == hi[k], k  # uniform samples, TD target and actor loss are untouched
    # the push-up term is now dominated by the bounded policy samples: ~ 1e3 + log(2n) - E[log pi]
    assert hi["cql_ood"] > 900 and lo["cql_ood"] < 50


def test_cql_switch_ignores_mc_return():
    agent = _small_agent(enable_calql=False)
    vals = []
    for mc in (-1e9, 1e3):
        torch.manual_seed(1)
        _, m = agent._losses(_batch(mc=mc))
        vals.append(m["cql_ood"].item())
    assert vals[0] == vals[1]


def test_each_loss_reaches_only_its_own_parameters():
    """One backward of the summed losses gives every group the gradient of its own loss only."""
    agent = _small_agent(bc_weight=0.5, cql_lagrange=True)
    batch = _batch()

    def grads(which):
        for p in [*agent.actor.parameters(), *agent.critic.parameters(), agent.log_alpha, agent.log_alpha_prime]:
            p.grad = None
        torch.manual_seed(3)
        total, m = agent._losses(batch)
        loss = total if which == "total" else m[which]
        loss.backward()
        return {
            "critic": [p.grad.clone() if p.grad is not None else None for p in agent.critic.parameters()],
            "actor": [p.grad.clone() if p.grad is not None else None for p in agent.actor.parameters()],
            "alpha": agent.log_alpha.grad, "alpha_prime": agent.log_alpha_prime.grad,
        }

    g_total = grads("total")
    g_critic = grads("loss_critic")
    g_actor = grads("loss_actor")
    for a, b in zip(g_total["critic"], g_critic["critic"], strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(g_total["actor"], g_actor["actor"], strict=True):
        torch.testing.assert_close(a, b)
    assert all(g is None for g in g_critic["actor"]) and all(g is None for g in g_actor["critic"])
    assert g_total["alpha"] is not None and g_total["alpha_prime"] is not None


def test_update_moves_targets_by_tau_and_returns_named_floats():
    agent = _small_agent()
    before = agent.critic_target.out.weight.detach().clone()
    online_before = agent.critic.out.weight.detach().clone()
    m = agent.update(_batch())
    assert isinstance(m["loss_critic"], float) and np.isfinite(list(m.values())).all()
    assert {"loss_td", "loss_cql", "loss_actor", "loss_alpha", "alpha", "calql_bound_rate"} <= set(m)
    new_online = agent.critic.out.weight.detach()
    expected = before + agent.cfg.tau * (new_online - before)
    torch.testing.assert_close(agent.critic_target.out.weight, expected)
    assert not torch.equal(new_online, online_before)


def test_lagrange_multiplier_grows_while_the_cql_gap_exceeds_its_target():
    agent = _small_agent(cql_lagrange=True, cql_target_action_gap=0.5)
    m = agent.update(_batch())
    assert m["cql_diff"] > 0.5
    assert agent.log_alpha_prime.item() > 1.0  # initial value 1.0, pushed up by the gap


def test_larger_ensemble_updates():
    agent = _small_agent(num_critics=4)
    m = agent.update(_batch())
    assert agent.critic.w_obs.shape[0] == 4 and np.isfinite(list(m.values())).all()


def test_bc_success_only_clones_successful_episodes_only():
    batch = _batch(B=32)
    success = torch.arange(32) % 3 == 0
    batch["success"] = success
    good_rows = {k: ({kk: vv[success] for kk, vv in v.items()} if isinstance(v, dict) else v[success])
                 for k, v in batch.items() if k != "success"}
    only = _small_agent(bc_weight=1.0, bc_success_only=True)._losses(batch)[1]["loss_bc"]
    want = _small_agent(bc_weight=1.0)._losses(good_rows)[1]["loss_bc"]
    torch.testing.assert_close(only, want)
    del batch["success"]
    with pytest.raises(ValueError, match="'success' flags"):
        _small_agent(bc_weight=1.0, bc_success_only=True)._losses(batch)
