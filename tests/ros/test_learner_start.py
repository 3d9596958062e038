"""The learner node started from a pre-trained checkpoint continues it the way `robot-calql
finetune` does: weights, entropy temperature and Adam's moments from pre-training, with the
learning rates of the launch configuration."""

import pytest
import torch

pytestmark = pytest.mark.ros


def _pretrained(run_dir, **agent_settings):
    from robot_calql.agent import CalQL, CalQLConfig
    from robot_calql.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cfg = {"actor_hidden": [32, 32], "critic_hidden": [32, 32], "policy_lr": 1e-3, **agent_settings}
    agent = CalQL({"state": (6,)}, 5, CalQLConfig.from_dict(cfg), num_instructions=2)
    for _ in range(3):
        agent.update({"obs": {"state": torch.randn(8, 6), "instruction": torch.zeros(8, dtype=torch.long)},
                      "next_obs": {"state": torch.randn(8, 6), "instruction": torch.zeros(8, dtype=torch.long)},
                      "action": torch.rand(8, 5) * 2 - 1, "reward": torch.randn(8), "done": torch.zeros(8),
                      "mc_return": torch.randn(8)})
    meta = {"obs": "state", "obs_spec": {"state": [6]}, "action_dim": 5, "agent": cfg, "dataset": "",
            "instructions": ["put the cube in the bowl", "take the cube out of the bowl and put it on the table"]}
    save_checkpoint(run_dir, 3, agent.state_dict(), {"optimizer": agent.optimizer_state_dict()}, meta)
    return agent


def test_learner_continues_the_pretraining_optimizer(ros, tmp_path):
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set

    from robot_calql.config import compose

    pre = _pretrained(tmp_path / "pre")
    cfg = compose("launch_finetune", ["sim=true", "nodes=[learner]", f"checkpoint={tmp_path / 'pre'}",
                                      f"run_dir={tmp_path / 'run'}", "learner.policy_lr=1e-4"])
    (learner,) = build_nodes(node_set(cfg))
    ros.add(learner)
    got, want = learner.agent.opt_critic.state_dict(), pre.opt_critic.state_dict()
    assert got["state"], "Adam's moments were not loaded"
    for k, s in want["state"].items():
        torch.testing.assert_close(got["state"][k]["exp_avg_sq"], s["exp_avg_sq"])
    assert learner.agent.opt_actor.param_groups[0]["lr"] == pytest.approx(1e-4)  # the configured online lr
    torch.testing.assert_close(learner.agent.log_alpha, pre.log_alpha)
    assert learner.updates == 0  # a new fine-tuning run, not a resume


@pytest.mark.parametrize("bound_online", [True, False])
def test_learner_buffer_follows_the_checkpoints_calql_bound_online(ros, tmp_path, bound_online):
    """CORL's variant (`calql_bound_online=false`) must reach the learner's online buffer, as it
    reaches finetune's: sampled online rows then carry mc_return = -inf."""
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set

    from robot_calql.config import compose

    _pretrained(tmp_path / "pre", calql_bound_online=bound_online)
    cfg = compose("launch_finetune", ["sim=true", "nodes=[learner]", f"checkpoint={tmp_path / 'pre'}",
                                      f"run_dir={tmp_path / 'run'}"])
    (learner,) = build_nodes(node_set(cfg))
    ros.add(learner)
    assert learner.online.bound_online is bound_online


def test_learner_agent_settings_change_fine_tuning_only_and_unknown_ones_are_named(ros, tmp_path):
    """`learner.agent` (like finetune's `agent`) changes agent settings for the online phase, e.g.
    the one-action backup and n-step targets; the online buffer gets the n-step windows too."""
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set

    from robot_calql.config import ConfigError, compose

    _pretrained(tmp_path / "pre")
    base = ["sim=true", "nodes=[learner]", f"checkpoint={tmp_path / 'pre'}", f"run_dir={tmp_path / 'run'}"]
    cfg = compose("launch_finetune", [*base, "+learner.agent.max_target_backup=false", "+learner.agent.n_step=4"])
    (learner,) = build_nodes(node_set(cfg))
    ros.add(learner)
    assert learner.agent.cfg.max_target_backup is False and learner.agent.cfg.n_step == 4
    assert learner.online.n_step == 4
    assert learner.agent.cfg.actor_hidden == (32, 32)  # the rest still comes from the checkpoint
    bad = compose("launch_finetune", [*base, f"run_dir={tmp_path / 'run2'}", "+learner.agent.n_stpe=4"])
    with pytest.raises(ConfigError, match="n_stpe"):
        build_nodes(node_set(bad))


