"""Cal-QL (Nakamoto et al. 2023): CQL whose conservative push-down stops at the Monte-Carlo return.

One class, `CalQL`; `CalQLConfig.enable_calql=False` gives plain CQL with the same code. The
whole Cal-QL change is one clearly marked block in `CalQL._losses` (search for "CAL-QL").

Semantics follow the official implementation (nakamotoo/Cal-QL, JaxCQL/conservative_sac.py):

- Critic loss per ensemble member: TD loss + CQL term. The CQL term samples 10 uniform actions
  in [-1, 1], 10 actions from pi(s) and 10 from pi(s'), evaluates ALL of them at s, subtracts
  the importance weights (log 0.5^|A| for uniform samples, log pi for policy samples), takes
  `logsumexp(q / temp) * temp` and subtracts Q(s, a_data); optionally clipped, and either
  weighted by `cql_alpha` or by a Lagrange multiplier that targets the gap `cql_target_action_gap`.
- Cal-QL: the Q-values of the policy samples (pi(s) and pi(s')) are replaced by
  max(Q, mc_return) before the log-pi correction. Never the uniform samples, the TD target or
  the actor loss.
- TD target: r + gamma * (1 - done) * Q_target(s', a'), with max-target backup (10 actions
  from pi(s'), min over the target critics, max over the samples) or one action; optional
  entropy backup (off by default); optionally n-step (`n_step`: the replay sums the rewards of
  up to n steps and the target bootstraps from the state after them with gamma^m).
- SAC actor (tanh-Gaussian) with automatic entropy tuning (target entropy -|A|), optional
  behaviour-cloning term (RoboFuME), soft target updates (tau 5e-3).

All losses are computed from the same parameters and applied in one backward pass and one
optimiser step per parameter group, as the official JAX code does (every loss is built so that
its gradient reaches only its own parameters: sampled actions, features for the actor, alpha
and the Lagrange multiplier are detached where they feed another group's loss).

Speed: every critic evaluation of an update (1 data action + 30 sampled actions per state, all
ensemble members) is ONE batched forward; each state is encoded once (s and s' once each, not
once per sampled action); pi(s) and pi(s') come from one actor forward; metrics are returned
with a single device-to-host copy. `precision="bf16"` runs the network matmuls in bfloat16
(autocast, fp32 master weights and losses), for CPUs with bf16 units and GPUs (docs/agent.md, Speed).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from robot_calql.agent.cpu import resolve_precision
from robot_calql.agent.encoders import IMAGE_LATENT, FrameEncoder, ObsEncoder, ObsSpecError
from robot_calql.agent.networks import EnsembleCritic, TanhGaussianActor, behaviour_nll
from robot_calql.data.dataset import is_image_key


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, from a newer format, or does not fit the agent built
    from the config (names the file or tensor). The one error type for checkpoints: the agent's
    state dicts raise it, and so does robot_calql.train.checkpoint (which re-exports it)."""


# Agent settings that were tried, lost and were deleted: a config that still sets one is refused
# with this note. Checkpoints that stored them load through robot_calql.train.checkpoint's upgrade.
REMOVED_KEYS = {
    "num_min_critics": "REDQ subset of the target min, never used",
    "td_target_max": "TD-target clip, no gain: docs/experiments/2026-11-22-hover-backups-and-20k-steps.md",
    "bc_offline_only": "BC on offline rows only, worse: docs/experiments/2026-11-21-demo-settings-and-exploration.md",
    "extra": "free-form dict, never read",
}


