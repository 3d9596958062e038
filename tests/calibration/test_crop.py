"""Crop calibration: region choice, crop.yaml round trip, and the crop + resize function."""

import cv2
import numpy as np
import pytest

from robot_calql import cli
from robot_calql.calibration import CalibrationError
from robot_calql.calibration.crop import (
    CropRegion,
    centered_square,
    crop_and_resize,
    load_crop,
    square_around,
)


def _frame(w=320, h=240):
    """A frame with a red square whose centre we know."""
    img = np.full((h, w, 3), 90, np.uint8)
    img[100:140, 200:240] = (0, 0, 255)  # BGR red, centre (220, 120)
    return img


def test_auto_regions():
    assert centered_square(320, 240) == CropRegion(40, 0, 240, 240)
    assert square_around((220, 120), 100, 320, 240) == CropRegion(170, 70, 100, 100)
    # near the border the square is shifted in, never shrunk
    assert square_around((310, 5), 100, 320, 240) == CropRegion(220, 0, 100, 100)
    with pytest.raises(CalibrationError, match="size"):
        square_around((10, 10), 300, 320, 240)


def test_crop_and_resize_keeps_the_chosen_content():
    img = _frame()
    out = crop_and_resize(img, square_around((220, 120), 40, 320, 240), 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert np.all(out[..., 2] == 255) and np.all(out[..., 0] == 0)   # only the red square
    full = crop_and_resize(img, None, (64, 48))
    assert full.shape == (48, 64, 3)
    gray = crop_and_resize(img[..., 0], CropRegion(0, 0, 10, 10), 20)
    assert gray.shape == (20, 20)
    with pytest.raises(CalibrationError, match="does not fit"):
        crop_and_resize(img, CropRegion(300, 0, 40, 40), 16)


def test_cli_writes_crop_yaml_and_preview(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "frame.png"), _frame())
    out = tmp_path / "cell" / "crop.yaml"
    assert cli.main(["calibrate-crop", f"image={tmp_path / 'frame.png'}", "center=[220,120]",
                     "size=80", f"out={out}"]) == 0
    assert load_crop(out) == CropRegion(180, 80, 80, 80)
    assert cv2.imread(str(out.parent / "crop_preview.png")) is not None
    assert cli.main(["calibrate-crop", f"image={tmp_path / 'frame.png'}", "x=10", "y=20",
                     "width=100", "height=90", f"out={out}"]) == 0
    assert load_crop(out) == CropRegion(10, 20, 100, 90)
    # an explicit region outside the frame is refused and the old file kept
    assert cli.main(["calibrate-crop", f"image={tmp_path / 'frame.png'}", "x=300", "y=0",
                     "width=100", "height=100", f"out={out}"]) == 1
    assert "does not fit" in capsys.readouterr().err
    assert load_crop(out) == CropRegion(10, 20, 100, 90)


def test_bad_inputs_are_named(tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"nope")
    assert cli.main(["calibrate-crop", f"image={tmp_path / 'bad.png'}", f"out={tmp_path / 'c.yaml'}"]) == 1
    assert "bad.png" in capsys.readouterr().err
    (tmp_path / "c.yaml").write_text("x: 1\ny: 2\nwidth: 3\n")
    with pytest.raises(CalibrationError, match="height"):
        load_crop(tmp_path / "c.yaml")


def test_the_robots_crop_is_read_one_way_for_every_user(tmp_path):
    """robot_crop: the calibration folder's crop.yaml, else None (the whole frame); an import's
    crop=auto|center|none resolves through it; "center" crops each frame's centred square."""
    from omegaconf import OmegaConf

    from robot_calql.calibration.crop import crop_label, crop_setting, robot_crop
    from robot_calql.config import ConfigError

    robot = OmegaConf.create({"calibration": str(tmp_path)})
    assert robot_crop(robot) is None and robot_crop(OmegaConf.create({"calibration": None})) is None
    (tmp_path / "crop.yaml").write_text("x: 10\ny: 20\nwidth: 100\nheight: 90\n")
    assert robot_crop(robot) == CropRegion(10, 20, 100, 90)
    assert crop_setting("auto", robot) == CropRegion(10, 20, 100, 90)
    assert crop_setting("none", robot) is None and crop_setting("center", robot) == "center"
    assert [crop_label(c) for c in (CropRegion(10, 20, 100, 90), "center", None)] == [[10, 20, 100, 90], "center", "none"]
    with pytest.raises(ConfigError, match="crop=middle"):
        crop_setting("middle", robot)
    (tmp_path / "crop.yaml").write_text("x: 10\ny: 20\n")
    with pytest.raises(CalibrationError, match="lacks"):
        robot_crop(robot)
    img = _frame()
    np.testing.assert_array_equal(crop_and_resize(img, "center", 16), crop_and_resize(img, centered_square(320, 240), 16))


def test_there_is_one_crop_and_resize():
    """The live nodes, ingestion and LeRobot import share calibration.crop.crop_and_resize: the
    wrappers with their own argument orders are gone."""
    from robot_calql.bags import messages
    from robot_calql.control import conversions

    assert not hasattr(conversions, "crop_and_resize") and not hasattr(messages, "crop_resize")
