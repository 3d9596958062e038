"""Stale success flags cannot end a fresh try, over real rclpy + DDS.

A fresh clone's CI once saw the backward try end "success" 55 ms after it started: the reward
node's True from the forward success was still in flight, and the controller's tick ran late
enough that `min_phase_s` let it through. Here `min_phase_s` is 0, so only the handshake guards:
the controller counts a True only after a False since the start (the reward node sends one when
it resets), and the reward node drops ground-truth verdicts judged for another instruction.
The test plays the simulator's ground truth itself (no stand-in cell needed).
"""

import json
import time

import pytest
from conftest import wait_for

pytestmark = pytest.mark.ros


def _nodes(tmp_path, nodes):
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set

    from robot_calql.config import compose

    cfg = compose("launch_finetune", ["sim=true", f"run_dir={tmp_path}", f"nodes=[{','.join(nodes)}]",
                                      "controller.min_phase_s=0.0", "controller.phase_time_limit_s=60.0"])
    return cfg, build_nodes(node_set(cfg))


def _ends(ctl):
    return [e for e in ctl.events if e["event"] == "end"]


def test_a_true_flag_counts_only_after_a_false_since_the_start(ros, tmp_path):
    import rclpy
    from robot_calql_ros.common import COMMAND_QOS
    from std_msgs.msg import Bool

    cfg, (ctl,) = _nodes(tmp_path, ["episode_controller"])
    ros.add(ctl)
    probe = ros.add(rclpy.create_node("probe"))
    flag = probe.create_publisher(Bool, cfg.robot.topics.success, COMMAND_QOS)
    wait_for(lambda: flag.get_subscription_count() >= 1, 20, "the controller subscribing to the success flag")
    wait_for(lambda: any(e["event"] == "start" for e in ctl.events), 20, "the first try")

    for _ in range(10):  # the level left over from a previous phase: True, never False since the start
        flag.publish(Bool(data=True))
        time.sleep(0.05)
    wait_for(lambda: ctl.stale_flags >= 10, 5, "the controller receiving the stale flags")
    time.sleep(0.3)  # three controller ticks
    assert _ends(ctl) == [], "a True with no False since the start ended the try"

    flag.publish(Bool(data=False))
    flag.publish(Bool(data=True))
    wait_for(lambda: _ends(ctl), 5, "the try ending on a fresh success")
    assert _ends(ctl)[0]["reason"] == "success" and _ends(ctl)[0]["direction"] == "forward"
    starts = [e for e in ctl.events if e["event"] == "start"]
    assert len(starts) == 2 and starts[1]["direction"] == "backward"
    time.sleep(0.3)  # the flag is still True: it must not end the backward try as well
    assert len(_ends(ctl)) == 1


def test_reward_node_drops_ground_truth_judged_for_the_previous_task(ros, tmp_path):
    import rclpy
    from robot_calql_ros.common import COMMAND_QOS
    from std_msgs.msg import Bool, String

    cfg, (reward, ctl) = _nodes(tmp_path, ["reward", "episode_controller"])
    assert reward.model == "ground_truth" and int(cfg.reward.debounce_k) == 2
    ros.add(reward, ctl)
    probe = ros.add(rclpy.create_node("probe"))
    flags = []
    probe.create_subscription(Bool, cfg.robot.topics.success, lambda m: flags.append(m.data), COMMAND_QOS)
    gt = probe.create_publisher(String, cfg.robot.topics.ground_truth_success, COMMAND_QOS)
    wait_for(lambda: gt.get_subscription_count() >= 1, 20, "the reward node subscribing to the ground truth")
    wait_for(lambda: any(e["event"] == "start" for e in ctl.events), 20, "the first try")
    fwd, bwd = ctl.ctl.cfg.forward_instruction, ctl.ctl.cfg.backward_instruction

    def verdict(instruction, ok):
        gt.publish(String(data=json.dumps({"task": "x", "instruction": instruction, "success": ok})))

    wait_for(lambda: reward.instruction == fwd, 5, "the reward node taking the first try's instruction")
    gt.publish(String(data="not json"))  # a message it cannot read is skipped, with a warning
    for _ in range(3):
        verdict(fwd, True)
        time.sleep(0.05)
    wait_for(lambda: _ends(ctl), 5, "the forward try ending on success")
    wait_for(lambda: reward.instruction == bwd, 5, "the reward node hearing the backward start")

    # the simulator keeps judging the forward task for a while after the switch: cube in the bowl
    for _ in range(10):
        verdict(fwd, True)
        time.sleep(0.05)
    wait_for(lambda: reward.gt_dropped >= 10, 5, "the reward node receiving the stale verdicts")
    time.sleep(0.3)
    assert len(_ends(ctl)) == 1, f"a stale verdict ended the backward try: {_ends(ctl)}"
    assert flags[-1] is False

    for _ in range(3):  # now the backward task is done
        verdict(bwd, True)
        time.sleep(0.05)
    wait_for(lambda: len(_ends(ctl)) == 2, 5, "the backward try ending on its own success")
    assert [(e["direction"], e["reason"]) for e in _ends(ctl)] == [("forward", "success"), ("backward", "success")]
