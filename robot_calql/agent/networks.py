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
        # On CPU under bf16 autocast, run the fused oneDNN path (same values; see forward_fused).
        self.fused_cpu = _HAS_ONEDNN_LINEAR

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
        if self.fused_cpu and self.norms is None and _cpu_bf16_autocast(obs):
            return self.forward_fused(obs, actions, torch.bfloat16, detach_params)
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

    def forward_fused(
        self, obs: torch.Tensor, actions: torch.Tensor, dtype: torch.dtype, detach_params: bool = False
    ) -> torch.Tensor:
        """The same Q-values through oneDNN's fused linear + bias + ReLU, one member at a time,
        with a hand-written backward (`_FusedCPUCritic`). `forward` takes this path on CPU under
        bf16 autocast (no LayerNorm); `dtype` float32 runs it in fp32 (tests compare the two)."""
        if not _HAS_ONEDNN_LINEAR:
            raise RuntimeError("this torch build has no oneDNN fused linear (torch.ops.mkldnn._linear_pointwise)")
        if self.norms is not None:
            raise ValueError("the fused critic path has no LayerNorm; use forward()")
        if actions.dim() == 2:
            actions = actions.unsqueeze(1)
        B, K, A = actions.shape
        E = self.ensemble
        # Rows [s, a] (B*K, D+A): small next to the (B*K, H) activations, and one matmul per
        # member then writes the first layer (bias and ReLU fused) in one pass.
        x = torch.cat([obs.unsqueeze(1).expand(B, K, self.obs_dim), actions], -1).reshape(B * K, -1).to(dtype)
        params = [torch.cat([self.w_obs, self.w_act], 1), self.b0.view(E, -1)]
        for layer in self.layers:
            params += [layer.weight, layer.bias.view(E, -1)]
        params += [self.out.weight, self.out.bias]
        if detach_params:
            params = [p.detach() for p in params]
        with torch.autocast("cpu", enabled=False):
            return _FusedCPUCritic.apply(x, *params).view(E, B, K)

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


def _has_onednn_linear() -> bool:
    """Whether oneDNN's fused linear (an internal op, the one torch.compile uses on CPU) exists
    here and computes relu(x @ w.T + b) in bf16. Probed once on a tiny case, so that a torch
    build or version without it, or with another signature, falls back to the batched path."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        x = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.bfloat16)
        w = torch.tensor([[1.0, 1.0], [2.0, -1.0], [0.0, 1.0]], dtype=torch.bfloat16)
        b = torch.tensor([0.5, 0.0, -4.0], dtype=torch.bfloat16)
        y = torch.ops.mkldnn._linear_pointwise(x, w, b, "relu", [], "")
        return bool(torch.equal(y.float(), torch.relu(x.float() @ w.float().T + b.float())))
    except (AttributeError, RuntimeError, TypeError):  # pragma: no cover - builds without it
        return False


_HAS_ONEDNN_LINEAR = _has_onednn_linear()


def _cpu_bf16_autocast(x: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


class _FusedCPUCritic(torch.autograd.Function):
    """The critic ensemble on CPU, member by member, with oneDNN's fused linear + bias + ReLU.

    Why: on CPUs with AMX the bf16 update is bound by memory traffic over the (E, B*K, H)
    activations, not by arithmetic. Batched `baddbmm` first copies the broadcast bias into its
    output, then ReLU reads and writes it again; oneDNN applies bias and ReLU as the matmul
    writes its output, and the first layer takes the (B*K, D+A) rows [s, a] directly instead of
    adding a broadcast state block to the action block. The backward is written out so that
    every step is one matmul or one elementwise pass.

    forward(x (N, D+A), W0 (E, D+A, H), b0 (E, H), [W_l (E, H, H), b_l (E, H)]..., w_out
    (E, H, 1), b_out (E, 1, 1)) -> q (E, N, 1) in fp32. x and the saved activations are in x's
    dtype; parameters are fp32 (cast once per call); the scalar head runs in fp32, as _ScalarHead.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        dt = x.dtype
        ws = [w.to(dt) for w in params[0:-2:2]]  # one cast per layer for all members
        bs = [b.to(dt) for b in params[1:-2:2]]
        w_out, b_out = params[-2], params[-1]
        E = w_out.shape[0]
        acts, qs = [], []
        for i in range(E):
            h, hs = x, []
            for w, b in zip(ws, bs, strict=True):
                h = torch.ops.mkldnn._linear_pointwise(h, w[i].T, b[i], "relu", [], "")
                hs.append(h)
            qs.append(torch.addmm(b_out[i].view(1, 1), h.float(), w_out[i]))
            acts += hs
        ctx.layers = len(ws)
        ctx.save_for_backward(x, *acts, *ws, w_out)
        return torch.stack(qs)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        L, need = ctx.layers, ctx.needs_input_grad
        x, *rest = ctx.saved_tensors
        w_out = rest[-1]
        E = w_out.shape[0]
        acts, ws = rest[: E * L], rest[E * L : E * L + L]
        dt = x.dtype
        g = g.contiguous()
        gw = [[] for _ in range(L)]
        gb = [[] for _ in range(L)]
        g_out, gx = [], None
        for i in range(E):
            hs = [x, *acts[i * L : (i + 1) * L]]
            gi = g[i].to(dt)  # (N, 1)
            g_out.append(hs[L].T @ gi)
            gh = gi * w_out[i].to(dt).T  # dq/dh of the last hidden layer: a broadcast multiply
            for j in range(L - 1, -1, -1):
                gz = torch.ops.aten.threshold_backward(gh, hs[j + 1], 0)  # through the ReLU
                gw[j].append(hs[j].T @ gz)
                gb[j].append(gz.sum(0))
                if j > 0 or need[0]:
                    gh = gz @ ws[j][i].T
            if need[0]:
                gx = gh.float() if gx is None else gx + gh.float()
        # Gradients in the parameters' dtype (fp32), each layer's members stacked.
        grads: list[torch.Tensor | None] = [gx.to(dt) if gx is not None else None]
        for j in range(L):
            grads += [torch.stack(gw[j]).float(), torch.stack(gb[j]).float()]
        grads += [torch.stack(g_out).float(), g.sum(1, keepdim=True)]
        return tuple(grad if n else None for grad, n in zip(grads, need, strict=True))


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
    where the plain form's 0.5 z^2 would dominate the whole batch's loss."""
    z = (u - mean) / log_std.exp()
    if math.isfinite(z_clip):
        a = z.abs()
        quad = torch.where(a <= z_clip, 0.5 * z.pow(2), z_clip * a - 0.5 * z_clip**2)
    else:
        quad = 0.5 * z.pow(2)
    return (quad + log_std + _HALF_LOG_2PI).sum(-1) + _log_tanh_jacobian(u)
