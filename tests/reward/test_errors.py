import numpy as np
import pytest
from conftest import FWD, make_dataset, synthetic_episode

from robot_calql.cli import main as cli
from robot_calql.data.dataset import DatasetMeta, DatasetWriter
from robot_calql.reward import (
    ImageSizeError,
    LabelError,
    RewardModelError,
    UnknownInstructionError,
    build_classifier,
    load_classifier,
)
from robot_calql.reward.evaluate import evaluate
from robot_calql.reward.train import TrainConfig, train_classifier


def test_folder_without_model(tmp_path):
    with pytest.raises(RewardModelError, match="not a reward classifier folder"):
        load_classifier(tmp_path)
    with pytest.raises(RewardModelError, match="no such classifier folder"):
        load_classifier(tmp_path / "nope")


def test_cli_reports_missing_model(tmp_path, capsys):
    make_dataset(tmp_path / "ds", episodes_per_group=1)
    assert cli(["reward-eval", f"model={tmp_path}", f"dataset={tmp_path / 'ds'}"]) == 1
    assert "not a reward classifier folder" in capsys.readouterr().err


def test_mismatched_image_size(tmp_path):
    clf = build_classifier("cnn", (16, 16, 3), [FWD])
    with pytest.raises(ImageSizeError, match=r"trained and calibrated on \(16, 16, 3\)"):
        clf.predict_proba(np.zeros((2, 32, 32, 3), np.uint8), FWD)
    with pytest.raises(RewardModelError, match="uint8"):
        clf.predict_proba(np.zeros((16, 16, 3), np.float32), FWD)
    make_dataset(tmp_path / "big", episodes_per_group=1, size=24)
    with pytest.raises(ImageSizeError, match="dataset frames"):
        evaluate(clf, tmp_path / "big")


def test_cnn_pool_must_divide_the_frame_size():
    with pytest.raises(RewardModelError, match=r"cnn.pool .* divides the frame size 18x18, got 4"):
        build_classifier("cnn", (18, 18, 3), [FWD], cnn={"pool": 4})
    with pytest.raises(RewardModelError, match="cnn.pool"):
        build_classifier("cnn", (16, 16, 3), [FWD], cnn={"pool": 0})


def test_cnn_pool_sees_a_large_frame_as_its_block_average():
    """pool=2 on a frame whose pixels come in 2x2 blocks gives what pool=1 gives on the small
    frame, with the same weights: the pooled classifier is the small one at the camera's size."""
    import torch

    small = build_classifier("cnn", (16, 16, 3), [FWD])
    big = build_classifier("cnn", (32, 32, 3), [FWD], cnn={"pool": 2})
    big.load_state_dict(small.state_dict())  # same shapes: the convs run on 16x16 in both
    frames = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    blocks = frames.repeat(2, axis=1).repeat(2, axis=2)
    torch.testing.assert_close(torch.from_numpy(big.predict_proba(blocks, FWD)),
                               torch.from_numpy(small.predict_proba(frames, FWD)))
    assert not np.allclose(big.predict_proba(blocks[:, ::-1], FWD), big.predict_proba(blocks, FWD))


def test_unknown_instruction(tmp_path):
    clf = build_classifier("cnn", (16, 16, 3), [FWD])
    with pytest.raises(UnknownInstructionError, match="not in the training data"):
        clf.predict_proba(np.zeros((16, 16, 3), np.uint8), "stack the blocks")


def test_empty_label_set(tmp_path):
    """Only failed episodes: no positive frame to learn from."""
    rng = np.random.default_rng(0)
    meta = DatasetMeta(control_hz=10, action_dim=5, proprio_dim=2, image_shape=(16, 16, 3))
    w = DatasetWriter(tmp_path / "fail", meta)
    for _ in range(3):
        w.write_episode(synthetic_episode(rng, 16, forward=True, success=False))
    with pytest.raises(LabelError, match="empty label set.*0 positive"):
        train_classifier(tmp_path / "fail", train=TrainConfig(steps=1), progress=False)


def test_dataset_without_images(tmp_path):
    from robot_calql.data.dataset import DatasetError

    meta = DatasetMeta(control_hz=10, action_dim=5, proprio_dim=2)
    DatasetWriter(tmp_path / "noimg", meta)
    with pytest.raises(DatasetError, match="no images"):
        train_classifier(tmp_path / "noimg", progress=False)


def test_cli_needs_its_arguments(tmp_path, capsys):
    assert cli(["reward-train", f"out={tmp_path}"]) == 1
    assert "needs dataset=" in capsys.readouterr().err
    assert cli(["reward-eval", f"dataset={tmp_path}"]) == 1
    assert "needs model=" in capsys.readouterr().err


def test_importing_the_package_does_not_import_transformers():
    """The ROS reward node and the finetune loop import robot_calql.reward; a CNN model must not
    pay for importing transformers."""
    import subprocess
    import sys

    code = ("import sys, robot_calql.reward, robot_calql.reward.train, robot_calql.reward.evaluate; "
            "print('transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
