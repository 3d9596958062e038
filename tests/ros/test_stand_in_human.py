"""The stand-in's human: a call for help resets the scene and resumes the episode controller, so
a reset-free session in the stand-in goes on (a real cell needs a person there)."""

import pytest
from conftest import wait_for

pytestmark = pytest.mark.ros


def test_call_for_help_resets_the_scene_and_resumes(ros, tmp_path):
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set

    from robot_calql.config import compose

    # no policy: every try times out, the controller asks for help after the first one
    cfg = compose("launch_finetune", ["sim=true", f"run_dir={tmp_path}", "nodes=[sim_robot,reward,episode_controller]",
                                      "controller.phase_time_limit_s=1.0", "controller.max_failures=1"])
    sim, _, ctl = build_nodes(node_set(cfg))
    ros.add(sim, _, ctl)
    wait_for(lambda: sim.human_resets >= 1, 20, "a full reset after the call for help")
    starts = lambda: [e for e in ctl.events if e["event"] == "start"]  # noqa: E731
    n = len(starts())
    wait_for(lambda: len(starts()) > n, 10, "the controller resumed (a new episode started)")
    assert ctl.ctl.paused is False
