"""Bad datasets and checkpoints get clear errors; runs write their plots, metrics and summaries;
the classifier reward path trains from the classifier and measures its false positives."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from robot_calql.cli import main
from robot_calql.train import checkpoint as ckpt
from robot_calql.train.logger import Logger, read_metrics
from robot_calql.train.plots import plot_calibration, plot_success

from .conftest import QUIET, TINY_AGENT

PNG = b"\x89PNG\r\n\x1a\n"


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_dataset_with_nan_reward_is_refused_naming_the_file(tmp_path, tiny_dataset, capsys):
    data = _copy(tiny_dataset, tmp_path / "data")
    f = data / "episodes" / "ep_000002" / "reward.npy"
    r = np.load(f)
    r[3] = np.nan
    np.save(f, r)
    assert main(["pretrain", f"dataset={data}", f"out={tmp_path / 'run'}", "steps=2", *TINY_AGENT]) == 1
    err = capsys.readouterr().err
    assert "ep_000002" in err and "reward" in err and "NaN" in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing half-written


def test_dataset_with_missing_rewards_is_refused(tmp_path, tiny_dataset, capsys):
    data = _copy(tiny_dataset, tmp_path / "data")
    (data / "episodes" / "ep_000001" / "reward.npy").unlink()
    assert main(["pretrain", f"dataset={data}", f"out={tmp_path / 'run'}", "steps=2", *TINY_AGENT]) == 1
    err = capsys.readouterr().err
    assert "reward.npy" in err and "missing" in err


def test_checkpoint_that_does_not_fit_names_the_tensor(tmp_path, pretrained, capsys):
    run = _copy(pretrained, tmp_path / "pre")
    ck = ckpt.find_checkpoint(run)
    meta = json.loads((ck / ckpt.META).read_text())
    meta["obs_spec"]["state"] = [meta["obs_spec"]["state"][0] + 3]  # an env with a longer state vector
    (ck / ckpt.META).write_text(json.dumps(meta))
    assert main(["finetune", f"checkpoint={run}", f"out={tmp_path / 'ft'}", "steps=2", *QUIET]) == 1
    err = capsys.readouterr().err
    assert "tensor '" in err and "shape" in err


def test_negative_exploration_temperature_is_refused(tmp_path, pretrained, capsys):
    assert main(["finetune", f"checkpoint={pretrained}", f"out={tmp_path / 'ft'}", "steps=2",
                 "explore_temperature=-1", *QUIET]) == 1
    assert "explore_temperature=-1" in (err := capsys.readouterr().err) and "must be >= 0" in err
    assert not (tmp_path / "ft").exists()
    # one temperature per action dimension: the stand-in's actions have 5, so 3 values are refused
    assert main(["finetune", f"checkpoint={pretrained}", f"out={tmp_path / 'ft'}", "steps=2",
                 "explore_temperature=[0.2,0.2,1.0]", *QUIET]) == 1
    assert "one per action dimension (5)" in capsys.readouterr().err


def test_removed_settings_are_refused_by_name(tmp_path, pretrained, capsys):
    """Settings that were deleted (gripper flips; agent flags that lost) stop the run with an error
    naming the key, whether the key is overridden or added, before anything is written."""
    for arg in ("explore_gripper_flip=0.3", "+explore_gripper_flip=0.3", "+explore_gripper_hold=2",
                "+agent.td_target_max=5", "+agent.bc_offline_only=true", "+agent.num_min_critics=1"):
        assert main(["finetune", f"checkpoint={pretrained}", f"out={tmp_path / 'ft'}", "steps=2", arg, *QUIET]) in (1, 2)
        key = arg.lstrip("+").split("=")[0].removeprefix("agent.")
        assert key in capsys.readouterr().err, arg
        assert not (tmp_path / "ft").exists()


def test_pretrain_outputs(pretrained):
    summary = json.loads((pretrained / "summary.json").read_text())
    assert (pretrained / "plots" / "calibration.png").read_bytes()[:8] == PNG
    assert summary["steps"] == 20
    assert np.isfinite(summary["holdout_q_mean"]) and np.isfinite(summary["holdout_mc_mean"])
    rows = read_metrics(pretrained, "pretrain")
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    for key in ("loss_critic", "loss_td", "loss_cql", "loss_actor", "alpha", "q_data", "q_pi", "calql_bound_rate",
                "cql_diff"):
        assert key in rows[-1], key
    meta = ckpt.load_meta(pretrained)
    assert meta["obs"] == "state" and len(meta["instructions"]) == 2


def test_plots_are_written(tmp_path):
    p = plot_success([0, 100, 200], [0.2, 0.5, 0.9], tmp_path / "a" / "s.png",
                     curves={"CQL": ([0, 100, 200], [0.2, 0.1, 0.6])})
    q = plot_calibration(np.random.default_rng(0).normal(size=50), np.linspace(0, 1, 50), tmp_path / "c.png")
    for f in (p, q):
        assert f.read_bytes()[:8] == PNG and f.stat().st_size > 1000


def test_logger_writes_jsonl_and_truncates_on_resume(tmp_path):
    with Logger(tmp_path, tensorboard=True) as lg:
        for s in (1, 2, 3):
            lg.log(s, "x", {"a": s, "not_a_number": "skip"})
    assert (tmp_path / "tb").is_dir()
    assert [r["a"] for r in read_metrics(tmp_path, "x")] == [1.0, 2.0, 3.0]
    with Logger(tmp_path, tensorboard=False, resume_step=2) as lg:
        lg.log(3, "x", {"a": 30})
    assert [r["a"] for r in read_metrics(tmp_path, "x")] == [1.0, 2.0, 30.0]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    from robot_calql.reward import build_classifier
    from robot_calql.sim import INSTRUCTIONS

    path = tmp_path_factory.mktemp("clf") / "model"
    clf = build_classifier("cnn", (64, 64, 3), list(INSTRUCTIONS))
    clf.threshold = 0.0  # an always-yes classifier: every frame is a (false) success
    clf.config["threshold"] = 0.0
    clf.save(path)
    return path


def _finetune_on_classifier(out, pretrained, classifier_dir, *overrides) -> dict:
    """A short fine-tuning on the classifier's rewards through the CLI; its summary.json."""
    assert main(["finetune", f"checkpoint={pretrained}", f"out={out}", "eval_every=0", "log_every=4",
                 "reward_source=classifier", f"classifier.path={classifier_dir}", *overrides, *QUIET]) == 0
    return json.loads((out / "summary.json").read_text())


