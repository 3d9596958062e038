"""Image and command conversions between ROS message fields and numpy."""

import array

import numpy as np
import pytest

from robot_calql.control.conversions import (
    SUPPORTED_ENCODINGS,
    CommandFormatError,
    ImageFormatError,
    action_to_delta,
    delta_to_action,
    delta_to_twist,
    image_to_rgb,
    joint_state_to_positions,
    pack_policy_command,
    rgb_to_image,
    twist_to_delta,
    unpack_policy_command,
)


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)


@pytest.mark.parametrize("enc", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_round_trip(rgb, enc):
    f = rgb_to_image(rgb, enc)
    assert f["step"] == 5 * (4 if "a" in enc[3:] else 3)
    back = image_to_rgb(f["encoding"], f["height"], f["width"], f["step"], f["data"])
    np.testing.assert_array_equal(back, rgb)


def test_bgr_really_swaps_channels():
    px = np.array([[[10, 20, 30]]], np.uint8)
    assert rgb_to_image(px, "bgr8")["data"] == bytes([30, 20, 10])
    np.testing.assert_array_equal(image_to_rgb("bgr8", 1, 1, 3, bytes([30, 20, 10])), px)


def test_mono8_becomes_grey_rgb(rgb):
    f = rgb_to_image(rgb, "mono8")
    g = image_to_rgb("mono8", f["height"], f["width"], f["step"], array.array("B", f["data"]))
    assert g.shape == (6, 5, 3)
    np.testing.assert_array_equal(g[..., 0], g[..., 2])
    expected = np.round(rgb @ [0.299, 0.587, 0.114])
    np.testing.assert_allclose(g[..., 0], expected, atol=1)


def test_row_padding_is_skipped(rgb):
    padded = np.zeros((6, 5 * 3 + 4), np.uint8)
    padded[:, :15] = rgb.reshape(6, 15)
    back = image_to_rgb("rgb8", 6, 5, 19, padded.tobytes())
    np.testing.assert_array_equal(back, rgb)


def test_all_supported_encodings_are_tested():
    assert set(SUPPORTED_ENCODINGS) == {"rgb8", "bgr8", "rgba8", "bgra8", "mono8"}


@pytest.mark.parametrize(
    "args, match",
    [
        (("yuv422", 2, 2, 4, bytes(8)), "unsupported image encoding 'yuv422'"),
        (("rgb8", 2, 2, 6, bytes(11)), "11 bytes, expected"),
        (("rgb8", 2, 2, 5, bytes(10)), "shorter than"),
        (("rgb8", 0, 2, 6, b""), "zero size"),
    ],
)
def test_bad_images_are_named(args, match):
    with pytest.raises(ImageFormatError, match=match):
        image_to_rgb(*args)


def test_action_delta_twist_round_trip():
    a = np.array([0.5, -1.0, 0.25, 1.0, 0.3], np.float32)
    d = action_to_delta(a, 0.02, 0.15)
    np.testing.assert_allclose(d, [0.01, -0.02, 0.005, 0.15, 0.3])
    lin, ang = delta_to_twist(d, 10.0)
    np.testing.assert_allclose(lin, [0.1, -0.2, 0.05])
    np.testing.assert_allclose(ang, [0, 0, 1.5])
    np.testing.assert_allclose(twist_to_delta(lin, ang, 10.0), d[:4])
    np.testing.assert_allclose(delta_to_action(d, 0.02, 0.15), a, atol=1e-6)
    # out-of-range actions are clipped, not scaled beyond the action scale
    np.testing.assert_allclose(action_to_delta(np.array([5, 0, 0, 0, 0]), 0.02, 0.15)[0], 0.02)


def test_bad_actions_and_commands():
    with pytest.raises(CommandFormatError, match="shape"):
        action_to_delta(np.zeros(4), 0.02, 0.15)
    with pytest.raises(CommandFormatError, match="non-finite"):
        action_to_delta(np.array([np.nan, 0, 0, 0, 0]), 0.02, 0.15)
    data = pack_policy_command(np.array([0.01, 0, 0, 0, 1]), 12.5)
    d, stamp = unpack_policy_command(data)
    assert stamp == 12.5 and d[0] == 0.01
    with pytest.raises(CommandFormatError, match="6 values"):
        unpack_policy_command(data[:5])
    data[2] = float("nan")
    with pytest.raises(CommandFormatError, match="non-finite dz_m"):
        unpack_policy_command(data)


def test_joint_state_by_name():
    q = joint_state_to_positions(["b", "a", "c"], [2.0, 1.0, 3.0], ["a", "b"])
    np.testing.assert_array_equal(q, [1.0, 2.0])
    with pytest.raises(CommandFormatError, match="lacks joints"):
        joint_state_to_positions(["a"], [1.0], ["a", "z"])
    with pytest.raises(CommandFormatError, match=r"non-finite positions for \['a'\]"):
        joint_state_to_positions(["a"], [float("nan")], ["a"])
