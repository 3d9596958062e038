"""`robot-calql sim-to-bag task=<name> episodes=<N> out=<dir> storage=sqlite3|mcap`.

Records scripted stand-in episodes (robot_calql.sim.collect.iter_episodes, same seeds as
`robot-calql collect`) as a real rosbag2, with the topics and message types of the robot
config's `bag_topics`, so record -> ingest -> pretrain runs end to end without a robot:

    per episode:  instruction (String)  then  episode event "start:<task>"
    per control step k, all stamped t_k = t_start + k / control_hz:
        camera image (Image in `encoding`, or CompressedImage jpeg/png), JointState (joints +
        gripper opening), PoseStamped end-effector pose, and for k < T the command: TwistStamped
        (normalised action * action_scale * control_hz, m/s and rad/s) and the gripper command
        (Float64, the normalised gripper action)
    at the last observation: "end:success" or "end:timeout"

Streams are published once per control step (the collected episode has one frame per step);
receive times are the header stamps plus `latency_s`. Episodes follow each other after `pause_s`.
"""

from __future__ import annotations

import logging
import shutil
import time

import numpy as np
from omegaconf import DictConfig

from robot_calql.bags.events import format_event
from robot_calql.bags.messages import BagRecorder
from robot_calql.config import ConfigError, resolve_path

log = logging.getLogger("robot_calql.bags.sim_to_bag")
NS = 1_000_000_000
ENCODINGS = ("rgb8", "bgr8", "mono8", "jpeg", "png")


def write_episodes(rec: BagRecorder, episodes, topics: dict, joints: list[str], gripper_joint: str,
                   control_hz: float, translation_m: float, rotation_rad: float, encoding: str = "rgb8",
                   start_s: float = 1000.0, pause_s: float = 1.0, latency_s: float = 0.002,
                   progress=None) -> int:
    """Write stand-in Episodes (with images) into an open recorder; returns the number written."""
    f = rec.msgs
    lat = int(round(latency_s * NS))
    t = start_s
    n = 0
    names = [*joints, gripper_joint]
    for ep in episodes:
        if ep.image is None:
            raise ConfigError("sim-to-bag needs images (image_size > 0)")
        T = len(ep)
        t0 = int(round(t * NS))
        rec.write(topics["instruction"], f.string(ep.instruction), t0 - 1_000_000 + lat)
        rec.write(topics["episode_event"], f.string(format_event("start", ep.task)), t0 + lat)
        for k in range(T + 1):
            stamp = t0 + int(round(k * NS / control_hz))
            p = ep.proprio[k].astype(np.float64)
            if encoding in ("jpeg", "png"):
                img = f.compressed_image(stamp, ep.image[k], encoding)
            else:
                img = f.image(stamp, ep.image[k], encoding)
            rec.write(topics["image"], img, stamp + lat)
            rec.write(topics["joint_states"], f.joint_state(stamp, names, p[: len(names)]), stamp + lat)
            if topics.get("ee_pose"):
                rec.write(topics["ee_pose"], f.pose(stamp, p[len(names) : len(names) + 3], float(p[len(names) + 3])),
                          stamp + lat)
            if k < T:
                a = ep.action[k].astype(np.float64)
                lin = a[:3] * translation_m * control_hz
                rec.write(topics["action"], f.twist(stamp, lin, np.array([0.0, 0.0, a[3] * rotation_rad * control_hz])),
                          stamp + lat)
                if topics.get("gripper_command"):
                    rec.write(topics["gripper_command"], f.float64(a[4]), stamp + lat)
        t_end = t0 + int(round(T * NS / control_hz))
        rec.write(topics["episode_event"], f.string(format_event("end", "success" if ep.success else "timeout")),
                  t_end + 1_000_000 + lat)
        t = t_end / NS + pause_s
        n += 1
        if progress is not None:
            progress.update(1)
    return n


def main(cfg: DictConfig) -> int:
    from tqdm import tqdm

    from robot_calql.sim.episodes import iter_episodes
    from robot_calql.sim.tasks import resolve_tasks

    storage = str(cfg.storage)
    if storage not in ("sqlite3", "mcap"):
        raise ConfigError(f"storage={storage}: sqlite3 or mcap")
    if str(cfg.encoding) not in ENCODINGS:
        raise ConfigError(f"encoding={cfg.encoding}: one of {ENCODINGS}")
    if int(cfg.camera_size) <= 0:
        raise ConfigError("camera_size must be > 0 (the bag needs camera frames)")
    out = resolve_path(cfg.out)
    if out is None:
        raise ConfigError("sim-to-bag: set out=<bag folder>")
    if out.exists():
        raise FileExistsError(f"{out} exists; rosbag2 writers never overwrite, choose another out")
    robot = cfg.robot
    bt = robot.bag_topics
    if str(bt.action_type) != "delta_ee_twist":
        raise ConfigError(f"sim-to-bag records TwistStamped commands; robot bag_topics.action_type is {bt.action_type}")
    topics = {k: (str(bt[k]) if bt.get(k) else None) for k in
              ("image", "joint_states", "action", "ee_pose", "gripper_command", "instruction", "episode_event")}
    for k in ("image", "joint_states", "action", "instruction", "episode_event"):
        if not topics[k]:
            raise ConfigError(f"robot bag_topics.{k} must name a topic for sim-to-bag")
    scale = robot.action_scale
    tasks = resolve_tasks(str(cfg.task))
    n, n_fail = int(cfg.episodes), int(cfg.failures)
    if n < 0 or n_fail < 0:
        raise ConfigError(f"episodes and failures must be >= 0, got episodes={n}, failures={n_fail}")
    # as robot-calql collect: demos of every task, then deliberate failures (same seeds)
    plan = [(t, n, "demo", False) for t in tasks] + [(t, n_fail, "failure", True) for t in tasks if n_fail]
    total = sum(p[1] for p in plan)
    t0 = time.time()
    tmp = out.parent / f".{out.name}.partial"
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with BagRecorder(tmp, storage=storage, distro=str(cfg.ros_distro)) as rec, \
                tqdm(total=total, desc="sim-to-bag", unit="ep") as bar:
            start = 1000.0
            for task, count, source, failure in plan:
                eps = iter_episodes(task, count, image_size=int(cfg.camera_size), seed=int(cfg.seed),
                                    noise=float(cfg.noise), source=source, failure=failure,
                                    max_episode_steps=int(cfg.max_episode_steps),
                                    action_scale=(float(scale.translation_m), float(scale.rotation_rad)))
                write_episodes(rec, eps, topics, [str(j) for j in robot.joints], str(robot.gripper_joint),
                               float(robot.control_hz), float(scale.translation_m), float(scale.rotation_rad),
                               encoding=str(cfg.encoding), start_s=start, progress=bar)
                start += 100_000.0  # one plan entry's episodes never overlap the next one's in time
        # the rosbag2 folder is named after its data file: rename both
        data = next(p for p in tmp.iterdir() if p.suffix in (".db3", ".mcap"))
        final_data = tmp / f"{out.name}{data.suffix}"
        data.rename(final_data)
        meta = tmp / "metadata.yaml"
        meta.write_text(meta.read_text().replace(data.name, final_data.name))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote {total} episodes of {', '.join(tasks)} to {out} ({storage}, {cfg.encoding}) "
          f"in {time.time() - t0:.1f}s")
    return 0

