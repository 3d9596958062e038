"""The default (CNN) classifier learns the synthetic task, saves, loads, and the CLI works."""

import json

import numpy as np
import pytest
from conftest import BWD, FWD, LABELS, make_dataset, synthetic_episode

from robot_calql.cli import main as cli
from robot_calql.data.dataset import Dataset
from robot_calql.reward import load_classifier
from robot_calql.reward.evaluate import evaluate
from robot_calql.reward.train import TrainConfig, train_classifier


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cnn")
    make_dataset(root / "train", episodes_per_group=8)
    clf, report = train_classifier(root / "train", labels=LABELS,
                                   train=TrainConfig(steps=600, batch_size=32, target_fpr=0.02), progress=False)
    return root, clf, report


def test_cnn_learns_forward_and_backward_on_held_out_episodes(trained, tmp_path):
    root, clf, report = trained
    assert report["val_episodes"] > 0 and 0 < clf.threshold < 1
    make_dataset(tmp_path / "test", episodes_per_group=6, seed=123)
    result, _ = evaluate(clf, tmp_path / "test")
    for instr in (FWD, BWD):
        m = result["frame_metrics"][instr]
        assert m["recall"] >= 0.9, (instr, m)
        assert m["fpr"] <= 0.05, (instr, m)
    # the same final frame means success for one instruction and failure for the other
    rng = np.random.default_rng(5)
    last = synthetic_episode(rng, 16, forward=True, success=True).image[-1]
    p = clf.predict_proba(np.stack([last, last]), [FWD, BWD])
    assert p[0] > clf.threshold > p[1]


def test_save_load_roundtrip_gives_identical_probabilities(trained, tmp_path):
    root, clf, _ = trained
    clf.save(tmp_path / "m")
    loaded = load_classifier(tmp_path / "m")
    ep = Dataset(root / "train")[0]
    np.testing.assert_array_equal(loaded.predict_proba(ep.image, ep.instruction),
                                  clf.predict_proba(ep.image, ep.instruction))
    assert loaded.threshold == clf.threshold
    one = loaded.predict_proba(ep.image[0], ep.instruction)  # a single [H, W, 3] frame
    assert one.shape == (1,) and one.dtype == np.float32
    assert not (tmp_path / "m" / ".model.safetensors.tmp").exists()


def test_cli_train_and_eval(tmp_path, capsys):
    make_dataset(tmp_path / "ds", episodes_per_group=4)
    out = tmp_path / "model"
    rc = cli(["reward-train", f"dataset={tmp_path / 'ds'}", f"out={out}", "train.steps=20", "train.batch_size=16",
              "labels.positive_last=3", "labels.ambiguous=4"])
    assert rc == 0
    cfg = json.loads((out / "reward_model.json").read_text())
    assert cfg["backbone"] == "cnn" and cfg["image_shape"] == [16, 16, 3]
    assert cfg["labels"]["positive_last"] == 3  # label settings travel with the model to reward-eval
    assert (out / "model.safetensors").is_file() and (out / "train_report.json").is_file()
    # a second run into the same folder refuses to overwrite
    assert cli(["reward-train", f"dataset={tmp_path / 'ds'}", f"out={out}", "train.steps=1"]) == 1
    assert "overwrite" in capsys.readouterr().err

    rc = cli(["reward-eval", f"model={out}", f"dataset={tmp_path / 'ds'}", f"out={tmp_path / 'eval'}"])
    assert rc == 0
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    m = report["frame_metrics"]
    assert set(m) == {"all", FWD, BWD}
    assert m["all"]["tp"] == m[FWD]["tp"] + m[BWD]["tp"]
    assert m["all"]["positives"] + m["all"]["negatives"] == report["frames"]
    assert (tmp_path / "eval" / "pr_curve.png").stat().st_size > 1000
    assert "| instruction |" in (tmp_path / "eval" / "confusion.md").read_text()
