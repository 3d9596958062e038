"""The acting policy: the observation encoder and the actor, nothing else (no rclpy).

`ActingPolicy` is what a process that drives the arm holds (the policy node, evaluation of a
checkpoint in the stand-in): no critics, target networks, temperatures or optimisers, with two
exceptions (PA-RL and the discrete gripper, below). It is built from

- a checkpoint folder (`from_checkpoint`, robot_calql.train.checkpoint): only meta.json and the
  actor and encoder tensors of model.safetensors are read, not the optimiser states or the
  replay buffer;
- an agent (`from_agent`): a copy of its actor and encoder;
- the learner's weights message (`from_payload`; `load_weights` takes a new one into an existing
  policy of the same shape).

`act` computes what `CalQL.act` computes for one observation: the encoder's features, then
tanh(mean) at temperature 0, or tanh(mean + temperature * std * eps) with eps drawn from `rng`
(torch's global generator when None, as `CalQL.act` draws it), so the same seed gives the same
action. The networks are built from the agent config in the same way as `CalQL` builds its own
(tests/train/test_acting.py compares the two), in eval mode, without gradients.

PA-RL (`agent.policy=diffusion`, robot_calql/agent/pa_rl.py): the policy holds the encoder and
the diffusion base policy (`diffusion.*`), not the Gaussian actor. With `pa_rl.act_samples` K = 1
it acts with the base policy's sample at temperature T = max(explore_temperature) (0: the
deterministic sample). With K > 1 it acts as PA-RL does: the best, by the minimum over the critic
ensemble of Q(s, a), of the temperature-0 sample and K - 1 samples at max(T, 1) (`act_best_of`),
so it also holds the online critic ensemble (`critic.*`, forward only, eval mode, no gradients):
never the target critics or encoder, the temperatures or an optimiser. Same maths and random
draws as `CalQL.act`.

The discrete gripper (`agent.discrete_gripper`, docs/agent.md): the actor's arm action with the
gripper open or closed, whichever the minimum over the online critic ensemble ranks higher, so
the policy holds the critics too (forward only, as for PA-RL).

Weights message (`weights_payload`, what the learner node publishes on `topics.weights`): a
safetensors blob of `CalQL.policy_state_dict()` (the tensors of `policy_modules`: encoder and
actor, + critic with the discrete gripper; PA-RL: encoder, diffusion, + critic when K > 1, without
the Gaussian actor) whose metadata carries the update `step` and `policy_meta` (obs spec, action
dimension, the instruction vocabulary in id order, the agent config), so a policy can be built from
it with no file on the robot computer.

Instructions: the policy knows the vocabulary it was trained with. `instruction_id` (and `act`)
raise `UnknownInstructionError` naming the instruction and the known ones; a caller that gets
instructions from elsewhere (the policy node) checks each one when it arrives.

Threads: the constructors set torch's thread count for the whole process (`threads`, 1 by
default: one thread is fastest for these small networks and keeps the control path off the
other cores); `threads=None` leaves it as it is.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from robot_calql.agent.calql import (
    CalQLConfig,
    CheckpointError,
    best_gripper,
    exploration_temperature,
    policy_modules,
)
from robot_calql.agent.diffusion import DiffusionPolicy
from robot_calql.agent.encoders import ObsEncoder, ObsSpecError
from robot_calql.agent.networks import EnsembleCritic, TanhGaussianActor
from robot_calql.agent.pa_rl import PARLConfig, act_best_of
from robot_calql.control.transport import TransportError, pack_weights, unpack_weights

POLICY_MODULES = ("encoder", "actor")
_META_KEYS = ("obs_spec", "action_dim", "instructions")


class UnknownInstructionError(ValueError):
    """An instruction the policy was not trained with (names it and the ones it knows)."""


def policy_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a checkpoint's meta.json the acting policy needs: obs_spec, action_dim,
    instructions (the vocabulary, in id order) and the agent config."""
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"policy meta lacks {missing} (has {sorted(meta)})")
    return {"obs_spec": {str(k): [int(x) for x in v] for k, v in meta["obs_spec"].items()},
            "action_dim": int(meta["action_dim"]), "instructions": [str(s) for s in meta["instructions"]],
            "agent": dict(meta.get("agent") or {})}


def policy_tensors(state: Mapping[str, torch.Tensor], modules: Sequence[str] = POLICY_MODULES
                   ) -> dict[str, torch.Tensor]:
    """The tensors of `modules` (default actor and encoder) in an agent's state dict (targets and
    the rest left out)."""
    prefixes = tuple(f"{m}." for m in modules)
    return {k: v for k, v in state.items() if k.startswith(prefixes)}


