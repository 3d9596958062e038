"""A robot's cameras: which topics, raw or compressed, which crop; and a frame message -> the
policy's pixels (no rclpy here: the ROS nodes and bag ingestion pass their message objects).

A robot config lists its cameras in a `cameras` section, the first one being the main view:

    cameras:
      front: {topic: /camera/color/image_raw/compressed, compressed: true}
      wrist: {topic: /wrist/image_raw, crop: {x: 0, y: 0, width: 480, height: 480}}

Without a `cameras` section the robot has one camera, `topics.image` (compressed when the name
ends in /compressed). The main camera's observation key is "image" (so single-camera data and
checkpoints keep working), every other camera's is f"image_{name}" (`CameraSpec.key`).

A camera's `crop` is a region {x, y, width, height} of its raw frame, "center" (the largest
centred square) or "none"/absent (the whole frame); the main camera without a `crop` key takes
the crop passed as `main_crop` (the calibrated crop.yaml, robot_calql.calibration.crop.robot_crop).

`decode_frame(msg)` turns a sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8) or
sensor_msgs/CompressedImage (jpeg, png) into RGB uint8 (H, W, 3); `camera_image` adds the one
crop-and-resize (robot_calql.calibration.crop.crop_and_resize). `FrameSet` keeps the newest frame
of each camera and gives the policy's images when the main camera's frame comes, or names the
camera whose newest frame is stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from robot_calql.calibration import CalibrationError
from robot_calql.calibration.crop import Crop, CropRegion, crop_and_resize
from robot_calql.config import ConfigError
from robot_calql.control.conversions import ImageFormatError, image_to_rgb
from robot_calql.data.dataset import RESERVED_CAMERA_NAMES

MAIN_KEY = "image"
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")


@dataclass(frozen=True)
class CameraSpec:
    """One camera of the robot."""

    name: str            # the camera's name in the robot config (e.g. front, wrist)
    topic: str           # its frame topic
    compressed: bool     # sensor_msgs/CompressedImage (jpeg, png) instead of sensor_msgs/Image
    crop: Crop = None    # region of the raw frame, "center" or None (the whole frame)
    main: bool = False   # the first camera: observation key "image"

    @property
    def key(self) -> str:
        """The observation / dataset key of this camera's images."""
        return MAIN_KEY if self.main else f"{MAIN_KEY}_{self.name}"


def parse_crop(value: Any, where: str) -> Crop:
    """A camera's `crop` setting: {x, y, width, height}, "center", or "none"/""/None (whole frame)."""
    if value is None or value == "" or value == "none":
        return None
    if value == "center":
        return "center"
    if hasattr(value, "get"):
        try:
            crop = CropRegion(*(int(value[k]) for k in ("x", "y", "width", "height")))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{where}: a crop needs integers x, y, width, height, got {dict(value)}") from None
        if crop.width <= 0 or crop.height <= 0 or crop.x < 0 or crop.y < 0:
            raise ConfigError(f"{where}: negative or empty crop {crop}")
        return crop
    raise ConfigError(f"{where}: crop must be {{x, y, width, height}}, center or none, got {value!r}")


def camera_specs(robot_cfg: Any, main_crop: Crop = None) -> list[CameraSpec]:
    """The robot's cameras, main camera first (see the module docstring); ConfigError naming the
    bad key. `main_crop` is the main camera's crop when its entry has no `crop` key."""
    get = robot_cfg.get
    cams = get("cameras")
    if not cams:
        topic = (get("topics") or {}).get("image")
        if not topic:
            return []
        return [CameraSpec("main", str(topic), str(topic).rstrip("/").endswith("/compressed"), main_crop, True)]
    if not hasattr(cams, "items"):
        raise ConfigError(f"robot.cameras must map camera names to {{topic, compressed, crop}}, got {cams!r}")
    out: list[CameraSpec] = []
    for i, (name, c) in enumerate(cams.items()):
        where = f"robot.cameras.{name}"
        if not str(name).isidentifier() or str(name) in RESERVED_CAMERA_NAMES:
            raise ConfigError(f"{where}: a camera name must be a plain identifier (letters, digits, _), "
                              f"not {', '.join(RESERVED_CAMERA_NAMES)}")
        if not hasattr(c, "get") or not c.get("topic"):
            raise ConfigError(f"{where}.topic: every camera needs a topic")
        topic = str(c["topic"])
        compressed = c.get("compressed")
        compressed = topic.rstrip("/").endswith("/compressed") if compressed in (None, "") else compressed
        if not isinstance(compressed, bool):
            raise ConfigError(f"{where}.compressed must be true or false, got {compressed!r}")
        crop = parse_crop(c.get("crop"), f"{where}.crop") if "crop" in c else (main_crop if i == 0 else None)
        out.append(CameraSpec(str(name), topic, compressed, crop, i == 0))
    return out


