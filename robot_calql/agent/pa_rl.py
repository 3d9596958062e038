"""PA-RL (policy-agnostic RL, Sobol Mark et al. 2024) with a diffusion base policy and the Cal-QL critic.

The agent (`CalQLConfig.policy = "diffusion"`, settings in `CalQLConfig.pa_rl`) acts with a
DiffusionPolicy (robot_calql/agent/diffusion.py) on the encoder's features instead of the
tanh-Gaussian actor. Per update, after the Cal-QL step (critics, encoder and the Gaussian actor,
which still proposes the CQL term's policy samples):

- offline-only batches (pre-training): the diffusion policy clones the batch's actions (BC);
- batches with online rows (fine-tuning): sample-rerank-optimize-distill on `distill_rows` rows:
  1. sample `num_samples` actions per state from the diffusion policy,
  2. rerank them by Q = min over the critics and keep the `top_k` best (`rerank`),
  3. improve each by `grad_steps` steps of normalised gradient ascent on Q, clipped to [-1, 1],
     keeping the best point of each path (`optimize_actions`, so Q never decreases),
  4. take the best improved action per state (`select_best`) and distill it into the diffusion
     policy with its own denoising loss.

The TD target's next actions come from the diffusion policy too (the `cql_n_actions` samples at
s' with the max-target backup, one otherwise), so the critic evaluates the policy that acts.
Acting (`act_samples` K): the best by Q of the base policy's temperature-0 sample and K - 1
stochastic ones (the policy weights then carry the critics); K = 1 acts with the base policy's
sample alone. Online batches also keep `bc_anchor` times the BC loss on the offline rows.

The paper's settings are 32 samples, 10 kept, 10 gradient steps; the defaults here are smaller
so a CPU update stays cheap, and take no gradient steps: in the stand-in, 5 steps left the
distilled policy below the re-ranked samples alone in each of 3 seeds, and distillation without
the BC anchor fell from 20% to 0% (docs/experiments/2026-12-06-ooo-pa-rl.md,
docs/experiments/2026-12-06-pa-rl-three-seeds.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from robot_calql.agent.diffusion import DiffusionPolicy


@dataclass
class PARLConfig:
    """Settings of the PA-RL policy (CalQLConfig.pa_rl: a mapping of these keys)."""

    diffusion_steps: int = 5  # denoising steps of the diffusion policy (each a small MLP forward)
    hidden: tuple[int, ...] = (256, 256)  # denoiser MLP layer sizes
    lr: float = 3e-4  # Adam learning rate of the diffusion policy (BC and distillation)
    num_samples: int = 16  # actions sampled per state from the base policy (paper: 32)
    top_k: int = 4  # best samples by Q kept for gradient steps (paper: 10)
    grad_steps: int = 0  # gradient-ascent steps on Q per kept action (paper: 10; 0: re-rank and distill only)
    step_size: float = 0.05  # length of each (normalised) gradient step, in action units
    distill_rows: int = 64  # rows of each batch that get improved actions (0: the whole batch)
    bc_anchor: float = 1.0  # online batches: + bc_anchor * BC loss on the offline rows (bc_success_only: of
    # successful episodes), keeping the distilled policy near the data (0: distillation alone)
    act_samples: int = 16  # acting: 1 = the base policy's sample; K > 1 = the best of K samples by Q (the
    # policy weights then carry the critics)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> PARLConfig:
        """Build from a mapping; an unknown key or a bad value is a ValueError naming it."""
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"agent config pa_rl: unknown keys {unknown} (known: {sorted(known)})")
        if "hidden" in d:
            d["hidden"] = tuple(int(x) for x in d["hidden"])
        cfg = cls(**d)
        if cfg.diffusion_steps < 1 or cfg.num_samples < 1 or not 1 <= cfg.top_k <= cfg.num_samples:
            raise ValueError(f"agent config pa_rl: need diffusion_steps >= 1, num_samples >= 1 and 1 <= top_k <= "
                             f"num_samples, got {cfg.diffusion_steps}, {cfg.num_samples}, {cfg.top_k}")
        if cfg.act_samples < 1:
            raise ValueError(f"agent config pa_rl: act_samples must be >= 1, got {cfg.act_samples}")
        if cfg.bc_anchor < 0:
            raise ValueError(f"agent config pa_rl: bc_anchor must be >= 0, got {cfg.bc_anchor}")
        if cfg.grad_steps < 0 or cfg.step_size < 0 or cfg.distill_rows < 0 or not cfg.lr > 0:
            raise ValueError("agent config pa_rl: grad_steps, step_size and distill_rows must be >= 0 and lr > 0")
        return cfg


# ---------------------------------------------------------------------- the maths (pure)
def rerank(q: torch.Tensor, actions: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `top_k` actions of highest Q per state, best first: q (B, K), actions (B, K, A) ->
    ((B, top_k, A), (B, top_k)). Element [:, 0] is the argmax-Q sample."""
    q_top, idx = q.topk(top_k, dim=1)
    return actions.gather(1, idx[..., None].expand(-1, -1, actions.shape[-1])), q_top


