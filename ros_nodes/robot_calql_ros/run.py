"""`main()` helper shared by the node entry points (`ros2 run robot_calql <node>`), and the
signal handling that makes Ctrl-C a clean stop (`StopSignals`, also used by the launcher)."""

from __future__ import annotations

import os
import signal
import sys
import threading

# how often a spinning node looks at its stop flag (seconds)
POLL_S = 0.1


class StopSignals:
    """SIGINT and SIGTERM as a stop request instead of an exception.

    The first signal sets `requested`; the spin loop sees it within POLL_S and stops the node
    cleanly (the learner joins its update thread, then writes its checkpoint and plot). Every
    later signal is only reported on stderr: a terminal's Ctrl-C reaches the whole process group
    and `ros2 launch` / `robot-calql launch` then send their own SIGINT (and launch a SIGTERM
    after `sigterm_timeout`), none of which may interrupt a checkpoint being written. SIGKILL
    cannot be caught: launchers give every node a stop timeout long enough for its shutdown.
    Handlers can only be installed from the main thread; elsewhere `install` does nothing."""

    def __init__(self, who: str) -> None:
        self.who = who
        self.requested = False
        self.received: list[str] = []  # signal names, in order
        self._previous: dict[int, object] = {}

    def install(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._on_signal)
        return self

    def restore(self) -> None:
        """Put back the handlers `install` replaced."""
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()

    def _on_signal(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        self.received.append(name)
        if self.requested:
            # os.write: a print here could re-enter a stderr write the signal interrupted
            os.write(2, f"[{self.who}] {name} received while stopping: ignored, "
                        f"the clean stop goes on\n".encode())
        self.requested = True


def _start_errors() -> tuple[type[BaseException], ...]:
    from rclpy.exceptions import NameValidationException

    # configuration (ConfigError, CalibrationError, CheckpointError ... are ValueErrors), files,
    # missing parameters, bad topic names, missing modules
    return (ValueError, OSError, LookupError, ImportError, NameValidationException)


START_ERRORS = _start_errors()


def start_error_line(name: str, e: BaseException) -> str:
    """The one line a node that cannot start prints."""
    if isinstance(e, KeyError):
        why = f"missing parameter {e.args[0]!r}" if e.args else "missing parameter"
    else:
        why = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
    return f"[{name}] cannot start: {why}"


def run_single(node_cls, name: str, args=None) -> None:
    """rclpy.init, build the node (parameters from --ros-args), spin until SIGINT/SIGTERM, then
    stop the executor, destroy the node (the learner checkpoints there) and shut rclpy down, in
    that order. rclpy's own signal handlers are not installed (they would raise
    KeyboardInterrupt into the shutdown on a second Ctrl-C); `StopSignals` handles both signals.
    A signal while the node is being built stops it as soon as it is up.

    A node spins on a SingleThreadedExecutor (the cheapest dispatch in rclpy: at 100+ sensor
    messages per second a thread pool's overhead shows up in the command latency) unless its
    class sets EXECUTOR_THREADS > 1 (the policy: weights decode beside control). Long work (the
    learner's updates, the stand-in's physics) runs in the nodes' own threads anyway.

    A node that cannot start (a bad parameter, a missing file or topic, an autostarted lifecycle
    node that cannot configure: the errors in START_ERRORS) prints one line
    `[<node>] cannot start: <why>` on stderr, with no traceback, and the process exits with code
    1; the launchers then stop the other nodes."""
    import rclpy
    from rclpy.executors import (
        ExternalShutdownException,
        MultiThreadedExecutor,
        SingleThreadedExecutor,
    )
    from rclpy.signals import SignalHandlerOptions

    stop = StopSignals(name).install()
    rclpy.init(args=sys.argv if args is None else args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = node_cls(name)
        if hasattr(node, "autostart"):  # a lifecycle node that configures itself (the stand-in's safety)
            node.autostart()
    except BaseException as e:
        stop.requested = True
        if rclpy.ok():
            rclpy.shutdown()  # destroys the half-built node too
        if isinstance(e, START_ERRORS):
            print(start_error_line(name, e), file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        raise
    ex = None
    try:
        threads = int(getattr(node_cls, "EXECUTOR_THREADS", 1))
        ex = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
        ex.add_node(node)
        while not stop.requested and rclpy.ok():
            ex.spin_once(timeout_sec=POLL_S)
    except ExternalShutdownException:
        pass
    finally:
        stop.requested = True  # from here on a signal is only reported
        if ex is not None:
            ex.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
