"""The episode controller waits for the policy node, over real rclpy + DDS.

Before this, the first try's 12 s clock started while the policy node was still loading torch and
its weights (5 s in the demo), so the first try was mostly lost and counted as a failure. Now no
try starts until /policy/status reports ready, and a try whose policy goes silent ends uncounted."""

import json

import pytest
from conftest import wait_for

pytestmark = pytest.mark.ros


def test_first_try_waits_for_a_ready_policy_and_a_lost_policy_ends_the_try_uncounted(ros, tmp_path):
    import time

    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set
    from std_msgs.msg import String

    from robot_calql.config import compose

    # the stand-in's scripted demonstrator is the action source: no weights needed to be ready
    cfg = compose("launch_finetune", ["sim=true", f"run_dir={tmp_path}", "nodes=[sim_robot,policy,episode_controller]",
                                      "policy.action_source=expert", "controller.policy_timeout_s=1.0",
                                      "controller.phase_time_limit_s=30.0"])
    sim, policy, ctl = build_nodes(node_set(cfg))
    assert ctl.policy_node == "policy"
    statuses = []
    ctl.create_subscription(String, "/policy/status", lambda m: statuses.append(json.loads(m.data)), 10)
    ros.add(sim, ctl)  # the policy node exists but does not run yet (still "loading")
    time.sleep(3.0)
    assert not any(e["event"] == "start" for e in ctl.events), "a try started before the policy could act"

    ros.add(policy)
    wait_for(lambda: any(e["event"] == "start" for e in ctl.events), 20, "the first try once the policy is ready")
    assert statuses and statuses[-1]["ready"] is True
    wait_for(lambda: policy.episode == 0, 5, "the policy hearing the start of the first try")
    wait_for(lambda: policy.steps >= 5, 10, "the policy acting in the first try")

    def starts():
        return sum(e["event"] == "start" for e in ctl.events)

    ros.executor.remove_node(policy)  # the policy node stops (crash, restart): no more status
    wait_for(lambda: any(e["event"] == "end" for e in ctl.events), 10, "the running try to end")
    end = next(e for e in ctl.events if e["event"] == "end")
    assert end["reason"] == "policy_lost"
    # A status the policy sent as it was stopped can still arrive after that end (a fresh clone's
    # suite once saw it): the controller then rightly starts one more try, which ends the same way.
    # Once the statuses have stopped, no try may start.
    heard = [len(statuses), time.monotonic()]

    def quiet_for(seconds):
        if len(statuses) != heard[0]:
            heard[:] = [len(statuses), time.monotonic()]
        return time.monotonic() - heard[1] >= seconds

    wait_for(lambda: quiet_for(1.5) and not ctl.ctl.running, 15, "the policy's statuses to stop")
    before = starts()
    time.sleep(1.5)
    assert starts() == before, "no new try without the policy"
    assert {e["reason"] for e in ctl.events if e["event"] == "end"} == {"policy_lost"}
    assert ctl.ctl.stats["forward"]["tries"] == 0 and ctl.ctl.consecutive_failures == 0

    ros.executor.add_node(policy)  # back: a fresh try of the same direction
    wait_for(lambda: starts() == before + 1, 20, "a fresh try when the policy is back")
    start = [e for e in ctl.events if e["event"] == "start"][-1]
    assert start["direction"] == "forward" and start["episode"] == before
