"""Pieces the pretrain and finetune loops share: observation mode, instruction vocabulary,
building the agent from a config, and turning environment observations into agent inputs.

Observation modes (config key `obs`):
- `state`: the stand-in's privileged state vector (fast; simulation only),
- `pixels`: the camera image (uint8 H x W x 3) plus proprio, through the agent's CNN encoder.
Both add the instruction as an integer index into the run's instruction vocabulary
(`InstructionVocab`), which is stored in every checkpoint so a fine-tuning run maps strings to
the same indices.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from omegaconf import DictConfig, OmegaConf

from robot_calql.config import ConfigError
from robot_calql.data.dataset import Dataset, Episode
from robot_calql.data.replay import InstructionVocab

log = logging.getLogger("robot_calql.train")

OBS_MODES = ("state", "pixels")


def check_obs_mode(mode: str) -> str:
    if mode not in OBS_MODES:
        raise ConfigError(f"obs={mode!r}: must be one of {OBS_MODES}")
    return mode


def obs_spec_from_meta(meta: Any, mode: str) -> dict[str, tuple[int, ...]]:
    """The agent's obs_spec for a dataset (DatasetMeta) in observation mode `mode`."""
    check_obs_mode(mode)
    if mode == "state":
        if meta.state_dim is None:
            raise ConfigError("obs=state, but the dataset has no privileged state (real-robot data?): use obs=pixels")
        return {"state": (int(meta.state_dim),)}
    if meta.image_shape is None:
        raise ConfigError("obs=pixels, but the dataset has no images (collected with image_size=0?): use obs=state")
    shape = tuple(int(x) for x in meta.image_shape)
    # every camera of the dataset (image, then image_<name> per extra camera) goes to the agent
    return {**{k: shape for k in meta.image_keys}, "proprio": (int(meta.proprio_dim),)}


def agent_obs(obs: dict[str, Any], spec: dict[str, tuple[int, ...]], vocab: InstructionVocab) -> dict[str, Any]:
    """One environment observation -> the agent's input dict (no batch dimension)."""
    out = {k: np.asarray(obs[k]) for k in spec}
    out["instruction"] = np.int64(vocab.id(obs["instruction"]))
    return out


class DatasetSubset:
    """Some episodes of a Dataset, with the attributes OfflineReplay reads (hold-out splits)."""

    def __init__(self, dataset: Dataset, indices: list[int]):
        self._ds, self._idx = dataset, list(indices)
        self.root, self.meta = dataset.root, dataset.meta
        self.episode_dirs = [dataset.episode_dirs[i] for i in self._idx]
        self.infos = [dataset.infos[i] for i in self._idx]
        self.lengths = dataset.lengths[self._idx]

    def __len__(self) -> int:
        return len(self._idx)

    def __getitem__(self, i: int) -> Episode:
        return self._ds[self._idx[i]]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


def shaped_returns(rewards: Any, terminals: Any, cfg_agent: Any) -> np.ndarray:
    """Discounted return-to-go of one episode's raw rewards as training sees them: shaped with the
    agent's reward_scale / reward_bias, never-successful episodes filled (failure_reward)."""
    from robot_calql.data.returns import mc_return_to_go

    r = np.asarray(rewards, dtype=np.float32) * cfg_agent.reward_scale + cfg_agent.reward_bias
    return mc_return_to_go(r, np.asarray(terminals, dtype=bool), cfg_agent.discount,
                           failure_reward=cfg_agent.failure_reward)


class NonFiniteTrainingError(ValueError):
    """An update gave a NaN or infinite loss, or the weights to save are not finite. The message
    names the update, the values and the last good checkpoint; nothing non-finite is saved."""


def check_losses(metrics: Mapping[str, float], where: str, last_good: Any = None) -> None:
    """Raise NonFiniteTrainingError if any loss term (`loss_*`) of an update's metrics is NaN or
    infinite. `where` names the update (e.g. "update 57"); `last_good` is the newest checkpoint
    on disk (None: none written yet). The metrics are plain floats, so this costs microseconds."""
    bad = {k: v for k, v in metrics.items() if k.startswith("loss") and not math.isfinite(v)}
    if bad:
        raise NonFiniteTrainingError(
            f"{where} gave a non-finite loss ({', '.join(f'{k}={v}' for k, v in bad.items())}); training stopped "
            f"and these weights were not saved. {_last_good(last_good)} Check the data (NaN or huge values "
            "in rewards, actions or observations) and the learning rates.")


def check_finite_state(state: Mapping[str, Any], where: str, last_good: Any = None) -> None:
    """Raise NonFiniteTrainingError naming the first tensor of `state` (agent.state_dict()) with a
    NaN or infinite value; call it before writing a checkpoint (a few ms)."""
    import torch

    for k, v in state.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise NonFiniteTrainingError(f"{where}: tensor '{k}' of the agent has NaN or infinite values; the "
                                         f"checkpoint was not written. {_last_good(last_good)}")