def acting_networks(obs_spec: Mapping[str, Sequence[int]], action_dim: int, num_instructions: int,
                    cfg: CalQLConfig) -> tuple[ObsEncoder, TanhGaussianActor]:
    """The encoder and actor `CalQL(obs_spec, action_dim, cfg, num_instructions=...)` builds."""
    spec = {k: tuple(int(x) for x in v) for k, v in obs_spec.items()}
    encoder = ObsEncoder(spec, num_instructions, cfg.instruction_dim, cfg.encoder, cfg.encoder_latent_dim,
                         cfg.conv_strides, cfg.aug_pad, cfg.obs_clip, frozen_cnn=cfg.encoder_frozen)
    return encoder, TanhGaussianActor(encoder.out_dim, int(action_dim), cfg.actor_hidden)


def _acting_modules(obs_spec: Mapping[str, Sequence[int]], action_dim: int, num_instructions: int,
                    cfg: CalQLConfig) -> dict[str, torch.nn.Module]:
    """The modules of `policy_modules(cfg)`, built as CalQL builds them."""
    encoder, actor = acting_networks(obs_spec, action_dim, num_instructions, cfg)
    if cfg.policy != "diffusion":
        out = {"encoder": encoder, "actor": actor}
        if cfg.discrete_gripper:  # the critics pick the gripper
            out["critic"] = EnsembleCritic(encoder.out_dim, int(action_dim), cfg.num_critics, cfg.critic_hidden,
                                           cfg.critic_layer_norm)
        return out
    D, A, p = encoder.out_dim, int(action_dim), PARLConfig.from_dict(cfg.pa_rl)
    out: dict[str, torch.nn.Module] = {"encoder": encoder, "diffusion": DiffusionPolicy(D, A, p.hidden,
                                                                                       p.diffusion_steps)}
    if p.act_samples > 1:
        out["critic"] = EnsembleCritic(D, A, cfg.num_critics, cfg.critic_hidden, cfg.critic_layer_norm)
    return out


def weights_payload(agent: Any, meta: Mapping[str, Any], step: int) -> bytes:
    """The learner's weights message: the tensors of `policy_modules` (encoder + actor; PA-RL:
    encoder + diffusion, + critic with K > 1 samples, not the Gaussian actor it does not act
    with) + `policy_meta`."""
    return pack_weights(agent.policy_state_dict(), step, extra={"policy_meta": json.dumps(policy_meta(meta))})


def read_weights_payload(payload: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor], int]:
    """A weights message -> (policy meta, tensors, update step); TransportError if it is not one."""
    data = payload if isinstance(payload, bytes) else bytes(payload)
    sd, step = unpack_weights(data)
    header = json.loads(data[8 : 8 + struct.unpack("<Q", data[:8])[0]])
    meta_json = (header.get("__metadata__") or {}).get("policy_meta")
    if meta_json is None:
        raise TransportError("weights payload has no policy_meta")
    return json.loads(meta_json), sd, step


# the agent settings that change what the encoder and actor compute from an observation
ACTING_CONFIG = ("encoder", "encoder_latent_dim", "conv_strides", "encoder_frozen", "instruction_dim", "obs_clip",
                 "actor_hidden")


# PA-RL: the settings that change what the diffusion policy (and, K > 1, the critics) compute
PA_RL_ACTING_CONFIG = ("diffusion_steps", "hidden", "act_samples")
CRITIC_CONFIG = ("num_critics", "critic_hidden", "critic_layer_norm")


def _acting_settings(cfg: CalQLConfig) -> dict[str, Any]:
    out = {k: getattr(cfg, k) for k in (*ACTING_CONFIG, "policy", "discrete_gripper")}
    if cfg.discrete_gripper:
        out.update({k: getattr(cfg, k) for k in CRITIC_CONFIG})
    if cfg.policy == "diffusion":
        p = PARLConfig.from_dict(cfg.pa_rl)
        out.update({f"pa_rl.{k}": getattr(p, k) for k in PA_RL_ACTING_CONFIG})
        if p.act_samples > 1:
            out.update({k: getattr(cfg, k) for k in CRITIC_CONFIG})
    return out


def _acting_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """What differs between two policy metas in a way that changes acting (names the keys)."""
    diff = [k for k in _META_KEYS if a[k] != b[k]]
    sa, sb = (_acting_settings(CalQLConfig.from_dict(m["agent"])) for m in (a, b))
    return diff + [f"agent.{k}" for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]


def _set_threads(threads: int | None) -> None:
    if threads is not None and int(threads) > 0 and torch.get_num_threads() != int(threads):
        torch.set_num_threads(int(threads))


