"""Camera, workspace and crop calibration for one robot cell.

A cell's calibration is data, not code: a folder `calibration/<cell>/` with

- `camera_info.yaml`  ROS camera_info YAML (intrinsics, distortion), from `calibrate-camera`;
- `workspace.yaml`    the end-effector box the safety node enforces, from `calibrate-workspace`;
- `crop.yaml`         the policy camera's crop region in the raw image, from `calibrate-crop`.

The robot config names the folder (`calibration: calibration/sim_standin`); `calibration_dir`
resolves it. Loaders and the crop function are importable without ROS:

    from robot_calql.calibration import calibration_dir
    from robot_calql.calibration.crop import load_crop, crop_and_resize
    from robot_calql.calibration.camera import load_camera_info
    from robot_calql.calibration.workspace import load_workspace
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

# REPO_ROOT: a source checkout's root, or an installed wheel's data
from robot_calql.config import REPO_ROOT, read_yaml_mapping


class CalibrationError(ValueError):
    """Calibration input or output that cannot be used (no board found, bad file, empty bag...)."""


def calibration_dir(robot_cfg: Any) -> Path:
    """The calibration folder, as an absolute path, that a robot config names (`calibration:` key);
    `robot_cfg` may also be the folder itself. `~` is expanded.

    A relative path is taken from the current directory, unless it is missing there but exists
    under REPO_ROOT (the source checkout, or an installed wheel's data folder, which carries the
    stand-in's calibration files): then from REPO_ROOT. So `calibration/sim_standin` works from
    any directory. The folder is not required to exist; a config without `calibration:` raises
    CalibrationError.
    """
    value = robot_cfg.get("calibration") if hasattr(robot_cfg, "get") else robot_cfg
    if not value:
        raise CalibrationError("the robot config has no `calibration:` folder")
    p = Path(os.path.expanduser(str(value)))
    if not p.is_absolute() and not p.exists() and (REPO_ROOT / p).exists():
        p = REPO_ROOT / p
    return p.resolve()


def resolve_out(path: str | os.PathLike, cell_dir: Path | None, default_name: str) -> Path:
    """Where a calibration command writes: `path` if given, else `<cell_dir>/<default_name>`."""
    if path is not None and str(path) not in ("", "None", "none", "null"):
        return Path(os.path.expanduser(str(path))).resolve()
    if cell_dir is None:
        raise CalibrationError(f"no output path: give out=<file> (for {default_name})")
    return cell_dir / default_name


def write_yaml_atomic(path: Path, data: dict, header: str = "") -> Path:
    """Write `data` as YAML to `path` atomically (temp file in the same folder, then rename),
    so a reader (the safety node) never sees a half-written file.

    A calibration that replaces a different earlier one keeps it beside the new file as
    `<name>.previous.yaml`, so re-running a calibration never loses the last good one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # block style at the top level (one key a line), short lists inline: `min: [0.1, -0.2, 0.0]`
    text = header + "".join(
        yaml.safe_dump({k: v}, sort_keys=False, width=120,
                       default_flow_style=None if isinstance(v, (dict, list)) else False)
        for k, v in data.items())
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if path.is_file() and path.read_text() != text:
            shutil.copy2(path, path.with_name(f"{path.stem}.previous{path.suffix}"))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_yaml(path: str | os.PathLike, what: str, error: type[Exception] | None = None, hint: str = "") -> dict:
    """Read a YAML mapping; raise `error` (CalibrationError by default) naming the file when it
    is missing (with `hint` appended), not YAML, or not a mapping."""
    return read_yaml_mapping(path, what, error or CalibrationError, hint)


def write_png_atomic(path: Path, image_bgr) -> Path:
    """Write a BGR uint8 image as PNG atomically."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", image_bgr)
    if not ok:
        raise CalibrationError(f"could not encode PNG for {path}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(buf.tobytes())
    os.replace(tmp, path)
    return path
