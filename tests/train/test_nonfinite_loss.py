"""A NaN loss stops training with an error naming the update and the losses, the CLI exits 1,
and the newest checkpoint on disk stays the last good one (finite, loadable).

Before the guard, a poisoned run went on to the end, exited 0 and saved a checkpoint whose
tensors were all NaN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_calql.cli import main
from robot_calql.train import checkpoint as ckpt
from robot_calql.train.common import NonFiniteTrainingError, check_finite_state, check_losses

from .conftest import QUIET, TINY_AGENT


def _poison_from(monkeypatch, cls, call: int):
    """From the `call`-th batch on, `cls.sample` returns rewards of NaN (as a corrupt row would)."""
    orig = cls.sample
    calls = [0]

    def sample(self, batch_size):
        b = orig(self, batch_size)
        calls[0] += 1
        if calls[0] >= call:
            b["reward"] = torch.full_like(b["reward"], float("nan"))
        return b

    monkeypatch.setattr(cls, "sample", sample)
    return calls


def _assert_finite_checkpoint(run, step):
    c = ckpt.load_checkpoint(run)
    assert c["dir"].name == f"step_{step:09d}" and c["meta"]["step"] == step
    assert all(bool(torch.isfinite(v).all()) for v in c["agent_state"].values() if v.is_floating_point())
    assert max(int(p.name[5:]) for p in (run / ckpt.CKPT_DIR).glob("step_*")) == step  # nothing newer


def test_pretrain_stops_at_the_first_nan_loss_and_keeps_the_last_good_checkpoint(tmp_path, tiny_dataset, capsys,
                                                                                   monkeypatch):
    from robot_calql.data.replay import OfflineReplay

    run = tmp_path / "run"
    calls = _poison_from(monkeypatch, OfflineReplay, 25)
    rc = main(["pretrain", f"dataset={tiny_dataset}", f"out={run}", "steps=40", "save_every=10", "log_every=5",
               *TINY_AGENT])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert calls[0] == 25, "training stopped at the first poisoned update"
    assert "update 25 gave a non-finite loss (loss_critic=nan" in err
    assert f"The last good checkpoint is {run / ckpt.CKPT_DIR / 'step_000000020'}" in err
    _assert_finite_checkpoint(run, 20)
    assert not (run / "summary.json").exists()
    # the metrics file holds only finite rows, up to the last logged point before the NaN
    from robot_calql.train.logger import read_metrics

    rows = [r for r in read_metrics(run / "metrics.jsonl") if r["tag"] == "pretrain"]
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    assert all(np.isfinite(v) for r in rows for k, v in r.items() if k.startswith("loss"))


def test_finetune_stops_at_the_first_nan_loss_and_keeps_the_last_good_checkpoint(tmp_path, pretrained, capsys,
                                                                                   monkeypatch):
    from robot_calql.data.replay import MixedReplay

    out = tmp_path / "ft"
    _poison_from(monkeypatch, MixedReplay, 15)
    rc = main(["finetune", f"checkpoint={pretrained}", f"out={out}", "steps=30", "save_every=10", "eval_every=0",
               "max_episode_steps=8", *QUIET])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "online step 15 (update 35) gave a non-finite loss (loss_critic=nan" in err  # 20 pre-training updates
    assert f"The last good checkpoint is {out / ckpt.CKPT_DIR / 'step_000000010'}" in err
    _assert_finite_checkpoint(out, 10)
    assert ckpt.load_checkpoint(out)["buffer"] is not None


def test_the_checks_name_the_problem():
    check_losses({"loss_critic": 1.0, "q_data": float("nan")}, "update 3")  # only loss terms are checked
    with pytest.raises(NonFiniteTrainingError, match=r"update 3 gave a non-finite loss \(loss_td=inf\).*No checkpoint"):
        check_losses({"loss_critic": 1.0, "loss_td": float("inf")}, "update 3")
    sd = {"actor/w": torch.ones(3), "num_updates": torch.tensor(4), "critic/b": torch.tensor([0.0, float("nan")])}
    with pytest.raises(NonFiniteTrainingError, match="tensor 'critic/b' .* last good checkpoint is /x/step_2"):
        check_finite_state(sd, "update 9", "/x/step_2")
