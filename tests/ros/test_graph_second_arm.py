"""The whole fine-tuning graph on the second simulated arm, from its robot config alone
(configs/robot/kestrel6.yaml): a 6-joint arm with other joint names, commanded by
trajectory_msgs/JointTrajectory through the safety node's URDF kinematics (Pinocchio), a jpeg
front camera and a raw wrist camera, every topic under /kestrel. Real rclpy + DDS, the nodes of
the shared node set in one process (the launcher's threads mode), as tests/ros/test_graph.py."""

import numpy as np
import pytest
from conftest import wait_for

pytestmark = pytest.mark.ros

ROBOT = "kestrel6"


def _cfg(tmp_path):
    from robot_calql.config import compose

    return compose("launch_finetune", [
        f"robot={ROBOT}", "sim=true", "policy.action_source=expert", f"run_dir={tmp_path / 'run'}",
        "learner.min_online=10", "learner.publish_every=2", "learner.batch_size=8",
        "learner.utd=0.05", "learner.checkpoint_every=1000", "learner.online_capacity=2000",
        "agent.encoder_latent_dim=16", "controller.phase_time_limit_s=15", "robot.camera_hz=10"])


def test_graph_runs_on_the_second_arm(ros, tmp_path):
    import rclpy
    from robot_calql_ros.common import COMMAND_QOS, SENSOR_QOS
    from robot_calql_ros.launcher import NodeSpinners, build_nodes
    from robot_calql_ros.nodeset import node_set
    from sensor_msgs.msg import CompressedImage, Image
    from trajectory_msgs.msg import JointTrajectory

    from robot_calql.control.cameras import decode_frame

    cfg = _cfg(tmp_path)
    r = cfg.robot
    assert len(r.joints) == 6 and r.command_interface == "joint_trajectory"
    specs = node_set(cfg)
    assert [s.name for s in specs] == ["sim_robot", "policy", "reward", "episode_controller", "safety", "learner"]
    nodes = dict(zip([s.name for s in specs], build_nodes(specs), strict=True))
    spinners = NodeSpinners(list(nodes.values()))
    try:
        sent, front, wrist = [], [], []
        probe = ros.add(rclpy.create_node("probe"))
        probe.create_subscription(JointTrajectory, r.topics.command, sent.append, COMMAND_QOS)
        probe.create_subscription(CompressedImage, r.cameras.front.topic, front.append, SENSOR_QOS)
        probe.create_subscription(Image, r.cameras.wrist.topic, wrist.append, SENSOR_QOS)
        ctl, policy, learner, safety = (nodes[n] for n in ("episode_controller", "policy", "learner", "safety"))

        def switched():
            ends = [e for e in ctl.events if e["event"] == "end" and e["reason"] == "success"]
            return {e["direction"] for e in ends} == {"forward", "backward"}

        try:
            wait_for(switched, 120, "a forward success and then a backward success")
        except AssertionError as e:
            raise AssertionError(
                f"{e}; policy steps {policy.steps}, commands forwarded {safety.sent_count}, holds {safety.hold_count} "
                f"(last reason: {safety.holding_reason or 'none'}), episodes {[x for x in ctl.events if x['event'] == 'end']}"
            ) from None
        wait_for(lambda: learner.updates >= 2 and policy.weights_received >= 2, 60,
                 "weights from learner updates reaching the policy")

        # the cameras as the robot config says: a jpeg front view and a raw wrist view, 64 px
        assert front and front[-1].format == "jpeg" and decode_frame(front[-1]).shape == (64, 64, 3)
        assert wrist and (wrist[-1].height, wrist[-1].width) == (64, 64)
        # the safety node forwards joint trajectories of the 6 named joints (+ gripper) that move the arm
        assert all(list(m.joint_names) == [*r.joints, r.gripper_joint] for m in sent)
        targets = np.array([m.points[-1].positions[:6] for m in sent])
        assert len(targets) > 30 and np.ptp(targets, axis=0).max() > 0.2, "joint commands move the arm"
        # transitions reach the learner with both cameras' images and the 6-joint proprio
        assert learner.counts["stored"] >= 30 and learner.counts["lost"] == 0
        assert {"image", "image_wrist"} <= set(learner.spec) and tuple(learner.spec["proprio"]) == (11,)
        n = len(learner.online)
        for key in ("image", "image_wrist"):
            assert learner.online.frames[key][:n].max() > 0, f"no {key} frames stored"
        assert not np.array_equal(learner.online.frames["image"][:n], learner.online.frames["image_wrist"][:n])
    finally:
        spinners.stop()
        for n in nodes.values():
            n.destroy_node()
