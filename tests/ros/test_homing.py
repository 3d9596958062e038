"""Arm homing between reset-free tries, over real rclpy + DDS: the episode controller calls the
robot's home service (the stand-in's `/sim_robot/home`) after a failed try and starts the retry
only once the arm is there; without the service it asks for a human instead of going on."""

import time

import numpy as np
import pytest
from conftest import wait_for

pytestmark = pytest.mark.ros


def _cfg(tmp_path, *extra):
    from robot_calql.config import compose

    return compose("launch_finetune", ["sim=true", f"run_dir={tmp_path}", *extra])


def test_failed_try_sends_the_arm_home_before_the_retry(ros, tmp_path):
    import rclpy
    from geometry_msgs.msg import TwistStamped
    from robot_calql_ros.common import COMMAND_QOS
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set

    from robot_calql.sim.env import HOME_EE

    # no policy: the test drives the arm away itself, then the try times out
    cfg = _cfg(tmp_path, "nodes=[sim_robot,reward,episode_controller]", "controller.phase_time_limit_s=5.0",
               "controller.max_failures=10")
    sim, reward, ctl = build_nodes(node_set(cfg))
    assert ctl.ctl.cfg.home == "after_failure"  # auto, with the stand-in's home service
    ros.add(sim, reward, ctl)
    probe = ros.add(rclpy.create_node("probe"))
    pub = probe.create_publisher(TwistStamped, cfg.robot.topics.command, COMMAND_QOS)
    # commands sent before DDS has matched the stand-in's subscription are lost (on a fresh
    # clone that once left the arm 2 cm from home after 12 of them)
    wait_for(lambda: pub.get_subscription_count() >= 1, 20, "the stand-in subscribing to the commands")
    wait_for(lambda: any(e["event"] == "start" for e in ctl.events), 20, "the first try")
    t0 = time.monotonic()
    while np.linalg.norm(sim.env.ee_pose()[0] - HOME_EE) <= 0.08 and time.monotonic() - t0 < 3.0:
        msg = TwistStamped()  # 0.2 m/s forward and down: the arm leaves home
        msg.twist.linear.x, msg.twist.linear.z = 0.2, -0.05
        pub.publish(msg)
        time.sleep(0.1)
    away = sim.env.ee_pose()[0]
    assert np.linalg.norm(away - HOME_EE) > 0.06, f"the arm should have moved away from home, it is at {away}"
    assert sim.homes == 0
    wait_for(lambda: sim.homes >= 1, 20, "the stand-in homing the arm after the timed-out try")
    wait_for(lambda: sum(e["event"] == "start" for e in ctl.events) >= 2, 10, "the retry")
    assert np.linalg.norm(sim.env.ee_pose()[0] - HOME_EE) < 0.04, "the retry starts with the arm at home"
    kinds = [(e["event"], e["reason"]) for e in ctl.events]
    first_end = kinds.index(("end", "timeout"))
    assert kinds[first_end:first_end + 3] == [("end", "timeout"), ("home", ""), ("start", "")]
    assert not any(k == "help" for k, _ in kinds)


def test_no_home_service_asks_for_a_human(ros, tmp_path):
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set

    # no stand-in in the graph, so nothing offers /sim_robot/home: the first timeout must not
    # start a retry from wherever the arm is, it pauses and calls for a person
    cfg = _cfg(tmp_path, "nodes=[episode_controller]", "controller.phase_time_limit_s=1.0", "controller.home=always")
    (ctl,) = build_nodes(node_set(cfg))
    ros.add(ctl)
    wait_for(lambda: any(e["event"] == "help" for e in ctl.events), 20, "a call for help")
    help_ev = next(e for e in ctl.events if e["event"] == "help")
    assert "/sim_robot/home is not available" in help_ev["reason"]
    assert ctl.ctl.paused and sum(e["event"] == "start" for e in ctl.events) == 1
