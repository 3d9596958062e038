"""Replay for Cal-QL: the offline dataset, an online buffer, and their exact per-batch mix.

Both buffers store observation FRAMES once and index them from the steps: step t of an
episode uses frame t as its observation and frame t+1 as its next observation, so an image is
never stored twice. Every step carries its Monte-Carlo return-to-go (`mc_return`, see
returns.py), computed once the episode it belongs to has ended; online steps of an episode
still in progress are not sampled.

Rewards are stored after `reward * reward_scale + reward_bias` (Cal-QL's reward shaping, e.g.
antmaze r*10-5), and MC returns are computed from the scaled rewards, as the official code
does. With `takeover_penalty`, the policy's step before each human takeover (a step flagged
`intervention` after one that is not) carries that much less reward, and the returns before it
include it (returns.py `episode_rewards_and_returns`). `replay_kwargs(agent_config)` passes
these settings from the agent config.

A batch is the agent's contract (docs/architecture.md): `obs` / `next_obs` dicts with the
observation keys plus `instruction` (int64 ids), `action`, `reward`, `done` (terminal, not
truncation), `mc_return`, all torch tensors on the requested device; plus `online` (bool, which
rows came from the online buffer).

Latent cache (an agent with a frozen image encoder, `CalQL.frame_encoder()`): given a
`frame_encoder`, a buffer stores each frame's image latent (`image_latent`, float32 (L,)) in
place of the image, and batches carry that key instead of `image`. The offline buffer built with
one encodes each episode's frames as it loads them (never holding the dataset's images); one
built without it (pre-training, whose encoder trains on the images first) encodes every frame
once later (`cache_latents`, in chunks, then frees the images); the online buffer encodes each
new frame once as `add` stores it.

Several cameras: the extra cameras' images (`image_<name>`, robot_calql.control.cameras) are frame
keys like `image`, stored once per frame and batched under their own keys. With the latent
cache one `image_latent` per frame stands for every camera: the frame encoder's latents of all
cameras, concatenated in its `camera_keys` order (main first).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from robot_calql.data import IMAGE_LATENT
from robot_calql.data.dataset import Dataset, Episode, is_image_key
from robot_calql.data.returns import episode_rewards_and_returns, n_step_returns, success_rows


class ReplayError(ValueError):
    """Data that cannot go into a replay buffer, or a request it cannot serve (names the problem)."""


def replay_kwargs(cfg: Any) -> dict[str, Any]:
    """The return/reward settings of an agent config (a CalQLConfig: its defaults are the only ones)
    for the buffers."""
    return {
        "discount": float(cfg.discount),
        "reward_scale": float(cfg.reward_scale),
        "reward_bias": float(cfg.reward_bias),
        "failure_reward": cfg.failure_reward,
        "n_step": int(cfg.n_step),
        "takeover_penalty": float(cfg.takeover_penalty),
    }


class InstructionVocab:
    """Instruction string <-> integer id (the agent's embedding row). Save `to_list()` in the
    checkpoint; the same ids must be used for pre-training, fine-tuning and the policy node."""

    def __init__(self, instructions: Sequence[str] = ()):
        self.names: list[str] = []
        self._ids: dict[str, int] = {}
        for s in instructions:
            self.add(s)

    def add(self, s: str) -> int:
        if s not in self._ids:
            self._ids[s] = len(self.names)
            self.names.append(s)
        return self._ids[s]

    def id(self, s: str | int) -> int:
        if isinstance(s, (int, np.integer)):
            if not 0 <= int(s) < len(self.names):
                raise ReplayError(f"instruction id {s} out of range [0, {len(self.names)})")
            return int(s)
        if s not in self._ids:
            raise ReplayError(f"unknown instruction '{s}' (known: {self.names})")
        return self._ids[s]

    def __len__(self) -> int:
        return len(self.names)

    def to_list(self) -> list[str]:
        return list(self.names)

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> InstructionVocab:
        return cls(sorted({i["instruction"] for i in dataset.infos}))


_FRAME_DTYPES = {"image": np.uint8, "proprio": np.float32, "state": np.float32, IMAGE_LATENT: np.float32}


def _is_frame_key(k: str) -> bool:
    """Whether an observation key is stored per frame (image, image_<camera>, proprio, state, latent)."""
    return k in _FRAME_DTYPES or is_image_key(k)


def _frame_dtype(k: str) -> Any:
    return _FRAME_DTYPES[k] if k in _FRAME_DTYPES else np.uint8  # an extra camera's image


def _frame_shapes(obs_spec: Mapping[str, tuple[int, ...]], frame_encoder: Any) -> dict[str, tuple[int, ...]]:
    """Stored shape of each frame key; with a frame encoder the image is stored as its latent."""
    shapes = {k: tuple(v) for k, v in obs_spec.items() if _is_frame_key(k)}
    if frame_encoder is None:
        return shapes
    if "image" not in shapes:
        raise ReplayError(f"a frame encoder (latent cache) needs 'image' in the observation spec, got {sorted(shapes)}")
    cameras = [k for k in shapes if is_image_key(k)]
    encoded = list(_camera_keys(frame_encoder))
    if sorted(cameras) != sorted(encoded):
        raise ReplayError(f"the frame encoder takes the cameras {encoded}, the observation spec has {cameras}")
    for k in cameras:
        if tuple(frame_encoder.image_shape) != shapes[k]:
            raise ReplayError(f"the frame encoder takes {tuple(frame_encoder.image_shape)} images, the observation "
                              f"spec's '{k}' is {shapes[k]}")
    return {(IMAGE_LATENT if k == "image" else k): ((int(frame_encoder.latent_dim),) if k == "image" else v)
            for k, v in shapes.items() if k == "image" or not is_image_key(k)}


def _camera_keys(frame_encoder: Any) -> tuple[str, ...]:
    """The cameras a frame encoder takes, main first (one camera, `image`, unless it says otherwise)."""
    return tuple(getattr(frame_encoder, "camera_keys", ("image",)))


def _encode(frame_encoder: Any, frames: Mapping[str, Any]) -> np.ndarray:
    """The frame encoder's latents of `frames` ({camera key: (N, H, W, 3)})."""
    cams = _camera_keys(frame_encoder)
    return frame_encoder(frames["image"]) if cams == ("image",) else frame_encoder({k: frames[k] for k in cams})


def _source_keys(k: str, frame_encoder: Any) -> tuple[str, ...]:
    """The observation keys a stored frame key is computed from (the latent: every camera)."""
    return _camera_keys(frame_encoder) if k == IMAGE_LATENT else (k,)


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f} MiB"


