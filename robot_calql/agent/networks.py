"""Critic ensemble and tanh-Gaussian actor for Cal-QL.

The critic ensemble is ONE module whose weights carry a leading ensemble dimension E, so all
critics run in one batched matrix multiply (`torch.baddbmm`) instead of a Python loop. Its
first layer is split into an observation part and an action part: the observation part is
computed once per state and shared by every action evaluated at that state (Cal-QL evaluates
1 data action + 30 sampled actions per state), which is exact (a linear layer is linear) and
saves the repeated work.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # official Cal-QL / CQL clip of the actor's log-std


def _uniform_init_(w: torch.Tensor, fan_in: int) -> None:
    """PyTorch's nn.Linear default init (uniform in +-1/sqrt(fan_in)), per ensemble member."""
    bound = 1.0 / math.sqrt(fan_in)
    nn.init.uniform_(w, -bound, bound)


class EnsembleLinear(nn.Module):
    """E independent linear layers applied as one batched matmul: (E, N, in) -> (E, N, out)."""

    def __init__(self, ensemble: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(ensemble, 1, out_features))
        _uniform_init_(self.weight, in_features)
        _uniform_init_(self.bias, in_features)

    def forward(self, x: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        w, b = (self.weight.detach(), self.bias.detach()) if detach_params else (self.weight, self.bias)
        return torch.baddbmm(b, x, w)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the feature dimension with a separate affine transform per member."""

    def __init__(self, ensemble: int, features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ensemble, 1, features))
        self.bias = nn.Parameter(torch.zeros(ensemble, 1, features))

    def forward(self, x: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        w, b = (self.weight.detach(), self.bias.detach()) if detach_params else (self.weight, self.bias)
        if x.dim() == 4:  # (E, B, K, H) first-layer activations
            w, b = w.unsqueeze(1), b.unsqueeze(1)
        return torch.addcmul(b, F.layer_norm(x, x.shape[-1:]), w)


class EnsembleCritic(nn.Module):
    """E Q-networks Q_e(s, a) = MLP([s, a]) evaluated together.

    `forward(obs_features (B, D), actions (B, K, A)) -> Q (E, B, K)`: every member evaluates
    every one of the K actions at its state. Hidden layers ReLU, optional LayerNorm before the
    ReLU, a scalar output.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        ensemble: int = 2,
        hidden: tuple[int, ...] = (256, 256, 256),
        layer_norm: bool = False,
    ):
        super().__init__()
        if ensemble < 1 or not hidden:
            raise ValueError(f"critic needs ensemble >= 1 and at least one hidden layer, got {ensemble}, {hidden}")
        self.ensemble, self.obs_dim, self.action_dim = ensemble, obs_dim, action_dim
        self.hidden = tuple(int(h) for h in hidden)
        h0 = self.hidden[0]
        fan_in = obs_dim + action_dim
        # First layer W [s; a] + b, stored as two blocks so the state block runs once per state.
        self.w_obs = nn.Parameter(torch.empty(ensemble, obs_dim, h0))
        self.w_act = nn.Parameter(torch.empty(ensemble, action_dim, h0))
        self.b0 = nn.Parameter(torch.empty(ensemble, 1, 1, h0))
        for p in (self.w_obs, self.w_act, self.b0):
            _uniform_init_(p, fan_in)
        self.layers = nn.ModuleList(
            EnsembleLinear(ensemble, a, b) for a, b in zip(self.hidden[:-1], self.hidden[1:], strict=True)
        )
        self.norms = nn.ModuleList(EnsembleLayerNorm(ensemble, h) for h in self.hidden) if layer_norm else None
        self.out = EnsembleLinear(ensemble, self.hidden[-1], 1)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        """Q-values (E, B, K) for obs (B, D) and actions (B, K, A) (or (B, A): K = 1)."""
        if actions.dim() == 2:
            actions = actions.unsqueeze(1)
        B, K, A = actions.shape
        if obs.shape != (B, self.obs_dim) or A != self.action_dim:
            raise ValueError(
                f"critic expects obs (B, {self.obs_dim}) and actions (B, K, {self.action_dim}), "
                f"got {tuple(obs.shape)} and {tuple(actions.shape)}"
            )
        E = self.ensemble
        d = detach_params
        w_obs, w_act, b0 = (
            (self.w_obs.detach(), self.w_act.detach(), self.b0.detach()) if d else (self.w_obs, self.w_act, self.b0)
        )
        # State block and bias once per state (E, B, H), shared by its K actions. (baddbmm keeps
        # the autocast dtype: adding the fp32 bias afterwards would promote the big tensor.)
        h_obs = torch.baddbmm(b0.view(E, 1, -1), obs.expand(E, B, self.obs_dim), w_obs)
        h_act = torch.matmul(actions.reshape(B * K, A), w_act)  # (E, B*K, H)
        h = h_act.view(E, B, K, -1) + h_obs.unsqueeze(2)
        if self.norms is not None:
            h = self.norms[0](h, d)
        # In-place ReLU (no fresh 16 MB buffer per layer) on the base tensor, never on a view:
        # in place on a view would make autograd copy the whole activation back in backward.
        h = h.relu_().view(E, B * K, -1)
        for i, layer in enumerate(self.layers):
            h = layer(h, d)
            if self.norms is not None:
                h = self.norms[i + 1](h, d)
            h = h.relu_()
        w_out, b_out = (self.out.weight.detach(), self.out.bias.detach()) if d else (self.out.weight, self.out.bias)
        return _ScalarHead.apply(h, w_out, b_out).view(E, B, K)

    def member(self, i: int) -> nn.Sequential:
        """A plain nn.Sequential copy of member i taking cat([s, a]) (for tests and export)."""
        mods: list[nn.Module] = []
        lin = nn.Linear(self.obs_dim + self.action_dim, self.hidden[0])
        with torch.no_grad():
            lin.weight.copy_(torch.cat([self.w_obs[i], self.w_act[i]], 0).T)
            lin.bias.copy_(self.b0[i].flatten())
        layers = [lin] + [
            _plain_linear(layer.weight[i], layer.bias[i]) for layer in self.layers
        ]
        for j, lin in enumerate(layers):
            mods.append(lin)
            if self.norms is not None:
                ln = nn.LayerNorm(self.hidden[j])
                with torch.no_grad():
                    ln.weight.copy_(self.norms[j].weight[i].flatten())
                    ln.bias.copy_(self.norms[j].bias[i].flatten())
                mods.append(ln)
            mods.append(nn.ReLU())
        mods.append(_plain_linear(self.out.weight[i], self.out.bias[i]))
        return nn.Sequential(*mods)


