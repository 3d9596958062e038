"""`robot-calql demo` (what `make demo` runs): the whole pipeline in the MuJoCo stand-in.

1. collect scripted demonstrations of a task pair (forward + backward) plus a few failures,
2. with `reward_source=classifier`: train the success classifier on them (`robot-calql
   reward-train`); fine-tuning and the ROS stage then take their rewards from it, and the
   simulator's success only scores evaluations and counts the classifier's mistakes,
3. pre-train Cal-QL offline on them (`robot-calql pretrain`),
4. fine-tune online in the stand-in, reset-free (`robot-calql finetune`),
5. run the ROS 2 node set (sim_robot, policy, reward, episode_controller, safety, learner) from
   the pre-trained checkpoint for `ros_session_s` seconds, reset-free, over real DDS (the graph
   `ros2 launch robot_calql finetune.launch.py sim:=true` starts; skipped when 0 or without rclpy),
6. print the success rate before and after fine-tuning (95% intervals) and where the plots and
   checkpoints are.

By default it runs what a real cell has: camera frames and joint states (`obs=pixels`, a keypoint
encoder pre-trained on the demos and then frozen) and rewards from the success classifier
(`reward_source=classifier`); `obs=state reward_source=sim` is the privileged-state baseline.
Every stage is the real
command with its own config (configs/pretrain.yaml, configs/finetune.yaml); the demo only sets
the keys in configs/demo.yaml. `robot-calql demo experiment=demo_smoke` is a one-minute version.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from robot_calql.config import ConfigError, compose, resolve_path
from robot_calql.ros_process import RosProcessError, ros_unavailable, run_ros_module

log = logging.getLogger("robot_calql.demo")


def _override(key: str, value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return f"{key}=[{','.join(str(v) for v in value)}]"
    if value is None:
        return f"{key}=null"
    return f"{key}={value}"


def agent_overrides(cfg: DictConfig) -> list[str]:
    """The demo's `agent:` settings as pretrain overrides (`++agent.<key>=<value>`: any CalQLConfig
    field, listed in configs/pretrain.yaml or not; an unknown one is still a ConfigError)."""
    return [_override(f"++agent.{k}", v) for k, v in OmegaConf.to_container(cfg.agent, resolve=True).items()]


def _rate(rate: float | None, n: int) -> str:
    """A success rate of n evaluation episodes with its 95% (Wilson) interval."""
    if rate is None:
        return "not evaluated"
    from robot_calql.train.evaluation import wilson_interval

    lo, hi = wilson_interval(round(rate * n), n)
    return f"{rate:.0%} (95% interval {lo:.0%}-{hi:.0%}, {n} fresh placements)"


def _needs_images(cfg: DictConfig) -> bool:
    """Frames are recorded for a pixel policy and for the success classifier."""
    return cfg.obs == "pixels" or cfg.reward_source == "classifier"


def _camera_overrides(cfg: DictConfig) -> list[str]:
    """The stand-in robot's camera at the demo's image size (the robot config says 64 px)."""
    if not _needs_images(cfg):
        return []
    size = int(cfg.image_size)
    return [_override(k, size) for k in ("robot.image_size", "robot.limits.camera_width", "robot.limits.camera_height")]


def classifier_pool(cfg: DictConfig) -> int:
    """How many pixels (per side) the classifier averages: the camera frame down to about
    `classifier_image_size` (1: none; a 100 px frame is not pooled for a 64 px classifier)."""
    size, target = int(cfg.image_size), int(cfg.classifier_image_size)
    if target < 1:
        raise ConfigError(f"classifier_image_size must be >= 1, got {target}")
    pool = max(1, size // target)
    if size % pool:
        raise ConfigError(f"image_size {size} is not a whole multiple of classifier_image_size {target}")
    return pool


def train_classifier(cfg: DictConfig, data: Path, out: Path) -> Path:
    """The success classifier of stage 2 (`robot-calql reward-train` with configs/reward_train.yaml)."""
    from robot_calql.reward import train as reward_train

    rc = reward_train.main(compose("reward_train", [f"dataset={data}", f"out={out}", "overwrite=true",
                                                    _override("threads", cfg.threads),
                                                    _override("train.seed", cfg.seed),
                                                    _override("train.steps", cfg.classifier_steps),
                                                    _override("cnn.pool", classifier_pool(cfg)),
                                                    # 0 (a gate every opening passes): none at all
                                                    _override("gripper_open_min",
                                                              float(cfg.classifier_gripper_open_min) or None),
                                                    _override("progress", str(bool(cfg.progress)).lower()),
                                                    _override("train.device", cfg.device)]))
    if rc:
        raise RuntimeError(f"reward-train exited with {rc}")
    return out


def collect(cfg: DictConfig, data: Path) -> dict[str, Any]:
    """Demos of both directions of the task pair plus failures, written to `data`."""
    from robot_calql.data.dataset import Dataset
    from robot_calql.sim import task_pair
    from robot_calql.sim.episodes import collect_episodes
    from robot_calql.sim.kinematics import sim_arm

    image_size = int(cfg.image_size) if _needs_images(cfg) else 0
    common = {"image_size": image_size, "noise": float(cfg.noise), "max_episode_steps": int(cfg.max_episode_steps),
              "dropped_start": float(cfg.dropped_start), "rolled_start": float(cfg.rolled_start),
              "put_down": str(cfg.put_down),
              "robot": str(cfg.robot.name), "arm": sim_arm(str(cfg.robot.name))}
    first = True
    for task in task_pair(str(cfg.task_pair)):
        collect_episodes(task, int(cfg.episodes), out=data, overwrite=first, seed=int(cfg.seed), **common)
        first = False
        if int(cfg.failures) > 0:
            collect_episodes(task, int(cfg.failures), out=data, seed=int(cfg.seed) + 1, failure=True,
                             source="failure", **common)
    return Dataset(data).summary()


def main(cfg: DictConfig) -> int:
    from robot_calql.sim import task_pair
    from robot_calql.train import finetune, pretrain

    if str(cfg.obs) not in ("state", "pixels"):
        raise ConfigError(f"obs={cfg.obs}: must be state or pixels")
    if str(cfg.reward_source) not in ("sim", "classifier"):
        raise ConfigError(f"reward_source={cfg.reward_source}: must be sim or classifier")
    if not cfg.robot.get("sim"):
        raise ConfigError(f"robot={cfg.robot.name}: the demo runs in the MuJoCo stand-in, and this robot config has no "
                          "`sim:` section (its simulated cell); use robot=sim_standin or robot=sim_standin_wrist")
    clf_stage = cfg.reward_source == "classifier"
    n = 5 if clf_stage else 4
    stage = iter(range(1, n + 1))
    out = resolve_path(cfg.out)
    if out is None:
        raise ConfigError("demo needs out=<folder>")
    forward, backward = task_pair(str(cfg.task_pair))
    data, pre_dir, ft_dir = out / "data", out / "pretrain", out / "finetune"
    t_start = time.perf_counter()
    stage_minutes: dict[str, float] = {}  # wall time per stage, printed and in demo_summary.json

    def lap(name: str) -> None:
        stage_minutes[name] = round((time.perf_counter() - t_start) / 60 - sum(stage_minutes.values()), 2)

    common = [_override("seed", cfg.seed), _override("threads", cfg.threads), _override("device", cfg.device),
              _override("progress", str(bool(cfg.progress)).lower()), _override("batch_size", cfg.batch_size),
              "overwrite=true"]

    print(f"[demo {next(stage)}/{n}] collecting {cfg.episodes} demos per direction ({forward}, {backward}) "
          f"and {cfg.failures} failures each -> {data}", flush=True)
    summary = collect(cfg, data)
    lap("collect")
    print(f"           {summary['episodes']} episodes, {summary['steps']} steps, "
          f"{summary['success_rate']:.0%} successful", flush=True)

    clf_dir = None
    if clf_stage:
        print(f"[demo {next(stage)}/{n}] training the success classifier on the demos -> {out / 'reward'}", flush=True)
        clf_dir = train_classifier(cfg, data, out / "reward")
        lap("classifier")
    print(f"[demo {next(stage)}/{n}] pre-training Cal-QL offline for {cfg.pretrain_steps} updates (obs={cfg.obs}) -> {pre_dir}",
          flush=True)
    agent_over = agent_overrides(cfg)
    pre_cfg = compose("pretrain", [f"dataset={data}", f"out={pre_dir}", _override("steps", cfg.pretrain_steps),
                                   _override("obs", cfg.obs), *common, *agent_over])
    rc = pretrain.main(pre_cfg)
    if rc:
        return rc
    lap("pretrain")

    print(f"[demo {next(stage)}/{n}] fine-tuning online, reset-free, for {cfg.finetune_steps} steps "
          f"(rewards: {'the classifier' if clf_dir else 'the simulator'}) -> {ft_dir}", flush=True)
    reward_over = ["reward_source=classifier", f"classifier.path={clf_dir}"] if clf_dir else []
    ft_cfg = compose("finetune", [f"checkpoint={pre_dir}", f"out={ft_dir}", f"forward_task={forward}",
                                  _override("steps", cfg.finetune_steps), _override("eval_every", cfg.eval_every),
                                  _override("eval_episodes", cfg.eval_episodes),
                                  _override("max_episode_steps", cfg.max_episode_steps),
                                  _override("mixing_ratio", cfg.mixing_ratio),
                                  _override("full_reset_every", cfg.full_reset_every), _override("home", cfg.home),
                                  _override("explore_temperature", cfg.explore_temperature),
                                  _override("+agent.policy_lr", cfg.finetune_policy_lr), *reward_over, *common])
    rc = finetune.main(ft_cfg)
    if rc:
        return rc
    lap("finetune")

    ros = (ros_session(cfg, pre_dir, out / "ros_session", clf_dir, f"[demo {next(stage)}/{n}]")
           if float(cfg.ros_session_s) > 0 else None)
    if ros is not None:
        lap("ros")

    ft = json.loads((ft_dir / "summary.json").read_text())
    pre = json.loads((pre_dir / "summary.json").read_text())
    minutes = (time.perf_counter() - t_start) / 60
    result = {
        "task": forward,
        "success_before": ft["success_before"],
        "success_after": ft["success_after"],
        "evals": ft["evals"],
        "online_successes": ft["online_successes"],
        "online_episodes": ft["online_episodes"],
        "minutes": round(minutes, 2),
        "stage_minutes": stage_minutes,
        "plots": {"success": ft["success_plot"], "calibration": pre["calibration_plot"],
                  "calibration_after_finetuning": ft["calibration_plot"]},  # + the online episodes
        "checkpoints": {"pretrain": pre["checkpoint"], "finetune": ft["checkpoint"]},
        "tensorboard": f"tensorboard --logdir {out}",
        "ros_session": ros,
    }
    (out / "demo_summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n" + "=" * 72)
    print(f"robot_calql demo: '{forward}' in the MuJoCo stand-in ({cfg.obs} mode, {minutes:.1f} min: "
          + ", ".join(f"{k} {v:.1f}" for k, v in stage_minutes.items()) + ")")
    print(f"  success before fine-tuning (offline Cal-QL): {_rate(ft['success_before'], int(cfg.eval_episodes))}")
    print(f"  success after {ft['steps']} online steps:         {_rate(ft['success_after'], int(cfg.eval_episodes))}")
    if "clf_successes" in ft:
        print(f"  classifier rewards online: {ft['clf_successes']:.0f} successes given, {ft['clf_false_positives']:.0f} "
              f"of them false; {ft['clf_missed_successes']:.0f} real successes missed (the try ran to its time limit)"
              + (f"; {ft['clf_held_by_gate']:.0f} frames held back until the gripper opened (release gate)"
                 if ft.get("clf_held_by_gate") else ""))
    wins = ", ".join(f"{k} {v}" for k, v in ft["online_successes"].items()) if isinstance(ft["online_successes"], dict) \
        else ft["online_successes"]
    homes = f"; the arm went home {ft['arm_homes']} time(s) after a failed try" if ft.get("arm_homes") else ""
    print(f"  reset-free online episodes: {ft['online_episodes']}; successes: {wins}{homes}")
    print("  plots:       " + "\n               ".join(str(x) for x in result["plots"].values() if x))
    print(f"  checkpoints: {pre['checkpoint']}\n               {ft['checkpoint']}")
    print(f"  TensorBoard: tensorboard --logdir {out}")
    classifier_used = clf_dir is not None
    if ros:
        print(f"  ROS 2 graph ({ros['duration_s']:.0f} s, reset-free, from the pre-trained checkpoint): "
              f"{ros['forward_successes']}/{ros['forward_tries']} forward and {ros['backward_successes']}/"
              f"{ros['backward_tries']} backward tries succeeded; {ros['transitions_stored']} transitions "
              f"reached the learner, {ros['updates']} updates, {ros['weights_received']} weight sets reached "
              f"the policy; the arm went home {ros.get('arm_homes', 0)} time(s) after a failed try, a human was "
              f"called {ros.get('human_help', 0)} time(s)")
        if classifier_used:
            print(f"  ROS 2 reward classifier against the simulator: {ros.get('reward_false_successes', 0)} false "
                  f"successes, {ros.get('reward_missed_successes', 0)} missed successes"
                  + (f"; {ros['reward_held_by_gate']} frames held back until the gripper opened (release gate)"
                     if ros.get("reward_held_by_gate") else ""))
    print("=" * 72)
    return 0


def ros_session(cfg: DictConfig, checkpoint: Path, run_dir: Path, classifier: Path | None = None,
                tag: str = "[demo]") -> dict[str, Any] | None:
    """The last stage: the ROS 2 node set in the stand-in, from the pre-trained checkpoint, its
    reward node running `classifier` when given (else the simulator's success).

    Runs `python -m robot_calql_ros.session` in a child process (the core library never imports
    the ROS package) and returns its summary; None where rclpy or the ROS package is missing."""
    why = ros_unavailable()
    if why is None:
        print(f"{tag} ROS 2 graph, reset-free, from {checkpoint} for {cfg.ros_session_s:.0f} s -> {run_dir}",
              flush=True)
        summary = run_dir / "session_summary.json"
        summary.unlink(missing_ok=True)
        rc = run_ros_module("session", ["--summary", summary, "--duration-s", float(cfg.ros_session_s),
                                        "--eval-episodes", 0, f"checkpoint={checkpoint}", f"run_dir={run_dir}",
                                        f"robot={cfg.robot.name}",
                                        # the stand-in's placements, exploration and learner follow the demo's seed
                                        _override("seed", cfg.get("seed", 0)),
                                        _override("learner.batch_size", cfg.batch_size),
                                        # a state-mode checkpoint reads the stand-in's privileged state (debug flag)
                                        _override("sim_robot.publish_sim_state", str(cfg.obs == "state").lower()),
                                        *_camera_overrides(cfg),
                                        *([f"reward.model={classifier}"] if classifier else [])])
        result = json.loads(summary.read_text()) if summary.is_file() else {}
        if rc != 0 or not result:
            raise RosProcessError(f"the ROS 2 stage failed (exit {rc}): "
                                  f"{result.get('error', 'see its output above')}")
        why = result.get("skipped")
        if why is None:
            return result
    print(f"{tag} skipped: the ROS 2 nodes need rclpy ({why})", flush=True)
    return None