class _Buffer:
    """Frame + step storage and batch assembly shared by the offline and online buffers."""

    def __init__(self, obs_spec: Mapping[str, Sequence[int]], action_dim: int, num_frames: int, num_steps: int,
                 text_embeddings: np.ndarray | None, device: str | torch.device, seed: int | None,
                 discount: float = 0.99, n_step: int = 1, frame_encoder: Any = None):
        if int(n_step) < 1:
            raise ReplayError(f"n_step must be >= 1, got {n_step}")
        self.discount, self.n_step = float(discount), int(n_step)
        obs_spec = {k: v for k, v in obs_spec.items() if k != "num_instructions"}  # agent-spec extra
        self.obs_spec = {k: tuple(int(x) for x in v) for k, v in obs_spec.items()}
        unknown = {k for k in self.obs_spec if not _is_frame_key(k) and k != "text_embedding"} | (
            {IMAGE_LATENT} & set(self.obs_spec))
        if unknown:
            raise ReplayError(f"observation keys {sorted(unknown)} are not replayable (known: image, image_<camera>, "
                              "proprio, state, text_embedding)")
        if "text_embedding" in self.obs_spec and text_embeddings is None:
            raise ReplayError("obs spec has 'text_embedding' but no text_embeddings table (one row per instruction id) was given")
        self.text_embeddings = None if text_embeddings is None else np.asarray(text_embeddings, dtype=np.float32)
        self.action_dim = int(action_dim)
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)
        self.frame_encoder = frame_encoder
        shapes = _frame_shapes(self.obs_spec, frame_encoder)
        self.frame_keys = list(shapes)
        self.frames = {k: np.zeros((num_frames, *shapes[k]), dtype=_frame_dtype(k)) for k in self.frame_keys}
        self.obs_idx = np.zeros(num_steps, dtype=np.int64)
        self.next_idx = np.zeros(num_steps, dtype=np.int64)
        self.action = np.zeros((num_steps, self.action_dim), dtype=np.float32)
        self.reward = np.zeros(num_steps, dtype=np.float32)
        self.done = np.zeros(num_steps, dtype=np.bool_)
        self.mc_return = np.zeros(num_steps, dtype=np.float32)
        self.instruction = np.zeros(num_steps, dtype=np.int64)
        self.success = np.zeros(num_steps, dtype=np.bool_)  # a step of a success (returns.success_rows)
        self.intervention = np.zeros(num_steps, dtype=np.bool_)  # a human's step (takeover)
        # n-step TD (n_step > 1): reward sum over the window, the frame after it, its terminal, gamma^m
        self.n_reward = np.zeros(num_steps, dtype=np.float32)
        self.n_next_idx = np.zeros(num_steps, dtype=np.int64)
        self.n_done = np.zeros(num_steps, dtype=np.bool_)
        self.n_discount = np.zeros(num_steps, dtype=np.float32)

    @staticmethod
    def nbytes(obs_spec: Mapping[str, Sequence[int]], action_dim: int, num_frames: int, num_steps: int,
               frame_encoder: Any = None) -> int:
        shapes = _frame_shapes({k: tuple(v) for k, v in obs_spec.items() if _is_frame_key(k)}, frame_encoder)
        frame = sum(int(np.prod(v)) * np.dtype(_frame_dtype(k)).itemsize for k, v in shapes.items())
        step = 8 + 8 + 4 * action_dim + 4 + 1 + 4 + 8 + 1 + 1 + (4 + 8 + 1 + 4)  # ... success, intervention, n-step
        return num_frames * frame + num_steps * step

    def _fill_n_step(self, idx: np.ndarray) -> None:
        """The n-step fields of one finished episode's steps (buffer positions `idx`, in order)."""
        sums, m = n_step_returns(self.reward[idx], self.done[idx], self.n_step, self.discount)
        last = idx[np.arange(len(idx)) + m - 1]
        self.n_reward[idx] = sums
        self.n_next_idx[idx] = self.next_idx[last]
        self.n_done[idx] = self.done[last]
        self.n_discount[idx] = self.discount ** m

    def _gather(self, steps: np.ndarray) -> dict[str, Any]:
        """Rows `steps` as a batch; with n_step > 1 the reward, next_obs and done are the n-step
        window's and a per-row `discount` (gamma^m) comes with them."""
        obs: dict[str, np.ndarray] = {}
        nxt: dict[str, np.ndarray] = {}
        n = self.n_step > 1
        oi, ni = self.obs_idx[steps], (self.n_next_idx if n else self.next_idx)[steps]
        for k in self.frame_keys:
            obs[k] = self.frames[k][oi]
            nxt[k] = self.frames[k][ni]
        ins = self.instruction[steps]
        obs["instruction"] = nxt["instruction"] = ins
        if self.text_embeddings is not None and "text_embedding" in self.obs_spec:
            obs["text_embedding"] = nxt["text_embedding"] = self.text_embeddings[ins]
        b = {"obs": obs, "next_obs": nxt, "action": self.action[steps],
             "reward": (self.n_reward if n else self.reward)[steps], "done": (self.n_done if n else self.done)[steps],
             "mc_return": self.mc_return[steps], "success": self.success[steps]}
        if n:
            b["discount"] = self.n_discount[steps]
        return b