def test_finetune_from_classifier_reward_logs_false_positives(tmp_path, pretrained, classifier_dir):
    out = tmp_path / "ft"
    summary = _finetune_on_classifier(out, pretrained, classifier_dir, "steps=8", "classifier.debounce=2",
                                      "backward=false", "max_episode_steps=30")
    # debounce 2 with an always-yes classifier: every episode "succeeds" after 2 steps, while the
    # cube is still on the table (forward task only): 4 false positives in 8 negative frames
    assert summary["online_episodes"] == 4
    assert summary["clf_false_positive_rate"] == 0.5 and summary["clf_precision"] == 0.0
    rows = read_metrics(out, "online")
    assert "clf_false_positive_rate" in rows[-1]
    buf = ckpt.load_checkpoint(out)["buffer"]
    assert buf["reward"].sum() == 4  # rewards came from the classifier, not the simulator


def test_a_success_the_classifier_misses_still_ends_the_try_at_the_time_limit(tmp_path, pretrained, classifier_dir,
                                                                            monkeypatch):
    # the simulator sees success at every step (the stand-in then never truncates) and the classifier
    # never fires (threshold 2): each try must still end after max_episode_steps, not run forever
    from robot_calql.sim.env import StandInEnv

    monkeypatch.setattr(StandInEnv, "success", lambda self: True)
    out = tmp_path / "ft"
    summary = _finetune_on_classifier(out, pretrained, classifier_dir, "steps=12", "classifier.threshold=2.0",
                                      "classifier.debounce=1", "max_episode_steps=4")
    assert summary["online_episodes"] == 3
    assert summary["clf_missed_successes"] == 3 and summary["clf_successes"] == 0
    assert ckpt.load_checkpoint(out)["buffer"]["reward"].sum() == 0