def _last_good(path: Any) -> str:
    return f"The last good checkpoint is {path}." if path else "No checkpoint of this run was written."


def updates_owed(transitions: int, updates: int, online_steps: int, utd: float, min_online: int) -> int:
    """Updates a learner owes after `transitions` received transitions and `updates` done: `utd` per
    transition, none until the online buffer holds `min_online` steps (the owed ones then run at
    once). The ROS learner's schedule, and benchmarks that replay a session through it."""
    if online_steps < min_online:
        return 0
    return max(0, int(float(utd) * transitions - updates))


def online_calibration(agent: Any, online: Any, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(Q(s, pi(s)), MC return) over the last `n` finished steps of an OnlineReplay: the policy's
    own recent episodes (finetune's and the ROS learner's calibration picture)."""
    b = online.recent_numpy(n)
    keep = np.isfinite(b["mc_return"])
    if not keep.any():
        return np.zeros(0), np.zeros(0)
    obs = {k: np.ascontiguousarray(v[keep]) for k, v in b["obs"].items()}
    return np.asarray(agent.q_values(obs), dtype=np.float64), b["mc_return"][keep].astype(np.float64)


def agent_config(cfg: DictConfig, base: dict[str, Any] | None = None) -> Any:
    """CalQLConfig from `base` (e.g. a checkpoint's agent settings) updated with `cfg.agent`.

    Unknown keys are a ConfigError naming them (CalQLConfig.from_dict)."""
    from robot_calql.agent import CalQLConfig

    d = dict(base or {})
    d.update(OmegaConf.to_container(cfg.agent, resolve=True) or {})  # type: ignore[arg-type]
    return CalQLConfig.from_dict(d)


def agent_from_meta(meta: Mapping[str, Any], device: str = "cpu") -> Any:
    """The CalQL agent a checkpoint's meta describes (obs_spec, action_dim, instructions, agent
    settings), untrained; an unknown or deleted agent setting is a ConfigError naming it."""
    from robot_calql.agent import CalQL, CalQLConfig

    spec = {k: tuple(int(x) for x in v) for k, v in meta["obs_spec"].items()}
    return CalQL(spec, int(meta["action_dim"]), CalQLConfig.from_dict(meta.get("agent") or {}), device=device,
                 num_instructions=max(1, len(meta["instructions"])))


def build_agent(spec: dict[str, tuple[int, ...]], action_dim: int, num_instructions: int, cfg: DictConfig,
                base: dict[str, Any] | None = None) -> Any:
    """The CalQL agent for observation spec `spec` (without the instruction), on cfg.device."""
    from robot_calql.agent import CalQL

    return CalQL(spec, action_dim, agent_config(cfg, base), device=str(cfg.device),
                 num_instructions=int(num_instructions))


def temperature_setting(cfg: DictConfig, key: str, action_dim: int | None) -> np.ndarray:
    """cfg[key] as per-axis exploration temperatures (one number or one per action axis);
    a ConfigError names the key and the problem (action_dim None: check the values only)."""
    from robot_calql.agent import exploration_temperature

    value = cfg[key]
    v = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    try:
        return exploration_temperature(v, action_dim)
    except ValueError as e:
        raise ConfigError(f"{key}={v}: {e}") from None


def set_seed(seed: int) -> np.random.Generator:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def set_threads(n: int) -> None:
    if n and n > 0:
        import torch

        torch.set_num_threads(int(n))


class GracefulStop:
    """Ctrl-C handling for training loops.

    The first Ctrl-C (SIGINT) only sets `requested`; the loop checks it at the end of every step
    and then saves a checkpoint at a clean step boundary, so `resume=true` continues exactly.
    A second Ctrl-C raises KeyboardInterrupt at once (the loop still saves what it has).
    Outside the main thread (no signal handlers there) it does nothing.
    """

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: saving a checkpoint after this step (Ctrl-C again to stop at once)", file=sys.stderr,
              flush=True)

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None


class _Closable(Protocol):
    def close(self) -> None: ...


def finish_early(exc: BaseException, bar: _Closable, logger: _Closable, save: Callable[[], Path], where: str,
                 hint: str) -> int:
    """End a training loop that stopped before its last step; call it as
    `except (KeyboardInterrupt, NonFiniteTrainingError) as e: return finish_early(e, ...)`.

    Closes the progress bar and the logger. A KeyboardInterrupt (Ctrl-C) then saves a checkpoint
    with `save()`, prints "interrupted at <where>; checkpoint saved to <path> <hint>" and returns
    130; any other exception (a NonFiniteTrainingError) is raised again with nothing saved.
    """
    bar.close()
    if not isinstance(exc, KeyboardInterrupt):
        logger.close()
        raise exc
    path = save()
    logger.close()
    print(f"\ninterrupted at {where}; checkpoint saved to {path} {hint}")
    return 130