def _to_torch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in batch.items():
        if isinstance(v, dict):
            out[k] = _to_torch(v, device)
        else:
            out[k] = torch.from_numpy(np.ascontiguousarray(v)).to(device, non_blocking=True)
    return out


def _concat(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {k: _concat(v, b[k]) if isinstance(v, dict) else np.concatenate([v, b[k]]) for k, v in a.items()}


class OfflineReplay(_Buffer):
    """The whole dataset in memory, with per-episode MC returns. Reads every episode once
    (validating it: shapes, NaN/inf, missing arrays raise DatasetError naming the file).
    Given a `frame_encoder`, each episode's images are encoded as it loads, so only latents are
    ever held (not the whole dataset's images, then latents)."""

    def __init__(self, dataset: Dataset, obs_spec: Mapping[str, Sequence[int]], discount: float = 0.99,
                 reward_scale: float = 1.0, reward_bias: float = 0.0, failure_reward: float | None = None,
                 truncated_value: float = 0.0, vocab: InstructionVocab | None = None,
                 text_embeddings: np.ndarray | None = None, device: str | torch.device = "cpu",
                 seed: int | None = None, progress: bool = True, n_step: int = 1, frame_encoder: Any = None,
                 takeover_penalty: float = 0.0):
        if len(dataset) == 0:
            raise ReplayError(f"{dataset.root}: dataset has no episodes")
        meta = dataset.meta
        obs_spec = {k: v for k, v in obs_spec.items() if k != "num_instructions"}
        for k in obs_spec:
            if _is_frame_key(k) and meta.expected_shape(k, 0) is None:
                raise ReplayError(f"{dataset.root}: the agent needs '{k}' observations but the dataset has none"
                                  + (f" (its extra cameras: {meta.extra_cameras})" if is_image_key(k) else ""))
            if _is_frame_key(k) and tuple(meta.expected_shape(k, 0)[1:]) != tuple(obs_spec[k]):
                raise ReplayError(
                    f"{dataset.root}: '{k}' has shape {meta.expected_shape(k, 0)[1:]}, the agent expects {tuple(obs_spec[k])}"
                )
        _frame_shapes({k: tuple(v) for k, v in obs_spec.items()}, frame_encoder)  # a misfit is named before loading
        self.vocab = vocab or InstructionVocab.from_dataset(dataset)
        n_steps = int(dataset.lengths.sum())
        n_frames = n_steps + len(dataset)
        need = self.nbytes(obs_spec, meta.action_dim, n_frames, n_steps, frame_encoder)
        print(f"offline replay: {len(dataset)} episodes, {n_steps} steps, {n_frames} frames -> {_mib(need)} in memory"
              + (" (images encoded once by the frozen encoder as each episode loads)" if frame_encoder else ""),
              flush=True)
        super().__init__(obs_spec, meta.action_dim, n_frames, n_steps, text_embeddings, device, seed, discount, n_step,
                         frame_encoder)
        f = s = 0
        for i, ep in enumerate(tqdm(dataset, total=len(dataset), desc="loading offline data", leave=False,
                                     disable=not progress)):
            ep.validate(meta, where=str(dataset.episode_dirs[i]))
            T = len(ep)
            for k in self.frame_keys:
                self.frames[k][f : f + T + 1] = (_encode(frame_encoder, {c: ep.obs(c) for c in _camera_keys(frame_encoder)})
                                                 if k == IMAGE_LATENT else ep.obs(k))
            steps = slice(s, s + T)
            self.obs_idx[steps] = np.arange(f, f + T)
            self.next_idx[steps] = np.arange(f + 1, f + T + 1)
            self.action[steps] = ep.action
            self.reward[steps], self.mc_return[steps] = episode_rewards_and_returns(
                ep.reward * reward_scale + reward_bias, ep.terminal, discount, truncated_value, failure_reward,
                ep.intervention, takeover_penalty)
            self.done[steps] = ep.terminal
            self.instruction[steps] = self.vocab.id(ep.instruction)
            self.success[steps] = success_rows(bool(ep.success) or bool(ep.terminal.any()), ep.intervention, T)
            self._fill_n_step(np.arange(s, s + T))
            f += T + 1
            s += T
        self.size = n_steps
        self.n_frames_used = f

    def __len__(self) -> int:
        return self.size

    def cache_latents(self, frame_encoder: Any) -> None:
        """Replace the stored images by `frame_encoder`'s latents of them (float32 (L,) per frame,
        encoded once, in chunks) and free the images; batches then carry `image_latent`.
        `frame_encoder`: uint8 (N, H, W, 3) -> (N, L), with `image_shape` and `latent_dim`
        (CalQL.frame_encoder())."""
        if "image" not in self.frames:
            raise ReplayError("cache_latents: this buffer holds no images (already cached, or state mode)")
        shapes = _frame_shapes(self.obs_spec, frame_encoder)
        cameras = {k: v for k, v in self.frames.items() if is_image_key(k)}
        n = len(cameras["image"])
        latents = np.asarray(_encode(frame_encoder, cameras), dtype=np.float32)
        if latents.shape != (n, *shapes[IMAGE_LATENT]):
            raise ReplayError(f"the frame encoder returned {latents.shape} for {n} frames, expected "
                              f"{(n, *shapes[IMAGE_LATENT])}")
        self.frames = {(IMAGE_LATENT if k == "image" else k): (latents if k == "image" else v)
                       for k, v in self.frames.items() if k == "image" or not is_image_key(k)}
        self.frame_keys = list(self.frames)
        self.frame_encoder = frame_encoder
        image_bytes = sum(v.nbytes for v in cameras.values())
        print(f"offline replay: {n} frames{f' of {len(cameras)} cameras' if len(cameras) > 1 else ''} encoded once by "
              f"the frozen encoder -> {_mib(latents.nbytes)} of latents instead of {_mib(image_bytes)} of images",
              flush=True)

    def sample_numpy(self, n: int) -> dict[str, Any]:
        return self._gather(self.rng.integers(0, self.size, size=n))

    def obs_statistics(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-dimension mean and std of the vector observations (state, proprio) over every
        stored frame: what `CalQL.set_obs_normalization` takes."""
        return {
            k: (self.frames[k][: self.n_frames_used].mean(0), self.frames[k][: self.n_frames_used].std(0))
            for k in self.frame_keys if k in ("state", "proprio")
        }

    def sample(self, batch_size: int) -> dict[str, Any]:
        b = self.sample_numpy(batch_size)
        b["online"] = np.zeros(batch_size, dtype=np.bool_)
        return _to_torch(b, self.device)


class OnlineReplay(_Buffer):
    """Transitions as they arrive, in a ring of `capacity` steps.

    Call `add(obs, action, reward, next_obs, terminal, truncated, instruction)` every step (an
    episode starts at the first call and after every terminal/truncated step), or
    `add_episode(Episode)`. When an episode ends its steps get their MC returns and become
    sampleable; with `bound_online=False` (CORL's variant) sampled online steps carry
    mc_return = -inf, which switches the Cal-QL bound off for them (the true returns are kept
    for `recent_numpy`).

    Frames live in their own ring of `capacity + capacity // 4 + 2` entries (an episode of T
    steps uses T + 1 frames); a step whose frames were overwritten is never sampled.
    """

    def __init__(self, obs_spec: Mapping[str, Sequence[int]], action_dim: int, capacity: int,
                 discount: float = 0.99, reward_scale: float = 1.0, reward_bias: float = 0.0,
                 failure_reward: float | None = None, truncated_value: float = 0.0,
                 bound_online: bool = True, vocab: InstructionVocab | None = None,
                 text_embeddings: np.ndarray | None = None, device: str | torch.device = "cpu",
                 seed: int | None = None, n_step: int = 1, frame_encoder: Any = None,
                 takeover_penalty: float = 0.0):
        if capacity < 1:
            raise ReplayError(f"online replay capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.num_frames = self.capacity + self.capacity // 4 + 2
        need = self.nbytes(obs_spec, action_dim, self.num_frames, self.capacity, frame_encoder)
        print(f"online replay: capacity {self.capacity} steps, {self.num_frames} frames -> {_mib(need)} when full"
              + (" (image latents)" if frame_encoder is not None else ""), flush=True)
        super().__init__(obs_spec, action_dim, self.num_frames, self.capacity, text_embeddings, device, seed,
                         discount, n_step, frame_encoder)
        self.reward_scale, self.reward_bias = reward_scale, reward_bias
        self.failure_reward, self.truncated_value, self.bound_online = failure_reward, truncated_value, bound_online
        self.takeover_penalty = float(takeover_penalty)
        self.vocab = vocab or InstructionVocab()
        self.obs_abs = np.zeros(self.capacity, dtype=np.int64)  # absolute frame number of each step's obs
        self.frames_written = 0  # absolute counters
        self.steps_written = 0
        self.first_valid = 0  # first absolute step whose frames are still stored
        self.complete = 0  # absolute steps before this belong to finished episodes
        self._ep_start: int | None = None  # absolute step where the open episode started
        self._cur_frame = -1  # absolute frame of the open episode's current observation
        self._last_images: dict[str, np.ndarray] | None = None  # latent cache: the camera images of the last frame written

    # -- writing
    def _write_frame(self, obs: Mapping[str, Any]) -> int:
        pos = self.frames_written % self.num_frames
        values = {}
        images: dict[str, np.ndarray] = {}
        for k in self.frame_keys:
            for src in _source_keys(k, self.frame_encoder):
                if src not in obs:
                    raise ReplayError(f"observation lacks '{src}'")
                v = np.asarray(obs[src])
                if v.shape != self.obs_spec[src]:
                    raise ReplayError(f"observation '{src}' has shape {v.shape}, expected {self.obs_spec[src]}")
                if not is_image_key(src) and not np.all(np.isfinite(v)):
                    raise ReplayError(f"observation '{src}' has a NaN or infinite value")
                if k == IMAGE_LATENT:
                    images[src] = np.array(v, dtype=np.uint8)
                else:
                    values[k] = v
        if images:  # the latent cache: encoded once, here; the images themselves are not stored
            self._last_images = images
            values[IMAGE_LATENT] = _encode(self.frame_encoder, {c: v[None] for c, v in images.items()})[0]
        for k, v in values.items():
            self.frames[k][pos] = v
        self.frames_written += 1
        oldest = self.frames_written - self.num_frames
        while self.first_valid < self.steps_written and self.obs_abs[self.first_valid % self.capacity] < oldest:
            self.first_valid += 1
        return self.frames_written - 1

    def _is_current_frame(self, obs: Mapping[str, Any]) -> bool:
        """Whether `obs` is the open episode's current frame (the previous step's next observation);
        an `obs` without the frame keys stands for it too."""
        pos = self._cur_frame % self.num_frames
        for k in self.frame_keys:
            for src in _source_keys(k, self.frame_encoder):
                if src not in obs:
                    continue
                stored = (self._last_images or {}).get(src) if k == IMAGE_LATENT else self.frames[k][pos]
                if stored is None or not np.array_equal(stored, np.asarray(obs[src], dtype=stored.dtype)):
                    return False
        return True

    def add(self, obs: Mapping[str, Any], action: np.ndarray, reward: float, next_obs: Mapping[str, Any],
            terminal: bool, truncated: bool = False, instruction: str | int = 0, intervention: bool = False) -> None:
        """Store one transition. Within an episode, a step whose `obs` is the previous step's
        `next_obs` (or has none of the frame keys) shares that frame; any other `obs` (a step was
        left out, e.g. a command the arm never executed) is stored as a frame of its own.
        `intervention`: a human's step (a takeover); MixedReplay also draws it on the offline side."""
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        if a.shape != (self.action_dim,) or not np.all(np.isfinite(a)):
            raise ReplayError(f"action must be finite with shape ({self.action_dim},), got {a.shape} {a}")
        if not np.isfinite(reward):
            raise ReplayError(f"reward is {reward}")
        ins = self.vocab.id(instruction) if isinstance(instruction, str) or len(self.vocab) else int(instruction)
        if self._ep_start is None:
            self._ep_start = self.steps_written
            self._cur_frame = self._write_frame(obs)
        elif not self._is_current_frame(obs):
            self._cur_frame = self._write_frame(obs)
        if self.steps_written - self._ep_start >= self.capacity:
            raise ReplayError(f"an episode longer than the online buffer capacity ({self.capacity} steps)")
        nxt = self._write_frame(next_obs)
        i = self.steps_written % self.capacity
        self.obs_abs[i] = self._cur_frame
        self.obs_idx[i] = self._cur_frame % self.num_frames
        self.next_idx[i] = nxt % self.num_frames
        self.action[i] = a
        self.reward[i] = float(reward) * self.reward_scale + self.reward_bias
        self.done[i] = bool(terminal)
        self.mc_return[i] = np.nan
        self.instruction[i] = ins
        self.success[i] = False  # set for the whole episode when it ends
        self.intervention[i] = bool(intervention)
        self.steps_written += 1
        self.first_valid = max(self.first_valid, self.steps_written - self.capacity)
        self._cur_frame = nxt
        if terminal or truncated:
            self._end_episode()

    def _end_episode(self) -> None:
        assert self._ep_start is not None
        idx = np.arange(self._ep_start, self.steps_written) % self.capacity
        self.reward[idx], self.mc_return[idx] = episode_rewards_and_returns(
            self.reward[idx], self.done[idx], self.discount, self.truncated_value, self.failure_reward,
            self.intervention[idx], self.takeover_penalty)
        # terminal = the task really ended, which in this project means it succeeded; the policy's steps
        # before a human takeover are not counted as its success (success_rows)
        self.success[idx] = success_rows(bool(self.done[idx].any()), self.intervention[idx], len(idx))
        self._fill_n_step(idx)
        self.complete = self.steps_written
        self._ep_start = None

    def add_episode(self, ep: Episode) -> None:
        """Store a whole finished episode (e.g. from the fine-tuning loop or a recorded file)."""
        T = len(ep)
        if T < 1:
            raise ReplayError("empty episode")
        if self._ep_start is not None:
            raise ReplayError("add_episode while an episode added step by step is still open")
        keys = [src for k in self.frame_keys for src in _source_keys(k, self.frame_encoder)]
        for t in range(T):
            obs_t = {k: ep.obs(k)[t] for k in keys}
            nxt_t = {k: ep.obs(k)[t + 1] for k in keys}
            last = t == T - 1
            self.add(obs_t, ep.action[t], float(ep.reward[t]), nxt_t, bool(ep.terminal[t]),
                     truncated=last and not bool(ep.terminal[t]), instruction=ep.instruction,
                     intervention=ep.intervention is not None and bool(ep.intervention[t]))

    # -- snapshots (resume)
    _ARRAYS = ("obs_idx", "next_idx", "action", "reward", "done", "mc_return", "instruction", "obs_abs", "success",
               "n_reward", "n_next_idx", "n_done", "n_discount", "intervention")
    _OPTIONAL = {"success", "intervention"}  # absent from snapshots written before it existed: left False
    _N_STEP = {"n_reward", "n_next_idx", "n_done", "n_discount"}  # ditto; needed only with n_step > 1
    _COUNTERS = ("frames_written", "steps_written", "first_valid", "complete", "_cur_frame")

    def state_dict(self) -> dict[str, np.ndarray]:
        """The filled part of the buffer, its counters and its sampling RNG, as plain arrays
        (np.savez-ready). `load_state_dict` on a buffer of the same spec and capacity continues
        exactly: same contents, same next samples. So does one of a larger capacity while the
        snapshot's rings have not wrapped (`snapshot_wrapped`): a run extended to more steps."""
        n_steps, n_frames = min(self.steps_written, self.capacity), min(self.frames_written, self.num_frames)
        out = {f"frames_{k}": v[:n_frames] for k, v in self.frames.items()}
        out.update({k: getattr(self, k)[:n_steps] for k in self._ARRAYS})
        out.update({k: np.asarray(getattr(self, k), dtype=np.int64) for k in self._COUNTERS})
        out["ep_start"] = np.asarray(-1 if self._ep_start is None else self._ep_start, dtype=np.int64)
        out["rng_state"] = np.frombuffer(json.dumps(self.rng.bit_generator.state).encode(), dtype=np.uint8)
        return out

    @staticmethod
    def snapshot_wrapped(sd: Mapping[str, np.ndarray]) -> bool:
        """Whether the buffer that wrote `sd` had begun to overwrite its oldest steps or frames.
        Until then every stored index is absolute, so the snapshot fits any buffer large enough to
        hold it; after, its indices are modulo the writer's capacity and fit only that capacity."""
        frames = next(v for k, v in sd.items() if k.startswith("frames_"))
        return int(sd["steps_written"]) > len(sd["obs_idx"]) or int(sd["frames_written"]) > len(frames)

    def load_state_dict(self, sd: Mapping[str, np.ndarray]) -> None:
        for k, v in self.frames.items():
            src = sd.get(f"frames_{k}")
            if src is None:
                saved = sorted(n[len("frames_"):] for n in sd if n.startswith("frames_"))
                raise ReplayError(f"replay snapshot lacks 'frames_{k}' (it holds {saved}: written with another "
                                  "encoder_frozen setting?)")
            if src.shape[1:] != v.shape[1:] or len(src) > len(v):
                raise ReplayError(f"replay snapshot frames '{k}' have shape {src.shape}, this buffer holds {v.shape}")
        for k in self._ARRAYS:
            if k in self._N_STEP and k not in sd and self.n_step > 1:
                raise ReplayError(f"replay snapshot lacks '{k}' (written before n-step replay existed); "
                                  "resume it with n_step=1")
            if k in self._OPTIONAL | self._N_STEP and k not in sd:
                continue
            if k not in sd or len(sd[k]) > self.capacity:
                raise ReplayError(f"replay snapshot lacks '{k}' or holds more than capacity {self.capacity}")
        if self.snapshot_wrapped(sd):  # its indices are modulo the writer's rings: only those sizes fit
            n_frames = len(next(iter(sd[f"frames_{k}"] for k in self.frames)))
            steps_wrapped = int(sd["steps_written"]) > len(sd["obs_idx"])
            if len(sd["obs_idx"]) != self.capacity if steps_wrapped else n_frames != self.num_frames:
                raise ReplayError("replay snapshot comes from a buffer of another capacity that had wrapped (began "
                                  f"overwriting its oldest steps); it loads only into that capacity, not {self.capacity}")
        for k, v in self.frames.items():
            v[: len(sd[f"frames_{k}"])] = sd[f"frames_{k}"]
        for k in self._ARRAYS:
            if k in sd:
                getattr(self, k)[: len(sd[k])] = sd[k]
        for k in self._COUNTERS:
            setattr(self, k, int(sd[k]))
        self._ep_start = None if int(sd["ep_start"]) < 0 else int(sd["ep_start"])
        self._last_images = None  # an open episode's next step stores its observation as a new frame
        self.rng.bit_generator.state = json.loads(bytes(np.asarray(sd["rng_state"])).decode())

    # -- reading
    def __len__(self) -> int:
        """Number of sampleable steps (finished episodes whose frames are still stored)."""
        return max(0, self.complete - self.first_valid)

    @property
    def memory_bytes(self) -> int:
        return sum(a.nbytes for a in self.frames.values()) + self.obs_idx.nbytes * 3 + self.action.nbytes

    def sample_numpy(self, n: int) -> dict[str, Any]:
        if len(self) == 0:
            raise ReplayError("online replay has no finished episode to sample from yet")
        steps = self.rng.integers(self.first_valid, self.complete, size=n) % self.capacity
        return self._gather(steps)

    def _gather(self, steps: np.ndarray) -> dict[str, Any]:
        b = super()._gather(steps)
        if not self.bound_online:  # CORL's variant: the bound never acts on online rows
            b["mc_return"] = np.full_like(b["mc_return"], -np.inf)
        return b

    def intervention_steps(self) -> np.ndarray:
        """Buffer positions of the sampleable (finished, frames kept) human steps."""
        key = (self.first_valid, self.complete)
        if getattr(self, "_human_key", None) != key:
            absolute = np.arange(self.first_valid, self.complete)
            self._human = absolute[self.intervention[absolute % self.capacity]] % self.capacity
            self._human_key = key
        return self._human

    def recent_numpy(self, n: int) -> dict[str, Any]:
        """The last min(n, len(self)) finished steps, oldest first, with their true MC returns
        whatever `bound_online` says (calibration of the policy's own recent episodes); empty
        arrays when no episode has finished."""
        start = max(self.first_valid, self.complete - int(n))
        return super()._gather(np.arange(start, self.complete) % self.capacity)

    def sample(self, batch_size: int) -> dict[str, Any]:
        b = self.sample_numpy(batch_size)
        b["online"] = np.ones(batch_size, dtype=np.bool_)
        return _to_torch(b, self.device)


class MixedReplay:
    """Exactly round(batch_size * mixing_ratio) offline rows and the rest online, per batch.

    Until the online buffer holds a finished episode, batches are all offline. With
    `online_warmup=N` the online rows grow with the buffer: round(n_online_full * min(1, len / N)),
    so the first few online episodes are not drawn hundreds of times each while the policy acts
    with the result (docs/experiments/2026-12-05-ros-learner-warmup.md); 0 is the official
    Cal-QL schedule.

    Human steps (online steps added with `intervention=True`) are drawn on the offline side too,
    as HIL-SERL puts interventions in its demo buffer: the offline rows come uniformly from the
    offline data plus those steps, which keep their whole episode's MC return.
    """

    def __init__(self, offline: OfflineReplay, online: OnlineReplay, mixing_ratio: float = 0.5,
                 online_warmup: int = 0):
        if not 0.0 <= mixing_ratio <= 1.0:
            raise ReplayError(f"mixing_ratio must be in [0, 1], got {mixing_ratio}")
        if online_warmup < 0:
            raise ReplayError(f"online_warmup must be >= 0 online steps, got {online_warmup}")
        self.offline, self.online, self.mixing_ratio = offline, online, mixing_ratio
        self.online_warmup = int(online_warmup)

    def split(self, batch_size: int) -> tuple[int, int]:
        held = len(self.online)
        if not held:
            return batch_size, 0
        n_on = batch_size - int(round(batch_size * self.mixing_ratio))
        if self.online_warmup > held:
            n_on = int(round(n_on * held / self.online_warmup))
        return batch_size - n_on, n_on

    def _offline_side(self, n: int) -> dict[str, Any]:
        """n rows from the offline data and the online buffer's human steps, uniformly over both."""
        human = self.online.intervention_steps()
        rng = self.offline.rng
        k = int(rng.binomial(n, len(human) / (len(self.offline) + len(human)))) if len(human) else 0
        if k == 0:
            return self.offline.sample_numpy(n)
        rows = _Buffer._gather(self.online, human[rng.integers(0, len(human), size=k)])  # true MC returns
        return rows if k == n else _concat(self.offline.sample_numpy(n - k), rows)

    def sample(self, batch_size: int) -> dict[str, Any]:
        n_off, n_on = self.split(batch_size)
        if n_on == 0:
            b = self._offline_side(n_off)
        elif n_off == 0:
            b = self.online.sample_numpy(n_on)
        else:
            b = _concat(self._offline_side(n_off), self.online.sample_numpy(n_on))
        b["online"] = np.arange(batch_size) >= n_off
        return _to_torch(b, self.offline.device)