@dataclass
class CalQLConfig:
    """Every knob of the agent. Defaults are the official Cal-QL ones unless noted (docs/agent.md)."""

    enable_calql: bool = True  # False: plain CQL
    discount: float = 0.99  # discount factor gamma
    policy_lr: float = 1e-4  # actor (and entropy temperature) Adam learning rate
    critic_lr: float = 3e-4  # critic Adam learning rate
    tau: float = 5e-3  # soft target update rate, every update
    actor_hidden: tuple[int, ...] = (256, 256, 256)  # actor MLP layer sizes (official: 256-256; antmaze 4x256)
    critic_hidden: tuple[int, ...] = (256, 256, 256)  # critic MLP layer sizes
    num_critics: int = 2  # critic ensemble size (the target takes their minimum)
    critic_layer_norm: bool = False  # layer norm after each critic hidden layer
    # CQL
    cql_alpha: float = 5.0  # official `cql_min_q_weight`
    cql_n_actions: int = 10  # sampled actions per state in the CQL logsumexp (random, current, next)
    cql_importance_sample: bool = True  # importance-weight the sampled actions by their density
    cql_temp: float = 1.0  # temperature of the CQL logsumexp
    cql_lagrange: bool = False  # tune cql_alpha by dual gradient descent to reach cql_target_action_gap
    cql_target_action_gap: float = 1.0  # Lagrange only: the target conservative gap (antmaze 0.8)
    cql_clip_diff_min: float = -math.inf  # lower clip of the CQL gap per critic (-inf: off)
    cql_clip_diff_max: float = math.inf  # upper clip of the CQL gap per critic (inf: off)
    # backup
    max_target_backup: bool = True  # target: max over cql_n_actions sampled next actions (antmaze style)
    n_step: int = 1  # n-step TD targets from the replay's reward windows (1: the official one-step target)
    backup_entropy: bool = False  # subtract the entropy term in the TD target
    # SAC actor
    automatic_entropy_tuning: bool = True  # tune the SAC temperature alpha toward target_entropy
    alpha_init: float = 1.0  # official log_alpha starts at 0
    alpha_multiplier: float = 1.0  # scale of alpha in the actor and backup
    target_entropy: float | None = None  # None: -|A|
    bc_weight: float = 0.0  # RoboFuME-style behaviour-cloning term: + bc_weight * -log pi(a_data|s)
    bc_z_clip: float = math.inf  # Huber-clip the BC z-scores beyond this many std (inf: plain -log pi);
    # bounds the pull of demo actions clipped to exactly +-1 under a narrow policy (docs/training.md)
    bc_success_only: bool = False  # BC only on rows whose episode reached success (filtered BC, as in
    # self-imitation): the policy clones demos and its own online successes, never failures
    # rewards and returns (applied by robot_calql.data.replay, recorded here so a run has one config)
    reward_scale: float = 1.0  # r * reward_scale + reward_bias before MC returns (antmaze: 10)
    reward_bias: float = 0.0  # see reward_scale (antmaze: -5)
    failure_reward: float | None = None  # sparse fill r_fail / (1 - gamma) (after scale/bias)
    calql_bound_online: bool = True  # False: CORL's variant, mc_return = -inf for online data
    takeover_penalty: float = 0.0  # subtracted (after scale/bias) from the reward of the policy's last step
    # before each human takeover (RLIF's signal: a person took over because the policy was going wrong)
    # pixels
    encoder: str = "robofume"  # robofume | spatial (keypoints: spatial softmax) | resnet
    encoder_latent_dim: int = 64  # pixels: image latent size
    conv_strides: tuple[int, ...] = (2, 2, 1, 1)  # pixels: strides of the CNN's conv layers
    aug_pad: int = 4  # random-shift augmentation in pixels (0: off)
    encoder_frozen: bool = False  # pixels: pre-train the CNN on the offline data (below), then freeze it; the
    # replays cache its latents and an update costs about a state-mode update (docs/agent.md, "Pixel modes")
    encoder_pretrain_steps: int = 1000  # frozen encoder: pre-training steps (BC of the data's actions + proprio)
    encoder_pretrain_batch: int = 64  # frozen encoder: pre-training batch size
    encoder_pretrain_lr: float = 1e-3  # frozen encoder: Adam learning rate of the pre-training
    encoder_pretrain_future: tuple[int, ...] = ()  # frozen encoder: also predict the demo's proprio this many steps ahead (-1: the episode's last frame; -2: the next grasp)
    instruction_dim: int = 16  # size of the learned instruction embedding
    # speed
    obs_clip: float = 10.0  # standardised state / proprio values are clipped to +-obs_clip (inf: off)
    precision: str = "fp32"  # fp32 | bf16 (autocast matmuls, fp32 weights and losses) | auto (bf16 where the CPU/GPU has native bf16 units, else fp32)
    policy: str = "gaussian"  # gaussian: the SAC actor acts | diffusion: PA-RL (robot_calql/agent/pa_rl.py)
    discrete_gripper: bool = False  # the gripper (the action's last axis) is open (-1) or closed (+1), whichever
    # the critics rank higher at the actor's arm action: in acting, the TD target and the actor loss; the CQL
    # term's policy samples take each command in half of them (docs/agent.md, "The discrete gripper")
    pa_rl: dict[str, Any] = field(default_factory=dict)  # policy=diffusion: PARLConfig keys (pa_rl.py)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CalQLConfig:
        """Build from a plain or OmegaConf mapping; an unknown key is an error naming it."""
        from robot_calql.config import ConfigError

        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(d, DictConfig):
                d = OmegaConf.to_container(d, resolve=True)  # type: ignore[assignment]
        except ImportError:  # pragma: no cover
            pass
        removed = sorted(set(d) & set(REMOVED_KEYS))
        if removed:
            raise ConfigError("agent config: " + "; ".join(f"'{k}' was removed ({REMOVED_KEYS[k]})" for k in removed)
                              + ": delete it from the config")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"agent config: unknown keys {unknown} (known: {sorted(known)})")
        kw = dict(d)
        for k in ("actor_hidden", "critic_hidden", "conv_strides", "encoder_pretrain_future"):
            if k in kw:
                kw[k] = tuple(int(x) for x in kw[k])
        for k in ("cql_clip_diff_min", "cql_clip_diff_max"):
            if k in kw and kw[k] is not None:
                kw[k] = float(kw[k])
        cfg = cls(**kw)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        from robot_calql.config import ConfigError

        if self.policy not in ("gaussian", "diffusion"):
            raise ConfigError(f"agent config: policy must be gaussian or diffusion, got '{self.policy}'")
        if self.policy == "diffusion":
            from robot_calql.agent.pa_rl import PARLConfig

            try:
                PARLConfig.from_dict(self.pa_rl)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        if self.discrete_gripper and self.policy == "diffusion":
            raise ConfigError("agent config: discrete_gripper works with policy=gaussian only (PA-RL's diffusion "
                              "policy picks its own gripper)")
        if self.precision not in ("fp32", "bf16", "auto"):
            raise ConfigError(f"agent config: precision must be fp32, bf16 or auto, got '{self.precision}'")
        if not 0.0 <= self.discount < 1.0:
            raise ConfigError(f"agent config: discount must be in [0, 1), got {self.discount}")
        if self.num_critics < 1:
            raise ConfigError(f"agent config: num_critics must be >= 1, got {self.num_critics}")
        if self.n_step < 1:
            raise ConfigError(f"agent config: n_step must be >= 1, got {self.n_step}")
        if self.cql_n_actions < 1:
            raise ConfigError(f"agent config: cql_n_actions must be >= 1, got {self.cql_n_actions}")
        if not (math.isfinite(self.takeover_penalty) and self.takeover_penalty >= 0):
            raise ConfigError(f"agent config: takeover_penalty must be a finite number >= 0 (0: off), "
                              f"got {self.takeover_penalty}")
        if not self.obs_clip > 0:
            raise ConfigError(f"agent config: obs_clip must be > 0 (inf: no clipping), got {self.obs_clip}")
        if not self.bc_z_clip > 0:
            raise ConfigError(f"agent config: bc_z_clip must be > 0 (inf: no clipping), got {self.bc_z_clip}")
        if self.encoder_pretrain_steps < 0 or self.encoder_pretrain_batch < 1 or not self.encoder_pretrain_lr > 0:
            raise ConfigError("agent config: encoder_pretrain_steps must be >= 0, encoder_pretrain_batch >= 1 and "
                              f"encoder_pretrain_lr > 0, got {self.encoder_pretrain_steps}, "
                              f"{self.encoder_pretrain_batch}, {self.encoder_pretrain_lr}")
        if bad := [h for h in self.encoder_pretrain_future if h < -2]:
            raise ConfigError(f"agent config: encoder_pretrain_future {list(self.encoder_pretrain_future)}: {bad} "
                              "(a horizon is N >= 0 steps ahead, -1 the episode's last frame or -2 the next grasp)")


