"""A two-camera rosbag2 recording (front: CompressedImage jpeg, wrist: raw Image) ingests into a
dataset with both image keys, each frame through the live decoder and its camera's crop."""

from __future__ import annotations

import numpy as np
import pytest

from robot_calql.bags import synthetic as S
from robot_calql.bags.ingest import BagError, ingest, settings_from
from robot_calql.bags.messages import BagRecorder, MessageFactory
from robot_calql.calibration.crop import CropRegion, crop_and_resize
from robot_calql.config import ConfigError, compose
from robot_calql.control.cameras import decode_frame
from robot_calql.data.dataset import Dataset

FRONT, WRIST = "/front/image_raw/compressed", "/wrist/image_raw"
CAMERAS = (f"+robot.cameras={{front:{{topic:{FRONT}}},"
           f"wrist:{{topic:{WRIST},crop:{{x:8,y:0,width:48,height:48}}}}}}")
WRIST_CROP = CropRegion(8, 0, 48, 48)
STEPS = 6


def _settings(*overrides: str):
    return settings_from(compose("ingest", ["bags=unused", "out=unused", "robot.bag_topics.ee_pose=null",
                                            "robot.calibration=null", f"robot.bag_topics.image={FRONT}",
                                            CAMERAS, *overrides]))


def _frames(seed: int) -> list[np.ndarray]:
    r = np.random.default_rng(seed)
    return [np.repeat(np.repeat(r.integers(0, 256, (6, 8, 3), dtype=np.uint8), 8, 0), 8, 1) for _ in range(STEPS)]


def _record(path, front, wrist, wrist_topic=WRIST):
    f = MessageFactory()
    with BagRecorder(path) as rec:
        rec.write("/robot_calql/instruction", rec.msgs.string("put the cube in the bowl"), 1)
        for k in range(STEPS):
            t = 1_000_000_000 + k * 100_000_000
            rec.write(FRONT, f.compressed_image(t, front[k], "jpeg"), t)
            rec.write(wrist_topic, f.image(t - 5_000_000, wrist[k], "bgr8"), t - 5_000_000)
            rec.write("/joint_states", f.joint_state(t, [*S.JOINTS, S.GRIPPER], np.full(6, 0.1 * k)), t)
            rec.write("/robot_calql/sent_command", f.twist(t, np.zeros(3), np.zeros(3)), t)


def test_two_camera_bag_ingests_both_image_keys(tmp_path):
    front, wrist = _frames(1), _frames(2)
    _record(tmp_path / "bag", front, wrist)
    s = _settings()
    assert s.topics["image"] == FRONT and s.topics["image_wrist"] == WRIST
    ingest([tmp_path / "bag"], s, tmp_path / "ds", progress=False)
    ds = Dataset(tmp_path / "ds")
    ds.verify()
    assert ds.meta.extra_cameras == ["wrist"] and ds.meta.extra["ingest"]["cameras"]["wrist"]["crop"] == [8, 0, 48, 48]
    ep = ds[0]
    assert len(ep) == STEPS - 1 and set(ep.camera_images) == {"image_wrist"}
    f = MessageFactory()
    for k in range(STEPS):  # tick k: frame k of each camera (the wrist frame 5 ms earlier, within tolerance)
        main = crop_and_resize(decode_frame(f.compressed_image(0, front[k], "jpeg")), None, 64)
        np.testing.assert_array_equal(ep.image[k], main)
        np.testing.assert_array_equal(ep.camera_images["image_wrist"][k], crop_and_resize(wrist[k], WRIST_CROP, 64))
    assert not np.array_equal(ep.camera_images["image_wrist"][0], crop_and_resize(wrist[0], None, 64))


def test_missing_camera_topic_and_unknown_camera_are_named(tmp_path):
    _record(tmp_path / "bag", _frames(1), _frames(2), wrist_topic="/other/image_raw")
    with pytest.raises(BagError, match=r"required topic /wrist/image_raw \(image_wrist\) is not in the bag"):
        ingest([tmp_path / "bag"], _settings(), tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds").exists()
    s = _settings("+robot.bag_topics.cameras={wrist:/other/image_raw}")  # the bag's own name for the camera
    ingest([tmp_path / "bag"], s, tmp_path / "ds", progress=False)
    assert Dataset(tmp_path / "ds")[0].camera_images["image_wrist"].shape == (STEPS, 64, 64, 3)
    with pytest.raises(ConfigError, match=r"bag_topics.cameras names \['side'\]"):
        _settings("+robot.bag_topics.cameras={side:/x}")
