"""The stand-in cell's shipped calibration files load and agree with its MJCF and robot config."""

import math

from robot_calql.calibration import calibration_dir
from robot_calql.calibration.camera import load_camera_info
from robot_calql.calibration.workspace import load_workspace
from robot_calql.config import compose
from robot_calql.sim.kinematics import load_model


def test_standin_calibration_matches_the_model():
    robot = compose("calibrate_crop").robot
    cell = calibration_dir(robot)
    info = load_camera_info(cell / "camera_info.yaml")
    size = int(robot.image_size)
    assert (info.width, info.height) == (size, size)
    m = load_model()
    fovy = float(m.cam_fovy[m.camera("front").id])
    assert abs(info.K[1, 1] - (size / 2) / math.tan(math.radians(fovy) / 2)) < 1e-6
    assert not info.D.any()
    # the stand-in renders its camera already framed at any image size (64, 100, 128 px), so it
    # ships no crop.yaml: a crop is in raw pixels and would only fit one of those sizes
    assert not (cell / "crop.yaml").exists()
    ws = load_workspace(cell / "workspace.yaml")
    assert ws.frame == robot.frames.base


def test_recalibration_keeps_the_previous_file(tmp_path):
    from robot_calql.calibration import read_yaml, write_yaml_atomic

    target = tmp_path / "workspace.yaml"
    write_yaml_atomic(target, {"min": [0.0, 0.0, 0.0], "max": [1.0, 1.0, 1.0]})
    assert not (tmp_path / "workspace.previous.yaml").exists()
    write_yaml_atomic(target, {"min": [0.1, 0.0, 0.0], "max": [1.0, 1.0, 1.0]})
    assert read_yaml(tmp_path / "workspace.previous.yaml", "previous")["min"] == [0.0, 0.0, 0.0]
    assert read_yaml(target, "new")["min"] == [0.1, 0.0, 0.0]
