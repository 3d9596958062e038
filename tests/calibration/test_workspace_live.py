"""Live workspace recording: JointState published over real DDS is recorded by name."""

import sys
import threading
import time
import uuid

import numpy as np
import pytest

pytestmark = pytest.mark.ros


def test_record_live_joint_states():
    rclpy = pytest.importorskip("rclpy")
    from sensor_msgs.msg import JointState

    from robot_calql.calibration.workspace import record_live_joint_states

    topic = f"/calib_test_{uuid.uuid4().hex[:8]}/joint_states"
    joints = ["a", "b", "c"]
    rclpy.init()
    node = rclpy.create_node("calib_test_publisher")
    pub = node.create_publisher(JointState, topic, 10)
    stop = threading.Event()

    def publish():
        k = 0
        while not stop.is_set():
            msg = JointState(name=["c", "gripper", "a", "b"], position=[3.0 + k, 9.0, 1.0 + k, 2.0 + k])
            pub.publish(msg)
            k += 1
            time.sleep(0.02)

    t = threading.Thread(target=publish, daemon=True)
    t.start()
    loaded = set(sys.modules)
    try:
        q = record_live_joint_states(topic, joints, 1.5)
    finally:
        stop.set()
        t.join()
        node.destroy_node()
        rclpy.shutdown()
    # the recorder ran in a child process: the core library imported nothing of the ROS package
    assert not [m for m in set(sys.modules) - loaded if m.startswith("robot_calql_ros")]
    assert q.ndim == 2 and q.shape[1] == 3 and len(q) >= 5
    # reordered to the robot's joint order: b - a == 1 and c - a == 2 in every sample
    np.testing.assert_allclose(q[:, 1] - q[:, 0], 1.0)
    np.testing.assert_allclose(q[:, 2] - q[:, 0], 2.0)
