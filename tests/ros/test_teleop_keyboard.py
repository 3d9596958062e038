"""The teleop node's keyboard fallback on a real terminal: the node runs as a child process whose
stdin (and controlling terminal) is a pseudo-terminal, over real rclpy/DDS. Keys typed on the
terminal's master side drive the arm as configs/teleop/keyboard.yaml says, each press holds the
takeover for `key_hold_s`, and the safety node's arbitration (TakeoverArbiter with its freshness
of one control period, fed the commands as they arrive) accepts them for that whole time; Ctrl-C
on the terminal stops the node and gives the terminal back as it was. With stdin a pipe the node
says so and keeps running. As a background job of the terminal (`ros2 run ... &`; a job-control
shell stand-in, _JOB_SHELL) it leaves the terminal alone, warns and keeps running; moved to the
background while it reads keys (Ctrl-Z + `bg`) it is not stopped and still gives the terminal back.
"""

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import termios
import threading
import time

import numpy as np
import pytest
from conftest import ProcessOutput, wait_for

pytestmark = pytest.mark.ros


def _teleop(tmp_path):
    """The keyboard teleop node's command line, environment and parameters (as the launcher has them)."""
    from robot_calql_ros.launcher import child_env, node_command, write_params_file
    from robot_calql_ros.nodeset import node_set

    from robot_calql.config import compose

    cfg = compose("launch_finetune", ["sim=true", "nodes=[]", "teleop=keyboard"])
    (spec,) = node_set(cfg)
    env = child_env(cfg)
    env.update(ROS_DOMAIN_ID=os.environ["ROS_DOMAIN_ID"], PYTHONUNBUFFERED="1", RCUTILS_LOGGING_BUFFERED_STREAM="0")
    return node_command(spec, write_params_file(spec, tmp_path)), env, spec.params


class _Probe:
    """Records the teleop commands (receive time, delta, stamp) and feeds each to a TakeoverArbiter
    as the safety node does (freshness: one control period), keeping what it refuses."""

    def __init__(self, ros, topic: str, control_hz: float):
        import rclpy
        from robot_calql_ros.common import COMMAND_QOS
        from std_msgs.msg import Float64MultiArray

        from robot_calql.control.teleop import TakeoverArbiter

        self.lock = threading.Lock()
        self.commands: list[tuple[float, np.ndarray, float]] = []
        self.refused: list[str] = []
        self.arbiter = TakeoverArbiter(1.0 / control_hz)
        self.topic = topic
        self.node = ros.add(rclpy.create_node("keyboard_probe"))
        self.node.create_subscription(Float64MultiArray, topic, self._on_command, COMMAND_QOS)

    def _on_command(self, msg) -> None:
        from robot_calql.control.conversions import unpack_policy_command

        now = time.time()
        delta, stamp = unpack_policy_command(msg.data)
        with self.lock:
            self.commands.append((now, delta, stamp))
            problem = self.arbiter.human(delta, stamp, now)
            if problem:
                self.refused.append(problem)
            self.arbiter.current(now)  # a policy tick: the takeover starts (or goes on) while fresh

    def since(self, t0: float) -> list[tuple[float, np.ndarray, float]]:
        with self.lock:
            return [c for c in self.commands if c[0] >= t0]

    def takeover_ended(self) -> bool:
        with self.lock:
            return self.arbiter.ended(time.time())


def _stop(proc) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _become_session_leader_on_stdin() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # stdin (the pty) is the child's controlling terminal: Ctrl-C works


