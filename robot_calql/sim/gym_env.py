"""Any gymnasium env as a robot_calql env: observation dicts, actions in [-1, 1], an instruction.

    from robot_calql.sim.gym_env import make_gym_env, episodes_from_list
    env = make_gym_env("InvertedPendulum-v5")         # or wrap_env(gymnasium.make(...))
    obs, _ = env.reset(seed=0)                         # {"state": float32 (4,), "instruction": "..."}
    obs, r, terminated, truncated, info = env.step(np.zeros(1))   # the action is in [-1, 1]

Observations (`GymAdapter.obs_spec`):
- a Box observation becomes `{"state": float32 (D,)}` (flattened);
- a Dict observation with an image (a uint8 Box of shape (H, W, 3); `image_key` picks one when
  there are several; the others are dropped) becomes `{"image": uint8 (H, W, 3), "proprio":
  float32 (P,)}`, `proprio` the other Box entries flattened and concatenated in the Dict's key
  order (P may be 0);
- a Dict observation without an image becomes `{"state": ...}`, all its Box entries concatenated;
- a uint8 (H, W, 3) Box observation becomes `{"image": ..., "proprio": float32 (0,)}`.
Text entries are dropped; every observation carries the adapter's `instruction` string instead
(the agent conditions on it; by default the env id). Other spaces are a GymEnvError naming them.

Actions: the agent acts in Box(-1, 1); `to_env_action` maps [-1, 1] linearly onto the env's
[low, high] (clipping first) and `from_env_action` maps back. An action space with an infinite
bound, or one that is not a 1-D Box, is a GymEnvError naming the env, the axis and the bound.

Offline data: `episodes_from_list(episodes, env)` turns episodes recorded with the raw env
(observations, actions in the env's units, rewards, terminals) into an `EpisodeList`, which
OfflineReplay reads like a dataset folder; `EpisodeList.write(folder)` saves it as one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from robot_calql.data.dataset import DatasetMeta, DatasetWriter, Episode

ACTION_TOL = 1e-6  # relative slack for recorded actions at the env's bounds (float rounding)


class GymEnvError(ValueError):
    """An env, a space or recorded data that the adapter cannot take; the message names it."""


def _env_name(env: gym.Env) -> str:
    spec = getattr(env, "spec", None)
    return spec.id if spec is not None else type(env.unwrapped).__name__


def _is_image(space: gym.Space) -> bool:
    return (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
            and space.shape[2] == 3)


class GymAdapter(gym.Wrapper):
    """A gymnasium env seen as robot_calql sees its stand-in (see the module docstring)."""

    def __init__(self, env: gym.Env, instruction: str | None = None, image_key: str | None = None):
        super().__init__(env)
        self.name = _env_name(env)
        self.instruction = str(instruction) if instruction else self.name
        self._image_key, self._vector_keys, self._layout = self._observation_layout(env.observation_space, image_key)
        self.obs_spec: dict[str, tuple[int, ...]] = {}
        if self._layout == "state":
            self.obs_spec["state"] = (self._vector_size(env.observation_space),)
        else:
            img = env.observation_space if self._image_key is None else env.observation_space[self._image_key]
            self.obs_spec["image"] = tuple(int(x) for x in img.shape)
            self.obs_spec["proprio"] = (self._vector_size(env.observation_space),)
        self.low, self.high = self._action_bounds(env.action_space)
        self.action_dim = int(self.low.shape[0])
        spaces: dict[str, gym.Space] = {
            k: (gym.spaces.Box(0, 255, v, np.uint8) if k == "image" else gym.spaces.Box(-np.inf, np.inf, v, np.float32))
            for k, v in self.obs_spec.items()}
        charset = frozenset(self.instruction) | frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
        spaces["instruction"] = gym.spaces.Text(max_length=max(1, len(self.instruction)), charset=charset)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.action_dim,), np.float32)

    # -- spaces
    def _observation_layout(self, space: gym.Space, image_key: str | None) -> tuple[str | None, list[str], str]:
        """(image key, vector keys, "state" or "pixels") of an observation space."""
        if isinstance(space, gym.spaces.Box):
            if image_key is not None:
                raise GymEnvError(f"{self.name}: image_key={image_key!r}, but the observation is a single Box, not a Dict")
            return None, [], "pixels" if _is_image(space) else "state"
        if not isinstance(space, gym.spaces.Dict):
            raise GymEnvError(f"{self.name}: observation space {space} is not a Box or a Dict of Boxes")
        images = [k for k, s in space.spaces.items() if _is_image(s)]
        if image_key is not None and image_key not in images:
            raise GymEnvError(f"{self.name}: image_key={image_key!r} is not a uint8 (H, W, 3) entry of the observation "
                              f"(images: {images or 'none'}; keys: {list(space.spaces)})")
        if image_key is None and len(images) > 1:
            raise GymEnvError(f"{self.name}: the observation has several images {images}: choose one with image_key=")
        key = image_key or (images[0] if images else None)
        vectors = []
        for k, s in space.spaces.items():
            if k in images or isinstance(s, gym.spaces.Text):
                continue
            if not isinstance(s, gym.spaces.Box):
                raise GymEnvError(f"{self.name}: observation entry {k!r} is {s}; only Box and Text entries are "
                                  "supported (an image is a uint8 Box of shape (H, W, 3))")
            vectors.append(k)
        return key, vectors, "state" if key is None else "pixels"

    def _vector_size(self, space: gym.Space) -> int:
        if isinstance(space, gym.spaces.Box):
            return 0 if self._layout == "pixels" else int(np.prod(space.shape))
        return sum(int(np.prod(space[k].shape)) for k in self._vector_keys)

    def _action_bounds(self, space: gym.Space) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise GymEnvError(f"{self.name}: action space {space} is not a 1-D Box; Cal-QL acts in continuous actions")
        low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
        for name, bound in (("low", low), ("high", high)):
            bad = np.flatnonzero(~np.isfinite(bound))
            if len(bad):
                raise GymEnvError(f"{self.name}: action space bound {name}[{bad[0]}] = {bound[bad[0]]} is not finite; "
                                  "actions are rescaled from [-1, 1] to [low, high], so every bound must be finite "
                                  "(wrap the env in gymnasium.wrappers.ClipAction or give it a bounded Box)")
        if np.any(high < low):
            raise GymEnvError(f"{self.name}: action space has high < low on axes {np.flatnonzero(high < low).tolist()}")
        return low, high

    # -- conversions
    def convert_obs(self, raw: Any) -> dict[str, Any]:
        """One raw observation of the env -> {"state"} or {"image", "proprio"}, plus "instruction"."""
        out: dict[str, Any] = {}
        if self._layout == "state" and not isinstance(raw, Mapping):
            out["state"] = np.asarray(raw, dtype=np.float32).reshape(-1)
        elif self._layout == "state":
            out["state"] = self._concat(raw)
        else:
            out["image"] = np.asarray(raw if self._image_key is None else raw[self._image_key], dtype=np.uint8)
            out["proprio"] = self._concat(raw) if isinstance(raw, Mapping) else np.zeros(0, np.float32)
        out["instruction"] = self.instruction
        return out

    def _concat(self, raw: Mapping[str, Any]) -> np.ndarray:
        parts = [np.asarray(raw[k], dtype=np.float32).reshape(-1) for k in self._vector_keys]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def to_env_action(self, action: Any) -> np.ndarray:
        """An action in [-1, 1] (clipped first) -> the env's [low, high], in the env's dtype."""
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        if a.shape != (self.action_dim,):
            raise GymEnvError(f"{self.name}: action has shape {a.shape}, expected ({self.action_dim},)")
        env_a = self.low + (a + 1.0) * 0.5 * (self.high - self.low)
        return env_a.astype(self.env.action_space.dtype)

    def from_env_action(self, action: Any) -> np.ndarray:
        """An action in the env's units -> [-1, 1] (float32); outside [low, high] is a GymEnvError."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (self.action_dim,):
            raise GymEnvError(f"{self.name}: action has shape {a.shape}, expected ({self.action_dim},)")
        width = self.high - self.low
        slack = ACTION_TOL * np.maximum(1.0, np.abs(width))
        out = np.flatnonzero((a < self.low - slack) | (a > self.high + slack) | ~np.isfinite(a))
        if len(out):
            i = int(out[0])
            raise GymEnvError(f"{self.name}: action value {a[i]:.6g} on axis {i} is outside the action space "
                              f"[{self.low[i]:.6g}, {self.high[i]:.6g}]")
        u = np.where(width > 0, 2.0 * (a - self.low) / np.where(width > 0, width, 1.0) - 1.0, 0.0)
        return np.clip(u, -1.0, 1.0).astype(np.float32)

    # -- gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict]:
        raw, info = self.env.reset(seed=seed, options=options)
        return self.convert_obs(raw), info

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict]:
        raw, reward, terminated, truncated, info = self.env.step(self.to_env_action(action))
        return self.convert_obs(raw), float(reward), bool(terminated), bool(truncated), info


