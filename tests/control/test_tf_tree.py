"""robot_calql.control.tf_tree: chains composed against hand-computed transforms, base not the
root, static + dynamic links and staleness, re-parenting, and bad input refused naming the frames."""

import numpy as np
import pytest

from robot_calql.control.ee_pose import KinematicsError, down_rotation
from robot_calql.control.tf_tree import TfError, TfTree

S = np.sqrt(0.5)
IDENTITY = (0.0, 0.0, 0.0, 1.0)
RZ90 = (0.0, 0.0, S, S)    # +90 deg about z
RY90 = (0.0, S, 0.0, S)    # +90 deg about y: the gripper pointing down, yaw 0 (ee_pose.down_rotation(0))


def _arm(now: float = 100.0) -> TfTree:
    """world -(static: +1 m x, +90 deg z)-> base -(0.5 m up)-> link1 -(0.2 m x, +90 deg y)-> ee,
    and world -(static: +1 m y)-> camera."""
    tree = TfTree()
    tree.set("world", "base", (1.0, 0.0, 0.0), RZ90, 0.0, static=True)
    tree.set("base", "link1", (0.0, 0.0, 0.5), IDENTITY, now - 0.05)
    tree.set("link1", "ee", (0.2, 0.0, 0.0), RY90, now - 0.01)
    tree.set("world", "camera", (0.0, 1.0, 0.0), IDENTITY, 0.0, static=True)
    return tree


def test_multi_hop_chain_matches_the_hand_computed_transform():
    c = _arm().lookup("base", "ee", now=100.0, max_age_s=0.2)
    np.testing.assert_allclose(c.position, [0.2, 0.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(c.rotation, [[0, 0, 1], [0, 1, 0], [-1, 0, 0]], atol=1e-12)
    assert c.stamp == pytest.approx(99.95)  # the oldest dynamic link's
    assert c.matrix.shape == (4, 4)


def test_base_not_the_root_goes_through_the_common_ancestor():
    tree = _arm()
    # from the root: Rz90 (0.2, 0, 0.5) + (1, 0, 0)
    np.testing.assert_allclose(tree.lookup("world", "ee", 100.0, 0.2).position, [1.0, 0.2, 0.5], atol=1e-12)
    # a sibling branch: camera is world shifted 1 m along y
    np.testing.assert_allclose(tree.lookup("camera", "ee", 100.0, 0.2).position, [1.0, -0.8, 0.5], atol=1e-12)
    # upwards: base in link1
    np.testing.assert_allclose(tree.lookup("link1", "base", 100.0, 0.2).position, [0.0, 0.0, -0.5], atol=1e-12)
    np.testing.assert_allclose(tree.lookup("ee", "ee", 100.0, 0.2).matrix, np.eye(4))


def test_pose_gives_position_and_yaw_as_the_other_pose_sources():
    tree = TfTree()
    yaw = 0.3
    tree.set("base", "wrist", (0.1, 0.2, 0.3), (0.0, 0.0, np.sin(yaw / 2), np.cos(yaw / 2)), 10.0)
    tree.set("wrist", "ee", (0.0, 0.0, 0.0), RY90, 10.0, static=True)
    pos, got_yaw, stamp = tree.pose("base", "ee", 10.1, 0.2)
    np.testing.assert_allclose(pos, [0.1, 0.2, 0.3])
    assert got_yaw == pytest.approx(yaw)
    np.testing.assert_allclose(tree.lookup("base", "ee", 10.1, 0.2).rotation, down_rotation(yaw), atol=1e-12)
    assert stamp == 10.0


def test_static_links_never_go_stale_dynamic_ones_do():
    tree = _arm(now=100.0)
    assert tree.lookup("world", "camera", now=1e6, max_age_s=0.2).stamp is None  # all static
    with pytest.raises(TfError, match=r"transform 'base' -> 'link1' is stale: 0\.250 s old \(max 0\.2 s\)"):
        tree.lookup("base", "ee", now=100.2, max_age_s=0.2)
    tree.set("base", "link1", (0.0, 0.0, 0.5), IDENTITY, 100.19)
    assert tree.lookup("base", "ee", now=100.18, max_age_s=0.2).stamp == pytest.approx(99.99)
    with pytest.raises(TfError, match=r"'link1' -> 'ee' is stale"):
        tree.lookup("base", "ee", now=100.3, max_age_s=0.2)


def test_missing_frame_and_broken_link_are_named():
    tree = _arm()
    with pytest.raises(TfError, match=r"no transform for frame 'gripper' yet \(frames known: \['base', 'camera'"):
        tree.lookup("base", "gripper", 100.0, 0.2)
    tree.set("odom", "mobile_base", (0, 0, 0), IDENTITY, 100.0)
    with pytest.raises(TfError, match=r"between 'mobile_base' and 'ee': 'ee' ends at 'world' and 'mobile_base' "
                                      r"at 'odom'"):
        tree.lookup("mobile_base", "ee", 100.0, 0.2)
    assert issubclass(TfError, KinematicsError)


def test_a_reparented_child_replaces_its_old_edge():
    tree = _arm()
    tree.set("camera", "link1", (0.0, 0.0, 0.1), IDENTITY, 100.0)  # link1 now hangs under camera
    assert tree.parent("link1") == "camera"
    np.testing.assert_allclose(tree.lookup("world", "ee", 100.0, 0.2).position, [0.2, 1.0, 0.1], atol=1e-12)
    np.testing.assert_allclose(tree.lookup("base", "ee", 100.0, 0.2).position, [1.0, 0.8, 0.1], atol=1e-12)
    with pytest.raises(TfError, match=r"transform 'ee' -> 'world': 'ee' is already below 'world' \(a loop\)"):
        tree.set("ee", "world", (0, 0, 0), IDENTITY, 100.0)


@pytest.mark.parametrize("translation, rotation, stamp, message", [
    ((0, 0, 0), (0, 0, 0, 0), 1.0, r"transform 'base' -> 'ee': zero rotation quaternion"),
    ((0, np.nan, 0), IDENTITY, 1.0, r"transform 'base' -> 'ee': non-finite values"),
    ((0, 0, 0), (0, 0, np.inf, 1), 1.0, r"transform 'base' -> 'ee': non-finite values"),
    ((0, 0, 0), IDENTITY, np.nan, r"transform 'base' -> 'ee': non-finite values"),
    ((0, 0), IDENTITY, 1.0, r"transform 'base' -> 'ee': needs translation \(x, y, z\)"),
])
def test_bad_transforms_are_refused_naming_the_frames_and_keep_the_old_edge(translation, rotation, stamp, message):
    tree = TfTree()
    tree.set("base", "ee", (0.1, 0, 0), IDENTITY, 1.0)
    with pytest.raises(TfError, match=message):
        tree.set("base", "ee", translation, rotation, stamp)
    np.testing.assert_allclose(tree.lookup("base", "ee", 1.0, 0.2).position, [0.1, 0, 0])


def test_an_unnormalized_quaternion_is_normalized_and_self_parent_refused():
    tree = TfTree()
    tree.set("base", "ee", (0, 0, 0), (0, 0, 2 * S, 2 * S), 1.0)
    np.testing.assert_allclose(tree.lookup("base", "ee", 1.0, 0.2).rotation,
                               [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    with pytest.raises(TfError, match=r"transform 'ee' -> 'ee': a frame cannot be its own parent"):
        tree.set("ee", "ee", (0, 0, 0), IDENTITY, 1.0)
