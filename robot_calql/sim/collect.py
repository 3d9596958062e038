"""`robot-calql collect`: record scripted episodes of the stand-in cell into a dataset.

    robot-calql collect task=cube_in_bowl episodes=20 out=data/cube_in_bowl
    robot-calql collect task=cube_bowl episodes=50 failures=10 prior_tasks=[cube_left,cube_right] out=data/bowl

The arm is the robot config's (`robot=<name>`, its `sim:` section: the MJCF cell and its names;
the stand-in's by default); its dataset holds every camera of that cell (image, image_<name>).

`task` is a task name or a task-pair name (then `episodes` demos are recorded for each
direction). Demos are stored with source "demo", deliberate failures with "failure", episodes
of `prior_tasks` with "prior" (each under its own instruction). Each episode records its `seed`
in `extra`.

`out` must be new or empty: a folder that already holds episodes is refused (rerunning would
add the same episodes again) unless `append=true` (more episodes, numbered after the existing
ones, from the smallest seed >= `seed` that none of them used) or `overwrite=true` (the new
dataset is built beside `out` and replaces it only when complete).

The Python API (`collect_episodes`, `iter_episodes`, `rollout`) is robot_calql.sim.episodes.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from robot_calql.data.dataset import (
    EPISODE_DIR,
    META_FILE,
    Dataset,
    DatasetError,
    DatasetWriter,
    replace_folder,
)
from robot_calql.sim.env import StandInEnv, make_env
from robot_calql.sim.episodes import (  # noqa: F401  collect_episodes, rollout: re-exported for older imports
    DEFAULT_MAX_STEPS,
    collect_episodes,
    dataset_meta,
    iter_episodes,
    rollout,
)
from robot_calql.sim.kinematics import arm_spec
from robot_calql.sim.tasks import get_task, resolve_tasks

log = logging.getLogger(__name__)


def _episode_count(out: Path) -> int:
    """Episodes in the dataset folder `out` (0 when it does not exist or holds none); a non-empty
    folder that is not a dataset is an error."""
    if not out.exists():
        return 0
    if not out.is_dir():
        raise DatasetError(f"{out}: exists and is a file, not a dataset folder: choose another out=<dir>")
    if not (out / META_FILE).is_file():
        if any(not p.name.startswith(".") for p in out.iterdir()):
            raise DatasetError(f"{out}: exists, is not empty and is not a robot_calql dataset (no {META_FILE}); "
                               "collect will not write into it or delete it: choose another out=<dir>")
        return 0
    return sum(1 for p in (out / EPISODE_DIR).glob("ep_*") if p.is_dir())


def _append_seed(out: Path, seed: int) -> tuple[int, int]:
    """The smallest seed >= `seed` that no episode of the dataset at `out` was collected with,
    and how many of its episodes record no seed (not written by collect, or before seeds were)."""
    seeds = [info.get("extra", {}).get("seed") for info in Dataset(out).infos]
    while seed in seeds:
        seed += 1
    return seed, sum(s is None for s in seeds)


def main(cfg) -> int:
    """`robot-calql collect`: write demos (+ failures, prior data) to a dataset; print success rates."""
    from robot_calql.config import ConfigError, resolve_path

    tasks = resolve_tasks(str(cfg.task))
    prior = [str(t) for t in (cfg.get("prior_tasks") or [])]
    for t in prior:
        get_task(t)
    n, n_fail = int(cfg.episodes), int(cfg.get("failures", 0))
    if n < 0 or n_fail < 0:
        raise ValueError(f"episodes and failures must be >= 0, got episodes={n}, failures={n_fail}")
    image_size = int(cfg.image_size)
    scale = (float(cfg.robot.action_scale.translation_m), float(cfg.robot.action_scale.rotation_rad))
    arm = arm_spec(cfg.robot)  # the robot config's `sim:` section (RobotConfigError naming the key)
    robot = str(cfg.robot.name)
    max_steps = int(cfg.get("max_episode_steps", DEFAULT_MAX_STEPS))
    out = resolve_path(cfg.out)
    if out is None:
        raise ValueError("collect: set out=<dir>")
    append, overwrite = bool(cfg.append), bool(cfg.overwrite)
    if append and overwrite:
        raise ConfigError("collect: append=true adds to the dataset, overwrite=true replaces it; pass one of them")
    seed = int(cfg.seed)
    existing = _episode_count(out)
    if existing and not (append or overwrite):
        raise DatasetError(f"collect: {out} already holds {existing} episodes; collecting into it again would add "
                           f"more (with seed={seed}: the same ones again). Pass append=true to add episodes with new "
                           "seeds, overwrite=true to replace the dataset, or another out=<dir>")
    if existing and append:
        new_seed, unknown = _append_seed(out, seed)
        if new_seed != seed:
            print(f"append: seed {seed} was already used in {out}; collecting with seed={new_seed}")
        if unknown:
            log.warning(f"append: {unknown} episodes in {out} record no seed; if collect wrote them with "
                        f"seed={new_seed}, the new episodes repeat them: pass another seed=")
        seed = new_seed

    plan = [(t, n, "demo", False) for t in tasks]
    plan += [(t, n_fail, "failure", True) for t in tasks if n_fail]
    plan += [(t, n, "prior", False) for t in prior if n]
    # overwrite: build beside `out` and swap when complete, so a failure keeps the old dataset
    target = out.parent / f".{out.name}.collect-{os.getpid()}" if overwrite and existing else out
    env = make_env(tasks[0], image_size=image_size, max_episode_steps=max_steps, action_scale=scale,
                   dropped_start=float(cfg.dropped_start), rolled_start=float(cfg.rolled_start), arm=arm)
    try:
        writer = DatasetWriter(target, dataset_meta(image_size, scale, arm, robot), overwrite=overwrite)
        results = _collect(writer, env, plan, seed=seed, noise=float(cfg.noise), max_steps=max_steps, scale=scale,
                           put_down=str(cfg.put_down))
        if target != out:
            replace_folder(target, out)
    except BaseException:
        if target != out:
            shutil.rmtree(target, ignore_errors=True)
        raise
    finally:
        env.close()
    total = sum(len(ok) for ok in results.values())
    if existing and append:
        print(f"added {total} episodes to {out} (seed={seed}), {existing + total} in all")
    else:
        print(f"wrote {total} episodes to {out} (seed={seed})")
    for (task, source), ok in results.items():
        label = "demonstrator success rate" if source != "failure" else "failure episodes that succeeded anyway"
        print(f"  {task:<18} {source:<8} {label}: {sum(ok)}/{len(ok)} ({100.0 * np.mean(ok):.0f}%)")
    return 0


def _collect(writer: DatasetWriter, env: StandInEnv, plan: list[tuple[str, int, str, bool]], *, seed: int,
             noise: float, max_steps: int, scale: tuple[float, float],
             put_down: str = "front") -> dict[tuple[str, str], list[bool]]:
    """Record `plan` ((task, episodes, source, failure) entries) into `writer` with a progress
    bar; return the successes per (task, source)."""
    from tqdm import tqdm

    results: dict[tuple[str, str], list[bool]] = {}
    with tqdm(total=sum(p[1] for p in plan), desc="collect", unit="ep") as bar:
        for task, count, source, failure in plan:
            bar.set_postfix_str(f"{task} ({source})")
            for ep in iter_episodes(task, count, image_size=env.image_size, seed=seed, noise=noise, source=source,
                                    failure=failure, max_episode_steps=max_steps, env=env, action_scale=scale,
                                    put_down=put_down):
                writer.write_episode(ep)
                results.setdefault((task, source), []).append(ep.success)
                bar.update(1)
    return results
