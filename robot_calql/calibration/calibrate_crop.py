"""`robot-calql calibrate-crop image=<file> ...`: choose the policy camera's crop region.

The policy sees a square `image_size` picture (robot config). On a real camera, choose which part
of the raw frame that is (the workspace, not the lab around it) from one saved frame:

    robot-calql calibrate-crop image=frame.png                              # largest centred square
    robot-calql calibrate-crop image=frame.png center=[400,260] size=300    # square around a point
    robot-calql calibrate-crop image=frame.png x=120 y=40 width=360 height=360   # explicit

Writes `<robot.calibration>/crop.yaml` (x, y, width, height in raw pixels, plus the raw image
size it was chosen on) and `crop_preview.png` (the frame with the region drawn, beside the
policy's view). robot_calql.calibration.crop reads and applies it.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from robot_calql.calibration import (
    CalibrationError,
    calibration_dir,
    resolve_out,
    write_png_atomic,
    write_yaml_atomic,
)
from robot_calql.calibration.crop import (
    CropRegion,
    centered_square,
    crop_and_resize,
    crop_dict,
    square_around,
)


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
