"""`robot-calql launch finetune sim=true`: start the node set without the ros2 command line.

For machines with rclpy (the ROS 2 wheels) but without `ros2 launch`. It starts exactly the
nodes of robot_calql_ros.nodeset, with the same parameters as launch/finetune.launch.py:

- `mode=processes` (default): one OS process per node (`python -m <module> --ros-args
  --params-file <run_dir>/launch/<node>.params.yaml`), like ros2 launch: a node that blocks on
  the GIL (the learner's updates) cannot delay the control path, and a crashed node does not
  take the others down. If a node exits with an error, the launcher stops the others and fails.
- `mode=threads`: every node in this process on one MultiThreadedExecutor (quick to start;
  used by the tests).

A monitor node in the launcher follows the episode events and the learner's status, shows a
progress bar, and at the end prints success rates of the forward task over the first and last
halves of the session. `duration_s=<s>` bounds the session; Ctrl-C stops it cleanly.
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

from robot_calql_ros.common import flatten_params
from robot_calql_ros.nodeset import NodeSpec, node_set

log = logging.getLogger("robot_calql.launch")


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
        self.help: list[str] = []
        node.create_subscription(String, topics["episode_event"], self._on_event, COMMAND_QOS)
        node.create_subscription(String, topics["learner_status"], self._on_status, COMMAND_QOS)
        node.create_subscription(String, topics["human_help"], lambda m: self.help.append(m.data), COMMAND_QOS)

    def _on_event(self, msg) -> None:
        ev = json.loads(msg.data)
        if ev["event"] == "end" and ev["reason"] in ("success", "timeout"):
            self.ends.append(ev)

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
        if self.help:
            lines.append(f"asked for a human {len(self.help)} time(s): {self.help[-1]}")
        return "\n".join(lines)


def _spin_monitor(cfg, specs, until, procs=None) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from tqdm import tqdm

    node = rclpy.create_node("launch_monitor")
    mon = Monitor(node, dict(cfg.robot.topics))
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    rc = 0
    total = None if until == float("inf") else int(until - time.monotonic())
    with tqdm(total=total, unit="s", desc="fine-tuning", dynamic_ncols=True) as bar:
        last = time.monotonic()
        while time.monotonic() < until:
            ex.spin_once(timeout_sec=0.2)
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


def run_processes(cfg: DictConfig, specs: list[NodeSpec]) -> int:
    import rclpy

    from robot_calql_ros.nodeset import _abs

    folder = Path(_abs(str(cfg.run_dir))) / "launch"
    env = child_env(cfg)
    if cfg.get("domain_id") is not None:
        os.environ["ROS_DOMAIN_ID"] = str(cfg.domain_id)
    if cfg.sim:
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    procs: dict[str, subprocess.Popen] = {}
    try:
        for spec in specs:
            pf = write_params_file(spec, folder)
            procs[spec.name] = subprocess.Popen(node_command(spec, pf), env=env)
            log.info("started %s (pid %d)", spec.name, procs[spec.name].pid)
        rclpy.init()
        until = time.monotonic() + float(cfg.duration_s) if float(cfg.duration_s) > 0 else float("inf")
        try:
            rc = _spin_monitor(cfg, specs, until, procs)
        except KeyboardInterrupt:
            rc = 0
        return rc
    finally:
        stop_processes(procs)
        if rclpy.ok():
            rclpy.shutdown()


def stop_processes(procs: dict, timeout_s: float = 15.0) -> None:
    """SIGINT every node (clean shutdown: the learner checkpoints), then SIGKILL stragglers."""
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout_s
    for name, p in procs.items():
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("node %s did not stop in %.0f s: killing it", name, timeout_s)
            p.kill()
            p.wait()


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


def run_threads(cfg: DictConfig, specs: list[NodeSpec]) -> int:
    import threading

    import rclpy
    from rclpy.executors import MultiThreadedExecutor

    if cfg.get("domain_id") is not None:
        os.environ["ROS_DOMAIN_ID"] = str(cfg.domain_id)
    rclpy.init()
    nodes = build_nodes(specs)
    ex = MultiThreadedExecutor(num_threads=4)
    for n in nodes:
        ex.add_node(n)
    t = threading.Thread(target=ex.spin, daemon=True)
    t.start()
    try:
        until = time.monotonic() + float(cfg.duration_s) if float(cfg.duration_s) > 0 else float("inf")
        rc = _spin_monitor(cfg, specs, until)
    except KeyboardInterrupt:
        rc = 0
    finally:
        ex.shutdown()
        for n in nodes:
            n.destroy_node()
        rclpy.shutdown()
    return rc


def main(cfg: DictConfig) -> int:
    specs = node_set(cfg)
    log.info("node set: %s (%s)", ", ".join(s.name for s in specs), cfg.mode)
    if cfg.mode == "processes":
        return run_processes(cfg, specs)
    if cfg.mode == "threads":
        return run_threads(cfg, specs)
    from robot_calql.config import ConfigError

    raise ConfigError(f"mode must be 'processes' or 'threads', got '{cfg.mode}'")


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
