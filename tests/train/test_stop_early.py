"""How a training loop ends early (common.finish_early): Ctrl-C saves a checkpoint, prints where
it stopped and exits 130; a non-finite loss saves nothing and propagates. Each command's message
is pinned here (pretrain/finetune exit codes and checkpoints: test_resume.py, non-finite losses:
test_nonfinite_loss.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from robot_calql.cli import main
from robot_calql.train import checkpoint as ckpt
from robot_calql.train.common import NonFiniteTrainingError, finish_early

from .conftest import QUIET, TINY_AGENT


class _Parts:
    """A progress bar, a logger and a save function that record the order they were used in."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.bar = self._Closer(self.events, "bar closed")
        self.logger = self._Closer(self.events, "logger closed")

    class _Closer:
        def __init__(self, events: list[str], name: str) -> None:
            self.events, self.name = events, name

        def close(self) -> None:
            self.events.append(self.name)

    def save(self) -> Path:
        self.events.append("saved")
        return Path("/runs/r/checkpoints/step_000000007")


def test_ctrl_c_saves_then_closes_the_logger_prints_and_returns_130(capsys):
    p = _Parts()
    rc = finish_early(KeyboardInterrupt(), p.bar, p.logger, p.save, "update 7", "(resume with resume=true)")
    assert rc == 130
    assert p.events == ["bar closed", "saved", "logger closed"]
    assert capsys.readouterr().out == ("\ninterrupted at update 7; checkpoint saved to "
                                       "/runs/r/checkpoints/step_000000007 (resume with resume=true)\n")


def test_a_non_finite_loss_saves_nothing_and_is_raised_again(capsys):
    p = _Parts()
    err = NonFiniteTrainingError("update 3 gave a non-finite loss (loss_td=nan)")
    with pytest.raises(NonFiniteTrainingError) as raised:
        finish_early(err, p.bar, p.logger, p.save, "update 3", "(resume with resume=true)")
    assert raised.value is err
    assert p.events == ["bar closed", "logger closed"]
    assert capsys.readouterr().out == ""


def _interrupt_update(monkeypatch, n: int) -> None:
    """CalQL.update raises KeyboardInterrupt (a second Ctrl-C) on its n-th call."""
    from robot_calql.agent import calql

    orig, calls = calql.CalQL.update, [0]

    def update(agent, batch):
        calls[0] += 1
        if calls[0] == n:
            raise KeyboardInterrupt
        return orig(agent, batch)

    monkeypatch.setattr(calql.CalQL, "update", update)


def test_each_command_names_where_it_stopped_and_how_to_go_on(tmp_path, tiny_dataset, pretrained, monkeypatch,
                                                              capsys):
    def interrupted(argv: list[str], n: int) -> str:
        capsys.readouterr()
        with monkeypatch.context() as m:
            _interrupt_update(m, n)
            assert main(argv) == 130
        return capsys.readouterr().out

    pre = tmp_path / "pre"
    out = interrupted(["pretrain", f"dataset={tiny_dataset}", f"out={pre}", "steps=50", *TINY_AGENT], 5)
    assert f"interrupted at update 4; checkpoint saved to {ckpt.find_checkpoint(pre)} (resume with resume=true)" \
        in out

    ft = tmp_path / "ft"
    out = interrupted(["finetune", f"checkpoint={pretrained}", f"out={ft}", "steps=30", "eval_every=0",
                       "max_episode_steps=5", *QUIET], 7)
    assert f"interrupted at online step 7; checkpoint saved to {ckpt.find_checkpoint(ft)} " \
           "(resume with resume=true)" in out

    ex = tmp_path / "exploit"
    out = interrupted(["exploit", f"run={ft}", f"out={ex}", "steps=12", "eval_episodes=0", *QUIET], 3)
    assert f"interrupted at update 2; checkpoint saved to {ckpt.find_checkpoint(ex)} (not evaluated)" in out

    gym = tmp_path / "gym"
    out = interrupted(["finetune", "env=InvertedPendulum-v5", "steps=30", f"out={gym}", "eval_every=0",
                       "batch_size=16", "+agent.actor_hidden=[32,32]", "+agent.critic_hidden=[32,32]",
                       "progress=false", "tensorboard=false", "threads=1"], 6)
    step = ckpt.load_meta(gym)["step"]  # the env step whose update was interrupted
    assert f"interrupted at online step {step}; checkpoint saved to {ckpt.find_checkpoint(gym)} " \
           f"(continue with checkpoint={gym} out=<a new folder>)" in out
