"""The stand-in's simulated human drives through the teleop topics (real rclpy + DDS): when the end
effector is stuck it publishes Joy (dead-man held) that the real teleop node turns into the
scripted demonstrator's action on topics.teleop_command; after takeover_steps it lets go."""

import json
import time

import numpy as np
import pytest
from conftest import wait_for

pytestmark = pytest.mark.ros


def test_simulated_human_takes_over_through_joy_and_the_teleop_node(ros):
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from robot_calql_ros.common import COMMAND_QOS, SENSOR_QOS, topic_names
    from robot_calql_ros.launcher import NodeSpinners, build_nodes
    from robot_calql_ros.nodeset import node_set
    from std_msgs.msg import Float64MultiArray, String

    from robot_calql.config import compose
    from robot_calql.control.conversions import action_to_delta, unpack_policy_command

    cfg = compose("launch_finetune", ["sim=true", "nodes=[sim_robot]", "teleop=simulated_human",
                                      "teleop.simulated_human.patience_steps=3",
                                      "teleop.simulated_human.takeover_steps=6"])
    specs = node_set(cfg)
    assert [s.name for s in specs] == ["sim_robot", "teleop", "sim_human"]
    assert specs[0].params["sim"]["publish_expert"], "the stand-in publishes the demonstrator's action for it"
    nodes = build_nodes(specs[1:])
    teleop, human = nodes
    t = cfg.robot.topics
    probe = rclpy.create_node("probe")
    got = []
    probe.create_subscription(Float64MultiArray, topic_names(t)["teleop_command"],
                              lambda m: got.append((time.time(), list(m.data))), COMMAND_QOS)
    pub_pose = probe.create_publisher(PoseStamped, t.ee_pose, SENSOR_QOS)
    pub_expert = probe.create_publisher(Float64MultiArray, t.expert_action, COMMAND_QOS)
    pub_event = probe.create_publisher(String, t.episode_event, COMMAND_QOS)
    expert = np.array([0.5, -0.25, 0.75, 0.0, 1.0])
    pose = PoseStamped()
    pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.25, 0.0, 0.1   # never moves: stuck
    probe.create_timer(1 / 30, lambda: (pub_pose.publish(pose),
                                        pub_expert.publish(Float64MultiArray(data=list(expert)))))
    ros.add(probe)
    spinners = NodeSpinners(nodes)
    try:
        wait_for(lambda: pub_event.get_subscription_count() >= 1, 20, "the simulated human listening to events")
        time.sleep(0.5)
        assert got == [], "no takeover before an episode runs"
        pub_event.publish(String(data=json.dumps({"event": "start", "episode": 0})))
        wait_for(lambda: len(got) >= 5, 20, "teleop commands from the simulated human's Joy")
        delta, _ = unpack_policy_command(got[-1][1])
        np.testing.assert_allclose(delta, action_to_delta(expert, float(cfg.robot.action_scale.translation_m),
                                                          float(cfg.robot.action_scale.rotation_rad)), atol=1e-9)
        wait_for(lambda: human.human.takeovers >= 2, 20, "it lets go after takeover_steps and takes over again")
        assert human.human.used_steps <= 6 * human.human.takeovers
    finally:
        spinners.stop()
        for n in nodes:
            n.destroy_node()


def test_the_wrong_way_rule_watches_the_policy_command_topic(ros):
    """watch_steps > 0: the node compares the policy's commands (topics.policy_command) with the
    demonstrator's action; commands that follow it never bring a takeover, commands the other way do."""
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from robot_calql_ros.common import COMMAND_QOS, SENSOR_QOS
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set
    from std_msgs.msg import Float64MultiArray, String

    from robot_calql.config import compose
    from robot_calql.control.conversions import action_to_delta, pack_policy_command

    cfg = compose("launch_finetune", ["sim=true", "nodes=[sim_robot]", "teleop=simulated_human",
                                      "teleop.simulated_human.stuck_m=0.0",          # never stuck
                                      "teleop.simulated_human.watch_steps=4",
                                      "teleop.simulated_human.takeover_steps=5"])
    nodes = build_nodes(node_set(cfg)[1:])
    t = cfg.robot.topics
    scale = (float(cfg.robot.action_scale.translation_m), float(cfg.robot.action_scale.rotation_rad))
    probe = rclpy.create_node("probe_watch")
    pub_pose = probe.create_publisher(PoseStamped, t.ee_pose, SENSOR_QOS)
    pub_expert = probe.create_publisher(Float64MultiArray, t.expert_action, COMMAND_QOS)
    pub_policy = probe.create_publisher(Float64MultiArray, t.policy_command, COMMAND_QOS)
    pub_event = probe.create_publisher(String, t.episode_event, COMMAND_QOS)
    expert = np.array([0.8, 0.0, -0.4, 0.0, -1.0])
    policy = {"action": expert * 0.9}
    pose = PoseStamped()
    pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.25, 0.0, 0.1

    def tick():
        pub_pose.publish(pose)
        pub_expert.publish(Float64MultiArray(data=list(expert)))
        pub_policy.publish(Float64MultiArray(data=pack_policy_command(action_to_delta(policy["action"], *scale),
                                                                      time.time())))

    probe.create_timer(1 / 30, tick)
    ros.add(probe)
    def go_wrong():
        policy["action"] = np.array([-0.8, 0.0, 0.4, 0.0, 1.0])   # the other way, closing the hand

    _only_after_going_wrong(nodes, pub_policy, pub_event, go_wrong, "wrong_way")


