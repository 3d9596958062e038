"""The robot's cameras (robot YAML `cameras`, or `topics.image`), the one frame decoder for raw
and compressed images, and the live frame set (no ROS: rosbags message objects stand in)."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from robot_calql.bags.messages import MessageFactory
from robot_calql.calibration.crop import CropRegion, crop_and_resize
from robot_calql.config import ConfigError
from robot_calql.control.cameras import (
    CameraSpec,
    FrameSet,
    StaleCamera,
    camera_image,
    camera_specs,
    decode_frame,
    image_keys,
)
from robot_calql.control.conversions import ImageFormatError

F = MessageFactory("kilted")


def _frame(seed=1, h=48, w=64):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_camera_specs_from_cameras_section_and_fallback():
    cfg = OmegaConf.create({"topics": {"image": "/cam/image_raw"}, "cameras": {
        "front": {"topic": "/front/image_raw/compressed"},
        "wrist": {"topic": "/wrist/image_raw", "compressed": False, "crop": {"x": 4, "y": 2, "width": 40, "height": 40}},
        "side": {"topic": "/side/image", "compressed": True, "crop": "center"}}})
    main_crop = CropRegion(1, 1, 10, 10)
    specs = camera_specs(cfg, main_crop)
    assert specs == [CameraSpec("front", "/front/image_raw/compressed", True, main_crop, True),
                     CameraSpec("wrist", "/wrist/image_raw", False, CropRegion(4, 2, 40, 40), False),
                     CameraSpec("side", "/side/image", True, "center", False)]
    assert image_keys(specs) == ["image", "image_wrist", "image_side"]
    # no cameras section: topics.image is the one camera; compressed from its name
    assert camera_specs({"topics": {"image": "/c/image_raw/compressed"}}) == [
        CameraSpec("main", "/c/image_raw/compressed", True, None, True)]
    assert camera_specs({"topics": {"image": "/c/image_raw"}})[0].compressed is False
    assert camera_specs({"topics": {}}) == []


@pytest.mark.parametrize("cameras, match", [
    ({"wrist": {"compressed": True}}, r"robot.cameras.wrist.topic"),
    ({"wrist": {"topic": "/w", "compressed": "yes"}}, r"robot.cameras.wrist.compressed must be true or false"),
    ({"wrist": {"topic": "/w", "crop": {"x": 1}}}, r"robot.cameras.wrist.crop: a crop needs integers"),
    ({"wrist": {"topic": "/w", "crop": "left"}}, r"robot.cameras.wrist.crop: crop must be"),
    ({"latent": {"topic": "/w"}}, r"robot.cameras.latent: a camera name"),
])
def test_bad_camera_entries_are_named(cameras, match):
    with pytest.raises(ConfigError, match=match):
        camera_specs({"cameras": cameras})


def test_raw_and_compressed_frames_decode_to_the_same_rgb():
    rgb = _frame()
    for enc in ("rgb8", "bgr8"):
        np.testing.assert_array_equal(decode_frame(F.image(0, rgb, enc)), rgb)
    mono = decode_frame(F.image(0, rgb, "mono8"))
    assert mono.shape == rgb.shape and np.array_equal(mono[..., 0], mono[..., 2])
    np.testing.assert_array_equal(decode_frame(F.compressed_image(0, rgb, "png")), rgb)  # lossless
    jpg = decode_frame(F.compressed_image(0, rgb, "jpeg"))
    assert jpg.shape == rgb.shape and jpg.dtype == np.uint8
    red = np.zeros((48, 64, 3), np.uint8)
    red[..., 0] = 255
    px = decode_frame(F.compressed_image(0, red, "jpeg"))[20, 30]  # RGB order, not the decoder's BGR
    assert px[0] > 240 and px[1] < 15 and px[2] < 15, px
    crop = CropRegion(8, 4, 40, 40)
    np.testing.assert_array_equal(camera_image(F.image(0, rgb, "bgr8"), crop, 16), crop_and_resize(rgb, crop, 16))


def test_unsupported_encodings_and_formats_are_named():
    rgb = _frame()
    with pytest.raises(ImageFormatError, match="unsupported image encoding '16UC1'"):
        decode_frame(F.image(0, rgb, "16UC1"))
    msg = F.compressed_image(0, rgb, "jpeg")
    msg.format = "h264"
    with pytest.raises(ImageFormatError, match="unsupported compressed image format 'h264'"):
        decode_frame(msg)
    msg.format = "jpeg"
    msg.data = np.zeros(10, np.uint8)
    with pytest.raises(ImageFormatError, match=r"compressed image \(jpeg, 10 bytes\) does not decode"):
        decode_frame(msg)
    with pytest.raises(ImageFormatError, match="does not fit"):
        camera_image(F.image(0, rgb), CropRegion(40, 0, 40, 40), 16)


def test_frame_set_takes_the_newest_frames_and_names_a_stale_camera():
    specs = [CameraSpec("front", "/f", False, None, True), CameraSpec("wrist", "/w/compressed", True, "center")]
    fs = FrameSet(specs, 16, max_skew_s=0.2)
    front, wrist = _frame(1), _frame(2)
    assert fs.stale(10.0, 1.0) == ["wrist"]
    with pytest.raises(StaleCamera, match=r"no frame yet from camera 'wrist' \(/w/compressed\)"):
        fs.images(F.image(0, front), 10.0)
    fs.put("wrist", F.compressed_image(0, wrist, "png"), 9.95)
    assert fs.stale(10.0, 1.0) == [] and fs.stale(11.0, 1.0) == ["wrist"]
    out = fs.images(F.image(0, front), 10.0)
    assert sorted(out) == ["image", "image_wrist"]
    np.testing.assert_array_equal(out["image"], crop_and_resize(front, None, 16))
    np.testing.assert_array_equal(out["image_wrist"], crop_and_resize(wrist, "center", 16))
    with pytest.raises(StaleCamera, match=r"camera 'wrist' \(/w/compressed\): newest frame is 0.350 s"):
        fs.images(F.image(0, front), 10.3)


def test_frame_set_rejects_a_main_frame_of_another_size():
    specs = [CameraSpec("front", "/f/compressed", True, None, True)]
    fs = FrameSet(specs, 16, max_skew_s=0.2, main_hw=(48, 64))
    assert fs.images(F.compressed_image(0, _frame(), "png"), 1.0)["image"].shape == (16, 16, 3)
    with pytest.raises(ImageFormatError, match=r"frame 32x24 from camera 'front' \(/f/compressed\), expected 64x48"):
        fs.images(F.compressed_image(0, _frame(h=24, w=32), "png"), 1.0)
