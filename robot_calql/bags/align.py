"""Turn one episode's recorded streams into fixed-rate dataset episodes (pure numpy).

An `EpisodeBuffer` holds what the bag said between two episode events: time-stamped images,
joint vectors, commands, end-effector poses and gripper commands. `resample` puts a grid at the
control rate on it and picks, at every tick:

- the observation: the latest image (of every camera) / joint state / pose stamped at or before
  the tick and at most `tolerance` older (causal: what the policy could have seen);
- the action: the command stamped nearest the tick, within `tolerance`, normalised to [-1, 1]
  with the robot's action scale (or, for `from_ee_pose`, the pose change to the next tick).

A tick that misses any stream is a gap: the episode is split there, and the pieces shorter than
`min_steps` are dropped and counted. A success goes to the last piece (reward 1, terminal=True
on its last step) when that piece's last observation is at most `success_lag_s` before the
success event; otherwise it is counted as `successes_dropped` and the piece stays truncated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

NS = 1_000_000_000
ACTION_TYPES = ("delta_ee_twist", "joint_trajectory", "joint_position_array", "from_ee_pose")


@dataclass
class AlignConfig:
    """How to resample and normalise. Times in seconds, scales per control step."""

    control_hz: float
    action_type: str
    n_joints: int
    tolerance_s: float = 0.05
    translation_m: float = 0.02  # normalised 1.0 = this much end-effector motion per step
    rotation_rad: float = 0.15
    joint_step_rad: float = 0.1  # joint actions: normalised 1.0 = this much joint motion per step
    # "command": the gripper command topic; "action": the gripper value inside joint commands
    # (what the safety node sends on joint interfaces); "joint": from the gripper joint's motion
    gripper_source: str = "command"
    gripper_open: float = 0.0  # gripper joint positions, for gripper_source == "joint"
    gripper_closed: float = 1.0
    with_ee: bool = False  # proprio includes end-effector (x, y, z, yaw)
    min_steps: int = 2
    # a success event at most this long after the last complete step's observation ends that
    # step with success (streams often stop a few ticks before the controller's end:success)
    success_lag_s: float = 0.3
    # the extra cameras' observation keys (image_<name>), each a stream of its own beside `image`
    extra_image_keys: tuple[str, ...] = ()

    @property
    def action_dim(self) -> int:
        return 5 if self.action_space == "delta_ee" else self.n_joints + 1

    @property
    def action_space(self) -> str:
        return "delta_ee" if self.action_type in ("delta_ee_twist", "from_ee_pose") else "delta_joint"

    @property
    def proprio_dim(self) -> int:
        return self.n_joints + 1 + (4 if self.with_ee else 0)


@dataclass
class Stream:
    """Time-stamped values of one kind; appended in arrival order, sorted when resampled."""

    stamps: list[int] = field(default_factory=list)
    values: list = field(default_factory=list)

    def add(self, t_ns: int, value) -> None:
        self.stamps.append(int(t_ns))
        self.values.append(value)

    def sorted(self) -> tuple[np.ndarray, list]:
        t = np.asarray(self.stamps, dtype=np.int64)
        if len(t) > 1 and np.any(np.diff(t) < 0):
            order = np.argsort(t, kind="stable")
            return t[order], [self.values[i] for i in order]
        return t, self.values


@dataclass
class EpisodeBuffer:
    """Everything recorded for one episode, on the header-stamp clock (ns)."""

    t_start: int
    instruction: str = ""
    task: str = ""
    t_end: int | None = None
    success: bool = False
    image: Stream = field(default_factory=Stream)
    joints: Stream = field(default_factory=Stream)  # arm joints then gripper, config order
    command: Stream = field(default_factory=Stream)  # raw command vector (see command_vector)
    ee: Stream = field(default_factory=Stream)  # (x, y, z, yaw)
    gripper: Stream = field(default_factory=Stream)  # normalised gripper command, > 0 closes
    cameras: dict[str, Stream] = field(default_factory=dict)  # extra cameras' images by key (image_<name>)
    interventions: list[list[int]] = field(default_factory=list)  # human takeovers [start, end] (end -1: open)

    def stream(self, name: str) -> Stream:
        """A stream by name: image, joints, command, ee, gripper or an extra camera's image_<name>."""
        if name.startswith("image_"):
            return self.cameras.setdefault(name, Stream())
        return getattr(self, name)

    def num_messages(self) -> int:
        return sum(len(s.stamps) for s in (self.image, self.joints, self.command, self.ee, self.gripper,
                                           *self.cameras.values()))


