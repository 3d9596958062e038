"""The learner node keeps the human's steps (real rclpy + DDS): the `intervention` flag of each
received transition reaches its online buffer and its crash-safe log (a restarted learner replays
it), and each episode's intervention rate, human steps and minutes are logged under `human/*`."""

import numpy as np
import pytest
from conftest import wait_for
from test_learner_start import _pretrained

pytestmark = pytest.mark.ros

HUMAN = [False, True, True, True, False, False, False, True]   # two episodes of 4 steps


def _payload(k: int) -> bytes:
    from robot_calql.control.transport import pack_transition

    meta = {"actor": "test", "seq": k, "episode": k // 4, "step": k % 4, "stamp": float(k),
            "reward": float(k == 3), "done": k == 3, "truncated": k == 7,
            "instruction": "put the cube in the bowl", "intervention": HUMAN[k]}
    arrays = {"state": np.full(6, k, np.float32), "next_state": np.full(6, k + 1, np.float32),
              "action": np.zeros(5, np.float32)}
    return pack_transition(meta, arrays)


def test_learner_stores_logs_and_replays_the_intervention_flag(ros, tmp_path):
    import rclpy
    from robot_calql_ros.common import topic_names, transitions_qos
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set
    from std_msgs.msg import UInt8MultiArray

    from robot_calql.config import compose
    from robot_calql.train.logger import read_metrics

    _pretrained(tmp_path / "pre")
    cfg = compose("launch_finetune", ["sim=true", "nodes=[learner]", f"checkpoint={tmp_path / 'pre'}",
                                      f"run_dir={tmp_path / 'run'}", "learner.min_online=1000",
                                      "learner.tensorboard=false"])
    (learner,) = build_nodes(node_set(cfg))
    probe = rclpy.create_node("probe")
    pub = probe.create_publisher(UInt8MultiArray, topic_names(cfg.robot.topics)["transitions"],
                                 transitions_qos(int(cfg.policy.transition_history)))
    ros.add(learner, probe)
    wait_for(lambda: pub.get_subscription_count() >= 1, 20, "the learner subscribing to transitions")
    for k in range(len(HUMAN)):
        pub.publish(UInt8MultiArray(data=_payload(k)))
    wait_for(lambda: learner.counts["stored"] == len(HUMAN), 20, "the learner storing every transition")
    np.testing.assert_array_equal(learner.online.intervention[:8], HUMAN)
    rows = read_metrics(tmp_path / "run", "human")
    assert [r["intervention_rate"] for r in rows] == [0.75, 0.25]
    assert rows[-1]["human_steps_total"] == 4 and rows[-1]["human_minutes_total"] == pytest.approx(4 / 10 / 60)
    learner.destroy_node()   # (the fixture's destroy of an already destroyed node is harmless)

    (again,) = build_nodes(node_set(cfg))   # a restart: everything comes back from transitions.log
    try:
        assert again.counts["stored"] == len(HUMAN)
        np.testing.assert_array_equal(again.online.intervention[:8], HUMAN)
        assert again.human.total_human == 4
    finally:
        again.destroy_node()
