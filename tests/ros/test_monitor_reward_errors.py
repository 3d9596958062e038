"""The launcher's session monitor counts the reward's mistakes against the stand-in's ground
truth: a try ended "success" while the simulator said no (a false success), a try that timed out
although the simulator had said yes during it (a missed success). Verdicts for another
instruction (the previous task, judged for a step after the switch) do not count."""

import json

import pytest

pytestmark = pytest.mark.ros


def test_monitor_counts_false_and_missed_successes(ros):
    import rclpy
    from robot_calql_ros.launcher import Monitor
    from std_msgs.msg import String

    node = rclpy.create_node("monitor_probe")
    topics = {"episode_event": "/ev", "learner_status": "/ls", "human_help": "/hh", "ground_truth_success": "/gt"}
    mon = Monitor(node, topics)
    fwd, bwd = "put the cube in the bowl", "take the cube out of the bowl"

    def event(**ev):
        mon._on_event(String(data=json.dumps(ev)))

    def gt(instruction, success):
        mon._on_ground_truth(String(data=json.dumps({"task": "t", "instruction": instruction, "success": success})))

    # 1: a true success (the simulator agrees at the end)
    event(event="start", direction="forward", instruction=fwd)
    gt(fwd, False), gt(fwd, True)
    event(event="end", direction="forward", reason="success")
    # 2: the classifier fired on a frame the simulator judged a failure
    event(event="start", direction="backward", instruction=bwd)
    gt(fwd, True)  # stale: the previous task's verdict, sent before the switch
    gt(bwd, False)
    event(event="end", direction="backward", reason="success")
    # 3: the simulator said success, the classifier never fired: the try timed out
    event(event="start", direction="backward", instruction=bwd)
    gt(bwd, True), gt(bwd, False)
    event(event="end", direction="backward", reason="timeout")
    # 4: an honest timeout
    event(event="start", direction="forward", instruction=fwd)
    gt(bwd, True), gt(fwd, False)
    event(event="end", direction="forward", reason="timeout")
    assert (mon.false_successes, mon.missed_successes) == (1, 1)
    assert len(mon.ends) == 4
    node.destroy_node()


def test_monitor_without_ground_truth_counts_nothing(ros):
    import rclpy
    from robot_calql_ros.launcher import Monitor
    from std_msgs.msg import String

    node = rclpy.create_node("monitor_probe2")
    mon = Monitor(node, {"episode_event": "/ev", "learner_status": "/ls", "human_help": "/hh"})
    mon._on_event(String(data=json.dumps({"event": "start", "direction": "forward", "instruction": "x"})))
    mon._on_event(String(data=json.dumps({"event": "end", "direction": "forward", "reason": "success"})))
    assert len(mon.ends) == 1 and (mon.false_successes, mon.missed_successes) == (0, 0)
    node.destroy_node()
