"""Pre-training of the image encoder on offline data, before it is frozen (`encoder_frozen`).

Objective, on batches of randomly shifted frames (`aug_pad`, as end-to-end training uses):

- behaviour cloning: the data's action from [CNN(image), proprio, instruction] through a small
  MLP with a tanh output, mean squared error;
- proprio from CNN(image) alone (a linear head onto the standardised proprio), mean squared error.

The actions of a pick-and-place demo depend on where the objects are, which only the image
shows; the second term makes the latent show the arm too. The heads are thrown away afterwards;
the CNN stays in the agent, frozen, and the instruction embedding, which the BC term also
trains, keeps training in Cal-QL. Runs under the agent's `precision`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

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
        self.proprio_head = nn.Linear(enc.latent_dim, P).to(agent.device)
        enc.cnn.requires_grad_(True)
        params = [*enc.parameters(), *self.action_head.parameters(), *self.proprio_head.parameters()]
        self.opt = torch.optim.Adam(params, lr=float(lr if lr is not None else agent.cfg.encoder_pretrain_lr))

    def losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Named losses of one batch (the replay's batch format; only `obs` and `action` are read)."""
        enc = self.enc
        obs = enc.preprocess(batch["obs"], augment=enc.aug_pad > 0)
        with self.agent._autocast():
            z = enc.cnn(obs["image"]).float()
            f = enc({**obs, IMAGE_LATENT: z}, preprocessed=True)
            with torch.autocast(self.agent.device.type, enabled=False):
                a_pred = torch.tanh(self.action_head(f.float()))
                p_pred = self.proprio_head(z)
        p = (batch["obs"]["proprio"].float() - enc.proprio_mean) / enc.proprio_std
        bc = F.mse_loss(a_pred, batch["action"].float())
        proprio = F.mse_loss(p_pred, p.clamp(-enc.obs_clip, enc.obs_clip))
        return {"loss_encoder": bc + proprio, "loss_encoder_bc": bc, "loss_encoder_proprio": proprio}

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