def test_learner_starts_when_the_runs_first_checkpoint_was_cut_short(ros, tmp_path):
    """A learner killed while writing its first checkpoint leaves `checkpoints/` with only a hidden
    partial folder: that is no checkpoint, so the learner starts again from the pre-trained one
    instead of failing with "no checkpoint found" at every restart."""
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set

    from robot_calql.config import compose

    _pretrained(tmp_path / "pre")
    partial = tmp_path / "run" / "checkpoints" / ".step_000000200.pid999999@elsewhere.x1.partial"
    partial.mkdir(parents=True)
    (partial / "model.safetensors").write_bytes(b"cut short")
    cfg = compose("launch_finetune", ["sim=true", "nodes=[learner]", f"checkpoint={tmp_path / 'pre'}",
                                      f"run_dir={tmp_path / 'run'}"])
    (learner,) = build_nodes(node_set(cfg))
    ros.add(learner)
    assert learner.resumed_from.startswith("pre-trained") and learner.updates == 0


def test_learner_stops_training_at_a_non_finite_loss_and_keeps_the_last_good_checkpoint(ros, tmp_path):
    """An update that makes the weights NaN: the learner stops updating, publishes no more weights,
    writes no NaN checkpoint (not even at the stop), says why in its status, and keeps storing the
    transitions that arrive (a restart from the last good checkpoint loses nothing)."""
    import json

    import rclpy
    from conftest import wait_for
    from robot_calql_ros.common import COMMAND_QOS, transitions_qos
    from robot_calql_ros.launcher import build_nodes
    from robot_calql_ros.nodeset import node_set
    from std_msgs.msg import String, UInt8MultiArray
    from test_learner_restart import _transition

    from robot_calql.config import compose
    from robot_calql.train.checkpoint import load_checkpoint

    cfg = compose("launch_finetune", [
        "sim=true", "nodes=[learner]", f"run_dir={tmp_path / 'run'}", "learner.min_online=5",
        "learner.batch_size=4", "learner.utd=1", "learner.checkpoint_every=2", "learner.publish_every=1",
        "learner.online_capacity=500", "learner.tensorboard=false", "agent.encoder_latent_dim=16"])
    (learner,) = build_nodes(node_set(cfg))
    real_update = learner.agent.update

    def update(batch):  # update 5 poisons the actor's weights, as a diverging critic would
        metrics = real_update(batch)
        if learner.updates == 4:
            with torch.no_grad():
                next(learner.agent.actor.parameters()).fill_(float("nan"))
            metrics = {**metrics, "loss_actor": float("nan")}
        return metrics

    learner.agent.update = update
    probe = rclpy.create_node("probe")
    status = {}
    probe.create_subscription(String, cfg.robot.topics.learner_status, lambda m: status.update(json.loads(m.data)),
                              COMMAND_QOS)
    pub = probe.create_publisher(UInt8MultiArray, cfg.robot.topics.transitions, transitions_qos(200))
    ros.add(learner, probe)
    for i in range(20):
        pub.publish(UInt8MultiArray(data=_transition(i, i // 10, i % 10, done=i % 10 == 9)))
    wait_for(lambda: status.get("training_error"), 60, "the learner reporting the failed update")
    assert "learner update 5" in status["training_error"] and "loss_actor=nan" in status["training_error"]
    assert learner.updates == 4 and learner.counts["weights_published"] == 5  # start-up + updates 1-4
    for i in range(20, 30):  # still stored after the failure
        pub.publish(UInt8MultiArray(data=_transition(i, i // 10, i % 10, done=i % 10 == 9)))
    wait_for(lambda: status.get("stored") == 30, 30, "the learner storing transitions after the failure")
    assert learner.updates == 4 and learner.counts["weights_published"] == 5
    learner.destroy_node()  # the stop writes no checkpoint of NaN weights
    state = load_checkpoint(tmp_path / "run")
    assert state["dir"].name == "step_000000004"
    assert all(torch.isfinite(v).all() for v in state["agent_state"].values()
               if isinstance(v, torch.Tensor) and v.is_floating_point())
    assert state["trainer"]["updates"] == 4
