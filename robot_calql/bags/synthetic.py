"""Synthetic rosbag2 recordings with a known answer, for tests and benchmarks.

`write_synthetic_bag` records episodes the way a real cell would (camera at 30 Hz, joint states
at 50 Hz, TwistStamped commands at the control rate, instruction + episode events), with values
that are simple functions of time, so an ingested dataset can be checked exactly:

- joint j at time t (s from the bag start): 0.1 * j + 0.01 * t; the gripper joint: 0.5;
- camera frame number f is a uniform image of value (7 * f) % 256 (before encoding);
- the command at control tick k of an episode: linear (0.1, -0.05, 0.02) * (k % 3 - 1) m/s,
  angular z 0.3 rad/s; gripper command +1 after the half of the episode, -1 before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_calql.bags.events import format_event
from robot_calql.bags.messages import BagRecorder

NS = 1_000_000_000
JOINTS = ["waist", "shoulder", "elbow", "wrist_angle", "wrist_rotate"]
GRIPPER = "gripper"


@dataclass
class SyntheticSpec:
    episodes: int = 2
    steps: int = 10  # control steps per episode
    control_hz: float = 10.0
    camera_hz: float = 30.0
    joint_hz: float = 50.0
    image_hw: tuple[int, int] = (48, 64)
    encoding: str = "rgb8"  # rgb8, bgr8, mono8, jpeg, png (compressed) or anything to test rejection
    success: list[bool] = field(default_factory=lambda: [True, False])  # per episode, cycled
    pause_s: float = 0.5  # between episodes
    start_s: float = 100.0  # header clock of the first message
    clock_offset_s: float = 0.0  # receive time minus header stamp (recording latency / clock mismatch)
    camera_gap: tuple[float, float] | None = None  # (from, to) seconds in episode 0: no frames
    backwards_at: float | None = None  # seconds in episode 0: one frame stamped 2 s in the past
    events: bool = True
    # episode -> (first human step, first step after the takeover): intervention start / end events
    # 3 ms after those steps' ticks, as the episode controller publishes them
    interventions: dict[int, tuple[int, int]] = field(default_factory=dict)
    instruction: str = "put the cube in the bowl"
    topics: dict[str, str] = field(default_factory=lambda: {
        "image": "/camera/image_raw", "joint_states": "/joint_states", "action": "/robot_calql/sent_command",
        "gripper_command": "/robot_calql/gripper_command", "instruction": "/robot_calql/instruction",
        "episode_event": "/robot_calql/episode_event"})


def frame_value(frame: int) -> int:
    return (7 * frame) % 256


def joint_values(t_s: float) -> np.ndarray:
    return np.array([0.1 * j + 0.01 * t_s for j in range(len(JOINTS))] + [0.5])


def command(k: int) -> tuple[np.ndarray, float]:
    return np.array([0.1, -0.05, 0.02]) * (k % 3 - 1), 0.3


def write_synthetic_bag(path: str | Path, spec: SyntheticSpec, storage: str = "sqlite3", distro: str = "kilted") -> None:
    """Record `spec` into a new bag at `path` (messages written in receive-time order; only one
    episode is held in memory, so long bags can be written for benchmarks)."""
    with BagRecorder(path, storage=storage, distro=distro) as rec:
        _write(rec, spec)


def _write(rec: BagRecorder, spec: SyntheticSpec) -> None:
    top = spec.topics
    off = int(spec.clock_offset_s * NS)
    f = rec.msgs
    t = spec.start_s
    dt = 1.0 / spec.control_hz
    for e in range(spec.episodes):
        msgs: list[tuple[int, str, object]] = []  # (receive ns, topic, message)
        dur = spec.steps * dt
        t_ns = int(round(t * NS))
        if spec.events:
            msgs.append((t_ns - 1_000_000 + off, top["instruction"], f.string(spec.instruction)))
            # 2 ms late, like a controller's node: after the previous episode's end event (+1 ms)
            msgs.append((t_ns + 2_000_000 + off, top["episode_event"], f.string(format_event("start"))))
        else:
            msgs.append((t_ns + off, top["instruction"], f.string(spec.instruction)))
        # camera
        n_frames = int(round(dur * spec.camera_hz)) + 1
        for i in range(n_frames):
            ts = t + i / spec.camera_hz
            rel = ts - t
            if e == 0 and spec.camera_gap and spec.camera_gap[0] <= rel < spec.camera_gap[1]:
                continue
            frame = int(round((ts - spec.start_s) * spec.camera_hz))
            stamp = int(round(ts * NS))
            if e == 0 and spec.backwards_at is not None and abs(rel - spec.backwards_at) < 0.5 / spec.camera_hz:
                stamp -= 2 * NS
            # built when written, so only one full-size frame is in memory at a time
            msgs.append((int(round(ts * NS)) + off, top["image"], (_frame_msg, f, spec, stamp, frame)))
        for i in range(int(round(dur * spec.joint_hz)) + 1):
            ts = t + i / spec.joint_hz
            stamp = int(round(ts * NS))
            msgs.append((stamp + off, top["joint_states"],
                         f.joint_state(stamp, [*JOINTS, GRIPPER], joint_values(ts - spec.start_s))))
        for k in range(spec.steps):
            ts = t + k * dt
            stamp = int(round(ts * NS))
            lin, wz = command(k)
            msgs.append((stamp + 2_000_000 + off, top["action"], f.twist(stamp, lin, np.array([0, 0, wz]))))
            msgs.append((stamp + 2_000_000 + off, top["gripper_command"],
                         f.float64(1.0 if k >= spec.steps // 2 else -1.0)))
        if spec.events and e in spec.interventions:
            for k, what in zip(spec.interventions[e], ("start", "end"), strict=True):
                msgs.append((int(round((t + k * dt) * NS)) + 3_000_000 + off, top["episode_event"],
                             f.string(format_event("intervention", what))))
        t_end = int(round((t + dur) * NS))
        if spec.events:
            ok = spec.success[e % len(spec.success)]
            msgs.append((t_end + 1_000_000 + off, top["episode_event"],
                         f.string(format_event("end", "success" if ok else "timeout"))))
        t += dur + spec.pause_s
        msgs.sort(key=lambda x: x[0])
        for t_ns, topic, m in msgs:
            rec.write(topic, m[0](*m[1:]) if isinstance(m, tuple) else m, t_ns)


def _frame_msg(f, spec: SyntheticSpec, stamp: int, frame: int):
    rgb = np.full((*spec.image_hw, 3), frame_value(frame), np.uint8)
    if spec.encoding in ("jpeg", "png"):
        return f.compressed_image(stamp, rgb, spec.encoding)
    return f.image(stamp, rgb, spec.encoding)
