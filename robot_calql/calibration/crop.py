"""The policy camera's crop and resize: one function for live frames, bags and datasets.

A robot's crop is a region of the raw camera frame (`<robot.calibration>/crop.yaml`: x, y,
width, height in raw pixels, plus the raw image size it was chosen on; written by
`robot-calql calibrate-crop`, robot_calql.calibration.calibrate_crop), resized to the policy's
square `image_size`. Live frames (the ROS policy and reward nodes), bag ingestion and LeRobot
import all call `crop_and_resize`, with the crop `robot_crop` reads:

    from robot_calql.calibration.crop import robot_crop, crop_and_resize
    crop = robot_crop(cfg.robot)          # <robot.calibration>/crop.yaml, or None: the whole frame
    policy_image = crop_and_resize(raw_rgb, crop, size=64)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

from robot_calql.calibration import (
    CalibrationError,
    calibration_dir,
    read_yaml,
)


@dataclass(frozen=True)
class CropRegion:
    """A rectangle in the raw camera image, pixels: columns x..x+width, rows y..y+height."""

    x: int
    y: int
    width: int
    height: int

    def check(self, image_width: int, image_height: int) -> CropRegion:
        """Raise CalibrationError unless the region lies inside a width x height image."""
        if self.width <= 0 or self.height <= 0 or self.x < 0 or self.y < 0 \
                or self.x + self.width > image_width or self.y + self.height > image_height:
            raise CalibrationError(
                f"crop x={self.x} y={self.y} width={self.width} height={self.height} does not fit "
                f"in a {image_width}x{image_height} image")
        return self


def centered_square(image_width: int, image_height: int) -> CropRegion:
    """The largest square centred in the image."""
    s = min(image_width, image_height)
    return CropRegion((image_width - s) // 2, (image_height - s) // 2, s, s)


def square_around(center_xy, size: int, image_width: int, image_height: int) -> CropRegion:
    """A size x size square centred on `center_xy`, shifted (not shrunk) to stay in the image."""
    size = int(size)
    if size <= 0 or size > min(image_width, image_height):
        raise CalibrationError(
            f"crop size {size} must be in 1..{min(image_width, image_height)} for a "
            f"{image_width}x{image_height} image")
    cx, cy = (float(v) for v in center_xy)
    x = int(round(cx - size / 2))
    y = int(round(cy - size / 2))
    x = min(max(x, 0), image_width - size)
    y = min(max(y, 0), image_height - size)
    return CropRegion(x, y, size, size)


# A crop: a region of the raw frame, "center" (the largest centred square of each frame) or
# None (the whole frame).
Crop = CropRegion | Literal["center"] | None


def crop_and_resize(image: np.ndarray, crop: Crop, size: int | tuple[int, int]) -> np.ndarray:
    """Cut `crop` out of a raw (H, W[, C]) image and resize it to `size` (int: square, or
    (width, height)); crop None means the whole frame, "center" the largest centred square.
    Returns the same dtype and channels; CalibrationError when the region does not fit the image.

    The one crop-and-resize of robot_calql: the policy and reward nodes (live frames), bag
    ingestion and LeRobot import (training frames) all call it, so the policy sees exactly the
    pixels it was trained on. Shrinking uses area averaging (no aliasing); a large non-integer shrink goes
    bilinear to 3x the target first and then averages exact 3x3 blocks, about 6x faster than
    OpenCV's non-integer area resize (480 -> 64 px) and within ~1.5 grey levels of it.
    Enlarging is bilinear."""
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.size == 0:
        raise CalibrationError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    h, w = image.shape[:2]
    if isinstance(crop, str):
        if crop != "center":
            raise CalibrationError(f"crop must be a CropRegion, 'center' or None, got {crop!r}")
        crop = centered_square(w, h)
    if crop is not None:
        crop.check(w, h)
        image = image[crop.y:crop.y + crop.height, crop.x:crop.x + crop.width]
    out_w, out_h = (size, size) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if out_w <= 0 or out_h <= 0:
        raise CalibrationError(f"resize target must be positive, got {size}")
    in_h, in_w = image.shape[:2]
    if in_w == out_w and in_h == out_h:
        return np.ascontiguousarray(image)
    image = np.ascontiguousarray(image)
    if in_w < out_w or in_h < out_h:
        out = cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    else:
        if (in_w % out_w or in_h % out_h) and in_w > 3 * out_w and in_h > 3 * out_h:
            image = cv2.resize(image, (3 * out_w, 3 * out_h), interpolation=cv2.INTER_LINEAR)
        out = cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_AREA)
    return out.reshape(out_h, out_w, *image.shape[2:])


def crop_dict(crop: CropRegion, image_width: int, image_height: int, image_size: int,
              source: str) -> dict:
    """The crop.yaml mapping."""
    return {"x": crop.x, "y": crop.y, "width": crop.width, "height": crop.height,
            "image_width": int(image_width), "image_height": int(image_height),
            "image_size": int(image_size), "source": source}


def load_crop(path: str | os.PathLike) -> CropRegion:
    """Read crop.yaml; CalibrationError naming a missing or bad key. If the file records the raw
    image size, the region is checked against it."""
    d = read_yaml(path, "crop")
    try:
        crop = CropRegion(*(int(d[k]) for k in ("x", "y", "width", "height")))
    except KeyError as e:
        raise CalibrationError(f"crop file {path} lacks {e} (needs x, y, width, height)") from None
    except (TypeError, ValueError):
        raise CalibrationError(f"crop file {path}: x, y, width, height must be integers") from None
    if "image_width" in d and "image_height" in d:
        crop.check(int(d["image_width"]), int(d["image_height"]))
    elif crop.width <= 0 or crop.height <= 0 or crop.x < 0 or crop.y < 0:
        raise CalibrationError(f"crop file {path}: negative or empty region {crop}")
    return crop


def robot_crop(robot: Any) -> CropRegion | None:
    """The robot's calibrated crop: `<robot.calibration>/crop.yaml` (load_crop) when the robot
    config names a calibration folder holding one, else None (the whole frame). The one reader
    of a robot's crop, for the live nodes (robot_calql_ros.nodeset) and bag ingestion."""
    if not robot.get("calibration"):
        return None
    path = calibration_dir(robot) / "crop.yaml"
    return load_crop(path) if path.is_file() else None


def crop_setting(mode: str, robot: Any) -> Crop:
    """An import's `crop=` setting: auto (the robot's calibrated crop, `robot_crop`), center (the
    largest centred square) or none (the whole frame). ConfigError for any other value."""
    from robot_calql.config import ConfigError

    mode = str(mode)
    if mode == "auto":
        return robot_crop(robot)
    if mode in ("center", "none"):
        return "center" if mode == "center" else None
    raise ConfigError(f"crop={mode}: use auto (calibration crop.yaml, else the whole frame), center or none")


def crop_label(crop: Crop) -> list[int] | str:
    """How a dataset's metadata records a crop: [x, y, width, height], "center" or "none"."""
    if isinstance(crop, CropRegion):
        return [crop.x, crop.y, crop.width, crop.height]
    return "center" if crop == "center" else "none"
