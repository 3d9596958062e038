"""Checkpoint format versions: the version is written, an older checkpoint loads through the one
upgrade path (robot_calql.train.checkpoint.upgrade_checkpoint), a newer one is refused."""

from __future__ import annotations

import io
import json
import logging
import math

import numpy as np
import pytest
import torch

from robot_calql.agent import CheckpointError as AgentCheckpointError
from robot_calql.cli import main
from robot_calql.train import checkpoint as ckpt

from .conftest import QUIET

FT = ["eval_every=5", "eval_episodes=1", "max_episode_steps=8", "log_every=2", *QUIET]


def _save(tmp_path, meta=None, trainer=None):
    return ckpt.save_checkpoint(tmp_path, 3, {"w": torch.ones(2)}, trainer or {"optimizer": {}}, meta or {"a": 1})


def _as_version_0(folder, agent_extra: dict | None = None) -> None:
    """Rewrite a checkpoint folder the way the code before format versions wrote it: no
    format_version; the agent config with the four settings deleted since (at their values then);
    fine-tuning's gripper-flip state in trainer.pt and no arm-home count in its loop; a learner's
    trainer state without its update count; an online buffer without success flags."""
    meta = json.loads((folder / ckpt.META).read_text())
    meta.pop("format_version")
    if "agent" in meta:
        meta["agent"] = {**meta["agent"], "num_min_critics": None, "td_target_max": math.inf,
                         "bc_offline_only": False, "extra": {}, **(agent_extra or {})}
    (folder / ckpt.META).write_text(json.dumps(meta, indent=2) + "\n")
    rest = torch.load(folder / ckpt.TRAINER, map_location="cpu", weights_only=False)
    trainer = rest["trainer"]
    if "loop" in trainer:
        trainer["loop"].pop("homes")
        trainer["gripper_flips"] = {"left": 0, "command": 0.0, "flips": 0,
                                    "rng": np.random.default_rng(3).bit_generator.state}
    if meta.get("phase") == "finetune_ros":
        trainer.pop("updates")
    buf = io.BytesIO()
    torch.save(rest, buf)
    (folder / ckpt.TRAINER).write_bytes(buf.getvalue())
    if (folder / ckpt.BUFFER).is_file():
        with np.load(folder / ckpt.BUFFER) as z:
            arrays = {k: z[k] for k in z.files if k != "success"}
        with open(folder / ckpt.BUFFER, "wb") as f:
            np.savez(f, **arrays)


def test_the_format_version_is_written(tmp_path):
    path = _save(tmp_path)
    assert json.loads((path / ckpt.META).read_text())["format_version"] == ckpt.FORMAT_VERSION >= 1
    assert ckpt.load_checkpoint(tmp_path)["meta"]["format_version"] == ckpt.FORMAT_VERSION


def test_a_newer_format_is_refused_by_name(tmp_path):
    path = _save(tmp_path)
    meta = json.loads((path / ckpt.META).read_text())
    meta["format_version"] = ckpt.FORMAT_VERSION + 1
    (path / ckpt.META).write_text(json.dumps(meta))
    for load in (ckpt.load_checkpoint, ckpt.load_meta):
        with pytest.raises(ckpt.CheckpointError, match=f"format version {ckpt.FORMAT_VERSION + 1}.*newer") as e:
            load(tmp_path)
        assert f"up to {ckpt.FORMAT_VERSION}" in str(e.value)


def test_one_checkpoint_error_type():
    assert ckpt.CheckpointError is AgentCheckpointError


def test_a_version_0_pretrain_checkpoint_loads_upgraded(tmp_path, pretrained, caplog):
    import shutil

    run = tmp_path / "pre"
    shutil.copytree(pretrained, run)
    folder = ckpt.find_checkpoint(run)
    _as_version_0(folder, {"td_target_max": 5.0})  # an old run that had a deleted setting on
    with caplog.at_level(logging.WARNING, logger="robot_calql.train.checkpoint"):
        state = ckpt.load_checkpoint(run)
    assert "td_target_max" in caplog.text and "num_min_critics" not in caplog.text  # only the one that was on
    for meta in (state["meta"], ckpt.load_meta(run)):
        assert meta["format_version"] == ckpt.FORMAT_VERSION
        assert not {"num_min_critics", "td_target_max", "bc_offline_only", "extra"} & set(meta["agent"])
    # the upgraded checkpoint builds its agent and evaluates (the old agent keys would be refused)
    assert main(["evaluate", f"checkpoint={run}", "episodes=1", "max_episode_steps=5", "progress=false"]) == 0


def test_a_version_0_finetune_checkpoint_resumes_exactly(tmp_path, pretrained):
    """A fine-tuning run stopped at step 10 and written in the version-0 format continues to step 20
    with the same weights and online buffer as a run that went to 20 at once."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["finetune", f"checkpoint={pretrained}", f"out={a}", "steps=20", *FT]) == 0
    assert main(["finetune", f"checkpoint={pretrained}", f"out={b}", "steps=10", "online_capacity=21", *FT]) == 0
    _as_version_0(ckpt.find_checkpoint(b))
    old = ckpt.find_checkpoint(b)
    assert "format_version" not in json.loads((old / ckpt.META).read_text())
    assert main(["finetune", f"checkpoint={pretrained}", f"out={b}", "steps=20", "resume=true", *FT]) == 0
    wa, wb = ckpt.load_checkpoint(a)["agent_state"], ckpt.load_checkpoint(b)["agent_state"]
    assert set(wa) == set(wb) and all(torch.equal(wa[k], wb[k]) for k in wa)
    ba, bb = ckpt.load_checkpoint(a)["buffer"], ckpt.load_checkpoint(b)["buffer"]
    for k in ba:
        np.testing.assert_array_equal(ba[k], bb[k], err_msg=k)
    assert json.loads((ckpt.find_checkpoint(b) / ckpt.META).read_text())["format_version"] == ckpt.FORMAT_VERSION
