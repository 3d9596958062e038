"""The frozen-encoder pixel mode through the real commands: pretrain pre-trains the encoder,
caches the latents and saves the frozen encoder in the checkpoint; resume keeps it; finetune's
online buffer stores latents; the policy node's actor loads it and acts the same."""

from __future__ import annotations

import json

import numpy as np
import torch

from robot_calql.cli import main
from robot_calql.train import checkpoint as ckpt
from robot_calql.train.logger import read_metrics

QUIET = ["progress=false", "tensorboard=false", "threads=1", "batch_size=8"]
FROZEN = ["agent.actor_hidden=[16,16]", "agent.critic_hidden=[16,16]", "+agent.encoder_frozen=true",
          "+agent.encoder_pretrain_steps=6", "+agent.encoder_pretrain_batch=8", "+agent.encoder_latent_dim=8"]


def _cnn(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith(("encoder.cnn.", "encoder_target.cnn."))}


def test_pretrain_resume_finetune_and_act_with_a_frozen_encoder(tmp_path):
    from robot_calql.train.acting import ActingPolicy

    data, pre, ft = tmp_path / "data", tmp_path / "pre", tmp_path / "ft"
    assert main(["collect", "task=cube_bowl", "episodes=1", "image_size=64", "max_episode_steps=10", f"out={data}"]) == 0
    assert main(["pretrain", f"dataset={data}", f"out={pre}", "steps=4", "save_every=2", "log_every=2",
                 "obs=pixels", *QUIET, *FROZEN]) == 0
    summary = json.loads((pre / "summary.json").read_text())
    enc = summary["encoder_pretrain"]
    assert enc["steps"] == 6 and np.isfinite([enc["first_loss_encoder"], enc["last_loss_encoder"]]).all()
    assert [r["step"] for r in read_metrics(pre, "encoder")] == [2, 4, 6]
    first = ckpt.load_checkpoint(pre)
    assert first["meta"]["agent"]["encoder_frozen"] is True
    cnn = _cnn(first["agent_state"])
    for k, v in cnn.items():  # the online and target encoders hold the one frozen CNN
        assert torch.equal(v, cnn[k.replace("encoder_target.", "encoder.", 1)])

    # resume: the encoder comes from the checkpoint (no second pre-training), unchanged by updates
    assert main(["pretrain", f"dataset={data}", f"out={pre}", "steps=6", "obs=pixels", "resume=true",
                 *QUIET, *FROZEN]) == 0
    resumed = ckpt.load_checkpoint(pre)
    assert resumed["meta"]["step"] == 6
    assert all(torch.equal(v, cnn[k]) for k, v in _cnn(resumed["agent_state"]).items())
    assert "encoder_pretrain" not in json.loads((pre / "summary.json").read_text())

    assert main(["finetune", f"checkpoint={pre}", f"out={ft}", "steps=4", "eval_every=4", "eval_episodes=1",
                 "max_episode_steps=3", *QUIET]) == 0
    tuned = ckpt.load_checkpoint(ft)
    assert "frames_image_latent" in tuned["buffer"] and "frames_image" not in tuned["buffer"]  # latents, no images
    assert all(torch.equal(v, cnn[k]) for k, v in _cnn(tuned["agent_state"]).items())

    actor = ActingPolicy.from_checkpoint(ft)
    assert actor.encoder.frozen_cnn
    rng = np.random.default_rng(0)
    obs = {"image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "proprio": rng.normal(size=10).astype(np.float32),
           "instruction": actor.meta["instructions"][0]}
    again = ActingPolicy.from_checkpoint(ft)
    np.testing.assert_array_equal(actor.act(obs), again.act(obs))
