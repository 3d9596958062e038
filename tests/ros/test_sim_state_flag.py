"""The stand-in publishes its privileged state (`topics.sim_state`) only when the debug flag
`sim_robot.publish_sim_state` asks for it, so a graph that runs a pixel checkpoint sees what a
real cell gives: camera frames, joint states and the pose. A state-mode checkpoint is refused
where that state does not exist (a real robot) or was not asked for, naming the flag.

Before: the stand-in always published `sim_state`, and a state checkpoint started on any config."""

import json
from pathlib import Path

import pytest
from conftest import wait_for

pytestmark = pytest.mark.ros


def _compose(*overrides):
    from robot_calql.config import compose

    return compose("launch_finetune", list(overrides))


def _fake_run(tmp_path: Path, obs: str, image: int | None = None, wrist: bool = False) -> Path:
    """A run folder whose newest checkpoint's meta says `obs` (and, given `image`, a square frame
    of that size in its obs_spec); only the meta is read here."""
    ckpt = tmp_path / f"run_{obs}_{image}_{wrist}" / "checkpoints" / "step_00000010"
    ckpt.mkdir(parents=True)
    from robot_calql.train import checkpoint

    (ckpt / checkpoint.WEIGHTS).write_bytes(b"")
    spec = {"obs_spec": {"image": [image, image, 3], "proprio": [10]}} if image else {}
    if wrist:
        spec["obs_spec"]["image_wrist"] = [image, image, 3]
    (ckpt / checkpoint.META).write_text(json.dumps({"obs": obs, "step": 10, **spec}))
    return ckpt.parents[1]


@pytest.mark.parametrize("flag", [False, True])
def test_stand_in_publishes_privileged_state_only_on_request(ros, tmp_path, flag):
    import rclpy
    from robot_calql_ros.common import SENSOR_QOS
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set
    from sensor_msgs.msg import Image
    from std_msgs.msg import Float32MultiArray

    cfg = _compose("sim=true", "nodes=[sim_robot]", f"sim_robot.publish_sim_state={str(flag).lower()}")
    (sim,) = build_nodes(node_set(cfg))
    probe = rclpy.create_node("probe")
    states, frames = [], []
    probe.create_subscription(Float32MultiArray, cfg.robot.topics.sim_state, states.append, SENSOR_QOS)
    probe.create_subscription(Image, cfg.robot.topics.image, frames.append, SENSOR_QOS)
    ros.add(probe, sim)
    wait_for(lambda: len(frames) >= 5, 60, "camera frames from the stand-in")
    assert probe.count_publishers(cfg.robot.topics.sim_state) == int(flag)
    if flag:
        wait_for(lambda: states, 10, "the privileged state, asked for")
        assert len(states[-1].data) > 0
    else:
        assert states == []


def test_state_checkpoint_needs_the_debug_flag_and_the_stand_in(tmp_path):
    from robot_calql_ros.nodeset import node_set

    from robot_calql.config import ConfigError

    state_run, pixel_run = _fake_run(tmp_path, "state"), _fake_run(tmp_path, "pixels")
    nodes = "nodes=[policy,episode_controller]"
    with pytest.raises(ConfigError, match=r"privileged state \(obs=state\).*sim_robot\.publish_sim_state=true"):
        node_set(_compose("sim=true", nodes, f"checkpoint={state_run}"))
    specs = node_set(_compose("sim=true", nodes, f"checkpoint={state_run}", "sim_robot.publish_sim_state=true"))
    assert [s.name for s in specs] == ["policy", "episode_controller"]
    assert [s.name for s in node_set(_compose("sim=true", nodes, f"checkpoint={pixel_run}"))] == [
        "policy", "episode_controller"]
    with pytest.raises(ConfigError, match=r"a real robot does not have: pre-train with obs=pixels"):
        node_set(_compose("sim=false", "robot=widowx250_example", nodes, f"checkpoint={state_run}"))


def test_pixel_checkpoint_must_match_the_robots_image_size(tmp_path):
    """A 128 px checkpoint on a robot config of 64 px is refused before any node starts, naming
    the key to set (the policy node would otherwise feed it 64 px frames and hold the arm)."""
    from robot_calql_ros.nodeset import node_set

    from robot_calql.config import ConfigError

    run = _fake_run(tmp_path, "pixels", image=128)
    nodes = "nodes=[policy,episode_controller]"
    with pytest.raises(ConfigError, match=r"128x128 px frames, but robot 'sim_standin' has image_size 64: "
                                          r"set robot.image_size=128"):
        node_set(_compose("sim=true", nodes, f"checkpoint={run}"))
    specs = node_set(_compose("sim=true", nodes, f"checkpoint={run}", "robot.image_size=128",
                              "robot.limits.camera_width=128", "robot.limits.camera_height=128"))
    assert [s.name for s in specs] == ["policy", "episode_controller"]
    assert [s.name for s in node_set(_compose("sim=true", nodes, f"checkpoint={_fake_run(tmp_path, 'pixels', 64)}"))] \
        == ["policy", "episode_controller"]


def test_pixel_checkpoint_with_a_wrist_camera_needs_a_robot_with_one(tmp_path):
    """A checkpoint that sees the wrist camera is refused on the front-camera stand-in, naming the
    missing camera and the robot config that has it; a front-camera checkpoint runs on either."""
    from robot_calql_ros.nodeset import node_set

    from robot_calql.config import ConfigError

    wrist, front = _fake_run(tmp_path, "pixels", 64, wrist=True), _fake_run(tmp_path, "pixels", 64)
    nodes = "nodes=[policy,episode_controller]"
    with pytest.raises(ConfigError, match=r"robot 'sim_standin' has no \['image_wrist'\].*robot=sim_standin_wrist"):
        node_set(_compose("sim=true", nodes, f"checkpoint={wrist}"))
    for run in (wrist, front):
        specs = node_set(_compose("sim=true", "robot=sim_standin_wrist", nodes, f"checkpoint={run}"))
        assert [s.name for s in specs] == ["policy", "episode_controller"]