class ActingPolicy:
    """Encoder + actor + instruction vocabulary; `act(obs, instruction, explore_temperature, rng)`
    -> action (A,) in [-1, 1]. See the module docstring.

    PA-RL (agent.policy=diffusion): encoder + diffusion base policy instead of the actor; with
    pa_rl.act_samples K > 1 also the online critic ensemble (`critic.*` tensors: forward only, in
    eval mode, no target networks, no optimiser), to act with the best of K samples by the
    minimum over the critics of Q, as PA-RL acts. K = 1: no critics. `modules` names what it holds."""

    def __init__(self, meta: Mapping[str, Any], weights: Mapping[str, torch.Tensor] | None = None, step: int = 0,
                 device: str | torch.device = "cpu", threads: int | None = 1):
        _set_threads(threads)
        self.meta = policy_meta(meta)
        self.obs_spec = {k: tuple(v) for k, v in self.meta["obs_spec"].items()}
        self.action_dim = self.meta["action_dim"]
        self.instructions = list(self.meta["instructions"])
        self.vocab = {s: i for i, s in enumerate(self.instructions)}
        self.num_instructions = max(1, len(self.instructions))
        self.device = torch.device(device)
        cfg = CalQLConfig.from_dict(self.meta["agent"])
        self.modules = policy_modules(cfg)
        self.act_samples = PARLConfig.from_dict(cfg.pa_rl).act_samples if cfg.policy == "diffusion" else 1
        built = _acting_modules(self.obs_spec, self.action_dim, self.num_instructions, cfg)
        for m in built.values():
            m.to(self.device).eval().requires_grad_(False)
        self.encoder: ObsEncoder = built["encoder"]
        self.actor: TanhGaussianActor | None = built.get("actor")  # None with PA-RL
        self.diffusion: DiffusionPolicy | None = built.get("diffusion")  # PA-RL's base policy
        self.critic: EnsembleCritic | None = built.get("critic")  # PA-RL with act_samples > 1, discrete_gripper
        self.discrete_gripper = cfg.discrete_gripper
        self.step = int(step)
        if weights is not None:
            self.load_weights(weights, step)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
                        threads: int | None = 1) -> ActingPolicy:
        """The policy of a run folder, its checkpoints folder or one checkpoint folder (the newest
        complete checkpoint); reads meta.json and the tensors of `policy_modules` only."""
        from safetensors import safe_open

        from robot_calql.train import checkpoint as ckpt

        folder = ckpt.find_checkpoint(path)
        meta = ckpt.load_meta(folder)
        prefixes = tuple(f"{m}." for m in policy_modules(CalQLConfig.from_dict(policy_meta(meta)["agent"])))
        try:
            with safe_open(str(folder / ckpt.WEIGHTS), framework="pt", device="cpu") as f:
                sd = {k: f.get_tensor(k) for k in f.keys() if k.startswith(prefixes)}
        except Exception as e:  # safetensors raises its own error types
            raise ckpt.CheckpointError(f"{folder / ckpt.WEIGHTS}: unreadable ({e})") from None
        return cls(meta, sd, int(meta.get("step", 0)), device, threads)

    @classmethod
    def from_agent(cls, agent: Any, instructions: Sequence[str], step: int = 0,
                   threads: int | None = 1) -> ActingPolicy:
        """A copy of a CalQL agent's acting modules, on the agent's device; `instructions` is
        the vocabulary in id order (the agent only knows how many there are)."""
        if max(1, len(instructions)) != agent.num_instructions:
            raise ValueError(f"{len(instructions)} instructions given, the agent was built for "
                             f"{agent.num_instructions}")
        meta = {"obs_spec": {k: list(v) for k, v in agent.obs_spec.items()}, "action_dim": agent.action_dim,
                "instructions": list(instructions), "agent": dataclasses.asdict(agent.cfg)}
        return cls(meta, agent.policy_state_dict(), step, agent.device, threads)

    @classmethod
    def from_payload(cls, payload: Any, device: str | torch.device = "cpu", threads: int | None = 1) -> ActingPolicy:
        """The policy in a weights message (`weights_payload`)."""
        meta, sd, step = read_weights_payload(payload)
        return cls(meta, sd, step, device, threads)

    # ------------------------------------------------------------------ weights
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors of the modules it holds, named as in `CalQL.policy_state_dict()` (PA-RL:
        without the actor's)."""
        return {f"{name}.{k}": v for name in self.modules for k, v in getattr(self, name).state_dict().items()}

    def load_weights(self, weights: Any, step: int | None = None) -> int:
        """Take new weights; returns the policy's update step.

        `weights`: a weights message (bytes-like; its policy_meta must describe this policy, else
        a ValueError: build a new one with `from_payload`), or a state dict: a policy's or a whole
        agent's (only the tensors of `modules` are taken). Every tensor of `modules` must be
        there with this policy's shape (CheckpointError naming the tensor). In place: not
        while another thread acts with this policy (the policy node builds a new policy per
        message in its decoder thread and swaps the reference instead)."""
        if isinstance(weights, Mapping):
            sd = policy_tensors(weights, self.modules)
        else:
            meta, sd, step = read_weights_payload(weights)
            sd = policy_tensors(sd, self.modules)
            diff = _acting_differences(self.meta, policy_meta(meta))
            if diff:
                raise ValueError(f"weights for another policy (different {diff}): build a new one (from_payload)")
        expected = self.state_dict()
        missing, unexpected = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
        if missing or unexpected:
            raise CheckpointError(f"policy weights do not match this policy: missing {missing[:5]}, unexpected "
                                  f"{unexpected[:5]} (different encoder or observation mode?)")
        for k, v in expected.items():
            if tuple(sd[k].shape) != tuple(v.shape):
                raise CheckpointError(f"policy weights: tensor '{k}' has shape {tuple(sd[k].shape)}, this policy "
                                      f"needs {tuple(v.shape)} (observation spec, action dimension, instruction "
                                      "count or network sizes differ)")
        for name in self.modules:
            n = len(name) + 1
            getattr(self, name).load_state_dict({k[n:]: v for k, v in sd.items() if k.startswith(name + ".")})
        if step is not None:
            self.step = int(step)
        return self.step

    # ------------------------------------------------------------------ acting
    def instruction_id(self, instruction: str | int) -> int:
        """The id of an instruction (a string of the vocabulary, or an id); UnknownInstructionError
        naming it and the known ones otherwise."""
        if isinstance(instruction, str):
            if instruction in self.vocab:
                return self.vocab[instruction]
        elif isinstance(instruction, (int, np.integer)) and not isinstance(instruction, bool):
            if 0 <= int(instruction) < self.num_instructions:
                return int(instruction)
        raise UnknownInstructionError(f"instruction {instruction!r} unknown to the policy (it knows "
                                      f"{self.instructions})")

    @torch.inference_mode()
    def act(self, obs: Mapping[str, Any], instruction: str | int | None = None,
            explore_temperature: float | Sequence[float] | np.ndarray = 0.0,
            rng: torch.Generator | None = None) -> np.ndarray:
        """Action (A,) float32 in [-1, 1] for one observation (the spec's keys; images uint8
        HxWx3). `instruction`: a string of the vocabulary or an id (None: `obs["instruction"]`,
        which a one-instruction policy may lack). `explore_temperature`: 0 acts with the policy's
        mean, > 0 samples around it (one number or one per action dimension, as CalQL.act; PA-RL
        samples at the largest of them, as CalQL.act does). `rng`: a torch.Generator for the
        noise (None: torch's global one)."""
        temp = exploration_temperature(explore_temperature, self.action_dim)
        x: dict[str, torch.Tensor] = {}
        for k, shape in self.obs_spec.items():
            if k not in obs:
                raise ObsSpecError(f"observation lacks '{k}' (policy spec keys: {sorted(self.obs_spec)})")
            t = torch.as_tensor(np.asarray(obs[k]), device=self.device)
            if tuple(t.shape) != shape:
                raise ObsSpecError(f"observation '{k}' has shape {tuple(t.shape)}, the policy expects {shape}")
            x[k] = t.unsqueeze(0)
        if instruction is None:
            instruction = obs.get("instruction")
        if instruction is not None:
            i = self.instruction_id(instruction)
        elif self.encoder.instruction is not None:
            raise UnknownInstructionError(f"no instruction given (the policy knows {self.instructions})")
        if self.encoder.instruction is not None:
            x["instruction"] = torch.tensor([i], dtype=torch.int64, device=self.device)
        f = self.encoder(x)
        if self.diffusion is not None:
            q_fn = self._min_q if self.critic is not None else None
            a = act_best_of(self.diffusion, f, self.act_samples, float(temp.max()), q_fn, rng)
        elif not temp.any():
            a = self.actor.deterministic(f)
        else:
            mean, log_std = self.actor.dist_params(f)
            eps = torch.randn(mean.shape, generator=rng, device=mean.device, dtype=mean.dtype)
            a = torch.tanh(mean + torch.as_tensor(temp, device=mean.device, dtype=mean.dtype) * log_std.exp() * eps)
        if self.discrete_gripper:
            a = best_gripper(a.float(), lambda c: self._min_q(f, c))
        return a[0].float().cpu().numpy()

    def _min_q(self, f: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Min over the critics of Q(s, a) for features f (B, D) and actions (B, K, A): (B, K)."""
        return self.critic(f, actions).float().amin(0)


__all__ = ["ActingPolicy", "UnknownInstructionError", "acting_networks", "policy_meta", "policy_modules",
           "policy_tensors", "read_weights_payload", "weights_payload"]