def wrap_env(env: gym.Env, instruction: str | None = None, image_key: str | None = None) -> GymAdapter:
    """`env` (a gymnasium env) as a GymAdapter; an adapter is returned as it is."""
    if isinstance(env, GymAdapter):
        return env
    return GymAdapter(env, instruction=instruction, image_key=image_key)


def make_gym_env(env_id: str, max_episode_steps: int | None = None, instruction: str | None = None,
                 image_key: str | None = None, **kwargs: Any) -> GymAdapter:
    """gymnasium.make(env_id, ...) wrapped; an unknown id or a failing make is a GymEnvError."""
    extra = {} if max_episode_steps is None else {"max_episode_steps": int(max_episode_steps)}
    try:
        env = gym.make(env_id, **extra, **kwargs)
    except gym.error.Error as e:
        raise GymEnvError(f"env={env_id}: gymnasium cannot make it ({e})") from None
    except ModuleNotFoundError as e:
        raise GymEnvError(f"env={env_id}: gymnasium needs the module '{e.name}' for it; install the env's "
                          "package (MuJoCo envs: pip install 'gymnasium[mujoco]')") from None
    try:
        return GymAdapter(env, instruction=instruction, image_key=image_key)
    except GymEnvError:
        env.close()
        raise


# ----------------------------------------------------------------------------- offline data in memory
class EpisodeList:
    """Episodes held in memory with the attributes OfflineReplay reads from a Dataset (root, meta,
    episode_dirs, infos, lengths, len, indexing, iteration)."""

    def __init__(self, episodes: Sequence[Episode], meta: DatasetMeta, name: str = "episodes in memory"):
        self.root = name
        self.meta = meta
        self.episodes = list(episodes)
        self.episode_dirs = [f"{name}[{i}]" for i in range(len(self.episodes))]
        self.infos = [{"length": len(e), "instruction": e.instruction, "task": e.task, "success": e.success,
                       "source": e.source} for e in self.episodes]
        self.lengths = np.array([len(e) for e in self.episodes], dtype=np.int64)
        self.verify()

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, i: int) -> Episode:
        return self.episodes[i]

    def __iter__(self) -> Iterator[Episode]:
        return iter(self.episodes)

    @property
    def num_steps(self) -> int:
        return int(self.lengths.sum())

    def verify(self) -> None:
        """Every episode against the metadata (DatasetError naming the first problem)."""
        for i, ep in enumerate(self.episodes):
            ep.validate(self.meta, where=self.episode_dirs[i])

    def write(self, root: str | os.PathLike, overwrite: bool = False) -> Path:
        """Save as a dataset folder (docs/dataset_format.md) that `finetune dataset=<folder>` reads."""
        writer = DatasetWriter(root, self.meta, overwrite=overwrite)
        for ep in self.episodes:
            writer.write_episode(ep)
        return Path(root)


