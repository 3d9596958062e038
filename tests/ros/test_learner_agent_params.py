"""The learner node gets its agent settings as nested ROS parameters (`agent.*`: a fresh agent's,
`learner.agent.*`: fine-tuning's changes), as the launch config writes them, and builds the typed
CalQLConfig from them; no settings travel as JSON strings."""

import pytest

pytestmark = pytest.mark.ros

SMALL = ["agent.actor_hidden=[16,16]", "agent.critic_hidden=[16,16]", "agent.encoder_latent_dim=8"]


def test_learner_builds_calqlconfig_from_nested_agent_parameters(ros, tmp_path):
    from robot_calql_ros.common import flatten_params
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set

    from robot_calql.agent import CalQLConfig
    from robot_calql.config import compose

    cfg = compose("launch_finetune", ["sim=true", "nodes=[learner]", f"run_dir={tmp_path / 'run'}",
                                      "learner.tensorboard=false", *SMALL, "agent.failure_reward=-5.0",
                                      "learner.agent.failure_reward=null", "learner.agent.n_step=3"])
    (spec,) = node_set(cfg)
    flat = flatten_params(spec.params)
    assert not [k for k in flat if k.endswith("_json")]
    assert (flat["agent.actor_hidden"], flat["agent.critic_layer_norm"], flat["learner.agent.n_step"]) == ([16, 16], True, 3)
    (learner,) = build_nodes([spec])
    ros.add(learner)
    # configs/agent/pixels.yaml's critic layer norm + the command line; learner.agent's null (a ROS
    # parameter '') switches the fresh agent's failure fill off again for fine-tuning
    assert learner.agent.cfg == CalQLConfig(actor_hidden=(16, 16), critic_hidden=(16, 16), encoder_latent_dim=8,
                                            critic_layer_norm=True, n_step=3, failure_reward=None)
    assert learner.meta["agent"]["failure_reward"] is None and learner.online.n_step == 3


def test_an_unknown_fresh_agent_setting_is_named_with_its_parameter_prefix(ros, tmp_path):
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set

    from robot_calql.config import ConfigError, compose

    bad = compose("launch_finetune", ["sim=true", "nodes=[learner]", f"run_dir={tmp_path / 'run'}", *SMALL,
                                      "agent.bogus=1"])
    with pytest.raises(ConfigError, match=r"^agent: agent config: unknown keys \['bogus'\]"):
        build_nodes(node_set(bad))


def test_a_learner_parameter_left_out_is_named_not_given_a_second_default(ros, tmp_path):
    """The learner's settings have one default, in configs/launch_finetune.yaml: a parameter file
    without one is refused naming it (it used to start with online_warmup 0 and nice 0)."""
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set

    from robot_calql.config import ConfigError, compose

    (spec,) = node_set(compose("launch_finetune", ["sim=true", "nodes=[learner]", f"run_dir={tmp_path / 'run'}", *SMALL]))
    del spec.params["learner"]["online_warmup"], spec.params["learner"]["nice"]
    with pytest.raises(ConfigError, match=r"learner parameters missing: learner.nice, learner.online_warmup"):
        build_nodes([spec])
