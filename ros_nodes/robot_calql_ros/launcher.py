"""`robot-calql launch finetune sim=true`: start the node set without the ros2 command line.

For machines with rclpy (the ROS 2 wheels) but without `ros2 launch`. It starts exactly the
nodes of robot_calql_ros.nodeset, with the same parameters as launch/finetune.launch.py:

- `mode=processes` (default): one OS process per node (`python -m <module> --ros-args
  --params-file <run_dir>/launch/<node>.params.yaml`), like ros2 launch: a node that blocks on
  the GIL (the learner's updates) cannot delay the control path, and a crashed node does not
  take the others down. If a node exits with an error (one that cannot start prints one line
  saying why and exits 1), the launcher stops the others at once and fails, naming it.
- `mode=threads`: every node in this process, each on a SingleThreadedExecutor in a thread of
  its own (quick to start; used by the tests).

A monitor node in the launcher follows the episode events and the learner's status, shows a
progress bar, and at the end prints success rates of the forward task over the first and last
halves of the session. `duration_s=<s>` bounds the session; Ctrl-C stops it cleanly.

Stopping (Ctrl-C, SIGTERM or the end of `duration_s`): the launcher prints the summary, sends
each node one SIGINT and waits for it up to `stop_timeout_s(node)` (the learner: long enough to
finish its update, write the checkpoint and draw its plot) before it kills it. More Ctrl-Cs
while the nodes stop are reported and ignored, in the launcher and in the nodes
(robot_calql_ros.run.StopSignals); a Ctrl-C in a terminal reaches the nodes too (one process
group), which is harmless.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from omegaconf import DictConfig

from robot_calql_ros.common import flatten_params, topic_names
from robot_calql_ros.nodeset import NodeSpec, node_set
from robot_calql_ros.run import POLL_S, StopSignals

log = logging.getLogger("robot_calql.launch")

# seconds a node may take to stop after SIGINT before the launcher (or ros2 launch, as
# sigterm_timeout) escalates. The learner joins its update in progress, writes a checkpoint and
# draws the calibration plot: 2-4 s on a shared 2-core CPU with the stand-in's settings, more with a big
# buffer, a large network or a slow disk; killing it then would lose the checkpoint.
STOP_TIMEOUT_S = {"learner": 120.0}
DEFAULT_STOP_TIMEOUT_S = 15.0


def stop_timeout_s(name: str) -> float:
    """How long node `name` gets to stop cleanly after SIGINT (STOP_TIMEOUT_S)."""
    return float(STOP_TIMEOUT_S.get(name, DEFAULT_STOP_TIMEOUT_S))


def unflatten(flat: dict) -> dict:
    out: dict = {}
    for k, v in flat.items():
        cur = out
        *path, leaf = k.split(".")
        for p in path:
            cur = cur.setdefault(p, {})
        cur[leaf] = v
    return out


def write_params_file(spec: NodeSpec, folder: Path) -> Path:
    """<folder>/<node>.params.yaml in the ROS 2 parameter-file format."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.name}.params.yaml"
    path.write_text(yaml.safe_dump({spec.name: {"ros__parameters": unflatten(flatten_params(spec.params))}},
                                   sort_keys=False))
    return path


def node_command(spec: NodeSpec, params_file: Path) -> list[str]:
    return [sys.executable, "-m", spec.module, "--ros-args", "-r", f"__node:={spec.name}",
            "--params-file", str(params_file)]


