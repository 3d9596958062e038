"""Kill the learner process (SIGKILL) and start it again: no transition is lost and training
continues from its checkpoint. The learner runs as a real subprocess, as the launcher starts it."""

import json
import os
import signal
import subprocess

import numpy as np
import pytest
from conftest import wait_for

pytestmark = pytest.mark.ros


def _transition(seq, episode, step, done=False, actor="testactor", drop=()):
    from robot_calql.control.transport import pack_transition

    rng = np.random.default_rng(seq)
    arrays = {"image": rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
              "proprio": rng.normal(size=10).astype(np.float32),
              "action": rng.uniform(-1, 1, 5).astype(np.float32),
              "next_image": rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
              "next_proprio": rng.normal(size=10).astype(np.float32)}
    meta = {"actor": actor, "seq": seq, "episode": episode, "step": step, "reward": float(done),
            "done": done, "truncated": False, "instruction": "put the cube in the bowl"}
    for k in drop:  # a malformed transition: a policy that streams other observations, or no sequence number
        arrays.pop(k, None)
        meta.pop(k, None)
    return pack_transition(meta, arrays)


def test_learner_crash_loses_nothing_and_resumes(ros, tmp_path):
    import rclpy
    from robot_calql_ros.common import COMMAND_QOS, transitions_qos
    from robot_calql_ros.launcher import child_env, node_command, write_params_file
    from robot_calql_ros.nodeset import node_set
    from std_msgs.msg import String, UInt8MultiArray

    from robot_calql.config import compose
    from robot_calql.control.transport import TransitionLog, unpack_transition

    cfg = compose("launch_finetune", [
        "sim=true", "nodes=[learner]", f"run_dir={tmp_path / 'run'}", "learner.min_online=5",
        "learner.batch_size=4", "learner.utd=0.25", "learner.checkpoint_every=2", "learner.publish_every=1000",
        "learner.online_capacity=500", "learner.log_every=2", "learner.tensorboard=false",
        "agent.encoder_latent_dim=16", "policy.transition_history=200"])
    (spec,) = node_set(cfg)
    pf = write_params_file(spec, tmp_path / "launch")
    env = child_env(cfg)
    env["ROS_DOMAIN_ID"] = os.environ["ROS_DOMAIN_ID"]

    node = ros.add(rclpy.create_node("fake_policy"))
    t = cfg.robot.topics
    pub = node.create_publisher(UInt8MultiArray, t.transitions, transitions_qos(200))
    status = {}
    node.create_subscription(String, t.learner_status, lambda m: status.update(json.loads(m.data)), COMMAND_QOS)
    # episodes of 10 steps, the last one a success
    payloads = [_transition(i, i // 10, i % 10, done=i % 10 == 9) for i in range(60)]

    proc = subprocess.Popen(node_command(spec, pf), env=env)
    try:
        for p in payloads[:30]:
            pub.publish(UInt8MultiArray(data=p))
        # malformed transitions are rejected and counted, never stored, and the learner goes on
        for bad in (_transition(0, 0, 0, actor="other", drop=["next_proprio"]), _transition(1, 0, 1, drop=["seq"])):
            pub.publish(UInt8MultiArray(data=bad))
        wait_for(lambda: status.get("stored", 0) >= 30 and status.get("updates", 0) >= 4
                 and status.get("rejected", 0) >= 2, 120, "the learner storing 30 transitions and checkpointing")
        assert status["rejected"] == 2 and status["lost"] == 0 and status["stored"] == 30
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        updates_at_crash = status["updates"]
        ckpts = sorted((tmp_path / "run" / "checkpoints").glob("step_*"))
        assert ckpts, "a checkpoint was written before the crash"
        ckpt_step = int(ckpts[-1].name.split("_")[1])
        # the policy goes on while the learner is down
        for p in payloads[30:]:
            pub.publish(UInt8MultiArray(data=p))
        status.clear()
        proc = subprocess.Popen(node_command(spec, pf), env=env)
        wait_for(lambda: status.get("stored", 0) >= 60, 120, "the restarted learner storing all 60 transitions")
        assert "checkpoints/step_" in status["resumed_from"]
        assert status["lost"] == 0 and status["stored"] == 60
        assert status["duplicates"] >= 1  # the history replays what it already had; dropped by seq
        wait_for(lambda: status.get("updates", 0) > updates_at_crash, 60, "training continuing")
        assert status["updates"] >= ckpt_step
        wait_for(lambda: status.get("updates", 0) >= 15, 60, "all 15 updates owed (utd 0.25 x 60 transitions)")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    log = TransitionLog(tmp_path / "run" / "transitions.log")
    seqs = [unpack_transition(p)[0]["seq"] for p in log.read()]
    log.close()
    assert seqs == list(range(60)), "every transition on disk exactly once, in order"
    # metrics as finetune writes them: the restart cut the rows logged after its checkpoint, so no
    # step is there twice; episodes are counted again from the replayed log
    from robot_calql.train.logger import read_metrics

    rows = read_metrics(tmp_path / "run", "learner")
    steps = [r["step"] for r in rows]
    assert steps and steps == sorted(set(steps)) and all(s % 2 == 0 for s in steps)
    assert {"loss_td", "loss_cql", "q_data", "calql_bound_rate", "updates_per_s"} <= set(rows[-1])
    online = read_metrics(tmp_path / "run", "online")
    # (the last row is logged at the last even update, owed once 56 or more transitions were in;
    # every 10th transition ends an episode with a success)
    last = online[-1]
    assert last["transitions"] >= 56 and last["episodes"] == last["successes"] == last["transitions"] // 10
    assert last["online_share"] == 1.0  # a fresh learner has no offline data: every row is online
    # a clean stop draws the calibration of the online episodes
    assert (tmp_path / "run" / "plots" / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