def _steps(x: Any, n: int, what: str, where: str) -> np.ndarray:
    a = np.asarray(x)
    if a.shape[:1] != (n,):
        raise GymEnvError(f"{where}: '{what}' has {a.shape[0] if a.ndim else 'no'} entries, expected {n}")
    return a


def episodes_from_list(episodes: Sequence[Mapping[str, Any]], env: gym.Env | GymAdapter,
                       control_hz: float = 0.0) -> EpisodeList:
    """Episodes recorded with the raw `env` -> an EpisodeList in the adapter's observations and
    [-1, 1] actions. Each episode is a mapping with
    `observations`: T+1 observations (an array for a Box env; a dict of arrays, or a list of
    dicts, for a Dict env), `actions`: (T, A) in the env's units, `rewards`: (T,), and optionally
    `terminals`: (T,) bool (true only at a last step where the episode really ended; absent: the
    episode was cut by a time limit). A problem is a GymEnvError naming the episode and field."""
    adapter = wrap_env(env)
    out: list[Episode] = []
    for i, raw in enumerate(episodes):
        where = f"episode {i}"
        missing = [k for k in ("observations", "actions", "rewards") if k not in raw]
        if missing:
            raise GymEnvError(f"{where}: missing {missing} (expected observations, actions, rewards, terminals)")
        rewards = np.asarray(raw["rewards"], dtype=np.float32).reshape(-1)
        T = len(rewards)
        if T < 1:
            raise GymEnvError(f"{where}: no steps")
        actions = _steps(raw["actions"], T, "actions", where)
        terminals = (np.zeros(T, bool) if raw.get("terminals") is None
                     else _steps(raw["terminals"], T, "terminals", where).astype(bool))
        frames = _frames(raw["observations"], T + 1, where)
        try:
            act = np.stack([adapter.from_env_action(a) for a in actions])
            obs = [adapter.convert_obs(o) for o in frames]
        except GymEnvError as e:
            raise GymEnvError(f"{where}: {e}") from None
        arrays = {k: np.stack([o[k] for o in obs]) for k in adapter.obs_spec}
        state = arrays.get("state")
        proprio = arrays.get("proprio", np.zeros((T + 1, 0), np.float32))
        out.append(Episode(proprio=proprio, action=act, reward=rewards, terminal=terminals,
                           instruction=adapter.instruction, image=arrays.get("image"), state=state,
                           task=adapter.name, success=False, source="prior"))
    return EpisodeList(out, dataset_meta(adapter, control_hz))


