"""A straightforward per-critic PyTorch Cal-QL, the baseline for bench_learner.py.

Written in the common single-file style (CORL's cal_ql.py layout, d3rlpy's per-Q-function
encoders for pixels): two separate critic modules and their target copies, a Python loop over
critics, one forward pass per critic per sampled action set (random, pi(s), pi(s')), the policy
sampled separately for s and s', observations repeated per sampled action, and in pixel mode
each critic (and the actor) owns an encoder that re-encodes the images for every sampled action.
The actor and the critics are updated with separate backward passes, as CORL does.

Same maths as robot_calql.agent.calql (Cal-QL bound on the policy samples, importance
weights, max-target backup), so the timing comparison is like for like. Not used by the library.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from robot_calql.agent.encoders import RoboFuMEEncoder


def _mlp(i: int, hidden: tuple[int, ...], o: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(i, h), nn.ReLU()]
        i = h
    return nn.Sequential(*layers, nn.Linear(i, o))


class _Obs(nn.Module):
    """State: identity. Pixels: its own CNN on the image, concatenated with proprio."""

    def __init__(self, obs_spec: dict, latent: int = 64):
        super().__init__()
        self.pixels = "image" in obs_spec
        if self.pixels:
            self.cnn = RoboFuMEEncoder(tuple(obs_spec["image"]), latent_dim=latent)
            self.dim = latent + obs_spec["proprio"][0]
        else:
            self.dim = obs_spec["state"][0]

    def forward(self, obs: dict) -> torch.Tensor:
        if not self.pixels:
            return obs["state"]
        x = obs["image"].permute(0, 3, 1, 2).float() / 255.0
        return torch.cat([self.cnn(x), obs["proprio"]], -1)


def _repeat(obs: dict, n: int) -> dict:
    return {k: v.repeat_interleave(n, 0) for k, v in obs.items()}


class Critic(nn.Module):
    def __init__(self, obs_spec: dict, action_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.obs = _Obs(obs_spec)
        self.net = _mlp(self.obs.dim + action_dim, hidden, 1)

    def forward(self, obs: dict, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([self.obs(obs), action], -1)).squeeze(-1)


class Actor(nn.Module):
    def __init__(self, obs_spec: dict, action_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.obs = _Obs(obs_spec)
        self.net = _mlp(self.obs.dim, hidden, 2 * action_dim)

    def forward(self, obs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(self.obs(obs)).chunk(2, -1)
        log_std = (log_std - 1.0).clamp(-20, 2)
        dist = torch.distributions.Normal(mean, log_std.exp())
        u = dist.rsample()
        a = torch.tanh(u)
        logp = dist.log_prob(u).sum(-1) - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return a, logp


class ReferenceCalQL:
    def __init__(self, obs_spec: dict, action_dim: int, critic_hidden=(256, 256, 256), actor_hidden=(256, 256, 256),
                 n_actions: int = 10, cql_alpha: float = 5.0, discount: float = 0.99, tau: float = 5e-3,
                 device: str = "cpu"):
        self.A, self.n, self.cql_alpha, self.discount, self.tau = action_dim, n_actions, cql_alpha, discount, tau
        self.actor = Actor(obs_spec, action_dim, actor_hidden).to(device)
        self.critic_1 = Critic(obs_spec, action_dim, critic_hidden).to(device)
        self.critic_2 = Critic(obs_spec, action_dim, critic_hidden).to(device)
        self.target_1, self.target_2 = copy.deepcopy(self.critic_1), copy.deepcopy(self.critic_2)
        self.log_alpha = torch.zeros((), requires_grad=True, device=device)
        self.opt_actor = torch.optim.Adam(self.actor.parameters(), 1e-4)
        self.opt_critic_1 = torch.optim.Adam(self.critic_1.parameters(), 3e-4)
        self.opt_critic_2 = torch.optim.Adam(self.critic_2.parameters(), 3e-4)
        self.opt_alpha = torch.optim.Adam([self.log_alpha], 1e-4)
        self.device = device

    def update(self, batch: dict) -> dict[str, float]:
        obs, nxt, a = batch["obs"], batch["next_obs"], batch["action"]
        r, done, mc = batch["reward"], batch["done"].float(), batch["mc_return"]
        B, n, A = a.shape[0], self.n, self.A

        # actor and temperature
        new_a, logp = self.actor(obs)
        alpha = self.log_alpha.exp()
        alpha_loss = -(self.log_alpha * (logp.detach() - A)).mean()
        q_new = torch.min(self.critic_1(obs, new_a), self.critic_2(obs, new_a))
        actor_loss = (alpha.detach() * logp - q_new).mean()
        self.opt_alpha.zero_grad()
        alpha_loss.backward()
        self.opt_alpha.step()
        self.opt_actor.zero_grad()
        actor_loss.backward()
        self.opt_actor.step()

        # TD target with max-target backup
        with torch.no_grad():
            nxt_rep = _repeat(nxt, n)
            na, _ = self.actor(nxt_rep)
            tq = torch.min(self.target_1(nxt_rep, na), self.target_2(nxt_rep, na)).view(B, n).max(1).values
            y = r + (1 - done) * self.discount * tq

        q1, q2 = self.critic_1(obs, a), self.critic_2(obs, a)
        obs_rep = _repeat(obs, n)
        with torch.no_grad():
            rand_a = torch.rand(B * n, A, device=self.device) * 2 - 1
            cur_a, cur_logp = self.actor(obs_rep)
            nxt_a, nxt_logp = self.actor(nxt_rep)
        losses = []
        for q, critic in ((q1, self.critic_1), (q2, self.critic_2)):
            q_rand = critic(obs_rep, rand_a).view(B, n)
            q_cur = critic(obs_rep, cur_a).view(B, n)
            q_nxt = critic(obs_rep, nxt_a).view(B, n)
            q_cur = torch.maximum(q_cur, mc[:, None])  # Cal-QL bound
            q_nxt = torch.maximum(q_nxt, mc[:, None])
            cat = torch.cat([q_rand - A * math.log(0.5), q_nxt - nxt_logp.view(B, n), q_cur - cur_logp.view(B, n)], 1)
            cql = (torch.logsumexp(cat, 1) - q).mean()
            losses.append(F.mse_loss(q, y) + self.cql_alpha * cql)
        loss = losses[0] + losses[1]
        self.opt_critic_1.zero_grad()
        self.opt_critic_2.zero_grad()
        loss.backward()
        self.opt_critic_1.step()
        self.opt_critic_2.step()
        with torch.no_grad():
            for src, dst in ((self.critic_1, self.target_1), (self.critic_2, self.target_2)):
                for p, tp in zip(src.parameters(), dst.parameters(), strict=True):
                    tp.mul_(1 - self.tau).add_(self.tau * p)
        return {"loss_critic": loss.item(), "loss_actor": actor_loss.item(), "alpha": alpha.item()}
