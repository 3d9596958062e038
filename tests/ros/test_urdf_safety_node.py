"""The safety node on the WidowX example's URDF (no hardware): the EE pose from the joint states
(`ee_pose: fk`, no pose topic), a policy delta turned into a JointTrajectory through the URDF's
IK, and the URDF's joint limits taken when the robot config leaves them out."""

from pathlib import Path

import numpy as np
import pytest
from conftest import wait_for

pytestmark = pytest.mark.ros
pytest.importorskip("pinocchio")

REPO = Path(__file__).resolve().parents[2]
Q0 = [0.2, -0.1, 0.6, 1.0708, 0.1]  # gripper pointing down, EE about (0.24, 0.05, 0.09) m


def test_widowx_safety_node_moves_the_ee_by_the_delta_through_the_urdf(ros, tmp_path):
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray, String
    from trajectory_msgs.msg import JointTrajectory

    from robot_calql.config import compose
    from robot_calql.control.conversions import pack_policy_command
    from robot_calql.robot_config import build_kinematics, load_robot_config

    ws = tmp_path / "workspace.yaml"
    ws.write_text("frame: wx250/base_link\nmin: [0.1, -0.3, 0.02]\nmax: [0.5, 0.3, 0.4]\nmargin: 0.0\n")
    cfg = compose("launch_finetune", ["sim=false", "robot=widowx250_example", "nodes=[safety]", f"workspace_file={ws}",
                                      "robot.topics.image=/camera/color/image_raw",  # the watchdog takes raw frames
                                      "~robot.limits.joint_lower", "~robot.limits.joint_upper"])  # the URDF's
    (spec,) = node_set(cfg)
    (safety,) = build_nodes([spec])
    kin = build_kinematics(load_robot_config(cfg.robot))
    np.testing.assert_allclose(safety.get_parameter("robot.limits.joint_lower").value, kin.lower)
    probe = rclpy.create_node("probe")
    sent, verdicts = [], []
    probe.create_subscription(JointTrajectory, cfg.robot.topics.command, sent.append, 10)
    probe.create_subscription(String, "/robot_calql/command_status", verdicts.append, 10)
    pub_js = probe.create_publisher(JointState, cfg.robot.topics.joint_states, 10)
    pub_img = probe.create_publisher(Image, "/camera/color/image_raw", 10)
    pub_cmd = probe.create_publisher(Float64MultiArray, "/robot_calql/policy_command", 10)
    ros.add(probe, safety)
    assert safety.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert safety.trigger_activate() == TransitionCallbackReturn.SUCCESS
    delta = np.array([0.01, -0.01, 0.015, 0.05, 0.3])  # dx, dy, dz (m), dyaw (rad), gripper

    def step():
        now = probe.get_clock().now()
        js = JointState(name=[*cfg.robot.joints, cfg.robot.gripper_joint], position=[*Q0, 0.03])
        js.header.stamp = now.to_msg()
        img = Image(height=480, width=640, encoding="rgb8", step=640 * 3, data=bytes(640 * 480 * 3))
        img.header.stamp = now.to_msg()
        pub_js.publish(js)
        pub_img.publish(img)
        if safety.ee is not None and not sent:
            pub_cmd.publish(Float64MultiArray(data=pack_policy_command(delta, now.nanoseconds * 1e-9)))
        return bool([m for m in sent if len(m.joint_names) == 6])
    wait_for(step, 30, "a joint trajectory from the safety node", period=0.1)
    np.testing.assert_allclose(safety.ee, kin.fk(np.array(Q0))[0], atol=1e-9)  # the pose from FK
    (msg,) = [m for m in sent if len(m.joint_names) == 6][:1]
    assert list(msg.joint_names) == [*cfg.robot.joints, cfg.robot.gripper_joint]
    q = np.array(msg.points[0].positions[:5])
    assert np.all(q >= kin.lower) and np.all(q <= kin.upper)
    p0, yaw0 = kin.pose(np.array(Q0))
    p1, yaw1 = kin.pose(q)
    np.testing.assert_allclose(p1 - p0, delta[:3], atol=2e-3)  # the EE moved by the delta
    assert yaw1 - yaw0 == pytest.approx(delta[3], abs=0.01)
    assert kin.fk(q)[1][2, 0] < -0.999  # still pointing down
    assert msg.points[0].positions[5] == pytest.approx(0.3)
    wait_for(lambda: any('"sent": true' in v.data for v in verdicts), 5, "the verdict sent=true")