def test_keys_on_the_nodes_terminal_take_over_then_ctrl_c_restores_the_terminal(ros, tmp_path):
    from robot_calql_ros.common import topic_names

    cmd, env, params = _teleop(tmp_path)
    robot, keys = params["robot"], params["teleop"]["keys"]
    hold = float(params["teleop"]["key_hold_s"])
    hz = float(robot["control_hz"])
    trans, rot = float(robot["action_scale"]["translation_m"]), float(robot["action_scale"]["rotation_rad"])
    probe = _Probe(ros, topic_names(robot["topics"])["teleop_command"], hz)

    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    assert before[3] & termios.ICANON and before[3] & termios.ECHO  # a fresh pty: line mode, echo
    proc = subprocess.Popen(cmd, env=env, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=_become_session_leader_on_stdin)
    out = ProcessOutput(proc)
    try:
        wait_for(lambda: out.has("(keyboard on stdin)") or proc.poll() is not None, 20, "the teleop node's start line")
        assert proc.poll() is None, out.text()
        wait_for(lambda: probe.node.count_publishers(probe.topic) >= 1, 20, "the teleop command publisher")
        lflag = termios.tcgetattr(slave)[3]
        assert not lflag & termios.ICANON and not lflag & termios.ECHO, "no cbreak mode while the node runs"
        assert lflag & termios.ISIG, "Ctrl-C must still reach the node"

        # keys the table does not map (an unmapped letter, upper case, an arrow key's escape
        # sequence, a two-byte UTF-8 character) move nothing and break nothing
        os.write(master, "xW\x1b[B\u00e9".encode())
        # every key of the table, in turn: the command's axis, sign and size, gripper kept between keys
        gripper = -1.0  # no gripper key yet and no measured gripper: open
        t_key = 0.0
        for k, spec in keys.items():
            expect = np.zeros(5)
            if spec["axis"] == "gripper":
                gripper = 1.0 if spec["value"] > 0 else -1.0
            else:
                i = ["dx", "dy", "dz", "dyaw"].index(spec["axis"])
                expect[i] = float(spec["value"]) * (rot if spec["axis"] == "dyaw" else trans)
            expect[4] = gripper
            t_key = time.time()
            os.write(master, k.encode())
            wait_for(lambda t=t_key, e=expect: any(np.allclose(d, e, atol=1e-12) for _, d, _ in probe.since(t)), 10,
                     f"the command of key {k!r} ({spec['axis']} {spec['value']:+})")
        first = probe.since(0.0)[0][1]
        np.testing.assert_allclose(first, [keys["w"]["value"] * trans, 0, 0, 0, -1], atol=1e-12,
                                   err_msg="the first command was not the first mapped key's (an unmapped key drove?)")

        # the last key's hold: the takeover lasts key_hold_s on the arbiter, then ends, and the node goes quiet
        wait_for(probe.takeover_ended, hold + 10, "the takeover's end after the last key")
        t_end = time.time()
        wait_for(lambda: time.time() - probe.since(0.0)[-1][0] > 0.3, 10, "the node to stop commanding")
        span = probe.since(t_key)[-1][0] - t_key
        print(f"{len(probe.commands)} commands; the last key drove {1e3 * span:.0f} ms "
              f"(key_hold_s {1e3 * hold:.0f} ms), takeover over {1e3 * (t_end - t_key):.0f} ms after it")
        assert probe.refused == [], f"the safety node would drop the takeover: {probe.refused[:3]}"
        assert 0.5 * hold <= span <= hold + 0.5, f"the last key drove {span:.2f} s, key_hold_s is {hold} s"
        assert 0.9 * hold <= t_end - t_key <= hold + 1.0 / hz + 0.6, \
            f"the takeover ended {t_end - t_key:.2f} s after the last key, key_hold_s is {hold} s"
        assert proc.poll() is None

        # Ctrl-C on the terminal: a clean exit and the terminal as it was (line mode, echo)
        os.write(master, b"\x03")
        rc = proc.wait(timeout=15)
        text = out.text()
        assert rc == 0, f"exit code {rc}:\n{text[-3000:]}"
        assert "Traceback" not in text, text[-3000:]
        after = termios.tcgetattr(slave)
        assert after[3] & termios.ICANON and after[3] & termios.ECHO, "the terminal was left in cbreak mode"
        assert after == before
    finally:
        _stop(proc)
        os.close(master)
        os.close(slave)


def test_stdin_not_a_terminal_warns_and_the_node_keeps_running(ros, tmp_path):
    cmd, env, params = _teleop(tmp_path)
    from robot_calql_ros.common import topic_names

    probe = _Probe(ros, topic_names(params["robot"]["topics"])["teleop_command"], float(params["robot"]["control_hz"]))
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    out = ProcessOutput(proc)
    try:
        wait_for(lambda: out.has("stdin is not a terminal") or proc.poll() is not None, 20, "the warning")
        wait_for(lambda: probe.node.count_publishers(probe.topic) >= 1 or proc.poll() is not None, 20,
                 "the teleop command publisher")
        assert proc.poll() is None, out.text()
        assert not out.has("(keyboard on stdin)")
        proc.stdin.write("w")  # not read: no command
        proc.stdin.flush()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=15)
        assert rc == 0, out.text()[-3000:]
        assert probe.commands == []
    finally:
        _stop(proc)