def exploration_temperature(value: float | Sequence[float], action_dim: int | None) -> np.ndarray:
    """Per-dimension exploration temperatures (A,) from one number or one per action dimension
    (action_dim None: only check the values, e.g. before the policy's action size is known).

    A list lets each axis explore differently: e.g. 0 on an axis that must not wander on a real
    arm, or [0.2, 0.2, 0.2, 0.2, 1.0] to sample the gripper freely while the arm stays near the
    policy's mean (in the stand-in that also opened the gripper while carrying, and did not help:
    docs/training.md). Raises ValueError naming the problem (wrong length, negative, NaN, not a
    number).
    """
    try:
        t = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"explore temperature must be a number or a list of {action_dim} numbers, "
                         f"got {value!r}") from None
    if t.ndim == 0 and action_dim is not None:
        t = np.full(action_dim, float(t))
    if t.ndim > 1 or (action_dim is not None and t.shape != (action_dim,)):
        raise ValueError(f"explore temperature: one number or one per action dimension ({action_dim or 'A'}), "
                         f"got {len(t.ravel())} values {t.ravel().tolist()}")
    if not np.all(t >= 0.0):  # also catches NaN
        raise ValueError(f"explore temperature must be >= 0 (1: sample the policy, 0: its mean), got {t.tolist()}")
    return t


def _spec_dims(obs_spec: Mapping[str, Any]) -> tuple[dict[str, tuple[int, ...]], int | None]:
    spec, num = {}, None
    for k, v in obs_spec.items():
        if k == "num_instructions":
            num = int(v)
        else:
            spec[k] = tuple(int(x) for x in v)
    return spec, num


