"""Random network distillation (Burda et al. 2018): an exploration bonus for novel observations.

A fixed, randomly initialised target network and a trained predictor map the same observation
vector to `out_dim` numbers; the predictor learns to match the target on the observations it is
trained on, so its squared error stays high on observations it has not seen. The bonus is that
error divided by a running standard deviation of the errors, times `scale`.

OOO (Sobol Mark et al. 2023) explores with Cal-QL plus this bonus and deploys a separate
pessimistic agent trained without it (`robot-calql exploit`). `RNDBonus.apply(batch)` adds the
bonus to the ONLINE rows of a replay batch only (the offline rows and the stored rewards, MC
returns and success flags are untouched) and trains the predictor on those rows' next
observations, so the bonus of a state decays as the robot revisits it.

The observation vector is the batch's `state` (state mode) or `proprio` plus the image average-
pooled to `image_pool` x `image_pool` x 3 in [0, 1] (pixel mode; cached latents: the latent),
standardised by running mean and std (Welford, updated on every trained batch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robot_calql.data import IMAGE_LATENT


@dataclass
class RNDConfig:
    """Settings of the bonus (finetune.yaml `rnd.*`)."""

    scale: float = 0.0  # bonus = scale * error / running std of the error (0: off)
    hidden: int = 128  # width of the two hidden layers of the target and the predictor
    out_dim: int = 32  # size of the embedding the predictor regresses
    lr: float = 1e-4  # predictor Adam learning rate
    image_pool: int = 8  # pixel mode: the image is average-pooled to this many pixels a side

    def validate(self) -> None:
        if not self.scale >= 0:
            raise ValueError(f"rnd.scale must be >= 0 (0: off), got {self.scale}")
        if self.hidden < 1 or self.out_dim < 1 or self.image_pool < 1 or not self.lr > 0:
            raise ValueError(f"rnd.hidden, rnd.out_dim and rnd.image_pool must be >= 1 and rnd.lr > 0, got "
                             f"{self.hidden}, {self.out_dim}, {self.image_pool}, {self.lr}")


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, d_out))


def observation_vector(obs: Mapping[str, Any], image_pool: int = 8) -> torch.Tensor:
    """(B, d) float vector of a batch's observations: `state`, or `proprio` + pooled image (or
    the cached image latent). Raises ValueError if the batch has neither state nor proprio."""
    if "state" in obs:
        return torch.as_tensor(obs["state"]).float()
    if "proprio" not in obs:
        raise ValueError(f"RND needs 'state' or 'proprio' observations, the batch has {sorted(obs)}")
    parts = [torch.as_tensor(obs["proprio"]).float()]
    if IMAGE_LATENT in obs:
        parts.append(torch.as_tensor(obs[IMAGE_LATENT]).float())
    elif "image" in obs:
        img = torch.as_tensor(obs["image"]).float().permute(0, 3, 1, 2) / 255.0  # (B, 3, H, W)
        parts.append(nn.functional.adaptive_avg_pool2d(img, image_pool).flatten(1))
    return torch.cat(parts, dim=1)


class RNDBonus:
    """Target + predictor networks, running statistics and the predictor's optimiser."""

    def __init__(self, obs_dim: int, config: RNDConfig, device: str | torch.device = "cpu", seed: int = 0):
        config.validate()
        self.cfg = config
        self.device = torch.device(device)
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            self.target = _mlp(obs_dim, config.hidden, config.out_dim).to(self.device).requires_grad_(False)
            self.predictor = _mlp(obs_dim, config.hidden, config.out_dim).to(self.device)
        self.opt = torch.optim.Adam(self.predictor.parameters(), lr=config.lr)
        self.obs_dim = int(obs_dim)
        # running statistics: observation mean / M2 (Welford) and the error's second moment
        self.count = torch.zeros((), dtype=torch.float64, device=self.device)
        self.mean = torch.zeros(obs_dim, dtype=torch.float64, device=self.device)
        self.m2 = torch.ones(obs_dim, dtype=torch.float64, device=self.device)
        self.err_sq = torch.ones((), dtype=torch.float64, device=self.device)  # EMA of the squared error

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        std = (self.m2 / self.count.clamp(min=1.0)).sqrt().clamp(min=1e-3)
        return ((x.double() - self.mean) / std).clamp(-5.0, 5.0).float()

    def _update_stats(self, x: torch.Tensor) -> None:
        x = x.double()
        n_b = x.shape[0]
        mean_b, m2_b = x.mean(0), ((x - x.mean(0)) ** 2).sum(0)
        n = self.count + n_b
        delta = mean_b - self.mean
        self.m2 = self.m2 + m2_b + delta**2 * self.count * n_b / n
        self.mean = self.mean + delta * n_b / n
        self.count = n

    def error(self, x: torch.Tensor) -> torch.Tensor:
        """Squared prediction error per row (B,) of raw observation vectors `x`, no gradient."""
        with torch.no_grad():
            z = self._normalise(x.to(self.device))
            return (self.predictor(z) - self.target(z)).pow(2).mean(1)

    def bonus(self, x: torch.Tensor) -> torch.Tensor:
        """scale * error / sqrt(running mean of the squared error), (B,)."""
        return self.cfg.scale * self.error(x) / self.err_sq.sqrt().clamp(min=1e-8).float()

    def train_step(self, x: torch.Tensor) -> float:
        """Update the statistics with `x`, then one predictor step on it; returns the mean error."""
        x = x.to(self.device)
        self._update_stats(x)
        z = self._normalise(x)
        err = (self.predictor(z) - self.target(z)).pow(2).mean(1)
        loss = err.mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            self.err_sq = 0.99 * self.err_sq + 0.01 * err.detach().double().pow(2).mean()
        return float(loss.detach())

    def apply(self, batch: dict[str, Any]) -> dict[str, float]:
        """Add the bonus of each online row's next observation to its reward (in place), then
        train the predictor on those observations. Returns {"rnd_bonus", "rnd_loss"} (0 when the
        batch has no online row)."""
        online = batch.get("online")
        if online is None or not bool(torch.as_tensor(online).any()):
            return {"rnd_bonus": 0.0, "rnd_loss": 0.0}
        rows = torch.as_tensor(online, device=batch["reward"].device).bool()
        nxt = {k: v[rows] for k, v in batch["next_obs"].items() if k != "instruction"}
        x = observation_vector(nxt, self.cfg.image_pool)
        b = self.bonus(x).to(batch["reward"].device, batch["reward"].dtype)
        batch["reward"] = batch["reward"].clone()
        batch["reward"][rows] += b
        loss = self.train_step(x)
        return {"rnd_bonus": float(b.mean()), "rnd_loss": loss}

    def state_dict(self) -> dict[str, Any]:
        return {"target": self.target.state_dict(), "predictor": self.predictor.state_dict(),
                "opt": self.opt.state_dict(), "count": self.count, "mean": self.mean, "m2": self.m2,
                "err_sq": self.err_sq}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        self.target.load_state_dict(sd["target"])
        self.predictor.load_state_dict(sd["predictor"])
        self.opt.load_state_dict(sd["opt"])
        for k in ("count", "mean", "m2", "err_sq"):
            setattr(self, k, torch.as_tensor(sd[k], dtype=torch.float64, device=self.device).clone())


def rnd_obs_dim(obs_spec: Mapping[str, Any], image_pool: int, latent_dim: int | None = None) -> int:
    """Length of observation_vector() for an agent obs spec ({"state": (S,)} or image + proprio);
    `latent_dim`: a frozen encoder's latent size (its replays carry latents instead of images)."""
    if "state" in obs_spec:
        return int(obs_spec["state"][0])
    d = int(obs_spec["proprio"][0])
    if "image" in obs_spec:
        d += int(latent_dim) if latent_dim else 3 * image_pool * image_pool
    return d


__all__ = ["RNDBonus", "RNDConfig", "observation_vector", "rnd_obs_dim"]
