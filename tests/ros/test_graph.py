"""The whole fine-tuning graph with real rclpy + DDS: sim_robot, policy, reward, episode_controller,
safety and learner in one process (the launcher's threads mode: a SingleThreadedExecutor per
node), built from the shared node set.

The policy's action source is the stand-in's scripted demonstrator (policy.action_source=expert),
so successes happen within seconds; the Cal-QL agent still runs on every frame once the
learner's weights arrive, so inference and live weight swaps are exercised.
"""

import json
import time

import numpy as np
import pytest
from conftest import wait_for

pytestmark = pytest.mark.ros


def _cfg(tmp_path, *extra):
    from robot_calql.config import compose

    return compose("launch_finetune", [
        "sim=true", "policy.action_source=expert", f"run_dir={tmp_path / 'run'}",
        "learner.min_online=10", "learner.publish_every=2", "learner.batch_size=8",
        "learner.utd=0.05", "learner.checkpoint_every=1000", "learner.online_capacity=2000",
        "agent.encoder_latent_dim=16", "controller.phase_time_limit_s=15",
        # every node shares one process and one GIL here: render the camera at the control rate
        # (10 Hz, not 30) so the 2-core CI machine keeps the control path on time
        "robot.camera_hz=10", *extra])


def test_graph_runs_reset_free_with_learning_and_watchdog(ros, tmp_path):
    from geometry_msgs.msg import TwistStamped
    from robot_calql_ros.common import COMMAND_QOS
    from robot_calql_ros.launcher import NodeSpinners, build_nodes
    from robot_calql_ros.nodeset import node_set
    from std_srvs.srv import SetBool

    cfg = _cfg(tmp_path)
    specs = node_set(cfg)
    assert [s.name for s in specs] == ["sim_robot", "policy", "reward", "episode_controller", "safety", "learner"]
    nodes = dict(zip([s.name for s in specs], build_nodes(specs), strict=True))
    # each node on its own SingleThreadedExecutor, as the launcher's threads mode runs them
    spinners = NodeSpinners(list(nodes.values()))
    try:
        sent = []  # (receive time, twist)
        probe = ros.add(__import__("rclpy").create_node("probe"))
        probe.create_subscription(TwistStamped, cfg.robot.topics.sent_command,
                                  lambda m: sent.append((time.time(), m)), COMMAND_QOS)
        ctl, policy, learner, safety, sim = (nodes[n] for n in
                                             ("episode_controller", "policy", "learner", "safety", "sim_robot"))

        def switched():
            ends = [e for e in ctl.events if e["event"] == "end" and e["reason"] == "success"]
            return {e["direction"] for e in ends} == {"forward", "backward"}

        try:
            wait_for(switched, 90, "a forward success and then a backward success")
        except AssertionError as e:  # say what the graph was doing, so a slow CI box can be told from a bug
            raise AssertionError(
                f"{e}; policy steps {policy.steps}, commands forwarded {safety.sent_count}, holds {safety.hold_count} "
                f"(last reason: {safety.holding_reason or 'none'}), episodes {[x for x in ctl.events if x['event'] == 'end']}"
            ) from None
        # the schedule alternates: every success switches direction, the next episode is the other one
        evs = [e for e in ctl.events if e["event"] in ("start", "end")]
        for a, b in zip(evs, evs[1:], strict=False):
            if a["event"] == "end" and a["reason"] == "success":
                assert b["event"] == "start" and b["direction"] != a["direction"]
        # the first weights (update 0) go out as the learner starts; wait for ones from learning
        # (a fresh clone's CI once got here with 75 transitions stored and no update made yet)
        wait_for(lambda: learner.updates >= 2 and policy.weights_received >= 2, 60,
                 "weights from learner updates reaching the policy")
        assert learner.counts["stored"] >= 30
        assert learner.counts["lost"] == 0
        moving = [m for _, m in sent if abs(m.twist.linear.x) + abs(m.twist.linear.y) + abs(m.twist.linear.z) > 0]
        assert len(moving) > 30, "motion commands reach the arm"

        # --- stop the camera: no motion command after the last frame + one control period, a hold is sent
        cli = probe.create_client(SetBool, "/sim_robot/set_camera")
        assert cli.wait_for_service(timeout_sec=10)
        steps_before = policy.steps
        fut = cli.call_async(SetBool.Request(data=False))
        wait_for(fut.done, 10, "camera stop service")
        t_off = time.time()
        time.sleep(1.0)
        period = 1.0 / cfg.robot.control_hz
        late_motion = [t for t, m in sent if t > t_off + period and abs(m.twist.linear.x) + abs(m.twist.linear.y)
                       + abs(m.twist.linear.z) + abs(m.twist.angular.z) > 0]
        assert late_motion == [], "motion commands were sent after the camera stopped"
        holds = [t for t, m in sent if t > t_off and m.twist.linear.x == m.twist.linear.y == m.twist.linear.z == 0]
        assert holds, "safety sent a hold"
        assert policy.steps - steps_before <= 2
        q0 = sim.env.joint_positions()
        time.sleep(0.3)
        np.testing.assert_allclose(sim.env.joint_positions(), q0, atol=2e-3)  # the arm holds still

        # --- images return: the policy acts again
        steps_before = policy.steps
        fut = cli.call_async(SetBool.Request(data=True))
        wait_for(lambda: policy.steps > steps_before + 5, 10, "the policy resuming after images return")
        status = json.loads(json.dumps(learner.status()))
        assert status["received"] >= status["stored"] - 0  # every stored transition was received live
    finally:
        spinners.stop()
        for n in nodes.values():
            n.destroy_node()
