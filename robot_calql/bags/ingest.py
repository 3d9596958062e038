"""`robot-calql ingest bags=<path or glob> robot=<config> out=<dir>`: rosbag2 files to a dataset.

Reads sqlite3 and mcap bags through rosbags (no ROS needed), one message at a time in the order
they were recorded, and keeps only the episode being assembled in memory (images already cropped
and resized to the policy size). Which topic holds what comes from the robot config's
`bag_topics`; episodes are cut on the events of robot_calql/bags/events.py (or on gaps when a bag
has none) and resampled to the control rate by robot_calql/bags/align.py.

Cameras: `bag_topics.image` is the main camera (dataset key `image`); the robot's other cameras
(robot_calql.control.cameras.camera_specs: the robot config's `cameras` after the first) are
read from `bag_topics.cameras.<name>` or else their live topic, and stored as `image_<name>`.
Every frame, raw sensor_msgs/Image or CompressedImage (jpeg, png), goes through the live nodes'
decoder and crop-and-resize (robot_calql.control.cameras.camera_image) with its camera's crop.

Nothing half-written: the dataset is built in a hidden folder beside `out` and renamed into place
only when every bag went through (see docs/bags.md). A bag whose storage is damaged (cut short,
corrupt) gives the episodes completed before the damage, with a warning saying what was lost
(robot_calql/bags/salvage.py reads what rosbags cannot open). A per-bag, per-topic report is
printed and saved as `<out>/ingest_report.json`.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import statistics
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from robot_calql.bags import events
from robot_calql.bags import messages as M
from robot_calql.bags.align import ACTION_TYPES, NS, AlignConfig, EpisodeBuffer, resample
from robot_calql.bags.salvage import SalvageError, SalvageReader
from robot_calql.calibration import CalibrationError
from robot_calql.calibration.crop import Crop, crop_label, crop_setting
from robot_calql.config import ConfigError, resolve_path
from robot_calql.control.cameras import camera_image, camera_specs
from robot_calql.data.dataset import (
    DatasetMeta,
    DatasetWriter,
    Episode,
    is_image_key,
    replace_folder,
)

log = logging.getLogger("robot_calql.bags.ingest")

# role -> accepted message types
ROLE_TYPES: dict[str, tuple[str, ...]] = {
    "image": (M.IMAGE, M.COMPRESSED_IMAGE),
    "joint_states": (M.JOINT_STATE,),
    "ee_pose": (M.POSE_STAMPED,),
    "gripper_command": (M.FLOAT64, M.FLOAT64_ARRAY),
    "instruction": (M.STRING,),
    "episode_event": (M.STRING,),
    "success": (M.BOOL, M.STRING),
}
ACTION_MSG = {
    "delta_ee_twist": (M.TWIST_STAMPED,),
    "joint_trajectory": (M.JOINT_TRAJECTORY,),
    "joint_position_array": (M.FLOAT64_ARRAY,),
}
MAX_WARNINGS_PER_KIND = 3


class BagError(ValueError):
    """A bag that cannot be ingested: the message names the bag, the topic and the time."""


# --------------------------------------------------------------------------- configuration


@dataclass
class IngestSettings:
    """The parts of the ingest + robot config that the streaming loop needs."""

    topics: dict[str, str | None]
    align: AlignConfig
    joints: list[str]
    gripper_joint: str
    image_size: int
    crop: Crop   # a region, "center" or None (the whole frame): calibration.crop.crop_and_resize
    distro: str
    max_episode_s: float
    settle_s: float
    default_instruction: str
    task: str
    source: str
    robot: str
    # the extra cameras: name -> crop (their topics are topics[f"image_{name}"])
    extra_cameras: dict[str, Crop] = field(default_factory=dict)

    def crop_of(self, role: str) -> Crop:
        """The crop of a camera role: image (the main camera) or image_<name>."""
        return self.crop if role == "image" else self.extra_cameras[role[len("image_"):]]


def settings_from(cfg: DictConfig) -> IngestSettings:
    robot = cfg.robot
    bt = robot.get("bag_topics")
    if bt is None:
        raise ConfigError(f"robot config '{robot.get('name')}' has no bag_topics section (see docs/bags.md)")
    action_type = str(bt.get("action_type", "delta_ee_twist"))
    if action_type not in ACTION_TYPES:
        raise ConfigError(f"bag_topics.action_type={action_type}: one of {ACTION_TYPES}")
    topics = {k: (str(bt[k]) if bt.get(k) else None) for k in
              ("image", "joint_states", "action", "ee_pose", "gripper_command", "instruction", "episode_event", "success")}
    crop_mode = str(cfg.crop)
    main_crop = crop_setting(crop_mode, cfg.robot)
    bag_cams = bt.get("cameras") or {}
    extra: dict[str, Crop] = {}
    for spec in camera_specs(robot)[1:]:  # auto: each camera's own crop; center / none: every camera
        topic = bag_cams.get(spec.name) or spec.topic
        topics[spec.key] = str(topic)
        extra[spec.name] = spec.crop if crop_mode == "auto" else main_crop
    unknown = sorted(set(bag_cams) - set(extra))
    if unknown:
        raise ConfigError(f"bag_topics.cameras names {unknown}, which are not among the robot's extra cameras "
                          f"{sorted(extra)} (robot.cameras after the first)")
    if action_type == "from_ee_pose" and not topics["ee_pose"]:
        raise ConfigError("bag_topics.action_type=from_ee_pose needs bag_topics.ee_pose (a PoseStamped topic)")
    if action_type != "from_ee_pose" and not topics["action"]:
        raise ConfigError(f"bag_topics.action_type={action_type} needs bag_topics.action")
    for k in ("image", "joint_states"):
        if not topics[k]:
            raise ConfigError(f"bag_topics.{k} must name a topic")
    gripper_source = "command" if topics["gripper_command"] else "joint"
    if gripper_source == "joint" and bt.get("gripper_in_command"):
        if action_type not in ("joint_trajectory", "joint_position_array"):
            raise ConfigError("bag_topics.gripper_in_command needs a joint action_type (joint_trajectory, "
                              "joint_position_array)")
        gripper_source = "action"
    g_open, g_closed = bt.get("gripper_open"), bt.get("gripper_closed")
    if (g_open is None or g_closed is None) and robot.get("gripper_range") is not None:
        g_closed, g_open = (float(v) for v in robot.gripper_range)  # [closed, open]
    if gripper_source == "joint" and (g_open is None or g_closed is None):
        raise ConfigError("bag_topics needs gripper_command, or gripper_open and gripper_closed (or the robot's "
                          "gripper_range) to derive the gripper action from the gripper joint")
    if gripper_source == "joint" and float(g_open) == float(g_closed):
        raise ConfigError("bag_topics: the gripper's open and closed positions must differ")
    scale = robot.get("action_scale", {})
    align = AlignConfig(
        control_hz=float(robot.control_hz),
        action_type=action_type,
        n_joints=len(robot.joints),
        tolerance_s=float(cfg.tolerance_s),
        translation_m=float(scale.get("translation_m", 0.02)),
        rotation_rad=float(scale.get("rotation_rad", 0.15)),
        joint_step_rad=float(bt.get("joint_step_rad", 0.1)),
        gripper_source=gripper_source,
        gripper_open=float(g_open if g_open is not None else 1.0),
        gripper_closed=float(g_closed if g_closed is not None else 0.0),
        with_ee=bool(topics["ee_pose"]),
        min_steps=int(cfg.min_episode_steps),
        success_lag_s=float(cfg.success_lag_s),
        extra_image_keys=tuple(f"image_{n}" for n in extra),
    )
    if align.tolerance_s <= 0 or align.tolerance_s > 1.0 / align.control_hz:
        raise ConfigError(f"tolerance_s={align.tolerance_s}: must be in (0, one control period {1 / align.control_hz:.3f}]")
    if align.success_lag_s < 1.0 / align.control_hz:
        raise ConfigError(f"success_lag_s={align.success_lag_s}: must be at least one control period "
                          f"({1 / align.control_hz:.3f} s)")
    return IngestSettings(
        topics=topics, align=align, joints=[str(j) for j in robot.joints], gripper_joint=str(robot.gripper_joint),
        image_size=int(cfg.image_size), crop=main_crop, distro=str(cfg.ros_distro),
        max_episode_s=float(cfg.max_episode_s), settle_s=float(cfg.settle_s),
        default_instruction=str(cfg.instruction or ""), task=str(cfg.task or ""), source=str(cfg.source),
        robot=str(robot.name), extra_cameras=extra,
    )


def find_bags(spec: str) -> list[Path]:
    """Bags named by a path or glob: rosbag2 folders (with metadata.yaml), .mcap or .db3 files;
    a folder of bags gives every bag directly inside it."""
    paths = sorted(glob.glob(os.path.expanduser(spec))) or ([spec] if Path(spec).exists() else [])
    bags: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir() and (p / "metadata.yaml").is_file():
            bags.append(p)
        elif p.is_dir():
            bags += sorted(c for c in p.iterdir() if c.is_dir() and (c / "metadata.yaml").is_file())
            bags += sorted(c for c in p.iterdir() if c.suffix in (".mcap", ".db3"))
        elif p.suffix in (".mcap", ".db3") and not (p.parent / "metadata.yaml").is_file():
            bags.append(p)
    return list(dict.fromkeys(bags))


# --------------------------------------------------------------------------- per-bag report


@dataclass
class BagReport:
    bag: str
    messages: Counter = field(default_factory=Counter)  # topic -> messages read
    dropped: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # topic -> why -> n
    out_of_order: Counter = field(default_factory=Counter)
    episodes: int = 0
    steps: int = 0
    successes: int = 0
    resample: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    clock_offset_s: float = 0.0
    error: str | None = None
    # storage damaged before its end: what was read, where it stopped, what was lost (None: intact)
    damaged: dict[str, Any] | None = None
    _warned: Counter = field(default_factory=Counter)

    def warn(self, kind: str, text: str) -> None:
        self._warned[kind] += 1
        if self._warned[kind] <= MAX_WARNINGS_PER_KIND:
            msg = f"{self.bag}: {text}"
            self.warnings.append(msg)
            log.warning(msg)
        elif self._warned[kind] == MAX_WARNINGS_PER_KIND + 1:
            log.warning(f"{self.bag}: more '{kind}' warnings; counted in the summary")

    def to_json(self) -> dict[str, Any]:
        return {
            "bag": self.bag, "episodes": self.episodes, "steps": self.steps, "successes": self.successes,
            "messages": dict(self.messages), "dropped": {t: {k: n for k, n in c.items() if n} for t, c in self.dropped.items()},
            "out_of_order": dict(self.out_of_order), "resample": dict(self.resample),
            "clock_offset_s": self.clock_offset_s, "warnings": self.warnings, "error": self.error,
            "damaged": self.damaged,
        }


# --------------------------------------------------------------------------- one bag


def _t(ns: int) -> str:
    return f"t={ns / NS:.3f}s"


class BagIngestor:
    """Stream one bag into episodes; `emit(piece, buf)` receives each finished episode piece."""

    def __init__(self, bag: Path, s: IngestSettings, emit, progress: bool = True):
        self.bag, self.s, self.emit, self.progress = bag, s, emit, progress
        self.report = BagReport(str(bag))
        self.open: EpisodeBuffer | None = None
        self.closing: list[EpisodeBuffer] = []
        self.instruction: str = s.default_instruction
        self.last_stamp: dict[str, int] = {}
        self.joint_index: dict[tuple[str, ...], np.ndarray] = {}
        self.has_events = False
        self.tol = int(s.align.tolerance_s * NS)
        # (topic, stream, stamp, value, counted as dropped); maxlen bounds it even if stamps are wild
        self.recent: deque = deque(maxlen=1024)

    # ---- episode bookkeeping
    def _start(self, t: int, task: str = "") -> None:
        if self.open is not None:
            self.report.warn("start_without_end", f"{self.s.topics['episode_event']}: 'start' at {_t(t)} while an "
                             f"episode (from {_t(self.open.t_start)}) was open; closed it as truncated")
            self._close(t, success=False)
        self.open = EpisodeBuffer(t_start=t, instruction=self.instruction, task=task or self.s.task)
        # messages stamped at or just before the start that arrived before the event belong to it
        for topic, stream, ts, value, dropped in self.recent:
            if ts >= t - self.tol:
                self.open.stream(stream).add(ts, value)
                if dropped:
                    self.report.dropped[topic]["outside an episode"] -= 1
        self.recent.clear()

    def _remember(self, topic: str, stream: str, t: int, value: Any, dropped: bool) -> None:
        """Keep the last tolerance + settle_s of decoded messages for a start event that comes late."""
        self.recent.append((topic, stream, t, value, dropped))
        horizon = t - self.tol - int(self.s.settle_s * NS)
        while self.recent and self.recent[0][2] < horizon:
            self.recent.popleft()

    def _close(self, t: int, success: bool) -> None:
        if self.open is None:
            return
        self.open.t_end, self.open.success = t, success
        self.closing.append(self.open)
        self.open = None

    def _finish_ready(self, now: int, force: bool = False) -> None:
        keep = []
        for buf in self.closing:
            if force or now > buf.t_end + int(self.s.settle_s * NS):
                self._finish(buf)
            else:
                keep.append(buf)
        self.closing = keep

    def _finish(self, buf: EpisodeBuffer) -> None:
        if not buf.instruction:
            raise BagError(f"{self.bag}: the episode from {_t(buf.t_start)} has no instruction (no message on "
                           f"{self.s.topics['instruction']} before it); pass instruction=<text>")
        pieces = resample(buf, self.s.align, self.report.resample)
        if not pieces and buf.num_messages():
            self.report.resample["episodes_without_steps"] = self.report.resample.get("episodes_without_steps", 0) + 1
        if buf.success and not any(p.success for p in pieces):
            end = f"its last complete step ends at {_t(pieces[-1].t_end_ns)}" if pieces else "it has no complete step"
            self.report.warn("success_dropped", f"episode from {_t(buf.t_start)}: success event at {_t(buf.t_end)} "
                             f"but {end} (streams missing before the event, see the gap_ticks counts; "
                             f"success_lag_s={self.s.align.success_lag_s}): kept as truncated, not a success")
        for i, piece in enumerate(pieces):
            if i > 0:
                self.report.resample["gap_splits"] = self.report.resample.get("gap_splits", 0) + 1
            self.emit(piece, buf, self.report)
            self.report.episodes += 1
            self.report.steps += len(piece.action)
            self.report.successes += int(piece.success)

    def _targets(self, topic: str, t: int) -> list[EpisodeBuffer]:
        """The episodes a message stamped t belongs to. A message at a boundary (the last frame
        of one episode is the first of the next, reset-free) goes to both."""
        out = [buf for buf in self.closing if buf.t_start - self.tol <= t <= buf.t_end + self.tol]
        if self.open is None and not self.has_events:  # no events: one long episode, split on gaps
            self.open = EpisodeBuffer(t_start=t, instruction=self.instruction, task=self.s.task)
        if self.open is not None and t >= self.open.t_start - self.tol:
            limit = self.open.t_start + int(self.s.max_episode_s * NS)
            if t > limit:
                self.report.warn("max_episode", f"episode from {_t(self.open.t_start)} longer than "
                                 f"max_episode_s={self.s.max_episode_s}; split at {_t(limit)}")
                self._close(limit, success=False)
                self.open = EpisodeBuffer(t_start=limit, instruction=self.instruction, task=self.s.task)
                return self._targets(topic, t)
            out.append(self.open)
        if not out:
            self.report.dropped[topic]["outside an episode"] += 1
        return out

    def _stamped(self, topic: str, t: int) -> None:
        last = self.last_stamp.get(topic)
        if last is not None and t < last:
            self.report.out_of_order[topic] += 1
            self.report.warn(f"backwards:{topic}", f"{topic}: header stamp jumps backwards by "
                             f"{(last - t) / NS:.3f}s at {_t(t)} (after {_t(last)})")
        self.last_stamp[topic] = max(t, last or t)

    def _joints(self, msg: Any, topic: str) -> np.ndarray:
        names = tuple(msg.name)
        idx = self.joint_index.get(names)
        if idx is None:
            want = [*self.s.joints, self.s.gripper_joint]
            missing = [j for j in want if j not in names]
            if missing:
                raise BagError(f"{self.bag}: {topic}: joint states lack {missing} (have {list(names)}); "
                               "check the robot config's joints / gripper_joint")
            idx = np.array([names.index(j) for j in want])
            self.joint_index[names] = idx
        return np.asarray(msg.position, dtype=np.float64)[idx]

    def _command(self, msg: Any, msgtype: str, topic: str, t: int) -> np.ndarray:
        if msgtype == M.TWIST_STAMPED:
            v, w = msg.twist.linear, msg.twist.angular
            return np.array([v.x, v.y, v.z, w.z])
        n = len(self.s.joints)
        if msgtype == M.JOINT_TRAJECTORY:
            if not msg.points:
                raise BagError(f"{self.bag}: {topic}: JointTrajectory without points at {_t(t)}")
            names = list(msg.joint_names)
            missing = [j for j in self.s.joints if j not in names]
            if missing:
                raise BagError(f"{self.bag}: {topic}: trajectory lacks joints {missing} at {_t(t)}")
            pos = np.asarray(msg.points[0].positions, dtype=np.float64)
            grip = pos[names.index(self.s.gripper_joint)] if self.s.gripper_joint in names else np.nan
            return np.append(pos[[names.index(j) for j in self.s.joints]], grip)
        data = np.asarray(msg.data, dtype=np.float64)  # Float64MultiArray: arm joint targets [+ gripper]
        if data.size < n:
            raise BagError(f"{self.bag}: {topic}: Float64MultiArray with {data.size} values at {_t(t)}, "
                           f"the robot has {n} joints")
        return np.append(data[:n], data[n] if data.size > n else np.nan)

    # ---- the streaming loop
    def run(self) -> BagReport:
        from rosbags.highlevel import AnyReader

        s = self.s
        try:
            reader = AnyReader([self.bag], default_typestore=M.typestore_for(s.distro))
            reader.open()
        except Exception as e:  # rosbags raises many types for unreadable storage
            # a bag cut short (no mcap footer, sqlite pages missing): read what comes before the damage
            reader = SalvageReader(self.bag, M.typestore_for(s.distro))
            try:
                reader.open()
            except (SalvageError, OSError) as e2:
                raise BagError(f"{self.bag}: cannot open as a rosbag2 (corrupt, truncated or not a bag): {e}"
                               f" (salvage: {e2})") from None
            if reader.damage is None:  # storage readable to its end: only rosbags' open failed
                log.warning(f"{self.bag}: rosbags cannot open it ({e}); read its storage directly, to its end")
        try:
            return self._run(reader)
        finally:
            try:
                reader.close()
            except Exception:  # noqa: BLE001 - closing a broken bag must not hide the real error
                pass

    def _select(self, reader) -> dict[str, tuple[str, Any]]:
        """topic -> (role, connection); checks types and required topics."""
        s = self.s
        by_topic: dict[str, list] = defaultdict(list)
        for c in reader.connections:
            by_topic[c.topic].append(c)
        roles = {role: topic for role, topic in s.topics.items() if topic}
        required = ["image", *s.align.extra_image_keys, "joint_states"] + (
            ["action"] if s.align.action_type != "from_ee_pose" else ["ee_pose"])
        if s.align.with_ee:
            required.append("ee_pose")
        for role in required:
            if roles.get(role) not in by_topic:
                raise BagError(f"{self.bag}: required topic {roles.get(role)} ({role}) is not in the bag; "
                               f"it has {sorted(by_topic) or 'no topics'}")
        chosen: dict[str, tuple[str, list]] = {}
        for role, topic in roles.items():
            if topic not in by_topic:
                if role == "episode_event":
                    self.report.warn("no_events", f"no episode events ({topic} not in the bag): "
                                     "episodes are cut on gaps and max_episode_s only")
                elif role == "instruction" and not s.default_instruction:
                    self.report.warn("no_instruction", f"no instruction topic {topic} in the bag")
                continue
            if role == "action" and s.align.action_type == "from_ee_pose":
                continue
            accepted = ACTION_MSG[s.align.action_type] if role == "action" else \
                ROLE_TYPES["image" if is_image_key(role) else role]
            for c in by_topic[topic]:
                if c.msgtype not in accepted:
                    raise BagError(f"{self.bag}: topic {topic} ({role}) has type {c.msgtype}, expected "
                                   f"{' or '.join(accepted)}")
            chosen[topic] = (role, by_topic[topic])
        self.has_events = s.topics["episode_event"] in chosen
        return chosen

    def _clock_offset(self, reader, chosen) -> int:
        """Median (receive time - header stamp) over the first joint states: moves unstamped
        messages (events, instruction, arrays) onto the header-stamp clock."""
        conns = chosen[self.s.topics["joint_states"]][1]
        diffs = []
        for conn, t_log, raw in reader.messages(connections=conns):
            try:
                diffs.append(t_log - M.stamp_ns(reader.deserialize(raw, conn.msgtype)))
            except Exception:  # noqa: BLE001 - an undecodable message is counted in the main pass
                continue
            if len(diffs) >= 50:
                break
        return int(statistics.median(diffs)) if diffs else 0

    def _run(self, reader) -> BagReport:
        from tqdm import tqdm

        rep = self.report
        chosen = self._select(reader)
        conns = [c for _, cs in chosen.values() for c in cs]
        total = sum(c.msgcount for c in conns)
        damage = getattr(reader, "damage", None)  # SalvageReader: where the storage is cut
        if total == 0:
            rep.warn("empty", "empty bag (no messages on the mapped topics)")
            if damage is not None:
                self._report_damage(damage.reason, None, None, damage)
            return rep
        offset = self._clock_offset(reader, chosen)
        rep.clock_offset_s = offset / NS
        bar = tqdm(total=total, desc=self.bag.name, unit="msg", disable=not self.progress, leave=False)
        t_log = 0
        topic = "?"
        stop_reason = damage.reason if damage is not None else None
        messages = reader.messages(connections=conns)
        try:
            while True:
                try:
                    conn, t_log, raw = next(messages)
                except StopIteration:
                    break
                except Exception as e:  # noqa: BLE001 - storage errors from the sqlite/mcap readers
                    stop_reason = f"{type(e).__name__}: {e}"
                    damage = None  # found by rosbags while reading: no byte offset known
                    break
                bar.update()
                topic = conn.topic
                role = chosen[topic][0]
                rep.messages[topic] += 1
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                except Exception as e:  # noqa: BLE001 - corrupt payload: counted, not fatal
                    rep.dropped[topic]["undecodable message"] += 1
                    rep.warn(f"decode:{topic}", f"{topic}: undecodable message at receive {_t(t_log)}: {e}")
                    continue
                now = t_log - offset  # receive time on the header-stamp clock
                self._handle(role, topic, conn.msgtype, msg, now)
                self._finish_ready(now)
        finally:
            bar.close()
        in_progress = None
        if stop_reason is not None and self.has_events and self.open is not None:
            in_progress, self.open = self.open.t_start, None  # its end is lost with the damage
        if self.open is not None:
            self._close(max(self.last_stamp.values(), default=self.open.t_start), success=False)
        self._finish_ready(0, force=True)
        if stop_reason is not None:
            self._report_damage(stop_reason, (topic, t_log) if rep.messages else None, in_progress, damage)
        return rep

    def _report_damage(self, reason: str, last: tuple[str, int] | None, in_progress: int | None, damage) -> None:
        """Record and warn what a damaged bag gave and what was lost."""
        rep = self.report
        n = sum(rep.messages.values())
        where = ""
        if damage is not None and damage.offset is not None and damage.size:
            where = f" (the first {damage.offset} of {damage.size} bytes, {100 * damage.offset / damage.size:.0f}%)"
        rep.damaged = {
            "reason": reason, "messages_read": n,
            "last_topic": last[0] if last else None, "last_receive_s": last[1] / NS if last else None,
            "bytes_readable": damage.offset if damage is not None else None,
            "bytes_total": damage.size if damage is not None else None,
            "episode_in_progress_from_s": None if in_progress is None else in_progress / NS,
        }
        text = (f"damaged storage, the rest of the bag is unreadable ({reason}): read {n} messages{where}"
                + (f", the last on {last[0]} at receive {_t(last[1])}" if last else "")
                + f"; kept the {rep.episodes} episodes ({rep.successes} successes) completed before the damage")
        if in_progress is not None:
            text += f"; lost the episode in progress from {_t(in_progress)}"
        rep.warn("damaged", text)

    def _handle(self, role: str, topic: str, msgtype: str, msg: Any, now: int) -> None:
        s, rep = self.s, self.report
        if role == "episode_event":
            kind, detail = events.parse_event(str(msg.data))
            if kind is None:
                rep.dropped[topic][f"unknown event '{str(msg.data)[:40]}'"] += 1
            elif kind == events.START:
                self._start(now, detail)
            elif kind == events.HELP:
                rep.dropped[topic]["help request (no effect)"] += 1
            elif self.open is None:
                rep.dropped[topic][f"'{kind}' with no episode open"] += 1
            elif kind == events.ABORT:
                rep.dropped[topic]["abort (episode discarded)"] += 1
                self.open = None
            elif kind == events.INTERVENTION:
                spans = self.open.interventions
                if detail == "start" and not (spans and spans[-1][1] < 0):
                    spans.append([now, -1])
                elif detail == "end" and spans and spans[-1][1] < 0:
                    spans[-1][1] = now
            else:
                self._close(now, success=kind == events.SUCCESS)
            return
        if role == "success":
            flag = bool(msg.data) if msgtype == M.BOOL else str(msg.data).strip().lower() in ("success", "true", "1")
            if flag and self.open is not None:
                self._close(now, success=True)
            return
        if role == "instruction":
            self.instruction = str(msg.data)
            # an instruction published just after its start event (within settle_s) still names
            # that episode, whatever order the controller's node published them in
            if self.open is not None and (not self.open.instruction or now - self.open.t_start <= s.settle_s * NS):
                self.open.instruction = self.instruction
            return
        # data streams
        if role == "gripper_command":
            value = float(msg.data) if msgtype == M.FLOAT64 else float(np.asarray(msg.data)[0])
            bufs = self._targets(topic, now)
            for buf in bufs:
                buf.gripper.add(now, value)
            self._remember(topic, "gripper", now, value, not bufs)
            return
        if role == "action" and msgtype == M.FLOAT64_ARRAY:
            t = now  # unstamped
        else:
            t = M.stamp_ns(msg)
            self._stamped(topic, t)
        bufs = self._targets(topic, t)
        if is_image_key(role):  # a camera: the live nodes' decoder and crop-and-resize
            try:
                value = camera_image(msg, s.crop_of(role), s.image_size)
            except (M.UnsupportedEncoding, CalibrationError) as e:
                raise BagError(f"{self.bag}: {topic} at {_t(t)}: {e}") from None
        elif role == "joint_states":
            value = self._joints(msg, topic)
        elif role == "ee_pose":
            value = M.pose_xyz_yaw(msg)
        else:
            value = self._command(msg, msgtype, topic, t)
        stream = role if is_image_key(role) else {"joint_states": "joints", "ee_pose": "ee", "action": "command"}[role]
        for buf in bufs:
            buf.stream(stream).add(t, value)
        if self.has_events:
            self._remember(topic, stream, t, value, not bufs)


# --------------------------------------------------------------------------- the command


def intervention_flags(spans: list[list[int]], t_start_ns: int, n_steps: int, control_hz: float,
                       tol_ns: int) -> np.ndarray | None:
    """Per step of a piece (tick t_start_ns + i / control_hz): whether it lies in a human takeover
    [start, end) of `spans` (ns; end -1: to the episode's end). The controller announces a
    takeover just after the first human command's tick, so both ends are moved `tol_ns` earlier.
    None when there is no takeover (no intervention.npy is written)."""
    if not spans:
        return None
    ticks = t_start_ns + np.round(np.arange(n_steps) * (NS / control_hz)).astype(np.int64)
    human = np.zeros(n_steps, dtype=np.bool_)
    for start, end in spans:
        human |= (ticks >= start - tol_ns) & ((end < 0) | (ticks < end - tol_ns))
    return human


def print_summary(reports: list[BagReport]) -> None:
    lines = ["", "ingest summary"]
    for r in reports:
        status = f"ERROR {r.error}" if r.error else f"{r.episodes} episodes, {r.steps} steps, {r.successes} successes"
        lines.append(f"  {r.bag}: {status} (clock offset {r.clock_offset_s * 1000:.1f} ms)")
        if r.damaged:
            d = r.damaged
            last = f", last {d['last_topic']} at receive t={d['last_receive_s']:.3f}s" if d["last_topic"] else ""
            lost = (f"; lost the episode in progress from t={d['episode_in_progress_from_s']:.3f}s"
                    if d["episode_in_progress_from_s"] is not None else "")
            part = (f" ({100 * d['bytes_readable'] / d['bytes_total']:.0f}% of the file)"
                    if d["bytes_readable"] is not None and d["bytes_total"] else "")
            lines.append(f"    DAMAGED: read {d['messages_read']} messages{part}{last}; the rest is unreadable "
                         f"({d['reason']}){lost}")
        for topic in sorted(set(r.messages) | set(r.dropped) | set(r.out_of_order)):
            drops = ", ".join(f"{n} {why}" for why, n in sorted(r.dropped.get(topic, {}).items()) if n)
            ooo = f", {r.out_of_order[topic]} stamps backwards" if r.out_of_order.get(topic) else ""
            lines.append(f"    {topic:<36} {r.messages.get(topic, 0):>7} msgs{ooo}{'; dropped: ' + drops if drops else ''}")
        lost = {k: v for k, v in r.resample.items() if v}
        if lost:
            lines.append("    resampling: " + ", ".join(f"{k}={v}" for k, v in sorted(lost.items())))
    print("\n".join(lines))


def ingest(bag_paths: list[Path], s: IngestSettings, out: Path, overwrite: bool = False,
           on_error: str = "fail", progress: bool = True) -> list[BagReport]:
    """Ingest bags into a new dataset at `out`; all or nothing unless on_error='skip'."""
    if on_error not in ("fail", "skip"):
        raise ConfigError(f"on_error={on_error}: fail or skip")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=true to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.ingest-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    a = s.align
    meta = DatasetMeta(
        control_hz=a.control_hz, action_dim=a.action_dim, proprio_dim=a.proprio_dim, state_dim=None,
        image_shape=(s.image_size, s.image_size, 3), robot=s.robot, camera=s.topics["image"] or "unknown",
        action_space=a.action_space, extra_cameras=list(s.extra_cameras),
        extra={"ingest": {"bags": [str(b) for b in bag_paths], "action_type": a.action_type,
                          "crop": crop_label(s.crop), "ros_distro": s.distro,
                          **({"cameras": {n: {"topic": s.topics[f"image_{n}"], "crop": crop_label(c)}
                                          for n, c in s.extra_cameras.items()}} if s.extra_cameras else {})}},
    )
    reports: list[BagReport] = []
    try:
        writer = DatasetWriter(tmp, meta)

        def emit(piece, buf: EpisodeBuffer, rep: BagReport) -> None:
            writer.write_episode(Episode(
                image=piece.image, proprio=piece.proprio, action=piece.action, reward=piece.reward,
                terminal=piece.terminal, instruction=buf.instruction, task=buf.task, success=piece.success,
                camera_images=piece.camera_images,
                source=s.source, extra={"bag": rep.bag, "t_start_s": piece.t_start_ns / NS},
                intervention=intervention_flags(buf.interventions, piece.t_start_ns, len(piece.action), a.control_hz,
                                                int(a.tolerance_s * NS)),
            ))

        for bag in bag_paths:
            ing = BagIngestor(bag, s, emit, progress=progress)
            try:
                reports.append(ing.run())
            except BagError as e:
                ing.report.error = str(e)
                reports.append(ing.report)
                if on_error == "fail":
                    raise
                log.error(f"skipping the rest of {bag}: {e}")
        if sum(r.episodes for r in reports) == 0:
            raise BagError(f"no episodes in {len(bag_paths)} bag(s): "
                           + "; ".join(f"{r.bag}: {r.error or ', '.join(r.warnings) or 'nothing usable'}" for r in reports))
        (tmp / "ingest_report.json").write_text(json.dumps([r.to_json() for r in reports], indent=2) + "\n")
        replace_folder(tmp, out)  # overwrite: swap only now that the new dataset is complete
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        print_summary(reports)
    return reports


def main(cfg: DictConfig) -> int:
    if OmegaConf.is_missing(cfg, "bags") or not cfg.bags:
        raise ConfigError("name the bags: robot-calql ingest bags=<path or glob> out=<dir>")
    if OmegaConf.is_missing(cfg, "out") or not cfg.out:
        raise ConfigError("name the output dataset folder: out=<dir>")
    s = settings_from(cfg)
    bags = find_bags(str(cfg.bags))
    if not bags:
        raise FileNotFoundError(f"bags={cfg.bags}: no rosbag2 folder, .mcap or .db3 file there")
    out = resolve_path(cfg.out)
    t0 = time.time()
    reports = ingest(bags, s, out, overwrite=bool(cfg.overwrite), on_error=str(cfg.on_error),
                     progress=bool(cfg.progress))
    n = sum(r.episodes for r in reports)
    print(f"wrote {n} episodes ({sum(r.steps for r in reports)} steps) from {len(bags)} bag(s) to {out} "
          f"in {time.time() - t0:.1f}s")
    return 0
