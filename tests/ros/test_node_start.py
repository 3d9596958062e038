"""Starting the node set on a real robot's config (configs/robot/widowx250_example.yaml) and
failing to start: every node the config can run constructs, spins and is destroyed cleanly; what
it cannot run is refused before anything starts, in one line naming the key; a node that cannot
start exits with one line (no traceback, code 1) and the launcher stops the others at once.

Before: on the widowx config 3 of 5 nodes crashed (empty `ee_pose` topic name, KeyError
'ground_truth_success' and 'learner_status'), then destroy_node raised AttributeError `_stop`;
`sim=false` with the stand-in's config waited forever. Then the widowx config had no kinematics
model and no pose topic, so its policy node was refused and its safety node could not configure;
now its URDF (calibration/widowx250_example/widowx250.urdf) gives both (`ee_pose: fk`).
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
    with pytest.raises(ConfigError, match=r"no topics\.ee_pose, which the policy node needs.*ee_pose: fk"):
        node_set(_compose(*WIDOWX, "robot.ee_pose=topic"))  # a pose topic without one
    with pytest.raises(ConfigError, match=r"no topics\.ee_pose, which the safety node needs"):
        node_set(_compose(*WIDOWX, "robot.ee_pose=topic", "nodes=[safety]"))
    with pytest.raises(ConfigError, match=r"^robot config 'widowx250_example': ee_pose: tf needs the tf2_msgs "
                                          r"package \(ROS 2.*\); use ee_pose: fk with the URDF or a PoseStamped topic"):
        node_set(_compose(*WIDOWX, "robot.ee_pose=tf"))  # (no tf2_msgs on this machine; see test_tf_pose_source)
    with pytest.raises(ConfigError, match=r"no topics\.ground_truth_success, which the reward node needs.*"
                                          r"reward\.model=<its folder>"):
        node_set(_compose(*WIDOWX, "nodes=[reward]"))


def test_widowx_config_builds_every_node(ros, tmp_path):
    """Every node of the widowx config (policy, reward with a classifier, episode controller,
    safety, learner) constructs from its node specs and spins (the learner's status on its default
    topic, the controller's episodes with the config's own task instructions); the safety node
    configures and activates with the URDF's kinematics; a joint state on the arm's topic gives
    the policy and safety nodes the URDF's forward kinematics as EE pose (no pose topic); all are
    destroyed without error."""
    import numpy as np
    import rclpy
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    from robot_calql.robot_config import build_kinematics, load_robot_config

    cfg = _compose(*WIDOWX, f"reward.model={_classifier(tmp_path)}",
                   f"workspace_file={REPO / 'calibration/sim_standin/workspace.yaml'}", f"run_dir={tmp_path / 'run'}",
                   "agent.encoder_latent_dim=16", "controller.wait_for_policy=false",  # (no camera here)
                   # the safety node's frame watchdog subscribes sensor_msgs/Image only: in one process a
                   # CompressedImage subscription (policy, reward) on the same topic name is refused
                   "robot.topics.image=/camera/color/image_raw")
    assert "learner_status" not in cfg.robot.topics  # the learner's topic comes from the defaults
    assert not cfg.robot.topics.ee_pose and cfg.robot.ee_pose == "fk"
    nodes = build_nodes(node_set(cfg))
    names = [n.get_name() for n in nodes]
    assert names == ["policy", "reward", "episode_controller", "safety", "learner"]
    policy, safety = nodes[0], nodes[3]
    probe = rclpy.create_node("probe")
    status, events = [], []
    probe.create_subscription(String, "/robot_calql/learner_status", lambda m: status.append(json.loads(m.data)), 10)
    probe.create_subscription(String, cfg.robot.topics.episode_event, lambda m: events.append(json.loads(m.data)), 10)
    joints_pub = probe.create_publisher(JointState, cfg.robot.topics.joint_states, 10)
    ros.add(probe, *nodes)
    wait_for(lambda: status and events, 30, "the learner's status and the controller's first episode event")
    assert status[-1]["training_error"] == "" and events[0]["event"] == "start"
    assert events[0]["instruction"] == cfg.robot.tasks.cube_bowl.forward.instruction
    from rclpy.lifecycle import TransitionCallbackReturn

    assert safety.trigger_configure() == TransitionCallbackReturn.SUCCESS  # the URDF's kinematics
    assert safety.trigger_activate() == TransitionCallbackReturn.SUCCESS and safety.active
    q = [0.3, -0.2, 0.4, 0.6, -0.5]
    msg = JointState(name=[*cfg.robot.joints, cfg.robot.gripper_joint], position=[*q, 0.03])
    msg.header.stamp = probe.get_clock().now().to_msg()

    def posed():
        joints_pub.publish(msg)
        return policy.ee is not None and safety.ee is not None
    wait_for(posed, 20, "the EE pose from a joint state in the policy and safety nodes")
    want, yaw = build_kinematics(load_robot_config(cfg.robot)).pose(np.array(q))
    np.testing.assert_allclose(policy.ee[0], want, atol=1e-9)
    np.testing.assert_allclose(safety.ee, want, atol=1e-9)
    assert abs(policy.ee[1] - yaw) < 1e-9


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


def _safety_spec(tmp_path):
    """The stand-in's safety node (autostart) with a workspace file that has no box: it cannot
    configure."""
    from robot_calql_ros.nodeset import node_set

    (spec,) = node_set(_compose("sim=true", "nodes=[safety]"))
    bad = tmp_path / "workspace.yaml"
    bad.write_text("frame: base_link\n")
    spec.params["workspace_file"] = str(bad)
    assert spec.params["autostart"] is True
    return spec


def test_an_autostarted_safety_node_that_cannot_configure_is_a_start_error(ros, tmp_path):
    """Before: autostart left the node unconfigured (and logged 'Unable to start transition'), so
    the stand-in launch ran on without a safety node."""
    from robot_calql_ros.launcher import build_nodes

    with pytest.raises(ValueError, match=r"cannot configure: workspace file .*workspace\.yaml needs keys 'min' and 'max'"):
        build_nodes([_safety_spec(tmp_path)])


def test_a_safety_node_process_that_cannot_configure_exits_with_one_line(tmp_path):
    """`python -m robot_calql_ros.safety_node` (what the launchers start): one line naming the
    problem, no traceback, exit code 1. Before: it kept running, unconfigured."""
    from robot_calql_ros.launcher import node_command, write_params_file

    spec = _safety_spec(tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "ros_nodes"), os.environ.get("PYTHONPATH", "")]))
    try:
        proc = subprocess.run(node_command(spec, write_params_file(spec, tmp_path / "launch")), cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"the safety node kept running unconfigured: {e.output}") from None
    text = proc.stdout
    assert proc.returncode == 1, text[-3000:]
    assert "Traceback" not in text and "Unable to start transition" not in text, text[-3000:]
    lines = [ln for ln in text.splitlines() if "workspace.yaml needs keys" in ln]
    assert lines == [f"[safety] cannot start: cannot configure: workspace file {tmp_path / 'workspace.yaml'} "
                     "needs keys 'min' and 'max' ([x, y, z] in metres)"], text[-3000:]
