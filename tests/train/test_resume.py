"""Exact resume and Ctrl-C handling of pretrain and finetune, through the real CLI."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch

from robot_calql.cli import main
from robot_calql.train import checkpoint as ckpt
from robot_calql.train.logger import read_metrics

from .conftest import QUIET, TINY_AGENT

FT = ["eval_every=5", "eval_episodes=1", "max_episode_steps=8", "log_every=2", *QUIET]


def _weights(run):
    return ckpt.load_checkpoint(run)["agent_state"]


def _assert_same(a, b):
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), f"tensor {k} differs after resume"


def test_pretrain_resume_is_exact(tmp_path, tiny_dataset):
    base = [f"dataset={tiny_dataset}", "log_every=3", *TINY_AGENT]
    assert main(["pretrain", *base, f"out={tmp_path / 'a'}", "steps=12"]) == 0
    assert main(["pretrain", *base, f"out={tmp_path / 'b'}", "steps=6"]) == 0
    # without resume=true an existing run is refused rather than silently overwritten
    assert main(["pretrain", *base, f"out={tmp_path / 'b'}", "steps=12"]) == 1
    assert main(["pretrain", *base, f"out={tmp_path / 'b'}", "steps=12", "resume=true"]) == 0
    _assert_same(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    # the metrics of the two runs agree step for step (no duplicated rows after resume)
    ra = read_metrics(tmp_path / "a", "pretrain")
    rb = read_metrics(tmp_path / "b", "pretrain")
    assert [r["step"] for r in ra] == [r["step"] for r in rb] == [3, 6, 9, 12]
    assert ra[-1]["loss_critic"] == pytest.approx(rb[-1]["loss_critic"], rel=1e-5)


def test_finetune_ctrl_c_then_resume_is_exact_buffer_included(tmp_path, pretrained, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    ft = FT
    assert main(["finetune", f"checkpoint={pretrained}", f"out={a}", "steps=20", *ft]) == 0
    _InterruptAfter(monkeypatch, 11, sigint=True)  # a real Ctrl-C (SIGINT) during update 11
    assert main(["finetune", f"checkpoint={pretrained}", f"out={b}", "steps=20", *ft]) == 130
    monkeypatch.undo()
    buf = ckpt.load_checkpoint(b)["buffer"]
    assert int(buf["steps_written"]) == 11  # the online buffer (and the open episode) is in the checkpoint
    assert main(["finetune", f"checkpoint={pretrained}", f"out={b}", "steps=20", "resume=true", *ft]) == 0
    _assert_same(_weights(a), _weights(b))
    ba, bb = ckpt.load_checkpoint(a)["buffer"], ckpt.load_checkpoint(b)["buffer"]
    assert set(ba) == set(bb)
    for k in ba:
        np.testing.assert_array_equal(ba[k], bb[k], err_msg=f"buffer array {k} differs after resume")
    sa = json.loads((a / "summary.json").read_text())
    sb = json.loads((b / "summary.json").read_text())
    assert sa["evals"] == sb["evals"] and sa["online_episodes"] == sb["online_episodes"]
    # plots: success vs online steps, and Q vs MC return on the episodes pre-training held out
    for key in ("success_plot", "calibration_plot"):
        assert open(sb[key], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_finetune_extended_with_more_steps_equals_the_longer_run(tmp_path, pretrained, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["finetune", f"checkpoint={pretrained}", f"out={a}", "steps=20", *FT]) == 0
    assert main(["finetune", f"checkpoint={pretrained}", f"out={b}", "steps=10", *FT]) == 0  # finished...
    assert ckpt.load_checkpoint(b)["trainer"]["loop"]["capacity"] == 11
    assert main(["finetune", f"checkpoint={pretrained}", f"out={b}", "steps=20", "resume=true", *FT]) == 0  # ...and extended
    assert ckpt.load_checkpoint(b)["trainer"]["loop"]["capacity"] == 21  # the buffer grew: nothing was evicted
    _assert_same(_weights(a), _weights(b))
    ba, bb = ckpt.load_checkpoint(a)["buffer"], ckpt.load_checkpoint(b)["buffer"]
    for k in ba:
        np.testing.assert_array_equal(ba[k], bb[k], err_msg=f"buffer array {k} differs after the extension")
    sa = json.loads((a / "summary.json").read_text())
    sb = json.loads((b / "summary.json").read_text())
    assert sa["evals"] == sb["evals"] and [s for s, _ in sb["evals"]] == [0, 5, 10, 15, 20]
    # a buffer that wrapped cannot grow: asking for another capacity is refused by name
    c = tmp_path / "c"
    assert main(["finetune", f"checkpoint={pretrained}", f"out={c}", "steps=12", "online_capacity=9", *FT]) == 0
    assert main(["finetune", f"checkpoint={pretrained}", f"out={c}", "steps=20", "online_capacity=21",
                 "resume=true", *FT]) == 1
    assert "online_capacity=21, but the run's online buffer (capacity 9, 12 steps written) has wrapped" in \
        capsys.readouterr().err


class _InterruptAfter:
    """Patch CalQL.update to interrupt on call number n: a SIGINT to this process (Ctrl-C; the
    loop finishes the step, saves and exits 130) or a KeyboardInterrupt raised inside the update
    (a second Ctrl-C)."""

    def __init__(self, monkeypatch, n, sigint=False):
        from robot_calql.agent import calql

        self.calls, self.n = 0, n
        orig = calql.CalQL.update

        def update(agent, batch):
            self.calls += 1
            if self.calls == self.n:
                if not sigint:
                    raise KeyboardInterrupt
                os.kill(os.getpid(), signal.SIGINT)
            return orig(agent, batch)

        monkeypatch.setattr(calql.CalQL, "update", update)


@pytest.mark.parametrize("sigint", [True, False], ids=["ctrl-c", "second-ctrl-c"])
def test_pretrain_ctrl_c_saves_and_exits_130(tmp_path, tiny_dataset, monkeypatch, sigint):
    _InterruptAfter(monkeypatch, 5, sigint=sigint)
    out = tmp_path / "run"
    rc = main(["pretrain", f"dataset={tiny_dataset}", f"out={out}", "steps=50", *TINY_AGENT])
    assert rc == 130
    # Ctrl-C: update 5 completes, then the loop saves; a hard interrupt keeps the 4 completed ones
    assert ckpt.load_meta(out)["step"] == (5 if sigint else 4)
    monkeypatch.undo()
    assert main(["pretrain", f"dataset={tiny_dataset}", f"out={out}", "steps=8", "resume=true", *TINY_AGENT]) == 0
    assert ckpt.load_meta(out)["step"] == 8


def test_finetune_hard_interrupt_saves_buffer_and_exits_130(tmp_path, pretrained, monkeypatch):
    _InterruptAfter(monkeypatch, 7)
    out = tmp_path / "ft"
    rc = main(["finetune", f"checkpoint={pretrained}", f"out={out}", "steps=30", *FT])
    assert rc == 130
    state = ckpt.load_checkpoint(out)
    assert state["meta"]["step"] == 7  # the env step whose update was interrupted is stored
    assert int(state["buffer"]["steps_written"]) == 7
