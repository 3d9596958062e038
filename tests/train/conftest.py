"""Fixtures for the training tests: a tiny state-only stand-in dataset and tiny agent settings."""

from __future__ import annotations

import pytest

# Quiet, single-threaded runs with a small batch.
QUIET = ["batch_size=16", "progress=false", "tensorboard=false", "threads=1"]
# A network small enough that an update takes about a millisecond (fine-tuning takes its sizes
# from the checkpoint).
TINY_AGENT = ["agent.actor_hidden=[32,32]", "agent.critic_hidden=[32,32]", *QUIET]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """4 forward + 4 backward scripted episodes of cube_bowl and 1 failure, state only."""
    from robot_calql.sim.collect import collect_episodes

    root = tmp_path_factory.mktemp("data") / "cube_bowl"
    collect_episodes("cube_in_bowl", 4, image_size=0, seed=0, out=root, max_episode_steps=30)
    collect_episodes("cube_out_of_bowl", 4, image_size=0, seed=0, out=root, max_episode_steps=30)
    collect_episodes("cube_in_bowl", 1, image_size=0, seed=1, failure=True, source="failure", out=root,
                     max_episode_steps=30)
    return root


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory, tiny_dataset):
    """A pre-trained tiny run (20 updates) to fine-tune from."""
    from robot_calql.cli import main

    out = tmp_path_factory.mktemp("runs") / "pre"
    rc = main(["pretrain", f"dataset={tiny_dataset}", f"out={out}", "steps=20", "log_every=5", *TINY_AGENT])
    assert rc == 0
    return out
