"""The learner node with a frozen-encoder checkpoint caches each received frame's latent in its
online buffer (one encoder pass per frame, as `robot-calql finetune` does), and refuses a
frozen encoder without a pre-trained checkpoint."""

import json

import pytest
from conftest import wait_for

pytestmark = pytest.mark.ros

FROZEN = ["agent.actor_hidden=[16,16]", "agent.critic_hidden=[16,16]", "+agent.encoder_frozen=true",
          "+agent.encoder_pretrain_steps=6", "+agent.encoder_pretrain_batch=8", "+agent.encoder_latent_dim=8"]


def test_learner_caches_latents_of_a_frozen_encoder(ros, tmp_path):
    import rclpy
    from robot_calql_ros.common import COMMAND_QOS, transitions_qos
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set
    from std_msgs.msg import String, UInt8MultiArray
    from test_learner_restart import _transition

    from robot_calql.cli import main
    from robot_calql.config import compose

    data, pre = tmp_path / "data", tmp_path / "pre"
    assert main(["collect", "task=cube_bowl", "episodes=1", "image_size=64", "max_episode_steps=10", f"out={data}"]) == 0
    assert main(["pretrain", f"dataset={data}", f"out={pre}", "steps=2", "obs=pixels", "batch_size=8",
                 "progress=false", "tensorboard=false", *FROZEN]) == 0
    cfg = compose("launch_finetune", ["sim=true", "nodes=[learner]", f"checkpoint={pre}", f"run_dir={tmp_path / 'run'}",
                                      "learner.min_online=5", "learner.batch_size=4", "learner.tensorboard=false"])
    (learner,) = build_nodes(node_set(cfg))
    probe = rclpy.create_node("probe")
    status = {}
    probe.create_subscription(String, cfg.robot.topics.learner_status, lambda m: status.update(json.loads(m.data)),
                              COMMAND_QOS)
    pub = probe.create_publisher(UInt8MultiArray, cfg.robot.topics.transitions, transitions_qos(200))
    ros.add(learner, probe)
    for i in range(12):
        pub.publish(UInt8MultiArray(data=_transition(i, 0, i, done=i == 11)))
    wait_for(lambda: status.get("stored", 0) >= 12 and status.get("updates", 0) >= 1, 60,
             "the learner storing transitions and updating")
    buf = learner.online.state_dict()
    assert "frames_image_latent" in buf and "frames_image" not in buf  # latents, no images


def test_learner_refuses_a_frozen_encoder_without_a_checkpoint(ros, tmp_path):
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set

    from robot_calql.config import ConfigError, compose

    cfg = compose("launch_finetune", ["sim=true", "nodes=[learner]", f"run_dir={tmp_path / 'run'}",
                                      "agent.encoder_frozen=true", "agent.encoder_latent_dim=8"])
    with pytest.raises(ConfigError, match="encoder_frozen needs a pre-trained checkpoint"):
        build_nodes(node_set(cfg))