def optimize_actions(q_fn: Callable[[torch.Tensor], torch.Tensor], actions: torch.Tensor, steps: int,
                     step_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient ascent on Q from each action (B, N, A): a <- clip(a + step_size * g / |g|, -1, 1)
    with g = dQ/da, `steps` times. q_fn maps (B, N, A) actions to Q (B, N). Returns the best point
    of each path and its Q ((B, N, A), (B, N)): never a lower Q than the start, always in bounds."""
    a = actions.detach().clamp(-1.0, 1.0)
    with torch.no_grad():
        best_a, best_q = a.clone(), q_fn(a)
    for _ in range(steps):
        a = a.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(q_fn(a).sum(), a)
        with torch.no_grad():
            a = (a + step_size * g / g.norm(dim=-1, keepdim=True).clamp(min=1e-8)).clamp(-1.0, 1.0)
            q = q_fn(a)
            better = q > best_q
            best_a = torch.where(better[..., None], a, best_a)
            best_q = torch.where(better, q, best_q)
    return best_a.detach(), best_q.detach()


def select_best(actions: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The action of highest Q per state: actions (B, N, A), q (B, N) -> (B, A)."""
    return actions[torch.arange(actions.shape[0], device=actions.device), q.argmax(1)]


def act_best_of(policy: DiffusionPolicy, f: torch.Tensor, samples: int, temperature: float,
                q_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """PA-RL's acting rule, one action per state (B, A) for features f (B, D): `samples` 1 (or no
    q_fn): the base policy's sample at `temperature`; K > 1: the action of highest Q
    (q_fn(f, (B, K, A)) -> (B, K)) among the temperature-0 sample and K - 1 samples at
    temperature max(T, 1). Noise from `generator` (None: torch's global one). `PARL.act` and the
    acting policy (robot_calql.train.acting) both act with it."""
    if samples == 1 or q_fn is None:
        return policy.sample(f, float(temperature), generator)
    B = f.shape[0]
    det = policy.sample(f, 0.0, generator)[:, None]
    with torch.no_grad():
        rest = policy.sample(f.repeat_interleave(samples - 1, 0), max(1.0, float(temperature)), generator)
    cand = torch.cat([det, rest.view(B, samples - 1, -1)], dim=1)
    return select_best(cand, q_fn(f, cand))


# ---------------------------------------------------------------------- the policy and its update
class PARL:
    """The diffusion policy, its optimiser and the sample-rerank-optimize-distill step."""

    def __init__(self, feature_dim: int, action_dim: int, config: Mapping[str, Any] | PARLConfig | None,
                 device: torch.device):
        self.cfg = config if isinstance(config, PARLConfig) else PARLConfig.from_dict(config)
        self.policy = DiffusionPolicy(feature_dim, action_dim, self.cfg.hidden, self.cfg.diffusion_steps).to(device)
        fused = {"fused": True} if device.type in ("cpu", "cuda") else {}
        self.opt = torch.optim.Adam(self.policy.parameters(), lr=self.cfg.lr, **fused)

    def sample(self, f: torch.Tensor, n: int, temperature: float = 1.0) -> torch.Tensor:
        """n actions per state from the base policy, no gradient: f (B, D) -> (B, n, A)."""
        B = f.shape[0]
        with torch.no_grad():
            a = self.policy.sample(f.repeat_interleave(n, 0), temperature)
        return a.view(B, n, -1)

    def act(self, f: torch.Tensor, temperature: float,
            q_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """One action per state (B, A). act_samples 1: the base policy's sample (temperature 0:
        deterministic). act_samples K > 1: the action of highest Q (q_fn(f, (B, K, A)) -> (B, K))
        among the temperature-0 sample and K - 1 samples at temperature max(T, 1)."""
        return act_best_of(self.policy, f, self.cfg.act_samples, temperature, q_fn)

    def improved_actions(self, f: torch.Tensor, q_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                         ) -> tuple[torch.Tensor, dict[str, float]]:
        """Sample, rerank, optimize: the best improved action per state (B, A) for features f (B, D);
        q_fn(f, actions (B, N, A)) -> Q (B, N). Also returns Q of the base samples and the gain."""
        c = self.cfg
        samples = self.sample(f, c.num_samples)
        with torch.no_grad():
            q_samples = q_fn(f, samples)
        top, _ = rerank(q_samples, samples, c.top_k)
        best_a, best_q = optimize_actions(lambda a: q_fn(f, a), top, c.grad_steps, c.step_size)
        target = select_best(best_a, best_q)
        stats = {"pa_rl_q_samples": float(q_samples.mean()), "pa_rl_q_improved": float(best_q.amax(1).mean())}
        return target, stats

    def update(self, f: torch.Tensor, a_data: torch.Tensor, online: bool,
               q_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               bc_weight: torch.Tensor | None = None) -> dict[str, float]:
        """One step of the diffusion policy on features f (B, D) (detached): BC on the data's
        actions a_data (B, A) when `online` is False (rows weighted by `bc_weight`, e.g. 1 for
        rows of successful episodes only), else distillation of the improved actions, plus
        `bc_anchor` times that BC loss (bc_weight then also zero on the online rows)."""
        f = f.detach()
        stats: dict[str, float] = {}
        data = a_data.float().clamp(-1.0, 1.0)
        if online:
            rows = self.cfg.distill_rows
            f_d = f
            if rows and rows < f.shape[0]:
                f_d = f[torch.randperm(f.shape[0], device=f.device)[:rows]]
            target, stats = self.improved_actions(f_d, q_fn)
            loss = self.policy.loss(f_d, target)
            if self.cfg.bc_anchor > 0:
                loss = loss + self.cfg.bc_anchor * self.policy.loss(f, data, bc_weight)
        else:
            loss = self.policy.loss(f, data, bc_weight)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss_diffusion": float(loss.detach()), **stats}


__all__ = ["PARL", "PARLConfig", "act_best_of", "optimize_actions", "rerank", "select_best"]