def test_the_no_progress_rule_reads_the_goal_distance_topic(ros):
    """progress_steps > 0: the node reads the try's distance from its goal (topics.goal_distance,
    which the stand-in publishes); a distance that keeps falling never brings a takeover, one that
    stops falling does, named by its rule. The hand keeps moving, so the stall rule never fires."""
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from robot_calql_ros.common import COMMAND_QOS, SENSOR_QOS
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set
    from std_msgs.msg import Float64, Float64MultiArray, String

    from robot_calql.config import compose

    cfg = compose("launch_finetune", ["sim=true", "nodes=[sim_robot]", "teleop=simulated_human",
                                      "teleop.simulated_human.progress_steps=5",
                                      "teleop.simulated_human.takeover_steps=5"])
    assert cfg.robot.topics.goal_distance, "the stand-in's robot config names the topic"
    nodes = build_nodes(node_set(cfg)[1:])
    t = cfg.robot.topics
    probe = rclpy.create_node("probe_progress")
    pub_pose = probe.create_publisher(PoseStamped, t.ee_pose, SENSOR_QOS)
    pub_expert = probe.create_publisher(Float64MultiArray, t.expert_action, COMMAND_QOS)
    pub_goal = probe.create_publisher(Float64, t.goal_distance, COMMAND_QOS)
    pub_event = probe.create_publisher(String, t.episode_event, COMMAND_QOS)
    scene = {"x": 0.15, "goal": 0.8, "closing": True}
    pose = PoseStamped()

    def tick():  # 30 Hz, three times the control rate: the hand moves 5 mm a tick, always
        scene["x"] = 0.15 + (scene["x"] - 0.15 + 0.005) % 0.15
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = scene["x"], 0.0, 0.1
        if scene["closing"]:
            scene["goal"] = max(scene["goal"] - 0.004, 0.0)   # 1.2 cm closer per control period
        pub_pose.publish(pose)
        pub_expert.publish(Float64MultiArray(data=[0.5, 0.0, 0.0, 0.0, 1.0]))
        pub_goal.publish(Float64(data=scene["goal"]))

    probe.create_timer(1 / 30, tick)
    ros.add(probe)
    _only_after_going_wrong(nodes, pub_goal, pub_event, lambda: scene.update(closing=False), "no_progress")


def test_the_stand_in_publishes_the_goal_distance_for_the_simulated_human(ros):
    """With the simulated human, sim_robot publishes the try's distance from its goal each control
    period: the hand's distance to the cube + 0.5 before the grasp (goal_distance)."""
    import rclpy
    from robot_calql_ros.common import COMMAND_QOS
    from robot_calql_ros.launcher import NodeSpinners, build_nodes
    from robot_calql_ros.nodeset import node_set
    from std_msgs.msg import Float64

    from robot_calql.config import compose

    cfg = compose("launch_finetune", ["sim=true", "nodes=[sim_robot]", "teleop=simulated_human"])
    sim_spec = [s for s in node_set(cfg) if s.name == "sim_robot"]
    nodes = build_nodes(sim_spec)
    probe = rclpy.create_node("probe_goal")
    got = []
    probe.create_subscription(Float64, cfg.robot.topics.goal_distance, lambda m: got.append(m.data), COMMAND_QOS)
    ros.add(probe)
    spinners = NodeSpinners(nodes)
    try:
        wait_for(lambda: len(got) >= 3, 30, "goal distances from the stand-in")
        assert all(0.5 < d < 1.5 for d in got), got   # nothing grasped: 0.5 + the hand's distance to the cube
    finally:
        spinners.stop()
        for n in nodes:
            n.destroy_node()


def _only_after_going_wrong(nodes, watched, pub_event, go_wrong, rule: str) -> None:
    """Spin the teleop and sim_human `nodes`, start an episode: 15 control periods of a policy doing
    well bring no takeover; after `go_wrong()` the rule `rule` takes over. `watched`: the probe's
    publisher the rule reads (waited for until the node listens)."""
    from robot_calql_ros.launcher import NodeSpinners
    from std_msgs.msg import String

    human = nodes[1]
    spinners = NodeSpinners(nodes)
    try:
        wait_for(lambda: watched.get_subscription_count() >= 1, 20, "the simulated human listening")
        pub_event.publish(String(data=json.dumps({"event": "start", "episode": 0})))
        wait_for(lambda: human.running, 10, "the episode to start")
        time.sleep(1.5)   # 15 control periods of a policy doing well
        assert human.human.takeovers == 0
        go_wrong()
        wait_for(lambda: human.human.takeovers >= 1, 10, f"a takeover by the {rule} rule")
        assert human.human.rule == rule
    finally:
        spinners.stop()
        for n in nodes:
            n.destroy_node()
