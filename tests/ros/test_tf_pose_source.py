"""Robot config `ee_pose: tf`: robot_calql_ros.common.TfPoseSource turns TF transforms into the EE
pose of the policy and safety nodes; without the tf2_msgs package (this machine) node_set, the
policy node and the safety node refuse it in one line saying what to use instead.

Before: node_set refused every `ee_pose: tf` config ("not supported by the nodes yet") and the
nodes had no TF path at all. tf2_msgs has no wheel here, so the node test stands a fake
`tf2_msgs.msg.TFMessage` (std_msgs/String) in: the subscriptions are real but nothing publishes
TFMessages; the transforms go in through TfPoseSource.add, what /tf's callback calls.
"""

import os
import sys
import types

import numpy as np
import pytest
from conftest import wait_for

pytestmark = pytest.mark.ros

S = np.sqrt(0.5)


class _Warnings:
    def __init__(self):
        self.messages: list[tuple[str, str]] = []

    def warn(self, key: str, msg: str) -> None:
        self.messages.append((key, msg))


def _compose(*overrides):
    from robot_calql.config import compose

    return compose("launch_finetune", list(overrides))


def _chain(stamp: float, yaw: float = 0.0):
    """base_link -(yaw about z, at (0.1, 0.2, 0.3))-> wrist -(pointing down)-> ee_link, tf2's way
    (frame ids with a leading '/')."""
    return [("/base_link", "wrist", (0.1, 0.2, 0.3), (0.0, 0.0, np.sin(yaw / 2), np.cos(yaw / 2)), stamp),
            ("wrist", "ee_link", (0.0, 0.0, 0.0), (0.0, S, 0.0, S), stamp)]


def test_tf_pose_source_hands_over_each_newer_chain_pose():
    from robot_calql_ros.common import TfPoseSource, add_transform

    from robot_calql.control.tf_tree import TfTree

    poses, warnings = [], _Warnings()
    src = TfPoseSource("base_link", "ee_link", 0.2, lambda *pose: poses.append(pose), warnings)
    src.add([("world", "base_link", (1, 0, 0), (0, 0, 0, 1), 0.0)], static=True, now=10.0)
    assert not poses and "no transform for frame 'ee_link' yet" in warnings.messages[-1][1]
    src.add(_chain(9.95, yaw=0.3), static=False, now=10.0)
    (pos, yaw, stamp), = poses
    np.testing.assert_allclose(pos, [0.1, 0.2, 0.3], atol=1e-12)
    assert yaw == pytest.approx(0.3) and stamp == 9.95
    src.add([("odom", "cart", (0, 0, 0), (0, 0, 0, 1), 10.05)], static=False, now=10.05)
    assert len(poses) == 1  # the chain did not change: no second pose
    # a bad transform is named and skipped; the good one of the same message is kept
    src.add([("wrist", "ee_link", (0, 0, 0), (0, 0, 0, 0), 10.1), ("/base_link", "wrist", (0.5, 0, 0.3),
             (0, 0, 0, 1), 10.1)], static=False, now=10.1)
    assert warnings.messages[-1][0] == "tf_bad" and "'wrist' -> 'ee_link': zero rotation" in warnings.messages[-1][1]
    assert len(poses) == 1  # its oldest link (wrist -> ee_link, 9.95) is no newer
    src.add(_chain(10.12), static=False, now=10.15)
    assert len(poses) == 2 and poses[-1][2] == 10.12 and poses[-1][1] == pytest.approx(0.0)
    src.add([], static=False, now=11.0)  # nothing new for 0.88 s: stale, no pose
    assert len(poses) == 2 and warnings.messages[-1][0] == "tf_pose"
    assert "TF (base_link -> ee_link): transform '" in warnings.messages[-1][1]
    assert "is stale: 0.880 s old (max 0.2 s)" in warnings.messages[-1][1]
    tree = TfTree()  # message fields straight into a tree
    add_transform(tree, "/a", "/b", (1, 2, 3), (0, 0, 0, 1), 5.0, static=True)
    assert tree.parent("b") == "a" and tree.lookup("a", "b", 1e9, 0.1).stamp is None


