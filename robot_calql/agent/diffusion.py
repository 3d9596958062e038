"""A small diffusion policy (DDPM, Ho et al. 2020) over actions in [-1, 1], in plain torch.

An MLP denoiser eps(a_t, t, f) predicts the noise that was added to a clean action a_0 at step
t, conditioned on observation features f (the agent encoder's output: standardised state, or
the CNN latent + proprio in pixel mode). With `steps` = K denoising steps and a cosine noise
schedule (Nichol & Dhariwal 2021):

- training (`loss`): t ~ U{0..K-1}, a_t = sqrt(abar_t) a_0 + sqrt(1 - abar_t) eps, loss
  ||eps - eps(a_t, t, f)||^2 averaged over the rows (with optional per-row weights);
- sampling (`sample`): a_K ~ N(0, T^2 I) (T the temperature), then K reverse steps; each step
  predicts a_0 from the noise estimate, clips it to [-1, 1] and takes the DDPM posterior mean,
  plus posterior noise scaled by T. T = 0 starts from zeros and adds no noise (a deterministic
  action for evaluation).

K is small (5 by default) so one action costs K small MLP forwards (well under a millisecond on
one CPU thread for a 256-wide MLP).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def cosine_alphas_cumprod(steps: int, s: float = 0.008) -> torch.Tensor:
    """abar_t for t = 1..K of the cosine schedule, (K,), decreasing from near 1 to near 0."""
    x = torch.linspace(0, steps, steps + 1, dtype=torch.float64)
    f = torch.cos(((x / steps) + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    betas = (1 - abar[1:] / abar[:-1]).clamp(1e-4, 0.999)
    return torch.cumprod(1 - betas, 0).float()


class DiffusionPolicy(nn.Module):
    """eps-prediction MLP denoiser and its K-step sampler. `feature_dim`: size of f."""

    def __init__(self, feature_dim: int, action_dim: int, hidden: tuple[int, ...] = (256, 256), steps: int = 5,
                 time_dim: int = 16):
        super().__init__()
        if steps < 1:
            raise ValueError(f"diffusion steps must be >= 1, got {steps}")
        self.action_dim, self.steps, self.time_dim = int(action_dim), int(steps), int(time_dim)
        layers: list[nn.Module] = []
        d = feature_dim + action_dim + time_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.Mish()]
            d = h
        layers.append(nn.Linear(d, action_dim))
        self.net = nn.Sequential(*layers)
        abar = cosine_alphas_cumprod(self.steps)
        abar_prev = torch.cat([torch.ones(1), abar[:-1]])
        betas = 1 - abar / abar_prev
        self.register_buffer("abar", abar)
        self.register_buffer("abar_prev", abar_prev)
        self.register_buffer("betas", betas)
        # posterior q(a_{t-1} | a_t, a_0): mean c0 * a_0 + ct * a_t, variance var
        self.register_buffer("c0", betas * abar_prev.sqrt() / (1 - abar))
        self.register_buffer("ct", (1 - abar_prev) * (1 - betas).sqrt() / (1 - abar))
        self.register_buffer("var", betas * (1 - abar_prev) / (1 - abar))
        freqs = torch.exp(-math.log(100.0) * torch.arange(time_dim // 2, dtype=torch.float32) / max(1, time_dim // 2))
        self.register_buffer("freqs", freqs)

    def _time(self, t: torch.Tensor) -> torch.Tensor:
        x = t.float()[:, None] * self.freqs[None]
        return torch.cat([x.sin(), x.cos()], dim=1)

    def eps(self, a_t: torch.Tensor, t: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """Predicted noise (N, A) for noisy actions a_t (N, A) at steps t (N,) given features f (N, D)."""
        return self.net(torch.cat([f, a_t, self._time(t)], dim=1))

    def loss(self, f: torch.Tensor, a0: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The denoising (behaviour-cloning) loss of clean actions a0 (N, A) at features f (N, D)."""
        n = a0.shape[0]
        t = torch.randint(0, self.steps, (n,), device=a0.device)
        noise = torch.randn_like(a0)
        ab = self.abar[t][:, None]
        a_t = ab.sqrt() * a0 + (1 - ab).sqrt() * noise
        per_row = (self.eps(a_t, t, f) - noise).pow(2).mean(1)
        if weight is None:
            return per_row.mean()
        return (per_row * weight).sum() / weight.sum().clamp(min=1e-8)

    def sample(self, f: torch.Tensor, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Actions (N, A) in [-1, 1] for features f (N, D) by K reverse steps (temperature 0:
        deterministic, from zeros without noise). Noise from `generator` (None: torch's global
        one; a_K is drawn even at temperature 0). Differentiable in f; call under no_grad to act."""
        n, D, A = f.shape[0], f.shape[1], self.action_dim
        # The first layer of eps(a_t, t, f) = W [f, a_t, emb(t)] + b, split by input: the feature
        # and time parts are computed once per call, only the action part at every step.
        first, rest = self.net[0], self.net[1:]
        w = first.weight
        h_f = torch.addmm(first.bias, f, w[:, :D].t())
        h_t = self._time(torch.arange(self.steps, device=f.device)) @ w[:, D + A:].t()  # (K, H)
        w_a = w[:, D : D + A].t()
        a = torch.randn(n, A, generator=generator, device=f.device, dtype=f.dtype) * temperature
        for t in range(self.steps - 1, -1, -1):
            e = rest(h_f + h_t[t] + a @ w_a)
            a0 = ((a - (1 - self.abar[t]).sqrt() * e) / self.abar[t].sqrt()).clamp(-1.0, 1.0)
            a = self.c0[t] * a0 + self.ct[t] * a
            if t > 0 and temperature > 0:
                noise = torch.randn(a.shape, generator=generator, device=a.device, dtype=a.dtype)
                a = a + temperature * self.var[t].sqrt() * noise
        return a.clamp(-1.0, 1.0)


__all__ = ["DiffusionPolicy", "cosine_alphas_cumprod"]
