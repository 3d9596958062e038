"""Tiny random SigLIP and CLIP models through the real from_pretrained path."""

import numpy as np
import pytest
import torch
from conftest import LABELS, make_dataset
from safetensors.torch import load_file

from robot_calql.data.dataset import Dataset
from robot_calql.reward import RewardModelError, build_classifier, load_classifier
from robot_calql.reward.train import TrainConfig, train_classifier


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("hfds") / "ds", episodes_per_group=3)


@pytest.mark.parametrize("family", ["siglip", "clip"])
@pytest.mark.parametrize("unfreeze", [0, 1])
def test_train_save_load_predict(family, unfreeze, request, small_dataset, tmp_path):
    hf_dir = request.getfixturevalue(f"tiny_{family}")
    clf, report = train_classifier(small_dataset, backbone=str(hf_dir), unfreeze_blocks=unfreeze,
                                   train=TrainConfig(steps=15, batch_size=16), progress=False)
    assert type(clf.backbone.model).__name__ == ("SiglipModel" if family == "siglip" else "CLIPModel")
    clf.save(tmp_path / "m")
    saved = load_file(str(tmp_path / "m" / "model.safetensors"))
    backbone_keys = [k for k in saved if k.startswith("backbone.")]
    if unfreeze:
        # the trained last vision block is saved and differs from the pretrained one
        assert any(".layers.1." in k for k in backbone_keys)
        assert not any(".layers.0." in k or "text_model" in k for k in backbone_keys)
        fresh = build_classifier(str(hf_dir), clf.image_shape, clf.instructions)
        k = next(k for k in backbone_keys if k.endswith("layers.1.mlp.fc1.weight"))
        assert not torch.equal(saved[k], fresh.state_dict()[k])
    else:
        assert backbone_keys == []  # the frozen backbone is loaded from its folder again
    loaded = load_classifier(tmp_path / "m")
    ep = Dataset(small_dataset)[1]
    a = clf.predict_proba(ep.image, ep.instruction)
    b = loaded.predict_proba(ep.image, ep.instruction)
    assert a.shape == (len(ep) + 1,) and np.all((a > 0) & (a < 1))
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert loaded.threshold == pytest.approx(clf.threshold)


def test_frozen_head_learns_from_siglip_features(tiny_siglip, small_dataset):
    clf, report = train_classifier(small_dataset, backbone=str(tiny_siglip), labels=LABELS,
                                   train=TrainConfig(steps=200, batch_size=32, lr=3e-3), progress=False)
    assert report["final_loss"] < 0.4  # started at ~0.69


def test_missing_backbone_is_a_clear_error(tmp_path):
    with pytest.raises(RewardModelError, match="cannot load the Hugging Face backbone"):
        build_classifier("no-such-org/no-such-model", (16, 16, 3), ["x"], local_files_only=True)
    with pytest.raises(RewardModelError, match="cannot load the Hugging Face backbone"):
        build_classifier(str(tmp_path), (16, 16, 3), ["x"])  # an empty folder


def test_unfreeze_more_blocks_than_exist(tiny_clip):
    with pytest.raises(RewardModelError, match="only 2 blocks"):
        build_classifier(str(tiny_clip), (16, 16, 3), ["x"], unfreeze_blocks=5)


def test_cli_with_a_clip_folder(tiny_clip, small_dataset, tmp_path):
    import json

    from robot_calql.cli import main as cli

    out = tmp_path / "model"
    assert cli(["reward-train", f"dataset={small_dataset}", f"out={out}", f"backbone={tiny_clip}",
                "train.steps=5", "train.batch_size=8", "labels.positive_last=3", "labels.ambiguous=4"]) == 0
    cfg = json.loads((out / "reward_model.json").read_text())
    assert cfg["backbone"] == str(tiny_clip) and cfg["local_files_only"] is True
    assert cli(["reward-eval", f"model={out}", f"dataset={small_dataset}"]) == 0
    assert (out / "eval" / "metrics.json").is_file()