def child_env(cfg: DictConfig) -> dict:
    env = dict(os.environ)
    if cfg.get("domain_id") is not None:
        env["ROS_DOMAIN_ID"] = str(cfg.domain_id)
    if cfg.sim:
        env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("MUJOCO_GL", "egl")
    env.setdefault("PYOPENGL_PLATFORM", "egl")
    # ros_nodes/ on the path even without the .pth file that `make` writes
    ros_nodes = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([ros_nodes] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


class Monitor:
    """Episode events and learner status seen by the launcher (its own small node)."""

    def __init__(self, node, topics: dict):
        from std_msgs.msg import String

        from robot_calql_ros.common import COMMAND_QOS

        self.ends: list[dict] = []
        self.learner: dict = {}
        self.policy: dict = {}
        self.sim: dict = {}
        self.reward: dict = {}
        self.homes = 0
        self.help: list[str] = []
        self.t0 = time.monotonic()
        # the reward's mistakes, where the stand-in publishes its ground truth (it never rewards here):
        # a try ended "success" while the simulator said no, or timed out after the simulator said yes
        self.false_successes = self.missed_successes = 0
        self._try: dict | None = None  # {"instruction", "gt_seen", "gt_now"} of the running try
        self.judged = bool(topics.get("ground_truth_success"))
        if self.judged:
            node.create_subscription(String, topics["ground_truth_success"], self._on_ground_truth, COMMAND_QOS)
        node.create_subscription(String, topics["episode_event"], self._on_event, COMMAND_QOS)
        node.create_subscription(String, topics["learner_status"], self._on_status, COMMAND_QOS)
        node.create_subscription(String, topics["human_help"], lambda m: self.help.append(m.data), COMMAND_QOS)
        node.create_subscription(String, "/policy/status", self._on_policy, COMMAND_QOS)
        node.create_subscription(String, "/sim_robot/status", self._on_sim, COMMAND_QOS)
        node.create_subscription(String, "/reward/status", self._on_reward, COMMAND_QOS)

    def _on_event(self, msg) -> None:
        ev = json.loads(msg.data)
        self.homes += ev["event"] == "home"
        if ev["event"] == "start":
            self._try = {"instruction": ev.get("instruction"), "gt_seen": False, "gt_now": False}
        if ev["event"] == "end" and ev["reason"] in ("success", "timeout"):
            self.ends.append({**ev, "t_s": time.monotonic() - self.t0})
            t = self._try
            if t is not None and self.judged:
                self.false_successes += ev["reason"] == "success" and not t["gt_now"]
                self.missed_successes += ev["reason"] == "timeout" and t["gt_seen"]
            self._try = None

    def _on_ground_truth(self, msg) -> None:
        t = self._try
        try:
            gt = json.loads(msg.data)
            ok, instruction = bool(gt["success"]), gt["instruction"]
        except (ValueError, TypeError, KeyError):
            return
        if t is not None and (t["instruction"] is None or instruction == t["instruction"]):
            t["gt_now"] = ok
            t["gt_seen"] = t["gt_seen"] or ok

    def _on_policy(self, msg) -> None:
        self.policy = json.loads(msg.data)

    def _on_sim(self, msg) -> None:
        self.sim = json.loads(msg.data)

    def _on_reward(self, msg) -> None:
        self.reward = json.loads(msg.data)

    def windows(self, window_s: float) -> list[dict]:
        """Forward tries per `window_s` of session time: [{"t0_s", "tries", "successes"}, ...]."""
        out: dict[int, list[bool]] = {}
        for e in self.ends:
            if e["direction"] == "forward":
                out.setdefault(int(e["t_s"] // window_s), []).append(e["reason"] == "success")
        n = max(out) + 1 if out else 0
        return [{"t0_s": i * window_s, "tries": len(out.get(i, [])), "successes": sum(out.get(i, []))}
                for i in range(n)]

    def _on_status(self, msg) -> None:
        self.learner = json.loads(msg.data)

    def summary(self) -> str:
        fwd = [e["reason"] == "success" for e in self.ends if e["direction"] == "forward"]
        bwd = [e["reason"] == "success" for e in self.ends if e["direction"] == "backward"]
        half = len(fwd) // 2

        def rate(xs):
            return f"{sum(xs) / len(xs):.0%} of {len(xs)}" if xs else "n/a"

        lines = [f"forward tries: {rate(fwd)} succeeded (first half {rate(fwd[:half])}, "
                 f"second half {rate(fwd[half:])}); backward tries: {rate(bwd)} succeeded"]
        if self.learner:
            lines.append("learner: " + ", ".join(f"{k}={v}" for k, v in self.learner.items()
                                                 if k in ("received", "stored", "updates", "weights_published")))
        if self.homes:
            lines.append(f"arm sent home {self.homes} time(s) between tries")
        if self.help:
            lines.append(f"asked for a human {len(self.help)} time(s): {self.help[-1]}")
        return "\n".join(lines)


def _spin_monitor(cfg, specs, until, procs=None, report: dict | None = None, stop: StopSignals | None = None) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from tqdm import tqdm

    node = rclpy.create_node("launch_monitor")
    mon = Monitor(node, topic_names(cfg.robot.topics))
    if report is not None:
        report["monitor"] = mon
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    rc = 0
    total = None if until == float("inf") else int(until - time.monotonic())
    with tqdm(total=total, unit="s", desc="fine-tuning", dynamic_ncols=True) as bar:
        last = time.monotonic()
        while time.monotonic() < until and not (stop is not None and stop.requested):
            ex.spin_once(timeout_sec=2 * POLL_S)
            if time.monotonic() - last >= 1.0:
                bar.update(int(time.monotonic() - last))
                last += int(time.monotonic() - last)
                fwd = [e for e in mon.ends if e["direction"] == "forward"]
                bar.set_postfix(episodes=len(mon.ends), fwd_success=sum(e["reason"] == "success" for e in fwd),
                                updates=mon.learner.get("updates", 0))
            for spec, p in (procs or {}).items():
                if p.poll() is not None and p.returncode != 0:
                    log.error("node %s exited with code %s: stopping the node set", spec, p.returncode)
                    rc = 1
                    until = 0
    ex.remove_node(node)
    node.destroy_node()
    print(mon.summary())
    return rc


def run_processes(cfg: DictConfig, specs: list[NodeSpec], report: dict | None = None) -> int:
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from robot_calql_ros.nodeset import _abs

    folder = Path(_abs(str(cfg.run_dir))) / "launch"
    env = child_env(cfg)
    if cfg.get("domain_id") is not None:
        os.environ["ROS_DOMAIN_ID"] = str(cfg.domain_id)
    if cfg.sim:
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    procs: dict[str, subprocess.Popen] = {}
    stop = StopSignals("launch").install()
    rc = 0
    try:
        for spec in specs:
            pf = write_params_file(spec, folder)
            procs[spec.name] = subprocess.Popen(node_command(spec, pf), env=env)
            log.info("started %s (pid %d)", spec.name, procs[spec.name].pid)
        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
        until = time.monotonic() + float(cfg.duration_s) if float(cfg.duration_s) > 0 else float("inf")
        try:
            rc = _spin_monitor(cfg, specs, until, procs, report, stop)
        except KeyboardInterrupt:  # only where StopSignals could not be installed (not the main thread)
            pass
    finally:
        stop.requested = True  # from here on a signal is only reported
        # nodes that failed before the stop (a node that could not start): named apart
        exited = {name: p.returncode for name, p in procs.items() if p.poll() is not None and p.returncode != 0}
        codes = stop_processes(procs)
        if rclpy.ok():
            rclpy.shutdown()
        stop.restore()
    failed = {name: code for name, code in codes.items() if code != 0 and name not in exited}
    if failed:
        log.error("node(s) did not stop cleanly: %s", ", ".join(f"{n} (exit code {c})" for n, c in failed.items()))
    if exited:
        log.error("node(s) failed: %s", ", ".join(f"{n} (exit code {c})" for n, c in exited.items()))
    return 1 if failed or exited else rc


def stop_processes(procs: dict[str, subprocess.Popen], timeouts: dict[str, float] | None = None) -> dict[str, int]:
    """Send every running node one SIGINT (a clean stop: the learner checkpoints), wait for each up
    to its timeout (`timeouts[name]`, else stop_timeout_s(name)), counted from the SIGINT, and
    SIGKILL a node only once its own timeout has passed. Returns each node's exit code."""
    t0 = time.monotonic()
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    limit = {name: (timeouts or {}).get(name, stop_timeout_s(name)) for name in procs}
    running = [name for name, p in procs.items() if p.poll() is None]
    if running:
        log.info("stopping %s", ", ".join(f"{n} (up to {limit[n]:.0f} s)" for n in running))
    for name in sorted(procs, key=limit.get):
        p = procs[name]
        try:
            p.wait(timeout=max(0.1, t0 + limit[name] - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("node %s did not stop in %.0f s: killing it", name, limit[name])
            p.kill()
            p.wait()
    return {name: p.returncode for name, p in procs.items()}


def build_nodes(specs: list[NodeSpec]) -> list:
    """Instantiate the node classes in this process (rclpy must be initialised)."""
    from rclpy.parameter import Parameter

    nodes = []
    for spec in specs:
        overrides = [Parameter(k, value=v) for k, v in flatten_params(spec.params).items()]
        node = spec.node_class()(spec.name, parameter_overrides=overrides)
        if hasattr(node, "autostart"):
            node.autostart()
        nodes.append(node)
    return nodes


class NodeSpinners:
    """Each node on a SingleThreadedExecutor of its own, in its own thread: what `run.py` does per
    process, here in one process. With one shared MultiThreadedExecutor every callback went through
    one thread pool, so one node's slow callback (the learner storing a transition) could hold up
    the others; a fresh-clone test run once saw the policy act at 2.9 Hz on frames 0.3-0.8 s old
    that way (cause not pinned down). `stop()` shuts the executors down and joins their threads."""

    def __init__(self, nodes) -> None:
        import threading

        from rclpy.executors import SingleThreadedExecutor

        self.executors, self.threads = [], []
        for n in nodes:
            ex = SingleThreadedExecutor()
            ex.add_node(n)
            t = threading.Thread(target=ex.spin, name=f"spin_{n.get_name()}", daemon=True)
            t.start()
            self.executors.append(ex)
            self.threads.append(t)

    def stop(self, timeout_s: float = 5.0) -> None:
        for ex in self.executors:
            ex.shutdown(timeout_sec=timeout_s)
        for t in self.threads:
            t.join(timeout=timeout_s)


def run_threads(cfg: DictConfig, specs: list[NodeSpec], report: dict | None = None) -> int:
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from robot_calql.agent.cpu import configure_cpu_process

    configure_cpu_process()  # the policy and learner nodes run their agents in this process
    if cfg.get("domain_id") is not None:
        os.environ["ROS_DOMAIN_ID"] = str(cfg.domain_id)
    stop = StopSignals("launch").install()
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    nodes: list = []
    spinners = None
    try:
        nodes = build_nodes(specs)
        spinners = NodeSpinners(nodes)
        until = time.monotonic() + float(cfg.duration_s) if float(cfg.duration_s) > 0 else float("inf")
        rc = _spin_monitor(cfg, specs, until, report=report, stop=stop)
    except KeyboardInterrupt:  # only where StopSignals could not be installed (not the main thread)
        rc = 0
    finally:
        stop.requested = True
        if spinners is not None:
            spinners.stop()
        for n in nodes:
            n.destroy_node()
        rclpy.shutdown()
        stop.restore()
    return rc


def main(cfg: DictConfig, report: dict | None = None) -> int:
    """Run the node set of `cfg` until cfg.duration_s (or Ctrl-C); `report["monitor"]` gets the
    Monitor (episode ends with their times, last learner and policy status)."""
    from robot_calql.config import ConfigError

    if cfg.mode not in ("processes", "threads"):
        raise ConfigError(f"mode must be 'processes' or 'threads', got '{cfg.mode}'")
    specs = node_set(cfg)
    log.info("node set: %s (%s)", ", ".join(s.name for s in specs), cfg.mode)
    if cfg.mode == "processes":
        return run_processes(cfg, specs, report)
    return run_threads(cfg, specs, report)


def evaluate_policy(path: str | Path, task: str, episodes: int = 10, max_episode_steps: int = 80,
                    action_scale: tuple[float, float] = (0.02, 0.15), seed: int = 10_000) -> float:
    """Success rate of the deterministic policy of checkpoint/run `path` on `task` in the simulated
    cell of the checkpoint's robot (its meta `robot`, sim.kinematics.sim_arm: the stand-in's arm
    for a robot without one): `episodes` full-reset episodes of at most `max_episode_steps`
    control steps, ground-truth success, in this process (no ROS), through
    robot_calql.train.evaluation.evaluate (the one evaluation routine)."""
    from robot_calql import sim
    from robot_calql.agent.cpu import configure_cpu_process
    from robot_calql.data.replay import InstructionVocab
    from robot_calql.sim.kinematics import sim_arm
    from robot_calql.train import checkpoint as ckpt
    from robot_calql.train.common import agent_from_meta
    from robot_calql.train.evaluation import evaluate

    configure_cpu_process()
    state = ckpt.load_checkpoint(path)
    meta = state["meta"]
    agent = agent_from_meta(meta)
    agent.load_state_dict(state["agent_state"])
    spec = {k: tuple(int(x) for x in v) for k, v in meta["obs_spec"].items()}
    size = int(spec["image"][0]) if "image" in spec else 0
    env = sim.make_env(task, image_size=size, max_episode_steps=int(max_episode_steps), action_scale=action_scale,
                       arm=sim_arm(meta.get("robot")))
    try:
        res = evaluate(agent, env, task, int(episodes), spec, InstructionVocab(meta["instructions"]), seed=seed)
    finally:
        env.close()
    return float(res["success_rate"])


def run_session(overrides: list[str] | tuple[str, ...] = (), duration_s: float = 300.0,
                eval_episodes: int = 10, eval_max_steps: int = 80, window_s: float = 60.0) -> dict:
    """One reset-free fine-tuning session of the ROS node set in the stand-in, measured.

    `overrides`: hydra overrides of configs/launch_finetune.yaml (e.g. ["checkpoint=runs/pre",
    "run_dir=/tmp/ft"]); `sim=true` is implied. The run_dir is started afresh (a previous
    session there would be resumed otherwise). Before the session the checkpoint's deterministic
    policy, and after it the learner's final checkpoint, are evaluated on the forward task
    (`eval_episodes` full-reset episodes of `eval_max_steps` steps; no evaluation when 0 or
    without a checkpoint). Returns a JSON-able dict:

    - eval_success_before / eval_success_after: those two success rates (None when not measured)
    - forward_tries, forward_successes, backward_tries, backward_successes: the session's
      reset-free tries (ground-truth or classifier reward, as configured)
    - reward_false_successes / reward_missed_successes: tries the reward (classifier or ground
      truth) ended "success" while the stand-in's ground truth said no at that moment, and tries
      that timed out although the ground truth had said yes during them
    - reward_held_by_gate: debounced successes the classifier's release gate held back because the
      gripper was not open (or its joint state was not fresh); from /reward/status
    - forward_first_half / forward_second_half: success rate of the first / last half of the
      forward tries; windows: [{"t0_s", "tries", "successes"}] per `window_s` of session time
    - transitions_received, transitions_stored, updates, weights_published (learner status),
      weights_received, policy_steps (policy status), human_help (times), arm_homes (the arm sent
      home between tries), duration_s, run_dir, rc
    - sim_steps, commands_received, commands_applied, ticks_missed, commands_replaced (the stand-in's status): physics
      steps, and how many of them used a fresh command, held the arm because none had arrived in
      time, or saw a command overwritten before it was used; missed_rate = (ticks_missed +
      commands_replaced) / commands_received, the share of the policy's actions that did not reach
      the arm one per control period
    """
    import shutil

    from robot_calql.config import compose
    from robot_calql.robot_config import load_robot_config
    from robot_calql_ros.nodeset import _abs

    cfg = compose("launch_finetune", ["sim=true", *overrides, f"duration_s={float(duration_s)}"])
    run_dir = Path(_abs(str(cfg.run_dir)))
    if (run_dir / "checkpoints").exists() or (run_dir / "transitions.log").exists():
        shutil.rmtree(run_dir)
    fwd = load_robot_config(cfg.robot).task_pair(str(cfg.task))[1].forward.label  # a stand-in task (sim=true)
    scale = (float(cfg.robot.action_scale.translation_m), float(cfg.robot.action_scale.rotation_rad))
    measure = bool(cfg.checkpoint) and eval_episodes > 0
    before = (evaluate_policy(_abs(str(cfg.checkpoint)), fwd, eval_episodes, eval_max_steps, scale)
              if measure else None)
    report: dict = {}
    rc = main(cfg, report)
    after = (evaluate_policy(run_dir, fwd, eval_episodes, eval_max_steps, scale)
             if measure and (run_dir / "checkpoints").is_dir() else None)
    mon = report.get("monitor")
    ends = mon.ends if mon is not None else []
    fwd_ok = [e["reason"] == "success" for e in ends if e["direction"] == "forward"]
    bwd_ok = [e["reason"] == "success" for e in ends if e["direction"] == "backward"]
    half = len(fwd_ok) // 2

    def rate(xs):
        return sum(xs) / len(xs) if xs else None

    learner = mon.learner if mon is not None else {}
    policy = mon.policy if mon is not None else {}
    sim = mon.sim if mon is not None else {}
    received = int(sim.get("commands_received", 0))
    out = {"eval_success_before": before, "eval_success_after": after,
           "forward_tries": len(fwd_ok), "forward_successes": int(sum(fwd_ok)),
           "backward_tries": len(bwd_ok), "backward_successes": int(sum(bwd_ok)),
           "reward_false_successes": mon.false_successes if mon is not None else 0,
           "reward_missed_successes": mon.missed_successes if mon is not None else 0,
           "reward_held_by_gate": int(mon.reward.get("held_by_gate", 0)) if mon is not None else 0,
           "forward_first_half": rate(fwd_ok[:half]), "forward_second_half": rate(fwd_ok[half:]),
           "windows": mon.windows(window_s) if mon is not None else [],
           "transitions_received": int(learner.get("received", 0)),
           "transitions_stored": int(learner.get("stored", 0)),
           "updates": int(learner.get("updates", 0)),
           "weights_published": int(learner.get("weights_published", 0)),
           "weights_received": int(policy.get("weights_received", 0)),
           "policy_steps": int(policy.get("steps", 0)),
           "sim_steps": int(sim.get("steps", 0)), "commands_received": received,
           "commands_applied": int(sim.get("commands_applied", 0)),
           "ticks_missed": int(sim.get("ticks_missed", 0)), "commands_replaced": int(sim.get("commands_replaced", 0)),
           "missed_rate": ((int(sim.get("ticks_missed", 0)) + int(sim.get("commands_replaced", 0))) / received
                           if received else None),
           "human_help": len(mon.help) if mon is not None else 0,
           "arm_homes": mon.homes if mon is not None else 0,
           "duration_s": float(duration_s), "run_dir": str(run_dir), "rc": int(rc)}
    if measure:
        print(f"deterministic evaluation on {fwd} ({eval_episodes} full-reset episodes): "
              f"before {before:.0%}, after {after if after is None else format(after, '.0%')}")
    return out


def cli(argv: list[str] | None = None) -> int:
    """`ros2 run robot_calql launch_finetune sim=true ...`: the launcher without the robot-calql CLI."""
    from robot_calql.cli import main as robot_calql_main

    return robot_calql_main(["launch", "finetune", *(sys.argv[1:] if argv is None else argv)])


def dump_params_file(cfg: DictConfig, path: Path) -> Path:
    """All nodes' parameters in one ROS 2 parameter file (paths relative to the repository root),
    for `ros2 run robot_calql <node> --ros-args --params-file <path>`, e.g. the learner alone on a
    GPU server."""
    from robot_calql.config import REPO_ROOT

    def rel(v):
        if isinstance(v, str) and v.startswith(str(REPO_ROOT) + "/"):
            return v[len(str(REPO_ROOT)) + 1:]
        return v

    doc = {spec.name: {"ros__parameters": unflatten({k: rel(v) for k, v in flatten_params(spec.params).items()})}
           for spec in node_set(cfg)}
    path.write_text("# generated by robot_calql_ros.launcher.dump_params_file from configs/launch_finetune.yaml;\n"
                    "# paths are relative to the repository root (start nodes from there)\n"
                    + yaml.safe_dump(doc, sort_keys=False))
    return path


if __name__ == "__main__":
    sys.exit(cli())