# A job-control shell on the pty (its controlling terminal, session leader): runs the command as a
# job in a process group of its own, `bg` (the command starts as a background job, `ros2 run ... &`)
# or `fg` (the job owns the terminal; SIGUSR1: the shell takes the terminal back, Ctrl-Z + `bg`).
# SIGINT / SIGTERM go to the job. A job stopped by the terminal (SIGTTOU / SIGTTIN) is reported,
# killed, and the shell exits 3: a stopped node is a test failure, not a hang.
_JOB_SHELL = r"""
import os, signal, sys
mode, cmd = sys.argv[1], sys.argv[2:]
signal.signal(signal.SIGTTOU, signal.SIG_IGN)   # the shell hands the terminal around
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    if mode == "fg":
        os.tcsetpgrp(0, os.getpgrp())
    signal.signal(signal.SIGTTOU, signal.SIG_DFL)  # an ignored signal would stay ignored after exec
    os.execvp(cmd[0], cmd)
try:
    os.setpgid(pid, pid)
except OSError:
    pass


def on_signal(sig, _frame):
    if sig == signal.SIGUSR1:
        os.tcsetpgrp(0, os.getpgrp())
    else:
        os.kill(pid, sig)


for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
    signal.signal(s, on_signal)
print(f"job {pid}", flush=True)
_, status = os.waitpid(pid, os.WUNTRACED)
if os.WIFSTOPPED(status):
    print(f"job stopped by signal {signal.Signals(os.WSTOPSIG(status)).name}", flush=True)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    sys.exit(3)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _run_as_job(cmd, env, mode: str, slave: int):
    proc = subprocess.Popen([sys.executable, "-c", _JOB_SHELL, mode, *cmd], env=env, stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=_become_session_leader_on_stdin)
    out = ProcessOutput(proc)
    wait_for(lambda: out.has("job ") or proc.poll() is not None, 10, "the job shell's start")
    job = next((int(line.split()[1]) for line in list(out.lines) if line.startswith("job ")), None)
    return proc, out, job


def _stop_job(proc, job) -> None:
    if job is not None:
        try:
            os.killpg(job, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _stop(proc)


@contextlib.contextmanager
def _job_on_a_terminal(ros, tmp_path, mode: str):
    """The teleop node as a job ("fg" or "bg") of a job-control shell on a new pseudo-terminal:
    yields (probe of its commands, master fd, slave fd, the terminal's settings before, proc,
    output, job's process group); kills the job and closes the terminal afterwards."""
    from robot_calql_ros.common import topic_names

    cmd, env, params = _teleop(tmp_path)
    probe = _Probe(ros, topic_names(params["robot"]["topics"])["teleop_command"], float(params["robot"]["control_hz"]))
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    proc, out, job = _run_as_job(cmd, env, mode, slave)
    try:
        yield probe, master, slave, before, proc, out, job
    finally:
        _stop_job(proc, job)
        os.close(master)
        os.close(slave)


def test_a_background_job_on_the_terminal_leaves_it_alone_warns_and_keeps_running(ros, tmp_path):
    with _job_on_a_terminal(ros, tmp_path, "bg") as (probe, master, slave, before, proc, out, job):
        assert job is not None and os.tcgetpgrp(master) != job, out.text()  # the node: a background job
        wait_for(lambda: out.has("runs in the background") or proc.poll() is not None, 20, "the warning")
        wait_for(lambda: probe.node.count_publishers(probe.topic) >= 1 or proc.poll() is not None, 20,
                 "the teleop command publisher")
        assert proc.poll() is None, out.text()[-3000:]
        assert not out.has("(keyboard on stdin)")
        assert termios.tcgetattr(slave) == before, "a background job changed the terminal"
        os.write(master, b"w")  # not read (a read would stop the node): no command
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=15)
        text = out.text()
        assert rc == 0, f"exit code {rc}:\n{text[-3000:]}"
        assert "Traceback" not in text, text[-3000:]
        assert probe.commands == []
        assert termios.tcgetattr(slave) == before


def test_moved_to_the_background_the_node_is_not_stopped_and_gives_the_terminal_back(ros, tmp_path):
    with _job_on_a_terminal(ros, tmp_path, "fg") as (probe, master, slave, before, proc, out, job):
        wait_for(lambda: out.has("(keyboard on stdin)") or proc.poll() is not None, 20, "the teleop node's start line")
        assert proc.poll() is None, out.text()[-3000:]
        assert os.tcgetpgrp(master) == job
        wait_for(lambda: probe.node.count_publishers(probe.topic) >= 1, 20, "the teleop command publisher")
        os.write(master, b"w")
        wait_for(lambda: len(probe.commands) > 0, 10, "a command from the key")
        proc.send_signal(signal.SIGUSR1)  # Ctrl-Z + `bg`: the shell has the terminal, the node runs on
        wait_for(lambda: os.tcgetpgrp(master) != job, 10, "the shell to take the terminal back")
        wait_for(probe.takeover_ended, 10, "the key's takeover to end")
        n = len(probe.commands)
        os.write(master, b"w")  # typed to the shell: a background node must not read it (SIGTTIN)
        time.sleep(0.5)         # the node's key reader polls every 0.1 s: it has seen the key by now
        assert proc.poll() is None, out.text()[-3000:]
        proc.send_signal(signal.SIGINT)   # stop it from the background: the terminal must come back
        rc = proc.wait(timeout=15)
        text = out.text()
        assert rc == 0, f"exit code {rc}:\n{text[-3000:]}"
        assert "Traceback" not in text, text[-3000:]
        assert len(probe.commands) == n, "the background node read a key typed to the shell"
        assert termios.tcgetattr(slave) == before, "the terminal was not put back"