@dataclass
class Piece:
    """One resampled episode, ready for the dataset."""

    image: np.ndarray
    proprio: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    terminal: np.ndarray
    t_start_ns: int
    t_end_ns: int  # stamp of the last observation (the tick after the last step)
    success: bool
    camera_images: dict[str, np.ndarray] = field(default_factory=dict)  # extra cameras, by key


def latest_before(stamps: np.ndarray, ticks: np.ndarray, tol_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Index of the latest stamp <= tick (1 ms slack) and whether it is at most tol_ns old."""
    if len(stamps) == 0:
        return np.zeros(len(ticks), np.int64), np.zeros(len(ticks), bool)
    idx = np.searchsorted(stamps, ticks + 1_000_000, side="right") - 1
    ok = idx >= 0
    idx = np.clip(idx, 0, len(stamps) - 1)
    ok &= (ticks - stamps[idx]) <= tol_ns
    return idx, ok


def nearest(stamps: np.ndarray, ticks: np.ndarray, tol_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Index of the stamp nearest each tick and whether it is within tol_ns."""
    if len(stamps) == 0:
        return np.zeros(len(ticks), np.int64), np.zeros(len(ticks), bool)
    hi = np.clip(np.searchsorted(stamps, ticks), 0, len(stamps) - 1)
    lo = np.clip(hi - 1, 0, len(stamps) - 1)
    pick_lo = np.abs(ticks - stamps[lo]) <= np.abs(stamps[hi] - ticks)
    idx = np.where(pick_lo, lo, hi)
    return idx, np.abs(stamps[idx] - ticks) <= tol_ns


def wrap_angle(a: np.ndarray) -> np.ndarray:
    return (a + math.pi) % (2 * math.pi) - math.pi


def resample(buf: EpisodeBuffer, cfg: AlignConfig, stats: dict[str, int] | None = None) -> list[Piece]:
    """Resample one episode buffer into pieces at the control rate; count what was lost in stats.

    stats keys (incremented): gap_ticks_<stream> for ticks that missed a stream,
    steps_dropped_short for steps in pieces shorter than min_steps, actions_clipped,
    successes_dropped for a success event more than success_lag_s after the last piece's end
    (or with no piece at all).
    """
    stats = stats if stats is not None else {}
    dt = int(round(NS / cfg.control_hz))
    tol = int(round(cfg.tolerance_s * NS))
    t_img, imgs = buf.image.sorted()
    t_js, js = buf.joints.sorted()
    t_ee, ees = buf.ee.sorted()
    t_cmd, cmds = buf.command.sorted()
    t_grip, grips = buf.gripper.sorted()
    t_end = buf.t_end if buf.t_end is not None else max(
        [int(s[-1]) for s in (t_img, t_js, t_cmd, t_ee) if len(s)], default=buf.t_start)

    # the grid: anchored on the first command (or the first pose when actions come from poses)
    anchor = t_ee if cfg.action_type == "from_ee_pose" else t_cmd
    anchor = anchor[anchor >= buf.t_start - tol]
    if len(anchor) == 0:
        return _count_lost_success(buf, stats)
    t0 = int(anchor[0])
    n_ticks = (t_end + tol - t0) // dt + 1
    if n_ticks < 2:
        return _count_lost_success(buf, stats)
    ticks = t0 + dt * np.arange(n_ticks, dtype=np.int64)

    i_img, ok_img = latest_before(t_img, ticks, tol)
    i_js, ok_js = latest_before(t_js, ticks, tol)
    obs_ok = ok_img & ok_js
    stats["gap_ticks_image"] = stats.get("gap_ticks_image", 0) + int((~ok_img).sum())
    cams: dict[str, tuple[np.ndarray, list]] = {}
    for key in cfg.extra_image_keys:
        t_cam, frames = buf.stream(key).sorted()
        i_cam, ok_cam = latest_before(t_cam, ticks, tol)
        obs_ok &= ok_cam
        stats[f"gap_ticks_{key}"] = stats.get(f"gap_ticks_{key}", 0) + int((~ok_cam).sum())
        cams[key] = (i_cam, frames)
    stats["gap_ticks_joint_states"] = stats.get("gap_ticks_joint_states", 0) + int((~ok_js).sum())
    if cfg.with_ee or cfg.action_type == "from_ee_pose":
        i_ee, ok_ee = latest_before(t_ee, ticks, tol)
        obs_ok &= ok_ee
        stats["gap_ticks_ee_pose"] = stats.get("gap_ticks_ee_pose", 0) + int((~ok_ee).sum())

    joints = np.stack([js[i] for i in i_js]).astype(np.float64)  # (N, n_joints + 1)
    ee = np.stack([ees[i] for i in i_ee]).astype(np.float64) if (cfg.with_ee or cfg.action_type == "from_ee_pose") else None

    # actions for ticks 0..N-2 (the last tick is only an observation)
    n = n_ticks - 1
    if cfg.action_type == "from_ee_pose":
        d = ee[1:] - ee[:-1]
        arm = np.concatenate([d[:, :3] / cfg.translation_m, wrap_angle(d[:, 3:4]) / cfg.rotation_rad], axis=1)
        act_ok = np.ones(n, bool)
    else:
        i_cmd, act_ok = nearest(t_cmd, ticks[:-1], tol)
        raw = np.stack([cmds[i] for i in i_cmd]).astype(np.float64)
        if cfg.action_type == "delta_ee_twist":  # (vx, vy, vz, wz) in m/s and rad/s
            step_s = dt / NS
            arm = np.concatenate([raw[:, :3] * step_s / cfg.translation_m, raw[:, 3:4] * step_s / cfg.rotation_rad], axis=1)
        else:  # joint targets -> change from the current joint positions
            arm = (raw[:, : cfg.n_joints] - joints[:-1, : cfg.n_joints]) / cfg.joint_step_rad
        stats["gap_ticks_command"] = stats.get("gap_ticks_command", 0) + int((~act_ok).sum())

    if cfg.gripper_source == "command":
        # gripper commands are often sent only on change: hold the last one sent up to `tolerance`
        # after the tick (it goes with that tick's arm command); open (-1) before any
        ig = np.searchsorted(t_grip, ticks[:-1] + tol, side="right") - 1
        grip = np.array([grips[i] if i >= 0 else -1.0 for i in ig], dtype=np.float64)
    elif cfg.gripper_source == "action":  # last gripper value sent with a joint command (holds omit it)
        g = raw[:, cfg.n_joints]
        last = np.maximum.accumulate(np.where(np.isnan(g), -1, np.arange(len(g))))
        grip = np.where(last >= 0, g[np.maximum(last, 0)], -1.0)
    else:  # where the gripper went by the next tick, open -> -1, closed -> +1
        span = cfg.gripper_closed - cfg.gripper_open
        grip = 2.0 * (joints[1:, cfg.n_joints] - cfg.gripper_open) / span - 1.0
    action = np.concatenate([arm, grip[:, None]], axis=1)
    clipped = np.abs(action) > 1.0 + 1e-6
    stats["actions_clipped"] = stats.get("actions_clipped", 0) + int(clipped.any(axis=1).sum())
    action = np.clip(action, -1.0, 1.0).astype(np.float32)

    proprio = joints if ee is None or not cfg.with_ee else np.concatenate([joints, ee], axis=1)
    step_ok = obs_ok[:-1] & act_ok & obs_ok[1:]

    pieces: list[Piece] = []
    k = 0
    while k < n:
        if not step_ok[k]:
            k += 1
            continue
        a = k
        while k < n and step_ok[k]:
            k += 1
        b = k  # steps a..b-1, observations a..b
        if b - a < cfg.min_steps:
            stats["steps_dropped_short"] = stats.get("steps_dropped_short", 0) + (b - a)
            continue
        pieces.append(Piece(
            image=np.stack([imgs[i] for i in i_img[a : b + 1]]),
            proprio=proprio[a : b + 1].astype(np.float32),
            action=action[a:b],
            reward=np.zeros(b - a, np.float32),
            terminal=np.zeros(b - a, bool),
            t_start_ns=int(ticks[a]),
            t_end_ns=int(ticks[b]),
            success=False,
            camera_images={key: np.stack([frames[i] for i in i_cam[a : b + 1]]) for key, (i_cam, frames) in cams.items()},
        ))
    if buf.success:
        last = pieces[-1] if pieces else None
        if last is not None and t_end - last.t_end_ns <= int(round(cfg.success_lag_s * NS)):
            last.success = True
            last.reward[-1], last.terminal[-1] = 1.0, True
        else:
            _count_lost_success(buf, stats)
    return pieces


def _count_lost_success(buf: EpisodeBuffer, stats: dict[str, int]) -> list[Piece]:
    """Count a success event that no resampled step can carry; returns no pieces."""
    if buf.success:
        stats["successes_dropped"] = stats.get("successes_dropped", 0) + 1
    return []
