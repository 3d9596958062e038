"""Ctrl-C as a terminal delivers it: SIGINT to the whole process group, then the launcher's own
SIGINT (and launch's SIGTERM) while the learner is busy updating and transitions stream in. The
learner must stop cleanly every time: exit code 0, no abort, a checkpoint at its last update and
the calibration plot. The nodes run as real subprocesses in a session of their own."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ProcessOutput, wait_for
from test_learner_restart import _Stream

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[2]
SETTINGS = ["sim=true", "nodes=[learner]", "learner.min_online=5", "learner.batch_size=32", "learner.utd=4",
            "learner.checkpoint_every=100000", "learner.publish_every=1000", "learner.online_capacity=1000",
            "learner.log_every=10", "learner.tensorboard=false", "agent.encoder_latent_dim=16",
            "policy.transition_history=100"]


def _fake_policy(ros, cfg):
    import rclpy
    from robot_calql_ros.common import COMMAND_QOS, transitions_qos
    from std_msgs.msg import String, UInt8MultiArray

    node = ros.add(rclpy.create_node("fake_policy"))
    t = cfg.robot.topics
    stream = _Stream(node.create_publisher(UInt8MultiArray, t.transitions, transitions_qos(100)), hz=20)
    status: dict = {}
    node.create_subscription(String, t.learner_status, lambda m: status.update(json.loads(m.data)), COMMAND_QOS)
    return stream, status


def _checkpoint_step(run: Path) -> int:
    latest = (run / "checkpoints" / "LATEST").read_text().strip()
    assert (run / "checkpoints" / latest / "model.safetensors").is_file()
    return int(latest.split("_")[1])


def _assert_clean_stop(proc, out: ProcessOutput, t_signal: float, run: Path, updates_seen: int, plot_before: float,
                       signalled_while_stopping: bool):
    rc = proc.wait(timeout=120)
    took = time.monotonic() - t_signal
    text = out.text()
    assert rc == 0, f"exit code {rc}:\n{text[-3000:]}"
    assert "terminate called" not in text and "Traceback" not in text, text[-3000:]
    if signalled_while_stopping:  # SIGINT's handler runs before SIGTERM's, so SIGTERM is reported
        assert "received while stopping: ignored" in text
    step = _checkpoint_step(run)
    assert step >= updates_seen, f"checkpoint at update {step}, the learner had made {updates_seen}"
    assert f"checkpoint at update {step}:" in text  # the exit checkpoint (no periodic one in these settings)
    assert (run / "plots" / "calibration.png").stat().st_mtime > plot_before
    return took


def test_learner_survives_ctrl_c_then_launchs_sigint_and_sigterm(ros, tmp_path):
    """Twice (the second run resumes the first one's checkpoint): SIGINT to the learner's process
    group, then a second SIGINT to the learner (what ros2 launch sends) and SIGTERM (launch's
    escalation), while it updates and transitions stream in. In the first run the later signals
    come 0.3 s after the first (about when launch sends its own; the update in progress and the
    checkpoint are under way), in the second once the checkpoint is written (the plot is being
    drawn)."""
    from robot_calql_ros.launcher import child_env, node_command, write_params_file
    from robot_calql_ros.nodeset import node_set

    from robot_calql.config import compose

    run = tmp_path / "run"
    cfg = compose("launch_finetune", [*SETTINGS, f"run_dir={run}"])
    (spec,) = node_set(cfg)
    pf = write_params_file(spec, tmp_path / "launch")
    env = child_env(cfg)
    env["ROS_DOMAIN_ID"] = os.environ["ROS_DOMAIN_ID"]
    stream, status = _fake_policy(ros, cfg)
    took = []
    try:
        for wait_for_checkpoint in (False, True):
            status.clear()
            proc = subprocess.Popen(node_command(spec, pf), env=env, start_new_session=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            out = ProcessOutput(proc)
            try:
                wait_for(lambda: "updates" in status, 60, "the learner's status")
                start = status["updates"]
                stream.resume()
                wait_for(lambda start=start: status.get("updates", 0) >= start + 20, 60, "the learner updating")
                plot = run / "plots" / "calibration.png"
                plot_before = plot.stat().st_mtime if plot.exists() else 0.0
                updates_seen = status["updates"]
                t0 = time.monotonic()
                os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C
                if wait_for_checkpoint:
                    wait_for(lambda out=out, proc=proc: out.has("checkpoint at update") or proc.poll() is not None, 60,
                             "the learner's checkpoint")
                    assert proc.poll() is None, "the learner stopped before the second signal"
                else:
                    time.sleep(0.3)
                proc.send_signal(signal.SIGINT)  # launch's own SIGINT
                time.sleep(0.1)
                alive = proc.poll() is None
                if alive:
                    proc.send_signal(signal.SIGTERM)  # launch's escalation
                took.append(_assert_clean_stop(proc, out, t0, run, updates_seen, plot_before, alive))
            finally:
                stream.pause()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert "checkpoints/step_" in status.get("resumed_from", "")  # the second run resumed the first
    finally:
        stream.close()
    print(f"stop took {', '.join(f'{t:.1f}' for t in took)} s")
    assert max(took) < 60


def test_launcher_ctrl_c_twice_leaves_the_learners_checkpoint(ros, tmp_path):
    """`robot-calql launch finetune` (mode=processes, the learner alone): Ctrl-C twice in its
    terminal (SIGINT to the group: launcher and learner) while the learner updates. The launcher
    forwards one SIGINT, waits for the learner and exits 0; it kills nothing."""
    from robot_calql.config import compose

    run = tmp_path / "run"
    cfg = compose("launch_finetune", [*SETTINGS, f"run_dir={run}"])
    stream, status = _fake_policy(ros, cfg)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "ros_nodes"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "robot_calql_ros.launcher", *SETTINGS, f"run_dir={run}",
                             f"domain_id={os.environ['ROS_DOMAIN_ID']}"], cwd=REPO, env=env,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = ProcessOutput(proc)
    try:
        wait_for(lambda: "updates" in status, 90, "the learner's status")
        stream.resume()
        wait_for(lambda: status.get("updates", 0) >= 20, 60, "the learner updating")
        updates_seen = status["updates"]
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        wait_for(lambda: out.has("stopping learner"), 30, "the launcher stopping the learner")
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C again, while the learner stops
        rc = proc.wait(timeout=150)
        took = time.monotonic() - t0
    finally:
        stream.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = out.text()
    assert rc == 0, text[-3000:]
    assert "terminate called" not in text and "Traceback" not in text and "killing it" not in text, text[-3000:]
    assert "[launch] SIGINT received while stopping: ignored" in text
    pid = int(text.split("started learner (pid ")[1].split(")")[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the learner ended (and was reaped) before the launcher returned
    step = _checkpoint_step(run)
    assert step >= updates_seen and f"checkpoint at update {step}:" in text
    assert (run / "plots" / "calibration.png").is_file()
    print(f"launcher stop took {took:.1f} s")
    assert took < 60


def test_stop_processes_gives_each_node_its_own_time():
    """A node that needs longer than the others to stop (the learner) is waited for up to its own
    timeout and exits by itself; one that does not stop is killed once its timeout has passed."""
    from robot_calql_ros.launcher import stop_processes, stop_timeout_s

    slow = ("import signal, sys, time\n"
            "signal.signal(signal.SIGINT, lambda *a: (time.sleep(2.0), sys.exit(0)))\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")
    stuck = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(60)\n"
    procs = {name: subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
             for name, code in (("learner", slow), ("stuck", stuck))}
    for p in procs.values():
        assert p.stdout.readline() == "ready\n"
    t0 = time.monotonic()
    codes = stop_processes(procs, timeouts={"learner": 30.0, "stuck": 1.0})
    took = time.monotonic() - t0
    assert codes == {"learner": 0, "stuck": -signal.SIGKILL}
    assert 2.0 <= took < 20
    for p in procs.values():
        p.stdout.close()
    assert stop_timeout_s("learner") >= 60 and stop_timeout_s("safety") < stop_timeout_s("learner")


def test_launch_file_gives_each_node_its_stop_timeout(tmp_path, monkeypatch):
    """finetune.launch.py passes launch_ros the same stop timeouts as the launcher
    (`sigterm_timeout`, `sigkill_timeout`; launch's default is 5 s each). `launch` is not
    installable here: small stand-ins record what the launch file builds."""
    import importlib.util
    import types

    from robot_calql_ros.launcher import stop_timeout_s

    made = []

    class Action:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs
            made.append(self)

    class LaunchConfiguration:
        defaults: dict = {}

        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return self.defaults[self.name]

    class DeclareLaunchArgument(Action):
        def __init__(self, name, default_value="", description=""):
            super().__init__(name)
            LaunchConfiguration.defaults[name] = default_value

    mods = {"launch": types.ModuleType("launch"), "launch.actions": types.ModuleType("launch.actions"),
            "launch.substitutions": types.ModuleType("launch.substitutions"),
            "launch_ros": types.ModuleType("launch_ros"), "launch_ros.actions": types.ModuleType("launch_ros.actions")}
    mods["launch"].LaunchDescription = lambda actions: actions
    mods["launch.actions"].DeclareLaunchArgument = DeclareLaunchArgument
    mods["launch.actions"].OpaqueFunction = lambda function: function
    mods["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    mods["launch_ros.actions"].Node = type("Node", (Action,), {})
    mods["launch_ros.actions"].LifecycleNode = type("LifecycleNode", (Action,), {})
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("finetune_launch", REPO / "ros_nodes" / "launch" / "finetune.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    *_, nodes_fn = module.generate_launch_description()
    nodes = {a.kwargs["name"]: a.kwargs for a in nodes_fn(context=None)}
    assert "learner" in nodes and "safety" in nodes
    for name, kw in nodes.items():
        assert kw["sigterm_timeout"] == kw["sigkill_timeout"] == str(stop_timeout_s(name)), name
    assert float(nodes["learner"]["sigterm_timeout"]) >= 60