def test_without_tf2_msgs_ee_pose_tf_is_refused_in_one_line(ros, capfd):
    """node_set, the policy node and the safety node each refuse it, saying what to use."""
    import rclpy
    from rclpy.parameter import Parameter
    from robot_calql_ros.common import TF2_MSGS_MISSING, flatten_params
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set

    from robot_calql.config import ConfigError

    assert TF2_MSGS_MISSING.startswith("ee_pose: tf needs the tf2_msgs package (ROS 2")
    assert TF2_MSGS_MISSING.endswith("); use ee_pose: fk with the URDF or a PoseStamped topic (ee_pose: topic)")
    with pytest.raises(ConfigError) as refused:
        node_set(_compose("sim=true", "nodes=[safety]", "robot.ee_pose=tf"))
    assert str(refused.value) == f"robot config 'sim_standin': {TF2_MSGS_MISSING}"
    specs = {s.name: s for s in node_set(_compose("sim=true", "nodes=[policy,safety]"))}
    for spec in specs.values():
        spec.params["robot"]["ee_pose"] = "tf"  # past node_set: the nodes refuse it themselves
    spec = specs["policy"]
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(os.environ.get("ROS_DOMAIN_ID", 0)))
    try:
        with pytest.raises(ValueError) as failed:
            spec.node_class()(spec.name, context=ctx,
                              parameter_overrides=[Parameter(k, value=v) for k, v in flatten_params(spec.params).items()])
    finally:
        rclpy.shutdown(context=ctx)
    assert str(failed.value) == TF2_MSGS_MISSING
    specs["safety"].params["autostart"] = False
    (safety,) = build_nodes([specs["safety"]])
    ros.add(safety)
    capfd.readouterr()
    safety.trigger_configure()
    assert safety.configure_error == TF2_MSGS_MISSING and not safety.active
    assert f"cannot configure: {TF2_MSGS_MISSING}" in capfd.readouterr().err


def test_with_tf2_msgs_the_policy_and_safety_nodes_take_the_pose_from_tf(ros, monkeypatch):
    """The nodes subscribe /tf (volatile) and /tf_static (transient local, reliable, depth 100)
    and take frames.base -> frames.ee from the transforms as their EE pose; a stale chain is none."""
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
    from robot_calql_ros.common import wall_s
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set
    from std_msgs.msg import String

    fake = types.ModuleType("tf2_msgs")
    fake.msg = types.SimpleNamespace(TFMessage=String)
    monkeypatch.setitem(sys.modules, "tf2_msgs", fake)
    cfg = _compose("sim=true", "nodes=[policy,safety]", "robot.ee_pose=tf")
    assert (cfg.robot.frames.base, cfg.robot.frames.ee) == ("base_link", "ee_link")
    policy, safety = build_nodes(node_set(cfg))
    ros.add(policy, safety)
    assert safety.configure_error == "" and safety.tf_source is not None
    wait_for(lambda: len(policy.get_subscriptions_info_by_topic("/tf_static")) == 2, 20, "2 /tf_static subscriptions")
    for info in policy.get_subscriptions_info_by_topic("/tf_static"):
        assert info.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
        assert info.qos_profile.reliability == ReliabilityPolicy.RELIABLE
    for info in policy.get_subscriptions_info_by_topic("/tf"):
        assert info.qos_profile.durability == DurabilityPolicy.VOLATILE
    assert not policy.get_subscriptions_info_by_topic(cfg.robot.topics.ee_pose)  # no pose topic read

    old = wall_s() - 5.0
    for node in (policy.tf, safety.tf_source):
        node.add(_chain(old, yaw=0.3), static=False)  # 5 s old: stale
    assert policy.ee is None and safety.ee is None
    now = wall_s()
    policy.tf.add(_chain(now, yaw=0.3), static=False)
    safety.tf_source.add(_chain(now, yaw=0.3), static=False)
    np.testing.assert_allclose(policy.ee[0], [0.1, 0.2, 0.3], atol=1e-12)
    assert policy.ee[1] == pytest.approx(0.3)
    np.testing.assert_allclose(safety.ee, [0.1, 0.2, 0.3], atol=1e-12)
    assert safety.pose_track.stamp == pytest.approx(now, abs=1e-6)  # stamped with the chain's stamp
