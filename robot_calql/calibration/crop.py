"""The policy camera's crop and resize: `robot-calql calibrate-crop image=<file> ...`.

The policy sees a square `image_size` picture (robot config). On a real camera, choose which part
of the raw frame that is (the workspace, not the lab around it) from one saved frame:

    robot-calql calibrate-crop image=frame.png                              # largest centred square
    robot-calql calibrate-crop image=frame.png center=[400,260] size=300    # square around a point
    robot-calql calibrate-crop image=frame.png x=120 y=40 width=360 height=360   # explicit

Writes `<robot.calibration>/crop.yaml` (x, y, width, height in raw pixels, plus the raw image
size it was chosen on) and `crop_preview.png` (the frame with the region drawn, beside the
policy's view). The ROS policy node and bag ingestion call the same function:

    from robot_calql.calibration.crop import load_crop, crop_and_resize
    crop = load_crop("calibration/sim_standin/crop.yaml")
    policy_image = crop_and_resize(raw_rgb, crop, size=64)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from robot_calql.calibration import (
    CalibrationError,
    calibration_dir,
    read_yaml,
    resolve_out,
    write_png_atomic,
    write_yaml_atomic,
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


def crop_and_resize(image: np.ndarray, crop: CropRegion | None, size: int | tuple[int, int]) -> np.ndarray:
    """Cut `crop` out of a raw (H, W[, C]) image and resize it to `size` (int: square, or
    (width, height)); crop None means the whole frame. Returns the same dtype and channels.

    The one crop-and-resize of robot_calql: the policy and reward nodes (live frames) and bag
    ingestion (training frames) all call it, so the policy sees exactly the pixels it was
    trained on. Shrinking uses area averaging (no aliasing); a large non-integer shrink goes
    bilinear to 3x the target first and then averages exact 3x3 blocks, about 6x faster than
    OpenCV's non-integer area resize (480 -> 64 px) and within ~1.5 grey levels of it.
    Enlarging is bilinear."""
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.size == 0:
        raise CalibrationError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    h, w = image.shape[:2]
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


def preview(image_bgr: np.ndarray, crop: CropRegion, size: int) -> np.ndarray:
    """The frame with the crop drawn in green, the policy's view (enlarged) on its right."""
    vis = image_bgr.copy()
    cv2.rectangle(vis, (crop.x, crop.y), (crop.x + crop.width - 1, crop.y + crop.height - 1),
                  (0, 255, 0), max(1, vis.shape[0] // 200))
    small = crop_and_resize(image_bgr, crop, size)
    h = vis.shape[0]
    side = cv2.resize(small, (h, h), interpolation=cv2.INTER_NEAREST)
    gap = np.full((h, 8, 3), 255, np.uint8)
    return np.concatenate([vis, gap, side], axis=1)


def main(cfg) -> int:
    """`robot-calql calibrate-crop image=<file> [x= y= width= height= | center=[u,v] size=N]`."""
    if not cfg.get("image"):
        raise CalibrationError("give a raw camera frame: image=<file>")
    path = Path(os.path.expanduser(str(cfg.image)))
    if not path.is_file():
        raise CalibrationError(f"image not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise CalibrationError(f"cannot read image {path} (corrupt or not an image)")
    h, w = img.shape[:2]
    explicit = [cfg.get(k) for k in ("x", "y", "width", "height")]
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise CalibrationError("an explicit crop needs all of x, y, width, height")
        crop = CropRegion(*(int(v) for v in explicit)).check(w, h)
        how = "explicit"
    elif cfg.get("center") is not None:
        if len(cfg.center) != 2:
            raise CalibrationError(f"center must be [u, v] pixels, got {list(cfg.center)}")
        size = int(cfg.size) if cfg.get("size") else min(w, h)
        crop = square_around(cfg.center, size, w, h)
        how = f"square of {size} px around {list(cfg.center)}"
    else:
        crop = centered_square(w, h)
        how = "largest centred square"
    image_size = int(cfg.robot.image_size)
    cell = calibration_dir(cfg.robot) if cfg.robot.get("calibration") else None
    out = resolve_out(cfg.get("out"), cell, "crop.yaml")
    data = crop_dict(crop, w, h, image_size, f"{how} on {path.name} ({w}x{h})")
    header = ("# Policy camera crop (raw image pixels), then resized to image_size; from\n"
              "# robot-calql calibrate-crop. robot_calql.calibration.crop.crop_and_resize applies it.\n")
    prev = write_png_atomic(out.with_name("crop_preview.png"), preview(img, crop, image_size))
    write_yaml_atomic(out, data, header)
    print(f"calibrate-crop: {how}: x={crop.x} y={crop.y} width={crop.width} height={crop.height} "
          f"of {w}x{h} -> {image_size}x{image_size}")
    print(f"calibrate-crop: wrote {out} and {prev.name}")
    return 0
