"""The one yaw <-> quaternion conversion (robot_calql.control.conversions) that nodes, bags and
the stand-in share."""

import math

import numpy as np
import pytest

from robot_calql.control.conversions import quaternion_from_yaw, yaw_from_quaternion


@pytest.mark.parametrize("yaw", [0.0, 0.3, -1.2, math.pi / 2, 3.0, -3.0])
def test_yaw_round_trip(yaw):
    q = quaternion_from_yaw(yaw)
    assert q[:2] == (0.0, 0.0) and math.isclose(sum(v * v for v in q), 1.0)
    assert yaw_from_quaternion(*q) == pytest.approx(yaw, abs=1e-12)


def test_yaw_of_a_tilted_orientation_is_the_heading_of_its_x_axis():
    """Yaw then a tilt about the new y axis: the heading is the x axis's angle in the table plane."""
    yaw, tilt = 0.7, 0.4
    qz = np.array([0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)])  # (x, y, z, w)
    qy = np.array([0.0, math.sin(tilt / 2), 0.0, math.cos(tilt / 2)])
    x1, y1, z1, w1 = qz
    x2, y2, z2, w2 = qy
    q = (w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2, w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
         w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2, w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2)
    assert yaw_from_quaternion(*q) == pytest.approx(yaw, abs=1e-12)
