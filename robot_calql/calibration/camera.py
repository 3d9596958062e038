"""Camera intrinsics from board images: `robot-calql calibrate-camera images=<dir> board=<spec>`.

Take 10-30 pictures of a printed board held at different positions, distances and tilts (fill
the corners of the image too: that is where distortion shows), put them in one folder, run:

    robot-calql calibrate-camera images=shots/ board=checkerboard:9x6:0.025
    robot-calql calibrate-camera images=shots/ board=charuco:7x5:0.04:0.03:DICT_4X4_50

Board specs:
- `checkerboard:<cols>x<rows>:<square_m>`: cols x rows INNER corners (a board of 10 x 7 squares
  has 9 x 6 inner corners), square side in metres.
- `charuco:<cols>x<rows>:<square_m>:<marker_m>[:<DICT_NAME>]`: cols x rows SQUARES, square and
  marker side in metres, the ArUco dictionary (default DICT_4X4_50). Frames may show the board
  only in part.

Writes, into the robot's calibration folder unless `out=` says otherwise:
- `camera_info.yaml` in the ROS camera_info YAML format (plumb_bob: k1 k2 p1 p2 k3), the RMS
  reprojection error in its header comment;
- `camera_report.yaml`: RMS error, per-image errors, the images used and those where no board
  was found (listed, never silently skipped);
- `camera_corners.png`: a contact sheet of every image with the detected corners drawn, images
  without a board framed in red.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from robot_calql.calibration import (
    CalibrationError,
    calibration_dir,
    read_yaml,
    resolve_out,
    write_png_atomic,
    write_yaml_atomic,
)

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp")
MIN_VIEWS = 3          # fewer views than this cannot pin down focal length, centre and distortion
MIN_CHARUCO_CORNERS = 6


# ----------------------------------------------------------------------------- board specs
@dataclass(frozen=True)
class BoardSpec:
    """A calibration board. For a checkerboard cols x rows are inner corners; for ChArUco,
    squares. Sizes in metres."""

    kind: str                      # "checkerboard" or "charuco"
    cols: int
    rows: int
    square: float
    marker: float = 0.0
    dictionary: str = "DICT_4X4_50"

    def __str__(self) -> str:
        if self.kind == "checkerboard":
            return f"checkerboard:{self.cols}x{self.rows}:{self.square:g}"
        return f"charuco:{self.cols}x{self.rows}:{self.square:g}:{self.marker:g}:{self.dictionary}"

    def object_points(self) -> np.ndarray:
        """Checkerboard inner corners in the board frame (z = 0), row by row, float32 (N, 3)."""
        if self.kind != "checkerboard":
            raise CalibrationError("object_points() is for checkerboards; ChArUco matches by id")
        xs, ys = np.meshgrid(np.arange(self.cols), np.arange(self.rows))
        pts = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)], axis=1) * self.square
        return pts.astype(np.float32)

    def charuco_board(self):
        """The cv2.aruco.CharucoBoard for a ChArUco spec."""
        if not hasattr(cv2, "aruco"):
            raise CalibrationError("this OpenCV build has no cv2.aruco: use a checkerboard board")
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.cols, self.rows), self.square, self.marker, dictionary)


def parse_board(spec: str) -> BoardSpec:
    """Parse `checkerboard:9x6:0.025` or `charuco:7x5:0.04:0.03[:DICT_4X4_50]`."""
    usage = ("board spec must be checkerboard:<cols>x<rows>:<square_m> (inner corners) or "
             "charuco:<cols>x<rows>:<square_m>:<marker_m>[:<DICT_NAME>] (squares)")
    parts = str(spec).strip().split(":")
    kind = parts[0].lower()
    try:
        cols, rows = (int(v) for v in parts[1].lower().split("x"))
        square = float(parts[2])
    except (IndexError, ValueError):
        raise CalibrationError(f"bad board spec '{spec}': {usage}") from None
    if square <= 0 or cols < 2 or rows < 2:
        raise CalibrationError(f"bad board spec '{spec}': need cols, rows >= 2 and square > 0")
    if kind == "checkerboard":
        if len(parts) != 3:
            raise CalibrationError(f"bad board spec '{spec}': {usage}")
        return BoardSpec("checkerboard", cols, rows, square)
    if kind == "charuco":
        if len(parts) not in (4, 5):
            raise CalibrationError(f"bad board spec '{spec}': {usage}")
        marker = float(parts[3])
        if not 0 < marker < square:
            raise CalibrationError(f"bad board spec '{spec}': marker side must be in (0, square)")
        dictionary = parts[4].upper() if len(parts) == 5 else "DICT_4X4_50"
        if hasattr(cv2, "aruco") and not hasattr(cv2.aruco, dictionary):
            raise CalibrationError(f"bad board spec '{spec}': unknown ArUco dictionary {dictionary}")
        return BoardSpec("charuco", cols, rows, square, marker, dictionary)
    raise CalibrationError(f"bad board spec '{spec}': unknown board kind '{parts[0]}'; {usage}")


# ----------------------------------------------------------------------------- images
def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files in a folder, sorted by name; CalibrationError if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(
            f"no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """Read an image as 8-bit grayscale; CalibrationError naming the file if it cannot be read."""
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None or img.size == 0:
        raise CalibrationError(f"cannot read image {path} (corrupt or not an image)")
    return img


# ----------------------------------------------------------------------------- detection
@dataclass
class Detection:
    """Board corners found in one image: matching 3-D board points and 2-D pixel points."""

    object_points: np.ndarray      # (N, 3) float32, board frame, metres
    image_points: np.ndarray       # (N, 2) float32, pixels
    ids: np.ndarray | None = None  # ChArUco corner ids


def detect_board(gray: np.ndarray, board: BoardSpec) -> Detection | None:
    """Find the board in a grayscale image; None when it is not there."""
    if board.kind == "checkerboard":
        size = (board.cols, board.rows)
        found, corners = cv2.findChessboardCornersSB(gray, size, flags=cv2.CALIB_CB_NORMALIZE_IMAGE)
        if not found:  # the classic detector copes with some images SB does not (blur, low res)
            flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
            found, corners = cv2.findChessboardCorners(gray, size, flags=flags)
            if not found:
                return None
            criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-3)
            corners = cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1), criteria)
        return Detection(board.object_points(), corners.reshape(-1, 2).astype(np.float32))
    cb = board.charuco_board()
    corners, ids, _, _ = cv2.aruco.CharucoDetector(cb).detectBoard(gray)
    if corners is None or ids is None or len(ids) < MIN_CHARUCO_CORNERS:
        return None
    obj, img = cb.matchImagePoints(corners, ids)
    if cb.checkCharucoCornersCollinear(ids):  # a single line of corners says nothing about tilt
        return None
    return Detection(obj.reshape(-1, 3).astype(np.float32), img.reshape(-1, 2).astype(np.float32),
                     ids.reshape(-1))


# ----------------------------------------------------------------------------- calibration
@dataclass
class CameraCalibration:
    """Result of calibrate(): intrinsics, distortion and how well they fit."""

    width: int
    height: int
    camera_matrix: np.ndarray        # K, 3x3
    dist_coeffs: np.ndarray          # plumb_bob: k1 k2 p1 p2 k3
    rms: float                       # RMS reprojection error over all corners, pixels
    per_view_error: dict[str, float] = field(default_factory=dict)   # image name -> RMS px
    used: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    board: str = ""


def calibrate(images: list[tuple[str, np.ndarray]], board: BoardSpec,
              fix_k3: bool = True, progress: bool = True
              ) -> tuple[CameraCalibration, dict[str, Detection | None]]:
    """Detect the board in named grayscale images and solve for K and distortion.

    Returns the calibration and the detection per image (None where no board was found).
    Raises CalibrationError when no image shows the board or fewer than MIN_VIEWS do.
    """
    if not images:
        raise CalibrationError("no images to calibrate from")
    h, w = images[0][1].shape[:2]
    for name, img in images:
        if img.shape[:2] != (h, w):
            raise CalibrationError(
                f"image {name} is {img.shape[1]}x{img.shape[0]}, the others {w}x{h}: "
                "all calibration images must come from the same camera mode")
    detections: dict[str, Detection | None] = {}
    for name, img in tqdm(images, desc="detecting board", unit="img", disable=not progress):
        detections[name] = detect_board(img, board)
    used = [n for n, d in detections.items() if d is not None]
    not_found = [n for n, d in detections.items() if d is None]
    if not used:
        hint = (" (cols x rows are INNER corners: a board of 10 x 7 squares is 9x6)"
                if board.kind == "checkerboard" else "")
        raise CalibrationError(
            f"no board ({board}) found in any of the {len(images)} images{hint}")
    if len(used) < MIN_VIEWS:
        raise CalibrationError(
            f"board found in only {len(used)} of {len(images)} images ({', '.join(used)}); "
            f"need at least {MIN_VIEWS} views at different tilts")
    obj = [detections[n].object_points for n in used]
    img = [detections[n].image_points for n in used]
    flags = cv2.CALIB_FIX_K3 if fix_k3 else 0
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-9)
    rms, K, D, rvecs, tvecs = cv2.calibrateCamera(obj, img, (w, h), None, None,
                                                  flags=flags, criteria=criteria)
    per_view = {}
    for n, o, i, r, t in zip(used, obj, img, rvecs, tvecs, strict=True):
        proj, _ = cv2.projectPoints(o, r, t, K, D)
        per_view[n] = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - i) ** 2, axis=1))))
    D = np.zeros(5) if D is None else np.asarray(D, dtype=np.float64).ravel()
    D = np.concatenate([D, np.zeros(max(0, 5 - D.size))])[:5]
    calib = CameraCalibration(w, h, np.asarray(K, dtype=np.float64), D, float(rms), per_view,
                              used, not_found, str(board))
    return calib, detections


# ----------------------------------------------------------------------------- camera_info YAML
def _matrix(rows: int, cols: int, data) -> dict:
    return {"rows": rows, "cols": cols,
            "data": [float(round(float(v), 10)) for v in np.asarray(data).ravel()]}


def camera_info_dict(width: int, height: int, K: np.ndarray, D: np.ndarray,
                     camera_name: str = "camera") -> dict:
    """The ROS camera_info YAML mapping (as camera_calibration_parsers writes it).

    The projection matrix is the rectified camera's: for a monocular camera OpenCV's optimal new
    camera matrix with alpha=0 (only valid pixels), as the ROS calibrator does.
    """
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    D = np.asarray(D, dtype=np.float64).ravel()
    if np.any(D != 0):
        newK, _ = cv2.getOptimalNewCameraMatrix(K, D, (width, height), 0.0, (width, height))
    else:
        newK = K
    P = np.zeros((3, 4))
    P[:, :3] = newK
    return {
        "image_width": int(width),
        "image_height": int(height),
        "camera_name": str(camera_name),
        "camera_matrix": _matrix(3, 3, K),
        "distortion_model": "plumb_bob",
        "distortion_coefficients": _matrix(1, int(D.size), D),
        "rectification_matrix": _matrix(3, 3, np.eye(3)),
        "projection_matrix": _matrix(3, 4, P),
    }


def camera_info_from_fovy(width: int, height: int, fovy_deg: float,
                          camera_name: str = "camera") -> dict:
    """camera_info of an ideal pinhole camera (a MuJoCo camera): fy = (h/2) / tan(fovy/2),
    square pixels (fx = fy), principal point at the image centre, no distortion."""
    if not 0 < fovy_deg < 180:
        raise CalibrationError(f"fovy must be in (0, 180) degrees, got {fovy_deg}")
    f = (height / 2.0) / math.tan(math.radians(fovy_deg) / 2.0)
    # MuJoCo's pixel centres are at integer + 0.5 in a frame whose origin is the image corner,
    # so the principal point in OpenCV's convention (pixel centres at integers) is (w-1)/2.
    K = np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
    return camera_info_dict(width, height, K, np.zeros(5), camera_name)


@dataclass
class CameraInfo:
    """A loaded camera_info.yaml."""

    width: int
    height: int
    camera_name: str
    K: np.ndarray        # 3x3
    D: np.ndarray        # distortion coefficients
    R: np.ndarray        # 3x3
    P: np.ndarray        # 3x4
    distortion_model: str

    def undistort(self, image: np.ndarray) -> np.ndarray:
        """Undistort a raw image (same size as the calibration) with these intrinsics."""
        if image.shape[:2] != (self.height, self.width):
            raise CalibrationError(
                f"image is {image.shape[1]}x{image.shape[0]}, camera_info is for "
                f"{self.width}x{self.height}")
        return cv2.undistort(image, self.K, self.D, None, self.P[:, :3])


def load_camera_info(path: str | os.PathLike) -> CameraInfo:
    """Read a ROS camera_info YAML file; CalibrationError naming a missing or bad field."""
    data = read_yaml(path, "camera_info")

    def mat(key: str, rows: int, cols: int | None = None) -> np.ndarray:
        m = data.get(key)
        if not isinstance(m, dict) or "data" not in m:
            raise CalibrationError(f"camera_info {path}: missing or bad '{key}'")
        arr = np.asarray(m["data"], dtype=np.float64)
        if cols is not None and arr.size != rows * cols:
            raise CalibrationError(f"camera_info {path}: '{key}' needs {rows * cols} values, "
                                   f"has {arr.size}")
        return arr.reshape(rows, -1) if cols is not None else arr

    for key in ("image_width", "image_height"):
        if not isinstance(data.get(key), int) or data[key] <= 0:
            raise CalibrationError(f"camera_info {path}: '{key}' must be a positive integer")
    return CameraInfo(data["image_width"], data["image_height"], str(data.get("camera_name", "")),
                      mat("camera_matrix", 3, 3), mat("distortion_coefficients", 1).ravel(),
                      mat("rectification_matrix", 3, 3), mat("projection_matrix", 3, 4),
                      str(data.get("distortion_model", "plumb_bob")))


# ----------------------------------------------------------------------------- contact sheet
def contact_sheet(images: list[tuple[str, np.ndarray]], detections: dict[str, Detection | None],
                  board: BoardSpec, per_view_error: dict[str, float] | None = None,
                  thumb_width: int = 320) -> np.ndarray:
    """A grid of every image with its detected corners drawn; images without a board are
    framed in red and labelled. Returns a BGR uint8 image."""
    per_view_error = per_view_error or {}
    n = len(images)
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    h, w = images[0][1].shape[:2]
    scale = thumb_width / w
    th = max(1, round(h * scale))
    label_h = 22
    sheet = np.full((rows * (th + label_h), cols * thumb_width, 3), 255, np.uint8)
    for k, (name, gray) in enumerate(images):
        vis = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR) if gray.ndim == 2 else gray.copy()
        det = detections.get(name)
        if det is not None:
            pts = det.image_points.reshape(-1, 1, 2)
            if board.kind == "checkerboard":
                cv2.drawChessboardCorners(vis, (board.cols, board.rows), pts, True)
            else:
                cv2.aruco.drawDetectedCornersCharuco(vis, pts, det.ids.reshape(-1, 1), (0, 255, 0))
        thumb = cv2.resize(vis, (thumb_width, th), interpolation=cv2.INTER_AREA)
        if det is None:
            cv2.rectangle(thumb, (0, 0), (thumb_width - 1, th - 1), (0, 0, 255), 4)
            cv2.putText(thumb, "NO BOARD", (10, th // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.9,
                        (0, 0, 255), 2, cv2.LINE_AA)
        r, c = divmod(k, cols)
        y0, x0 = r * (th + label_h), c * thumb_width
        sheet[y0:y0 + th, x0:x0 + thumb_width] = thumb
        text = name if det is None else f"{name}  {per_view_error.get(name, float('nan')):.2f}px"
        cv2.putText(sheet, text[:40], (x0 + 4, y0 + th + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (0, 0, 200) if det is None else (0, 0, 0), 1, cv2.LINE_AA)
    return sheet


# ----------------------------------------------------------------------------- command
def main(cfg) -> int:
    """`robot-calql calibrate-camera images=<dir> board=<spec> [out=<file>] [overwrite=true]`."""
    if not cfg.get("images"):
        raise CalibrationError("give the folder of board pictures: images=<dir>")
    board = parse_board(cfg.board)
    files = list_images(Path(os.path.expanduser(str(cfg.images))))
    images = [(p.name, read_gray(p)) for p in files]
    cell = calibration_dir(cfg.robot) if cfg.get("robot") and cfg.robot.get("calibration") else None
    out = resolve_out(cfg.get("out"), cell, "camera_info.yaml")
    if out.exists() and not cfg.get("overwrite", False):
        raise FileExistsError(f"{out} exists; pass overwrite=true to replace it")

    calib, detections = calibrate(images, board, fix_k3=bool(cfg.get("fix_k3", True)))
    camera_name = str(cfg.get("camera_name") or "camera")
    info = camera_info_dict(calib.width, calib.height, calib.camera_matrix, calib.dist_coeffs,
                            camera_name)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = (f"# robot-calql calibrate-camera, {stamp}: board {board}, {len(calib.used)} of "
              f"{len(images)} images, RMS reprojection error {calib.rms:.3f} px\n")
    report = {
        "board": str(board),
        "image_folder": str(Path(str(cfg.images)).resolve()),
        "image_size": [calib.width, calib.height],
        "rms_reprojection_error_px": round(calib.rms, 4),
        "images_used": calib.used,
        "images_without_board": calib.not_found,
        "per_image_error_px": {k: round(v, 4) for k, v in calib.per_view_error.items()},
        "fix_k3": bool(cfg.get("fix_k3", True)),
    }
    sheet = contact_sheet(images, detections, board, calib.per_view_error)
    preview = out.with_name("camera_corners.png")
    write_png_atomic(preview, sheet)
    write_yaml_atomic(out.with_name("camera_report.yaml"), report)
    write_yaml_atomic(out, info, header)

    K = calib.camera_matrix
    print(f"calibrate-camera: fx={K[0, 0]:.2f} fy={K[1, 1]:.2f} cx={K[0, 2]:.2f} cy={K[1, 2]:.2f} "
          f"dist={np.round(calib.dist_coeffs, 5).tolist()}")
    print(f"calibrate-camera: RMS reprojection error {calib.rms:.3f} px over {len(calib.used)} "
          f"of {len(images)} images")
    if calib.not_found:
        print(f"calibrate-camera: no board found in {len(calib.not_found)} images: "
              f"{', '.join(calib.not_found)}")
    worst = sorted(calib.per_view_error.items(), key=lambda kv: -kv[1])[:3]
    if worst and worst[0][1] > 1.0:
        print("calibrate-camera: worst images (consider removing them): "
              + ", ".join(f"{n} {e:.2f}px" for n, e in worst))
    print(f"calibrate-camera: wrote {out}, {out.with_name('camera_report.yaml').name}, {preview.name}")
    return 0
