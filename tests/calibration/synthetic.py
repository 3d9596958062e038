"""Synthetic calibration images: a board seen by a camera with KNOWN intrinsics and distortion.

Every output pixel is mapped back through the camera model (undistort the pixel to a ray,
intersect the ray with the board plane, look the board point up in a flat board texture), so a
board corner lands exactly where cv2.projectPoints puts it. Rendered at 2x and area-averaged
down, like a real sensor integrating over a pixel.
"""

from __future__ import annotations

import cv2
import numpy as np

TRUE_K = np.array([[610.0, 0.0, 322.5], [0.0, 605.0, 237.0], [0.0, 0.0, 1.0]])
TRUE_D = np.array([-0.21, 0.08, 0.0012, -0.0008, 0.0])
SIZE = (640, 480)  # width, height


def checkerboard_texture(cols: int, rows: int, px: int, border: int) -> np.ndarray:
    """A flat checkerboard with cols x rows INNER corners (cols+1 x rows+1 squares), white border."""
    sq = np.indices((rows + 1, cols + 1)).sum(axis=0) % 2
    tex = np.kron(1 - sq, np.ones((px, px))) * 255
    return cv2.copyMakeBorder(tex.astype(np.uint8), border, border, border, border,
                              cv2.BORDER_CONSTANT, value=255)


_RAYS: dict = {}


def pixel_rays(K, D, size, supersample):
    """Unit-depth ray (x, y, 1) of every supersampled pixel centre, through the camera model."""
    key = (np.asarray(K).tobytes(), np.asarray(D).tobytes(), tuple(size), supersample)
    if key not in _RAYS:
        w, h = size
        s = supersample
        us, vs = np.meshgrid(np.arange(w * s), np.arange(h * s))
        # supersampled pixel centre -> image coordinates (OpenCV: pixel centres at integers)
        pix = np.stack([(us + 0.5) / s - 0.5, (vs + 0.5) / s - 0.5], axis=-1).reshape(-1, 1, 2)
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-12)
        rays = cv2.undistortPoints(pix.astype(np.float64), K, D, criteria=criteria).reshape(-1, 2)
        _RAYS[key] = np.concatenate([rays, np.ones((len(rays), 1))], axis=1)
    return _RAYS[key]


def render_view(texture: np.ndarray, origin_px: float, px_per_m: float, rvec, tvec,
                K=TRUE_K, D=TRUE_D, size=SIZE, supersample: int = 2) -> np.ndarray:
    """Render a planar texture seen from pose (rvec, tvec) (board -> camera) by camera (K, D).

    Board point (X, Y, 0) metres sits at texture pixel (origin_px + X * px_per_m, ...), pixel
    centres at integers.
    """
    w, h = size
    s = supersample
    rays = pixel_rays(K, D, size, supersample)
    R, _ = cv2.Rodrigues(np.asarray(rvec, dtype=np.float64))
    t = np.asarray(tvec, dtype=np.float64).ravel()
    n = R[:, 2]
    depth = (n @ t) / (rays @ n)
    pts_cam = rays * depth[:, None]
    pts_board = (pts_cam - t) @ R  # R^T (p - t), row-wise
    map_x = (origin_px + pts_board[:, 0] * px_per_m).reshape(h * s, w * s).astype(np.float32)
    map_y = (origin_px + pts_board[:, 1] * px_per_m).reshape(h * s, w * s).astype(np.float32)
    big = cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                    borderValue=128)
    return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA)


def checkerboard_views(cols=9, rows=6, square=0.025, n_views=12, seed=0, K=TRUE_K, D=TRUE_D):
    """n_views images of a cols x rows (inner corners) checkerboard at varied, tilted poses that
    keep the whole board in the image. Returns (images, rvecs, tvecs)."""
    rng = np.random.default_rng(seed)
    px = 40
    border = px
    tex = checkerboard_texture(cols, rows, px, border)
    px_per_m = px / square
    origin = border + px - 0.5          # inner corner (0, 0): edge between two texture pixels
    obj = np.array([[i * square, j * square, 0.0] for j in range(rows) for i in range(cols)])
    centre = obj.mean(axis=0)
    images, rvecs, tvecs = [], [], []
    while len(images) < n_views:
        tilt = rng.uniform(-0.45, 0.45, size=2)
        rvec = np.array([tilt[0], tilt[1], rng.uniform(-0.3, 0.3)])
        R, _ = cv2.Rodrigues(rvec)
        dist = rng.uniform(0.30, 0.45)
        offset = np.array([rng.uniform(-0.07, 0.07), rng.uniform(-0.05, 0.05), dist])
        tvec = offset - R @ centre      # board centre at `offset` in the camera frame
        proj, _ = cv2.projectPoints(obj, rvec, tvec, K, D)
        p = proj.reshape(-1, 2)
        margin = 25
        if p[:, 0].min() < margin or p[:, 1].min() < margin or p[:, 0].max() > SIZE[0] - margin \
                or p[:, 1].max() > SIZE[1] - margin:
            continue
        images.append(render_view(tex, origin, px_per_m, rvec, tvec, K, D))
        rvecs.append(rvec)
        tvecs.append(tvec)
    return images, rvecs, tvecs


def charuco_views(board, n_views=8, seed=1, K=TRUE_K, D=TRUE_D):
    """Views of a cv2.aruco.CharucoBoard (its own generateImage texture)."""
    rng = np.random.default_rng(seed)
    cols, rows = board.getChessboardSize()
    square = board.getSquareLength()
    px = 50
    margin_px = px
    tex = board.generateImage((cols * px + 2 * margin_px, rows * px + 2 * margin_px), marginSize=margin_px)
    px_per_m = px / square
    origin = margin_px - 0.5            # board corner (0, 0) of the outer squares
    centre = np.array([cols * square / 2, rows * square / 2, 0.0])
    corners = np.array([[0, 0, 0], [cols * square, 0, 0], [0, rows * square, 0],
                        [cols * square, rows * square, 0]], dtype=np.float64)
    images = []
    while len(images) < n_views:
        tilt = rng.uniform(-0.4, 0.4, size=2)
        rvec = np.array([tilt[0], tilt[1], rng.uniform(-0.3, 0.3)])
        R, _ = cv2.Rodrigues(rvec)
        offset = np.array([rng.uniform(-0.04, 0.04), rng.uniform(-0.03, 0.03), rng.uniform(0.3, 0.4)])
        tvec = offset - R @ centre
        p, _ = cv2.projectPoints(corners, rvec, tvec, K, D)
        p = p.reshape(-1, 2)
        if p[:, 0].min() < 10 or p[:, 1].min() < 10 or p[:, 0].max() > SIZE[0] - 10 \
                or p[:, 1].max() > SIZE[1] - 10:
            continue
        images.append(render_view(tex, origin, px_per_m, rvec, tvec, K, D))
    return images