def _frames(observations: Any, n: int, where: str) -> list[Any]:
    """T+1 per-step observations from an array, a dict of arrays or a list (each checked for count)."""
    if isinstance(observations, Mapping):
        cols = {k: _steps(v, n, f"observations[{k!r}]", where) for k, v in observations.items()}
        return [{k: v[t] for k, v in cols.items()} for t in range(n)]
    seq = observations if isinstance(observations, (list, tuple)) else np.asarray(observations)
    if len(seq) != n:
        raise GymEnvError(f"{where}: 'observations' has {len(seq)} entries, expected {n} (one more than the "
                          "actions: the observation after the last step is included)")
    return list(seq)


def dataset_meta(adapter: GymAdapter, control_hz: float = 0.0) -> DatasetMeta:
    """The DatasetMeta of data in the adapter's observations (state or image + proprio)."""
    fps = control_hz or float(adapter.env.metadata.get("render_fps") or 0.0)
    spec = adapter.obs_spec
    return DatasetMeta(control_hz=fps, action_dim=adapter.action_dim,
                       proprio_dim=int(spec["proprio"][0]) if "proprio" in spec else 0,
                       state_dim=int(spec["state"][0]) if "state" in spec else None,
                       image_shape=tuple(spec["image"]) if "image" in spec else None,  # type: ignore[arg-type]
                       robot=adapter.name, camera="env" if "image" in spec else "none",
                       action_space=f"gym_box_rescaled:{adapter.name}")