class _ScalarHead(torch.autograd.Function):
    """Output layer q = h @ w + b with one output per member, always computed in fp32.

    h (E, N, H) in fp32 or bf16 (autocast), w (E, H, 1), b (E, 1, 1) fp32 -> q (E, N, 1) fp32.
    Q-values stay at full precision under bf16 (a bf16 Q of 100 would be rounded to 0.5). The
    backward uses a broadcast multiply for dq/dh instead of autograd's K = 1 outer-product GEMM,
    which is slow on CPU.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(h, w)
        with torch.autocast(h.device.type, enabled=False):
            return torch.baddbmm(b.float(), h.float(), w.float())

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        h, w = ctx.saved_tensors
        g = g.contiguous()
        grad_h = (g.to(h.dtype) * w.transpose(1, 2).to(h.dtype)) if ctx.needs_input_grad[0] else None
        grad_w = torch.bmm(h.transpose(1, 2), g.to(h.dtype)).to(w.dtype) if ctx.needs_input_grad[1] else None
        grad_b = g.sum(1, keepdim=True) if ctx.needs_input_grad[2] else None
        return grad_h, grad_w, grad_b


def _plain_linear(w: torch.Tensor, b: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(w.shape[0], w.shape[1])
    with torch.no_grad():
        lin.weight.copy_(w.T)
        lin.bias.copy_(b.flatten())
    return lin


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.ReLU()]
        in_dim = h
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class TanhGaussianActor(nn.Module):
    """SAC policy: a = tanh(mu + sigma * eps), log-std clipped to [-20, 2].

    `log_std = log_std_multiplier * raw + log_std_offset` before the clip, as in the official
    Cal-QL policy (multiplier 1, offset -1).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: tuple[int, ...] = (256, 256),
        log_std_multiplier: float = 1.0,
        log_std_offset: float = -1.0,
    ):
        super().__init__()
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.net = mlp(obs_dim, tuple(hidden), 2 * action_dim)
        self.log_std_multiplier, self.log_std_offset = log_std_multiplier, log_std_offset

    def dist_params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.net(obs).chunk(2, dim=-1)
        log_std = (self.log_std_multiplier * raw + self.log_std_offset).clamp(LOG_STD_MIN, LOG_STD_MAX)
        return mean, log_std

    @staticmethod
    def sample_from(
        mean: torch.Tensor, log_std: torch.Tensor, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n reparameterised samples per row: actions (B, n, A) and log-probs (B, n)."""
        eps = torch.randn((mean.shape[0], n, mean.shape[1]), device=mean.device, dtype=mean.dtype, generator=generator)
        u = mean.unsqueeze(1) + log_std.exp().unsqueeze(1) * eps
        return torch.tanh(u), tanh_gaussian_log_prob(u, eps, log_std.unsqueeze(1))

    def forward(self, obs: torch.Tensor, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.dist_params(obs)
        return self.sample_from(mean, log_std, n)

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dist_params(obs)[0])

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor, eps_clip: float = 1e-6) -> torch.Tensor:
        """log pi(a|s) of given actions (B, A) in (-1, 1) (used by the behaviour-cloning term)."""
        mean, log_std = self.dist_params(obs)
        u = torch.atanh(actions.clamp(-1 + eps_clip, 1 - eps_clip))
        return tanh_gaussian_log_prob(u, (u - mean) / log_std.exp(), log_std)


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def tanh_gaussian_log_prob(u: torch.Tensor, eps: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(u; mu, sigma) - sum log(1 - tanh(u)^2), the latter in the stable form
    2 * (log 2 - u - softplus(-2u))."""
    gauss = (-0.5 * eps.pow(2) - log_std - _HALF_LOG_2PI).sum(-1)
    return gauss - _log_tanh_jacobian(u)


def _log_tanh_jacobian(u: torch.Tensor) -> torch.Tensor:
    """sum over the last dim of log(1 - tanh(u)^2), as 2 * (log 2 - u - softplus(-2u))."""
    return (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)


def behaviour_nll(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor, z_clip: float = math.inf) -> torch.Tensor:
    """-log pi(a|s) per row for pre-tanh data actions u = atanh(a) (B, A), with the Gaussian's
    squared z-score 0.5 z^2 replaced by the Huber form z_clip * |z| - 0.5 * z_clip^2 beyond
    |z| > z_clip. With z_clip = inf it equals -tanh_gaussian_log_prob. The Huber form bounds
    the pull of a row the policy finds far out of its distribution: demonstrator actions clipped
    to exactly +-1 (u = atanh(1 - 1e-6) = 7.25) under a policy std of 0.02 are 300+ sigma away,
    and a handful of such rows gave BC losses of 1e5-1e15 in a batch."""
    z = (u - mean) / log_std.exp()
    if math.isfinite(z_clip):
        a = z.abs()
        quad = torch.where(a <= z_clip, 0.5 * z.pow(2), z_clip * a - 0.5 * z_clip**2)
    else:
        quad = 0.5 * z.pow(2)
    return (quad + log_std + _HALF_LOG_2PI).sum(-1) + _log_tanh_jacobian(u)