class CalQL:
    """The Cal-QL agent: actor, critic ensemble, targets, temperature, optimisers.

    `obs_spec`: `{"state": (S,)}` or `{"image": (H, W, 3), "proprio": (P,)}`, optionally
    `"text_embedding": (D,)` and `"num_instructions": N` (or pass `num_instructions=`).
    """

    def __init__(
        self,
        obs_spec: Mapping[str, Any],
        action_dim: int,
        config: CalQLConfig | None = None,
        device: str | torch.device = "cpu",
        num_instructions: int | None = None,
    ):
        self.cfg = cfg = config or CalQLConfig()
        cfg.validate()
        spec, n_from_spec = _spec_dims(obs_spec)
        self.obs_spec = spec
        self.num_instructions = int(num_instructions or n_from_spec or 1)
        self.action_dim = A = int(action_dim)
        self.device = torch.device(device)
        self.precision = resolve_precision(cfg.precision, self.device)  # the one in use: fp32 or bf16
        self.encoder = ObsEncoder(
            spec, self.num_instructions, cfg.instruction_dim, cfg.encoder, cfg.encoder_latent_dim,
            cfg.conv_strides, cfg.aug_pad, cfg.obs_clip, frozen_cnn=cfg.encoder_frozen,
        ).to(self.device)
        self.frozen = self.encoder.frozen_cnn  # pixels with a frozen CNN (encoder_frozen)
        D = self.encoder.out_dim
        self.actor = TanhGaussianActor(D, A, cfg.actor_hidden).to(self.device)
        self.critic = EnsembleCritic(D, A, cfg.num_critics, cfg.critic_hidden, cfg.critic_layer_norm).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.pa_rl = None  # policy=diffusion: PA-RL's diffusion policy acts (robot_calql/agent/pa_rl.py)
        if cfg.policy == "diffusion":
            from robot_calql.agent.pa_rl import PARL

            self.pa_rl = PARL(D, A, cfg.pa_rl, self.device)
        self.encoder_target = copy.deepcopy(self.encoder).requires_grad_(False)
        if self.frozen:  # one frozen CNN: the target encoder shares it (and the latents cached from it)
            self.encoder_target.cnn = self.encoder.cnn
        self.log_alpha = torch.tensor(math.log(cfg.alpha_init), device=self.device, requires_grad=True)
        self.log_alpha_prime = torch.tensor(1.0, device=self.device, requires_grad=True)  # official init
        self.target_entropy = float(-A if cfg.target_entropy is None else cfg.target_entropy)
        self.num_updates = 0

        fused = {"fused": True} if self.device.type in ("cpu", "cuda") else {}
        self.opt_actor = torch.optim.Adam(self.actor.parameters(), lr=cfg.policy_lr, **fused)
        # A frozen CNN is in no optimiser and no soft target update.
        enc_online = [p for n, p in self.encoder.named_parameters() if not (self.frozen and n.startswith("cnn."))]
        enc_target = [p for n, p in self.encoder_target.named_parameters() if not (self.frozen and n.startswith("cnn."))]
        self.opt_critic = torch.optim.Adam([*self.critic.parameters(), *enc_online], lr=cfg.critic_lr, **fused)
        self.opt_alpha = torch.optim.Adam([self.log_alpha], lr=cfg.policy_lr)
        self.opt_alpha_prime = torch.optim.Adam([self.log_alpha_prime], lr=cfg.critic_lr)
        self._online = [*self.critic.parameters(), *enc_online]
        self._target = [*self.critic_target.parameters(), *enc_target]

    # ------------------------------------------------------------------ acting
    def _obs_to_tensors(self, obs: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], bool]:
        key = "state" if "state" in self.obs_spec else "proprio"
        if key not in obs:
            raise ObsSpecError(f"observation lacks '{key}' (agent spec keys: {sorted(self.obs_spec)})")
        batched = np.ndim(obs[key]) == 2
        out: dict[str, torch.Tensor] = {}
        cached = self.frozen and "image" not in obs and IMAGE_LATENT in obs  # a frame encoded once (replay cache)
        for k, shape in self.obs_spec.items():
            if cached and is_image_key(k):
                if k != "image":
                    continue  # the cached latent stands for every camera
                k, shape = IMAGE_LATENT, (self.encoder.cached_latent_dim,)
            if k not in obs:
                raise ObsSpecError(f"observation lacks '{k}' (agent spec keys: {sorted(self.obs_spec)})")
            t = torch.as_tensor(np.asarray(obs[k]), device=self.device)
            if not batched:
                t = t.unsqueeze(0)
            if tuple(t.shape[1:]) != shape:
                raise ObsSpecError(f"observation '{k}' has shape {tuple(t.shape[1:])}, agent expects {shape}")
            out[k] = t
        if self.encoder.instruction is not None:
            ins = obs.get("instruction", 0)
            t = torch.as_tensor(np.asarray(ins, dtype=np.int64), device=self.device).reshape(-1)
            if t.numel() == 1 and batched:
                t = t.expand(out[key].shape[0])
            if (t < 0).any() or (t >= self.num_instructions).any():
                raise ObsSpecError(f"instruction id {t.tolist()} out of range [0, {self.num_instructions})")
            out["instruction"] = t
        return out, batched

    @torch.inference_mode()
    def act(self, obs: Mapping[str, Any], deterministic: bool = True,
            temperature: float | Sequence[float] = 1.0) -> np.ndarray:
        """Action(s) in [-1, 1]: (A,) for one observation, (B, A) for a batch.

        obs: dict of arrays with the spec's keys (images uint8 HxWx3) and `instruction` (int id)
        when the agent knows more than one instruction.
        deterministic=False samples tanh(mean + temperature * std * eps): temperature 1 is the
        policy itself (what SAC and the official Cal-QL explore with), 0 its mean; in between
        explores closer to the mean (the `temperature` of jaxrl_m's sample_actions). One number,
        or one per action dimension (exploration_temperature()).
        """
        temp = exploration_temperature(temperature, self.action_dim)
        t, batched = self._obs_to_tensors(obs)
        f = self.encoder(t)
        if self.pa_rl is not None:
            a = self.pa_rl.act(f, 0.0 if deterministic else float(temp.max()), self._min_q)
        elif deterministic or not temp.any():
            a = self.actor.deterministic(f)
        else:
            mean, log_std = self.actor.dist_params(f)
            scale = torch.as_tensor(temp, device=mean.device, dtype=mean.dtype)
            a = torch.tanh(mean + scale * log_std.exp() * torch.randn_like(mean))
        if self.cfg.discrete_gripper:
            a = best_gripper(a.float(), lambda c: self._min_q(f, c))
        a = a.float().cpu().numpy()
        return a if batched else a[0]

    @torch.inference_mode()
    def q_values(self, obs: Mapping[str, Any], actions: np.ndarray | None = None) -> np.ndarray:
        """min over critics of Q(s, a), (B,); a defaults to the deterministic policy action.
        Used for the calibration plot (learned Q against MC return)."""
        t, batched = self._obs_to_tensors(obs)
        f = self.encoder(t)
        if actions is not None:
            a = torch.as_tensor(actions, device=self.device).float()
        else:
            a = self.actor.deterministic(f) if self.pa_rl is None else self.pa_rl.act(f, 0.0)
            if self.cfg.discrete_gripper:
                a = best_gripper(a.float(), lambda c: self._min_q(f, c))
        if not batched and actions is not None:
            a = a.reshape(1, -1)
        q = self.critic(f, a).amin(0)[:, 0].float().cpu().numpy()
        return q if batched else q[0]

    # ------------------------------------------------------------------ learning
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def _losses(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """All losses of one update from the current parameters; returns (total loss, metrics)."""
        cfg = self.cfg
        obs, next_obs = batch["obs"], batch["next_obs"]
        a_data = batch["action"].float()
        reward = batch["reward"].float()
        not_done = 1.0 - batch["done"].float()
        # n-step rows (replay with n_step > 1) carry gamma^m of their window; one-step rows gamma
        discount = batch["discount"].float() if "discount" in batch else cfg.discount
        mc_return = batch["mc_return"].float()
        B, A, n = a_data.shape[0], self.action_dim, cfg.cql_n_actions
        augment = self.encoder.pixels and cfg.aug_pad > 0 and not self.frozen  # a frozen CNN: no shift

        with self._autocast():
            # Each state encoded once: s with gradients (the critic trains the encoder), s' without.
            obs = self.encoder.preprocess(obs, augment)
            next_obs = self.encoder.preprocess(next_obs, augment)  # one shift of s' for both encoders
            f_s = self.encoder(obs, preprocessed=True).float()
            with torch.no_grad():
                f_next = self.encoder(next_obs, preprocessed=True).float()
                f_next_target = self.encoder_target(next_obs, preprocessed=True).float()

            # One actor forward for pi(.|s) and pi(.|s'); the actor sees detached features. The
            # actor is small and always runs in fp32 (as in act()).
            with torch.autocast(self.device.type, enabled=False):
                mean, log_std = self.actor.dist_params(torch.cat([f_s.detach(), f_next]))
            mean_s, mean_n = mean[:B], mean[B:]
            log_std_s, log_std_n = log_std[:B], log_std[B:]
            a_new, logp_new = TanhGaussianActor.sample_from(mean_s, log_std_s, 1)  # actor loss sample
            a_new, logp_new = a_new[:, 0], logp_new[:, 0]
            alpha = (self.log_alpha.exp() * cfg.alpha_multiplier).detach()

            with torch.no_grad():
                ms, ls, mn, ln = mean_s.detach(), log_std_s.detach(), mean_n.detach(), log_std_n.detach()
                a_cur, logp_cur = TanhGaussianActor.sample_from(ms, ls, n)  # pi(s), evaluated at s
                a_nxt, logp_nxt = TanhGaussianActor.sample_from(mn, ln, n)  # pi(s'), evaluated at s
                a_rand = torch.rand(B, n, A, device=self.device) * 2.0 - 1.0
                if cfg.discrete_gripper:  # the policy acts with either gripper: push down on both
                    a_cur, a_nxt = both_grippers(a_cur), both_grippers(a_nxt)

                # TD target from the target critics.
                k = n if cfg.max_target_backup else 1
                a_tgt, logp_tgt = TanhGaussianActor.sample_from(mn, ln, k)
                if self.pa_rl is not None:  # PA-RL: the acting (diffusion) policy's next actions
                    a_tgt, logp_tgt = self.pa_rl.sample(f_next, k), torch.zeros_like(logp_tgt)
                if cfg.discrete_gripper:  # each next arm action with the gripper open and closed: the backup's
                    a_tgt, logp_tgt = gripper_candidates(a_tgt), logp_tgt.repeat(1, 2)  # max takes the better
                q_tgt = self.critic_target(f_next_target, a_tgt).float()  # (E, B, k)
                td_target = td_backup(q_tgt, logp_tgt, reward, not_done, discount, alpha, cfg.backup_entropy)

            # ONE critic forward for every (s, a) pair: data action + 3 x n sampled actions.
            actions = torch.cat([a_data[:, None], a_rand, a_cur, a_nxt], dim=1)  # (B, 1+3n, A)
            q_all = self.critic(f_s, actions).float()  # (E, B, 1+3n)
            # Q for the actor loss: critic weights and features detached, gradient only to a_new.
            if cfg.discrete_gripper:  # the arm action is worth what it is with the better gripper (as it acts)
                q_new = self.critic(f_s.detach(), gripper_candidates(a_new[:, None]),
                                    detach_params=True).float().amin(0).amax(1)
            else:
                q_new = self.critic(f_s.detach(), a_new, detach_params=True).float()[:, :, 0].amin(0)

        q_data = q_all[:, :, 0]
        q_rand = q_all[:, :, 1 : 1 + n]
        q_cur = q_all[:, :, 1 + n : 1 + 2 * n]
        q_nxt = q_all[:, :, 1 + 2 * n :]
        q_cur_raw_mean, q_nxt_raw_mean = q_cur.mean(), q_nxt.mean()

        # ============================ CAL-QL =============================================
        # The one change from CQL: the Q-values of the POLICY samples (pi(s) and pi(s')) are
        # bounded below by the Monte-Carlo return of the data, before the log-pi correction.
        # Never applied to the uniform samples, the TD target or the actor loss.
        #     q_cur = torch.maximum(q_cur, mc_return);  q_nxt = torch.maximum(q_nxt, mc_return)
        # (calql_bound below does exactly this and counts how many values it raised.)
        if cfg.enable_calql:
            q_cur, q_nxt, bound_rate = calql_bound(q_cur, q_nxt, mc_return)
        else:
            bound_rate = torch.zeros((), device=self.device)
        # ==================================================================================

        cql_ood = cql_logsumexp(q_rand, q_cur, q_nxt, q_data, logp_cur, logp_nxt, A, cfg.cql_temp,
                                cfg.cql_importance_sample)  # (E, B)
        cql_diff = (cql_ood - q_data).clamp(cfg.cql_clip_diff_min, cfg.cql_clip_diff_max).mean(1)  # (E,)
        if cfg.cql_lagrange:
            alpha_prime = self.log_alpha_prime.exp().clamp(0.0, 1e6)
            cql_loss = alpha_prime.detach() * cfg.cql_alpha * (cql_diff - cfg.cql_target_action_gap)
            alpha_prime_loss = -(alpha_prime * cfg.cql_alpha * (cql_diff.detach() - cfg.cql_target_action_gap)).mean()
        else:
            alpha_prime = torch.zeros((), device=self.device)
            cql_loss = cfg.cql_alpha * cql_diff
            alpha_prime_loss = torch.zeros((), device=self.device)
        td_loss = (q_data - td_target[None]).pow(2).mean(1)  # (E,)
        critic_loss = (td_loss + cql_loss).sum()  # summed over members, as the official qf1 + qf2

        actor_loss = (alpha * logp_new - q_new).mean()
        bc_loss = torch.zeros((), device=self.device)
        if cfg.bc_weight > 0:
            u = torch.atanh(a_data.clamp(-1 + 1e-6, 1 - 1e-6))
            bc_rows = behaviour_nll(u, mean_s, log_std_s, cfg.bc_z_clip)
            keep = torch.ones_like(bc_rows)
            if cfg.bc_success_only:
                if "success" not in batch:
                    raise ValueError("bc_success_only needs the batch's 'success' flags (robot_calql.data.replay adds them)")
                keep = keep * batch["success"].bool().float()
            bc_loss = (bc_rows * keep).sum() / keep.sum().clamp(min=1.0)
            actor_loss = actor_loss + cfg.bc_weight * bc_loss
        if cfg.automatic_entropy_tuning:
            alpha_loss = entropy_temperature_loss(self.log_alpha, logp_new, self.target_entropy)
        else:
            alpha_loss = torch.zeros((), device=self.device)

        total = critic_loss + actor_loss + alpha_loss + alpha_prime_loss
        metrics = {
            "loss_critic": critic_loss,
            "loss_td": td_loss.mean(),
            "loss_cql": cql_loss.mean(),
            "loss_actor": actor_loss,
            "loss_alpha": alpha_loss,
            "loss_alpha_prime": alpha_prime_loss,
            "loss_bc": bc_loss,
            "alpha": alpha,
            "alpha_prime": alpha_prime.detach(),
            "log_pi": logp_new.mean(),
            "q_data": q_data.mean(),
            "q_pi": q_new.mean(),
            "q_rand": q_rand.mean(),
            "q_cql_current": q_cur_raw_mean,
            "q_cql_next": q_nxt_raw_mean,
            "cql_ood": cql_ood.mean(),
            "cql_diff": cql_diff.mean(),
            "td_target": td_target.mean(),
            "mc_return": _finite_mean(mc_return),  # online rows are -inf with calql_bound_online=False
            "calql_bound_rate": bound_rate,
        }
        return total, metrics

    def set_obs_normalization(self, stats: Mapping[str, tuple[Any, Any]]) -> None:
        """Standardise vector observations (state / proprio) with stats[key] = (mean, std).

        Call once before training, with statistics of the offline data (see
        `OfflineReplay.obs_statistics`); the values live in the encoder's buffers, so every
        checkpoint and the policy weights carry them."""
        stats_t = {k: tuple(torch.as_tensor(np.asarray(x), dtype=torch.float32) for x in v) for k, v in stats.items()}
        for enc in (self.encoder, self.encoder_target):
            enc.set_normalization({k: (m.to(self.device), s.to(self.device)) for k, (m, s) in stats_t.items()})

    def update(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One gradient step of actor, critics, alpha (and Lagrange multiplier); soft target update.

        batch: see docs/architecture.md (obs/next_obs dicts, action, reward, done, mc_return).
        Returns named float metrics (one device-to-host copy for all of them).
        """
        self._check_batch(batch)
        total, metrics = self._losses(batch)
        for opt in (self.opt_actor, self.opt_critic, self.opt_alpha, self.opt_alpha_prime):
            opt.zero_grad(set_to_none=True)
        total.backward()
        self.opt_actor.step()
        self.opt_critic.step()
        if self.cfg.automatic_entropy_tuning:
            self.opt_alpha.step()
        if self.cfg.cql_lagrange:
            self.opt_alpha_prime.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._target, self._online, self.cfg.tau)
        self.num_updates += 1
        names = list(metrics)
        values = torch.stack([v.detach().float().reshape(()) for v in metrics.values()]).tolist()
        out = dict(zip(names, values, strict=True))
        if self.pa_rl is not None:
            out.update(self._pa_rl_update(batch))
        return out

    def _min_q(self, f: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Min over the critics of Q(s, a) for features f (B, D) and actions (B, K, A): (B, K)."""
        return self.critic(f, actions).float().amin(0)

    def _pa_rl_update(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """PA-RL's step of the diffusion policy (pa_rl.py): BC on an offline-only batch (successful
        episodes' rows only with bc_success_only), else sample-rerank-optimize-distill with the
        updated critics (min over the ensemble)."""
        with torch.no_grad():
            f = self.encoder(self.encoder.preprocess(batch["obs"], False), preprocessed=True).float()
        online = "online" in batch and bool(batch["online"].any())

        def q_fn(feat: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
            return self.critic(feat, actions, detach_params=True).float().amin(0)

        keep = batch["success"].float() if self.cfg.bc_success_only and "success" in batch else None
        if online:  # BC (pa_rl.bc_anchor) on the offline rows only
            offline = (~batch["online"].bool()).float()
            keep = offline if keep is None else keep * offline
        return self.pa_rl.update(f, batch["action"], online, q_fn, keep)  # BC rows as bc_success_only says

    def _check_batch(self, batch: Mapping[str, Any]) -> None:
        for k in ("obs", "next_obs", "action", "reward", "done", "mc_return"):
            if k not in batch:
                raise ValueError(f"batch lacks '{k}' (needs obs, next_obs, action, reward, done, mc_return)")
        B = batch["action"].shape[0]
        if batch["action"].shape != (B, self.action_dim):
            raise ValueError(f"batch 'action' has shape {tuple(batch['action'].shape)}, expected ({B}, {self.action_dim})")
        for k in ("reward", "done", "mc_return"):
            if tuple(batch[k].shape) != (B,):
                raise ValueError(f"batch '{k}' has shape {tuple(batch[k].shape)}, expected ({B},)")
        for o in ("obs", "next_obs"):
            cached = "image" in self.obs_spec and "image" not in batch[o] and IMAGE_LATENT in batch[o]
            if cached and not self.frozen:
                raise ValueError(f"batch '{o}' carries cached '{IMAGE_LATENT}', but this agent trains its CNN "
                                 "end to end (encoder_frozen=false) and needs 'image'")
            for k, shape in self.obs_spec.items():
                if cached and is_image_key(k):
                    if k != "image":
                        continue  # the cached latent stands for every camera
                    k, shape = IMAGE_LATENT, (self.encoder.cached_latent_dim,)
                if k not in batch[o]:
                    raise ValueError(f"batch '{o}' lacks '{k}'")
                if tuple(batch[o][k].shape) != (B, *shape):
                    raise ValueError(f"batch '{o}.{k}' has shape {tuple(batch[o][k].shape)}, expected {(B, *shape)}")

    # ------------------------------------------------------------------ state
    def _modules(self) -> dict[str, torch.nn.Module]:
        return {
            "actor": self.actor,
            "encoder": self.encoder,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "encoder_target": self.encoder_target,
            **({"diffusion": self.pa_rl.policy} if self.pa_rl is not None else {}),
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every learned tensor (flat name -> tensor, safetensors-ready): actor, encoder, critics,
        targets, log_alpha, log_alpha_prime and the update counter."""
        sd: dict[str, torch.Tensor] = {}
        for name, mod in self._modules().items():
            for k, v in mod.state_dict().items():
                sd[f"{name}.{k}"] = v.detach().clone()
        sd["log_alpha"] = self.log_alpha.detach().clone()
        sd["log_alpha_prime"] = self.log_alpha_prime.detach().clone()
        sd["num_updates"] = torch.tensor(self.num_updates, dtype=torch.int64)
        return sd

    def load_state_dict(self, sd: Mapping[str, torch.Tensor]) -> None:
        expected = self.state_dict()
        _check_state(expected, sd, "agent")
        for name, mod in self._modules().items():
            prefix = f"{name}."
            mod.load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})
        if self.frozen:  # the shared CNN holds the target's copy now; the online encoder's is the one acted with
            self.encoder.load_state_dict({k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")})
        with torch.no_grad():
            self.log_alpha.copy_(sd["log_alpha"])
            self.log_alpha_prime.copy_(sd["log_alpha_prime"])
        self.num_updates = int(sd["num_updates"])

    def policy_state_dict(self) -> dict[str, torch.Tensor]:
        """What the policy node needs to act (`policy_modules`): the actor and the observation
        encoder (PA-RL: the encoder and the diffusion policy; the critics too when it acts with the
        best of several samples)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(self._policy_parts())}

    def _policy_parts(self) -> tuple[str, ...]:
        return tuple(f"{m}." for m in policy_modules(self.cfg))

    def load_policy_state_dict(self, sd: Mapping[str, torch.Tensor]) -> None:
        expected = self.policy_state_dict()
        _check_state(expected, sd, "policy")
        for prefix in self._policy_parts():
            name = prefix[:-1]
            self._modules()[name].load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})

    def frame_encoder(self) -> FrameEncoder | None:
        """The frozen CNN as a function of frames, for the replay's latent cache (None unless
        the agent is in pixel mode with `encoder_frozen`)."""
        return FrameEncoder(self.encoder) if self.frozen else None

    def optimizer_state_dict(self) -> dict[str, Any]:
        """Adam states (for exact resume; save with torch.save)."""
        return {
            "actor": self.opt_actor.state_dict(),
            "critic": self.opt_critic.state_dict(),
            "alpha": self.opt_alpha.state_dict(),
            "alpha_prime": self.opt_alpha_prime.state_dict(),
            **({"diffusion": self.pa_rl.opt.state_dict()} if self.pa_rl is not None else {}),
        }

    def load_optimizer_state_dict(self, sd: Mapping[str, Any]) -> None:
        opts = [("actor", self.opt_actor), ("critic", self.opt_critic), ("alpha", self.opt_alpha),
                ("alpha_prime", self.opt_alpha_prime), *([("diffusion", self.pa_rl.opt)] if self.pa_rl else [])]
        for k, opt in opts:
            if k not in sd:
                raise CheckpointError(f"optimizer state lacks '{k}'")
            lrs = [g["lr"] for g in opt.param_groups]
            try:
                opt.load_state_dict(sd[k])
            except ValueError as e:
                raise CheckpointError(f"optimizer state '{k}' does not fit this agent ({e}); was it saved with "
                                      "other network sizes or another encoder_frozen setting?") from None
            # Adam's state dict carries the learning rate it was saved with; the configured one wins,
            # so `finetune +agent.policy_lr=...` really changes the online learning rate.
            for g, lr in zip(opt.param_groups, lrs, strict=True):
                g["lr"] = lr


# ---------------------------------------------------------------------- loss pieces (pure)
def calql_bound(
    q_cur: torch.Tensor, q_nxt: torch.Tensor, mc_return: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cal-QL: max(Q, mc_return) on the policy-sample Q-values (E, B, n) with mc_return (B,).

    Returns the bounded q_cur, q_nxt and the bound rate: the fraction of those Q-values that
    the bound raised (strictly below the MC return).
    """
    bound = mc_return.view(1, -1, 1)
    rate = torch.cat([q_cur < bound, q_nxt < bound], dim=-1).float().mean()
    return torch.maximum(q_cur, bound), torch.maximum(q_nxt, bound), rate


GRIPPER_OPEN, GRIPPER_CLOSED = -1.0, 1.0  # the two gripper commands of `discrete_gripper`


def gripper_candidates(actions: torch.Tensor) -> torch.Tensor:
    """(B, K, A) actions -> (B, 2K, A): the K actions with the gripper (the last axis) open, then
    the same K closed (`discrete_gripper`)."""
    both = actions.repeat(1, 2, 1)
    K = actions.shape[1]
    both[:, :K, -1] = GRIPPER_OPEN
    both[:, K:, -1] = GRIPPER_CLOSED
    return both


def both_grippers(actions: torch.Tensor) -> torch.Tensor:
    """(B, K, A) sampled actions with the gripper open in the first K // 2 and closed in the rest
    (`discrete_gripper`: the CQL term's policy samples, so that the push-down covers both
    commands the policy can take at its arm actions, at no extra cost)."""
    out = actions.clone()
    K = actions.shape[1]
    out[:, : K // 2, -1] = GRIPPER_OPEN
    out[:, K // 2 :, -1] = GRIPPER_CLOSED
    return out


def best_gripper(actions: torch.Tensor, q_fn: Any) -> torch.Tensor:
    """(B, A) actions with the gripper set to open or closed, whichever `q_fn` ranks higher at the
    same arm action (`discrete_gripper`); q_fn maps (B, K, A) actions to (B, K) Q-values (the
    minimum over the critics). A tie keeps the gripper open."""
    cand = gripper_candidates(actions[:, None])  # (B, 2, A): open, closed
    q = q_fn(cand)
    closed = q[:, 1] > q[:, 0]
    out = actions.clone()
    out[:, -1] = torch.where(closed, GRIPPER_CLOSED, GRIPPER_OPEN).to(out.dtype)
    return out


def cql_logsumexp(
    q_rand: torch.Tensor, q_cur: torch.Tensor, q_nxt: torch.Tensor, q_data: torch.Tensor,
    logp_cur: torch.Tensor, logp_nxt: torch.Tensor, action_dim: int, temp: float = 1.0,
    importance_sample: bool = True,
) -> torch.Tensor:
    """The CQL push-up term `temp * logsumexp(q / temp)` over the sampled actions, (E, B).

    q_rand, q_cur, q_nxt: (E, B, n) Q at s of uniform, pi(s) and pi(s') actions; logp_*: (B, n).
    Importance sampling subtracts the log-density of the proposal: log 0.5^|A| for uniform
    actions on [-1, 1]^|A|, log pi for policy actions. Without it (official), the data action's
    Q joins the set instead.
    """
    if importance_sample:
        log_uniform = action_dim * math.log(0.5)
        cat = torch.cat([q_rand - log_uniform, q_nxt - logp_nxt[None], q_cur - logp_cur[None]], dim=-1)
    else:
        cat = torch.cat([q_rand, q_data[..., None], q_nxt, q_cur], dim=-1)
    return torch.logsumexp(cat / temp, dim=-1) * temp


def td_backup(
    q_target: torch.Tensor, logp: torch.Tensor, reward: torch.Tensor, not_done: torch.Tensor,
    discount: torch.Tensor | float, alpha: torch.Tensor | float = 0.0, backup_entropy: bool = False,
) -> torch.Tensor:
    """TD target r + gamma * (1 - done) * V(s'), (B,); `discount` is one number or one per row
    (n-step rows: gamma^m, with r their window's discounted reward sum and s' the state after it).

    q_target: (E, B, k) target-critic Q of k actions from pi(s'); logp: (B, k). V(s') = max over
    the k samples of the min over critics (k = 1: plain SAC backup; k = 10: max-target backup),
    minus alpha * log pi of the chosen action with `backup_entropy`.
    """
    v, best = q_target.amin(0).max(1)
    if backup_entropy:
        v = v - alpha * logp.gather(1, best[:, None])[:, 0]
    return reward + not_done * discount * v


def entropy_temperature_loss(log_alpha: torch.Tensor, log_pi: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """SAC temperature loss -log_alpha * (log pi + target_entropy): alpha grows while the
    policy's entropy (-log pi) is below the target, shrinks while above."""
    return -(log_alpha * (log_pi.detach() + target_entropy)).mean()


def _finite_mean(x: torch.Tensor) -> torch.Tensor:
    finite = torch.isfinite(x)
    return torch.where(finite, x, 0.0).sum() / finite.sum().clamp(min=1)


def _check_state(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor], what: str) -> None:
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{what} checkpoint does not match this agent: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''} (different encoder, ensemble or "
            "observation mode?)"
        )
    for k, v in expected.items():
        if tuple(got[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"{what} checkpoint tensor '{k}' has shape {tuple(got[k].shape)}, this agent needs {tuple(v.shape)} "
                "(observation spec, action dimension, instruction count or network sizes differ)"
            )


def policy_modules(cfg: CalQLConfig) -> tuple[str, ...]:
    """The modules a policy acts with (the policy node's, the learner's weights message): encoder +
    actor; PA-RL: encoder + diffusion, + critic when it acts with the best of K > 1 samples
    (pa_rl.act_samples); not its Gaussian actor, which only proposes the CQL term's samples.
    With discrete_gripper: encoder + actor + critic (the critics pick the gripper)."""
    if cfg.policy != "diffusion":
        return ("encoder", "actor", *(("critic",) if cfg.discrete_gripper else ()))
    from robot_calql.agent.pa_rl import PARLConfig

    return ("encoder", "diffusion", *(("critic",) if PARLConfig.from_dict(cfg.pa_rl).act_samples > 1 else ()))


__all__ = ["CalQL", "CalQLConfig", "CheckpointError", "best_gripper", "both_grippers", "calql_bound", "cql_logsumexp",
           "gripper_candidates", "entropy_temperature_loss", "policy_modules",
           "td_backup"]
