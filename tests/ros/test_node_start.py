"""Starting the node set on a real robot's config (configs/robot/widowx250_example.yaml) and
failing to start: every node the config can run constructs, spins and is destroyed cleanly; what
it cannot run is refused before anything starts, in one line naming the key; a node that cannot
start exits with one line (no traceback, code 1) and the launcher stops the others at once.

Before: on the widowx config 3 of 5 nodes crashed (empty `ee_pose` topic name, KeyError
'ground_truth_success' and 'learner_status'), then destroy_node raised AttributeError `_stop`;
`sim=false` with the stand-in's config waited forever.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import wait_for

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[2]
WIDOWX = ["sim=false", "robot=widowx250_example"]


def _compose(*overrides):
    from robot_calql.config import compose

    return compose("launch_finetune", list(overrides))


def _classifier(tmp_path) -> Path:
    from robot_calql.reward.model import build_classifier
    from robot_calql.sim import TASKS

    return build_classifier("cnn", (64, 64, 3), [t.instruction for t in TASKS.values()]).save(tmp_path / "clf")


def test_node_set_refuses_what_the_robot_config_cannot_run_naming_the_key():
    from robot_calql_ros.nodeset import node_set

    from robot_calql.config import ConfigError

    with pytest.raises(ConfigError, match=r'stand-in.*overrides:="robot=<name>".*robot=<name>'):
        node_set(_compose("sim=false"))  # the stand-in's config without the stand-in: say what to pass
    with pytest.raises(ConfigError, match=r"no topics\.ee_pose, which the policy node needs"):
        node_set(_compose(*WIDOWX))
    with pytest.raises(ConfigError, match=r"no topics\.ground_truth_success, which the reward node needs.*"
                                          r"reward\.model=<its folder>"):
        node_set(_compose(*WIDOWX, "nodes=[reward]"))


def test_widowx_config_builds_every_node_it_can_run(ros, tmp_path, capfd):
    """reward (a classifier), episode controller, safety and learner construct from the widowx
    config's node specs, spin (the learner's status on its default topic, the controller's
    episodes), the safety node refuses to configure naming the missing kinematics, and all are
    destroyed without error."""
    import rclpy
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set
    from std_msgs.msg import String

    cfg = _compose(*WIDOWX, "nodes=[reward,episode_controller,safety,learner]", f"reward.model={_classifier(tmp_path)}",
                   f"workspace_file={REPO / 'calibration/sim_standin/workspace.yaml'}", f"run_dir={tmp_path / 'run'}",
                   "agent.encoder_latent_dim=16")
    assert "learner_status" not in cfg.robot.topics  # the learner's topic comes from the defaults
    nodes = build_nodes(node_set(cfg))
    assert [n.get_name() for n in nodes] == ["reward", "episode_controller", "safety", "learner"]
    probe = rclpy.create_node("probe")
    status, events = [], []
    probe.create_subscription(String, "/robot_calql/learner_status", lambda m: status.append(json.loads(m.data)), 10)
    probe.create_subscription(String, cfg.robot.topics.episode_event, lambda m: events.append(json.loads(m.data)), 10)
    ros.add(probe, *nodes)
    wait_for(lambda: status and events, 30, "the learner's status and the controller's first episode event")
    assert status[-1]["training_error"] == "" and events[0]["event"] == "start"
    safety = nodes[2]
    capfd.readouterr()
    safety.trigger_configure()
    err = capfd.readouterr().err
    assert "cannot configure: command_interface joint_trajectory needs a kinematics model" in err, err
    assert not safety.active


def test_safety_node_without_a_pose_topic_refuses_to_configure_naming_it(ros, capfd):
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set

    (spec,) = node_set(_compose("sim=true", "nodes=[safety]"))  # a twist arm: no kinematics needed
    spec.params["autostart"] = False
    spec.params["robot"]["topics"]["ee_pose"] = None
    (safety,) = build_nodes([spec])
    ros.add(safety)
    capfd.readouterr()
    safety.trigger_configure()
    err = capfd.readouterr().err
    assert "cannot configure: the robot config has no topics.ee_pose, which the safety node needs" in err, err
    assert not safety.active


@pytest.mark.parametrize("node,setting,why", [
    ("policy", "topics.ee_pose", r"no topics\.ee_pose, which the policy node needs"),
    ("learner", "checkpoint", "checkpoint"),
])
def test_a_node_that_cannot_start_is_destroyed_cleanly(tmp_path, node, setting, why):
    """The error names the problem, and destroying the half-built node (rclpy does it at shutdown)
    raises nothing."""
    import rclpy
    from rclpy.parameter import Parameter
    from robot_calql_ros.common import flatten_params
    from robot_calql_ros.nodeset import node_set

    (spec,) = node_set(_compose("sim=true", f"nodes=[{node}]", f"run_dir={tmp_path / 'run'}"))
    if setting == "topics.ee_pose":
        spec.params["robot"]["topics"]["ee_pose"] = None  # what a robot config without a pose topic gives
    else:
        spec.params["learner"]["checkpoint"] = str(tmp_path / "no_such_run")
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(os.environ.get("ROS_DOMAIN_ID", 0)))
    try:
        # `failed` keeps the traceback, and with it the half-built node, alive until the shutdown
        with pytest.raises(ValueError, match=why) as failed:
            spec.node_class()(spec.name, context=ctx,
                              parameter_overrides=[Parameter(k, value=v) for k, v in flatten_params(spec.params).items()])
    finally:
        rclpy.shutdown(context=ctx)  # destroys the half-built node: must not raise
    assert failed.value is not None


def test_launcher_stops_the_set_at_once_when_a_node_cannot_start(ros, tmp_path):
    """`robot-calql launch finetune` (mode=processes): the policy's checkpoint does not exist. The
    policy prints one line and exits 1; the launcher stops the controller at once, names the
    policy and exits 1."""
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "ros_nodes"), os.environ.get("PYTHONPATH", "")]))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "robot_calql_ros.launcher", "sim=true",
                           "nodes=[episode_controller,policy]", f"checkpoint={tmp_path / 'no_such_run'}",
                           f"run_dir={run}", "duration_s=300", f"domain_id={os.environ['ROS_DOMAIN_ID']}"],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=240)
    took = time.monotonic() - t0
    text = proc.stdout
    print(f"launcher failed in {took:.1f} s")
    assert proc.returncode == 1, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    lines = re.findall(r"\[policy\] cannot start: [^\n]*", text)  # (the progress bar may share its line)
    assert len(lines) == 1 and "no_such_run" in lines[0], text[-3000:]
    assert "node policy exited with code 1: stopping the node set" in text, text[-3000:]
    assert "node(s) failed: policy (exit code 1)" in text and "did not stop cleanly" not in text, text[-3000:]
    assert took < 120  # not the 300 s session