def image_keys(specs: list[CameraSpec]) -> list[str]:
    """The observation keys of the cameras, main first."""
    return [s.key for s in specs]


# --------------------------------------------------------------------------- decoding


def decode_compressed(fmt: str, data: Any) -> np.ndarray:
    """The fields of a sensor_msgs/CompressedImage (jpeg or png) -> RGB uint8 (H, W, 3)."""
    f = str(fmt).lower()
    if not any(name in f for name in COMPRESSED_FORMATS):
        raise ImageFormatError(f"unsupported compressed image format '{fmt}' (supported: jpeg, png)")
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8) if not isinstance(data, np.ndarray) \
        else np.asarray(data, dtype=np.uint8).reshape(-1)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if bgr is None:
        raise ImageFormatError(f"compressed image ({fmt}, {buf.size} bytes) does not decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_frame(msg: Any) -> np.ndarray:
    """A sensor_msgs/CompressedImage (has `format`) or sensor_msgs/Image message, from rclpy or
    rosbags -> RGB uint8 (H, W, 3). ImageFormatError names an unsupported encoding or format."""
    if hasattr(msg, "format"):
        return decode_compressed(msg.format, msg.data)
    return image_to_rgb(str(msg.encoding), int(msg.height), int(msg.width), int(msg.step), msg.data)


def camera_image(msg: Any, crop: Crop, size: int) -> np.ndarray:
    """A frame message -> the policy's (size, size, 3) RGB uint8 image: decode_frame, then the
    one crop-and-resize. ImageFormatError names a frame that does not decode or fit the crop."""
    rgb = decode_frame(msg)
    try:
        return crop_and_resize(rgb, crop, size)
    except CalibrationError as e:
        raise ImageFormatError(str(e)) from None


# --------------------------------------------------------------------------- live frame sets


class StaleCamera(ValueError):
    """A camera whose newest frame is too far from the main camera's frame (names it)."""


class FrameSet:
    """The newest frame message of each camera. `put` stores a frame (cheap: nothing is decoded);
    `images(main_msg, main_stamp_s)` returns {key: policy image} for the main camera's frame and
    the other cameras' newest frames, each stamped within `max_skew_s` of the main frame, else
    raises StaleCamera naming the camera (ImageFormatError for a frame that does not decode, or
    a main frame whose size is not `main_hw`, (height, width), when given)."""

    def __init__(self, specs: list[CameraSpec], size: int, max_skew_s: float,
                 main_hw: tuple[int, int] | None = None):
        if not specs or not specs[0].main:
            raise ValueError("a frame set needs the cameras, main camera first (camera_specs)")
        self.specs = specs
        self.size = int(size)
        self.max_skew_s = float(max_skew_s)
        self.main_hw = None if main_hw is None else (int(main_hw[0]), int(main_hw[1]))
        self.newest: dict[str, tuple[Any, float]] = {}

    def put(self, name: str, msg: Any, stamp_s: float) -> None:
        self.newest[name] = (msg, float(stamp_s))

    def stale(self, now_s: float, max_age_s: float) -> list[str]:
        """The other cameras (not the main one) without a frame stamped within `max_age_s` of `now_s`."""
        return [c.name for c in self.specs[1:]
                if c.name not in self.newest or now_s - self.newest[c.name][1] > max_age_s]

    def images(self, main_msg: Any, main_stamp_s: float) -> dict[str, np.ndarray]:
        main = self.specs[0]
        rgb = decode_frame(main_msg)
        if self.main_hw is not None and rgb.shape[:2] != self.main_hw:
            raise ImageFormatError(f"frame {rgb.shape[1]}x{rgb.shape[0]} from camera '{main.name}' ({main.topic}), "
                                   f"expected {self.main_hw[1]}x{self.main_hw[0]}")
        try:
            out = {main.key: crop_and_resize(rgb, main.crop, self.size)}
        except CalibrationError as e:
            raise ImageFormatError(str(e)) from None
        for spec in self.specs[1:]:
            got = self.newest.get(spec.name)
            if got is None:
                raise StaleCamera(f"no frame yet from camera '{spec.name}' ({spec.topic})")
            msg, stamp = got
            if abs(stamp - main_stamp_s) > self.max_skew_s:
                raise StaleCamera(f"camera '{spec.name}' ({spec.topic}): newest frame is {main_stamp_s - stamp:.3f} s "
                                  f"from the main camera's (at most {self.max_skew_s} s)")
            out[spec.key] = camera_image(msg, spec.crop, self.size)
        return out
