"""Camera calibration recovers known intrinsics from rendered board views; bad input is named."""

import math

import cv2
import numpy as np
import pytest
import yaml

from robot_calql import cli
from robot_calql.calibration import CalibrationError
from robot_calql.calibration.camera import (
    calibrate,
    camera_info_from_fovy,
    list_images,
    load_camera_info,
    parse_board,
    read_gray,
)

from .synthetic import TRUE_D, TRUE_K, charuco_views, checkerboard_views

BOARD = "checkerboard:9x6:0.025"


@pytest.fixture(scope="module")
def board_folder(tmp_path_factory):
    """12 rendered checkerboard views plus 2 frames without a board."""
    folder = tmp_path_factory.mktemp("shots")
    images, _, _ = checkerboard_views(n_views=12, seed=0)
    for i, img in enumerate(images):
        cv2.imwrite(str(folder / f"view_{i:02d}.png"), img)
    rng = np.random.default_rng(5)
    cv2.imwrite(str(folder / "blank.png"), np.full((480, 640), 200, np.uint8))
    cv2.imwrite(str(folder / "noise.png"), rng.integers(0, 255, (480, 640), dtype=np.uint8))
    return folder


def _undistort_error(K, D, size=(640, 480)) -> float:
    """Largest disagreement (px) between the true and a recovered model, over an image grid:
    distortion coefficients trade off against each other, the mapping is what matters."""
    us, vs = np.meshgrid(np.linspace(20, size[0] - 20, 15), np.linspace(20, size[1] - 20, 11))
    pts = np.stack([us.ravel(), vs.ravel()], axis=1).reshape(-1, 1, 2)
    a = cv2.undistortPoints(pts, TRUE_K, TRUE_D, P=TRUE_K)
    b = cv2.undistortPoints(pts, K, D, P=TRUE_K)
    return float(np.abs(a - b).max())


def test_checkerboard_recovers_known_intrinsics(board_folder, tmp_path):
    out = tmp_path / "cell" / "camera_info.yaml"
    rc = cli.main(["calibrate-camera", f"images={board_folder}", f"board={BOARD}", f"out={out}"])
    assert rc == 0
    info = load_camera_info(out)
    fx, fy = info.K[0, 0], info.K[1, 1]
    assert abs(fx / TRUE_K[0, 0] - 1) < 0.01, fx
    assert abs(fy / TRUE_K[1, 1] - 1) < 0.01, fy
    assert abs(info.K[0, 2] - TRUE_K[0, 2]) < 3 and abs(info.K[1, 2] - TRUE_K[1, 2]) < 3
    assert _undistort_error(info.K, info.D) < 1.0
    assert (info.width, info.height) == (640, 480)
    assert info.distortion_model == "plumb_bob" and info.D.size == 5

    report = yaml.safe_load((out.parent / "camera_report.yaml").read_text())
    assert report["rms_reprojection_error_px"] < 0.5
    # frames without the board are listed, not silently skipped
    assert sorted(report["images_without_board"]) == ["blank.png", "noise.png"]
    assert len(report["images_used"]) == 12
    assert "RMS reprojection error" in out.read_text().splitlines()[0]
    sheet = cv2.imread(str(out.parent / "camera_corners.png"))
    assert sheet is not None and sheet.shape[0] > 200
    # the ROS fields a camera_info_manager reads
    raw = yaml.safe_load(out.read_text())
    for key in ("image_width", "image_height", "camera_name", "camera_matrix", "distortion_model",
                "distortion_coefficients", "rectification_matrix", "projection_matrix"):
        assert key in raw
    assert raw["projection_matrix"]["rows"] == 3 and len(raw["projection_matrix"]["data"]) == 12


def test_existing_output_is_not_overwritten(board_folder, tmp_path, capsys):
    out = tmp_path / "camera_info.yaml"
    out.write_text("keep me")
    rc = cli.main(["calibrate-camera", f"images={board_folder}", f"board={BOARD}", f"out={out}"])
    assert rc == 1 and "overwrite=true" in capsys.readouterr().err
    assert out.read_text() == "keep me"


@pytest.mark.skipif(not hasattr(cv2, "aruco"), reason="no cv2.aruco in this OpenCV build")
def test_charuco_recovers_known_intrinsics():
    board = parse_board("charuco:7x5:0.04:0.03:DICT_4X4_50")
    images = charuco_views(board.charuco_board(), n_views=8)
    calib, _ = calibrate([(f"c{i}.png", im) for i, im in enumerate(images)], board, progress=False)
    assert abs(calib.camera_matrix[0, 0] / TRUE_K[0, 0] - 1) < 0.01
    assert abs(calib.camera_matrix[1, 1] / TRUE_K[1, 1] - 1) < 0.01
    assert calib.rms < 0.5
    assert calib.not_found == []


def test_wrong_board_size_finds_no_board(board_folder, capsys):
    rc = cli.main(["calibrate-camera", f"images={board_folder}", "board=checkerboard:10x7:0.025",
                   "out=/tmp/never_written_camera_info.yaml"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "no board" in err and "INNER corners" in err


def test_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(CalibrationError, match="no images in"):
        list_images(tmp_path)
    with pytest.raises(CalibrationError, match="not found"):
        list_images(tmp_path / "missing")


def test_unreadable_image_is_named(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((48, 64), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG this is not really a png")
    with pytest.raises(CalibrationError, match="broken.png"):
        read_gray(tmp_path / "broken.png")
    rc = cli.main(["calibrate-camera", f"images={tmp_path}", f"board={BOARD}",
                   f"out={tmp_path / 'out.yaml'}"])
    assert rc == 1 and "broken.png" in capsys.readouterr().err
    assert not (tmp_path / "out.yaml").exists()


@pytest.mark.parametrize("spec", ["checkerboard:9x6", "checkerboard:ax6:0.02", "circles:4x4:0.01",
                                  "charuco:5x5:0.04:0.05", "charuco:5x5:0.04:0.03:DICT_NOPE"])
def test_bad_board_spec(spec):
    with pytest.raises(CalibrationError, match="board spec"):
        parse_board(spec)


def test_camera_info_from_fovy_projects_like_a_pinhole():
    info = camera_info_from_fovy(128, 96, 60.0)
    K = np.array(info["camera_matrix"]["data"]).reshape(3, 3)
    # a point on the top edge of the vertical field of view projects to the top image edge
    y = math.tan(math.radians(30.0))
    v = K[1, 1] * (-y) + K[1, 2]
    assert abs(v - (-0.5)) < 1e-6
    assert K[0, 0] == K[1, 1]
