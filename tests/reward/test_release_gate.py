"""The classifier's release gate (`gripper_open_min`): stored in the classifier folder and loaded
back (folders written before it existed load without a gate), checked at reward-train, and set by
the demo (placing tasks succeed only once the object is let go)."""

import json

import pytest

from robot_calql.cli import main as cli
from robot_calql.config import ConfigError, compose
from robot_calql.reward import RewardModelError, build_classifier, load_classifier
from robot_calql.reward.model import CONFIG_FILE

FWD = "put the cube in the bowl"


def test_gripper_open_min_survives_save_and_load(tmp_path):
    clf = build_classifier("cnn", (16, 16, 3), [FWD], gripper_open_min=0.5)
    loaded = load_classifier(clf.save(tmp_path / "gated"))
    assert loaded.gripper_open_min == 0.5
    assert json.loads((tmp_path / "gated" / CONFIG_FILE).read_text())["gripper_open_min"] == 0.5
    assert (loaded.released(0.38), loaded.released(0.5), loaded.released(0.8), loaded.released(None)) == (
        False, True, True, False)
    # set on a classifier after it was built (as reward-train could), it is saved too
    loaded.gripper_open_min = 0.7
    assert load_classifier(loaded.save(tmp_path / "regated")).gripper_open_min == 0.7
    ungated = load_classifier(build_classifier("cnn", (16, 16, 3), [FWD]).save(tmp_path / "ungated"))
    assert ungated.gripper_open_min is None and ungated.released(0.0) and ungated.released(None)


def test_a_folder_written_before_the_gate_loads_without_one(tmp_path):
    path = build_classifier("cnn", (16, 16, 3), [FWD]).save(tmp_path / "old")
    cfg = json.loads((path / CONFIG_FILE).read_text())
    del cfg["gripper_open_min"]  # what SuccessClassifier.save wrote before the gate existed
    (path / CONFIG_FILE).write_text(json.dumps(cfg))
    assert load_classifier(path).gripper_open_min is None


def test_a_bad_gate_in_a_folder_names_the_file_and_key(tmp_path):
    path = build_classifier("cnn", (16, 16, 3), [FWD]).save(tmp_path / "bad")
    cfg = json.loads((path / CONFIG_FILE).read_text())
    (path / CONFIG_FILE).write_text(json.dumps({**cfg, "gripper_open_min": 1.5}))
    with pytest.raises(RewardModelError, match="reward_model.json: gripper_open_min: .*in \\(0, 1\\]"):
        load_classifier(path)


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2", "open", "true"])
def test_reward_train_refuses_a_bad_gate_naming_the_key(tmp_path, value):
    from robot_calql.reward import train as reward_train

    cfg = compose("reward_train", [f"dataset={tmp_path}", f"out={tmp_path / 'out'}", f"gripper_open_min={value}"])
    with pytest.raises(ConfigError, match=r"gripper_open_min: must be a normalized gripper opening in \(0, 1\]"):
        reward_train.main(cfg)


def test_the_cli_reports_a_bad_gate(tmp_path, capsys):
    assert cli(["reward-train", f"dataset={tmp_path}", f"out={tmp_path / 'out'}", "gripper_open_min=2"]) == 1
    assert "gripper_open_min" in capsys.readouterr().err


def test_reward_train_defaults_to_no_gate():
    assert compose("reward_train", []).gripper_open_min is None


def test_the_demo_trains_its_classifier_with_the_gate(tmp_path, monkeypatch):
    from robot_calql import demo
    from robot_calql.reward import train as reward_train

    seen = []
    monkeypatch.setattr(reward_train, "main", lambda cfg: seen.append(cfg) or 0)
    for overrides, want in ((["experiment=demo_smoke"], 0.5), (["classifier_gripper_open_min=0"], None)):
        demo.train_classifier(compose("demo", overrides), tmp_path / "data", tmp_path / "reward")
        assert seen[-1].gripper_open_min == want


def test_the_demo_pools_its_classifier_down_to_classifier_image_size(tmp_path, monkeypatch):
    """A 128 px camera trains a classifier that averages 2x2 pixels (a 64 px classifier's cost);
    a 64 or 100 px camera is not pooled; a size that does not divide is a ConfigError."""
    from robot_calql import demo
    from robot_calql.reward import train as reward_train

    seen = []
    monkeypatch.setattr(reward_train, "main", lambda cfg: seen.append(cfg) or 0)
    for size, pool in ((128, 2), (64, 1), (100, 1)):
        demo.train_classifier(compose("demo", [f"image_size={size}", "classifier_image_size=64"]),
                              tmp_path / "data", tmp_path / "reward")
        assert seen[-1].cnn.pool == pool
    with pytest.raises(ConfigError, match="image_size 100 is not a whole multiple of classifier_image_size 32"):
        demo.train_classifier(compose("demo", ["image_size=100", "classifier_image_size=32"]),
                              tmp_path / "data", tmp_path / "reward")
