"""Pre-training of the image encoder on offline data, before it is frozen (`encoder_frozen`).

Objective, on batches of randomly shifted frames (`aug_pad`, as end-to-end training uses):

- behaviour cloning: the data's action from [CNN(image), proprio, instruction] through a small
  MLP with a tanh output, mean squared error;
- proprio from CNN(image) alone (a linear head onto the standardised proprio), mean squared error;
- optionally (`encoder_pretrain_future`, e.g. [5, 10, 20, -1]) the episode's proprio that many
  steps ahead (-1: its last frame; -2: the next step whose action closes the gripper, i.e. the
  next grasp, else its last frame; clipped at the episode's end) from [CNN(image), proprio,
  instruction], standardised, mean squared error. Where a demo's gripper will go next is where
  the object is (before the grasp) or where it is put (after it), so this term asks the latent
  for the object's place from the robot's own recorded motion and gripper commands: no
  simulator state is used.

The actions of a pick-and-place demo depend on where the objects are, which only the image
shows; the second term makes the latent show the arm too. The heads are thrown away afterwards;
the CNN stays in the agent, frozen, and the instruction embedding, which the BC term also
trains, keeps training in Cal-QL. Runs under the agent's `precision`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robot_calql.agent.encoders import IMAGE_LATENT
from robot_calql.agent.networks import mlp


class EncoderPretrainer:
    """The heads, the optimiser and one training step of the encoder pre-training of `agent`
    (a CalQL in pixel mode with `encoder_frozen`). `finish()` freezes the CNN again."""

    def __init__(self, agent: Any, lr: float | None = None, hidden: int = 256):
        if not getattr(agent, "frozen", False):
            raise ValueError("encoder pre-training is for a pixel agent with encoder_frozen=true")
        self.agent = agent
        enc = agent.encoder
        self.enc = enc
        P = enc.spec["proprio"][0]
        self.action_head = mlp(enc.out_dim, (hidden,), agent.action_dim).to(agent.device)
        self.proprio_head = nn.Linear(enc.cached_latent_dim, P).to(agent.device)
        self.horizons = tuple(int(h) for h in agent.cfg.encoder_pretrain_future)
        self.future_head = (mlp(enc.out_dim, (hidden,), P * len(self.horizons)).to(agent.device)
                            if self.horizons else None)
        enc.cnn.requires_grad_(True)
        params = [*enc.parameters(), *self.action_head.parameters(), *self.proprio_head.parameters()]
        if self.future_head is not None:
            params += [*self.future_head.parameters()]
        self.opt = torch.optim.Adam(params, lr=float(lr if lr is not None else agent.cfg.encoder_pretrain_lr))

    def losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Named losses of one batch (the replay's batch format; `obs`, `action` and, with
        future horizons, `future_proprio` (B, len(horizons), P) are read)."""
        enc = self.enc
        obs = enc.preprocess(batch["obs"], augment=enc.aug_pad > 0)
        with self.agent._autocast():
            z = enc.image_features(obs, preprocessed=True).float()  # every camera's latent
            f = enc({**obs, IMAGE_LATENT: z}, preprocessed=True)
            with torch.autocast(self.agent.device.type, enabled=False):
                a_pred = torch.tanh(self.action_head(f.float()))
                p_pred = self.proprio_head(z)
                fut_pred = None if self.future_head is None else self.future_head(f.float())
        p = self._standardise(batch["obs"]["proprio"])
        bc = F.mse_loss(a_pred, batch["action"].float())
        proprio = F.mse_loss(p_pred, p)
        out = {"loss_encoder": bc + proprio, "loss_encoder_bc": bc, "loss_encoder_proprio": proprio}
        if fut_pred is not None:
            if "future_proprio" not in batch:
                raise ValueError("encoder_pretrain_future is set but the batch has no 'future_proprio' "
                                 "(sample with future_sampler)")
            target = self._standardise(batch["future_proprio"]).flatten(1)
            future = F.mse_loss(fut_pred, target)
            out["loss_encoder"] = out["loss_encoder"] + future
            out["loss_encoder_future"] = future
        return out

    def _standardise(self, proprio: torch.Tensor) -> torch.Tensor:
        enc = self.enc
        return ((proprio.float() - enc.proprio_mean) / enc.proprio_std).clamp(-enc.obs_clip, enc.obs_clip)

    def step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One Adam step; returns the losses as floats."""
        losses = self.losses(batch)
        self.opt.zero_grad(set_to_none=True)
        losses["loss_encoder"].backward()
        self.opt.step()
        values = torch.stack([v.detach() for v in losses.values()]).tolist()
        return dict(zip(losses, values, strict=True))

    def finish(self) -> None:
        """Freeze the CNN and give the target encoder the trained instruction embedding."""
        self.enc.cnn.requires_grad_(False)
        self.agent.encoder_target.load_state_dict(self.enc.state_dict())  # the CNN itself is shared


LAST_FRAME, NEXT_GRASP = -1, -2  # the special horizons of encoder_pretrain_future


def future_frame_index(obs_idx: np.ndarray, next_idx: np.ndarray, horizons: Sequence[int],
                       gripper: np.ndarray | None = None) -> np.ndarray:
    """For each step of an offline replay (frame of its observation `obs_idx`, of its next
    observation `next_idx`; each episode's frames are contiguous and episodes follow each
    other), the frame `h` steps ahead for each horizon, clipped at the episode's last frame
    (h = -1: that last frame; h = -2: the observation frame of the next step, this one included,
    at which the gripper command `gripper` (the action's last component, > 0 closes) turns from
    open to closed, i.e. where the next grasp happens; the last frame when no grasp follows in the
    episode). Returns (steps, len(horizons)) frame indices."""
    obs_idx = np.asarray(obs_idx, np.int64)
    next_idx = np.asarray(next_idx, np.int64)
    n = len(obs_idx)
    # a step is its episode's last when the next step's observation is not its next observation
    is_last = np.ones(n, dtype=bool)
    is_last[:-1] = obs_idx[1:] != next_idx[:-1]
    last_frame = np.empty(n, np.int64)
    end = -1
    for i in range(n - 1, -1, -1):  # the episode's last frame, propagated back over its steps
        if is_last[i]:
            end = next_idx[i]
        last_frame[i] = end
    cols = []
    for h in horizons:
        if h == NEXT_GRASP:
            cols.append(_next_grasp_frame(obs_idx, is_last, last_frame, gripper))
        elif h == LAST_FRAME:
            cols.append(last_frame)
        elif h < 0:
            raise ValueError(f"future horizon {h}: N >= 0 steps ahead, {LAST_FRAME} (last frame) or {NEXT_GRASP} (next grasp)")
        else:
            cols.append(np.minimum(obs_idx + int(h), last_frame))
    return np.stack(cols, axis=1)


def _next_grasp_frame(obs_idx: np.ndarray, is_last: np.ndarray, last_frame: np.ndarray,
                      gripper: np.ndarray | None) -> np.ndarray:
    """future_frame_index's h = -2 column: a backward scan that carries the frame of the next
    open-to-closed gripper command within each episode."""
    if gripper is None:
        raise ValueError("encoder_pretrain_future -2 (the next grasp) needs the actions' gripper command")
    closed = np.asarray(gripper, np.float64) > 0.0
    n = len(obs_idx)
    first = np.ones(n, dtype=bool)  # a step is its episode's first after another episode's last step
    first[1:] = is_last[:-1]
    onset = closed & (first | ~np.roll(closed, 1))  # closed now, open (or nothing) the step before
    out = np.empty(n, np.int64)
    nxt = -1
    for i in range(n - 1, -1, -1):
        if is_last[i]:
            nxt = -1  # a new episode, seen from its end
        if onset[i]:
            nxt = obs_idx[i]
        out[i] = last_frame[i] if nxt < 0 else nxt
    return out


def future_sampler(replay: Any, horizons: Sequence[int]) -> Callable[[int], dict[str, Any]]:
    """`sample(n)` for `pretrain_encoder` on an OfflineReplay that still holds its images: the
    replay's batch plus `future_proprio` (n, len(horizons), P), the proprio of each step's
    episode `h` steps ahead (see `future_frame_index`)."""
    size = len(replay)
    frames = future_frame_index(replay.obs_idx[:size], replay.next_idx[:size], horizons,
                                gripper=replay.action[:size, -1])
    proprio = replay.frames["proprio"]

    def sample(n: int) -> dict[str, Any]:
        steps = replay.rng.integers(0, size, size=n)
        b = replay._gather(steps)
        b["future_proprio"] = proprio[frames[steps]]
        b["online"] = np.zeros(n, dtype=np.bool_)
        return {k: ({kk: torch.as_tensor(vv, device=replay.device) for kk, vv in v.items()}
                    if isinstance(v, dict) else torch.as_tensor(np.ascontiguousarray(v), device=replay.device))
                for k, v in b.items()}

    return sample


def pretrain_encoder(agent: Any, sample: Callable[[int], Mapping[str, Any]], steps: int | None = None,
                     batch_size: int | None = None,
                     on_step: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, float]:
    """Pre-train the frozen agent's CNN for `steps` batches of `batch_size` drawn by `sample`
    (e.g. OfflineReplay.sample with images), then freeze it. Defaults: the agent config's
    encoder_pretrain_steps / encoder_pretrain_batch. `on_step(step, losses)` is called after each
    step (logging, progress, non-finite checks; an exception it raises stops the pre-training).
    Returns the first and last step's losses and the wall time."""
    cfg = agent.cfg
    steps = int(cfg.encoder_pretrain_steps if steps is None else steps)
    batch_size = int(cfg.encoder_pretrain_batch if batch_size is None else batch_size)
    trainer = EncoderPretrainer(agent)
    t0 = time.perf_counter()
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    try:
        for i in range(steps):
            last = trainer.step(sample(batch_size))
            if i == 0:
                first = dict(last)
            if on_step is not None:
                on_step(i + 1, last)
    finally:
        trainer.finish()
    out = {f"first_{k}": v for k, v in first.items()}
    out.update({f"last_{k}": v for k, v in last.items()})
    out["steps"] = float(steps)
    out["seconds"] = time.perf_counter() - t0
    return out
