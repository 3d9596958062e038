"""Record scripted episodes in the stand-in cell: `robot-calql collect` and a Python API.

    robot-calql collect task=cube_in_bowl episodes=20 out=data/cube_in_bowl
    robot-calql collect task=cube_bowl episodes=50 failures=10 prior_tasks=[cube_left,cube_right] out=data/bowl

`task` is a task name or a task-pair name (then `episodes` demos are recorded for each
direction). Demos are stored with source "demo", deliberate failures with "failure", episodes
of `prior_tasks` with "prior" (each under its own instruction). Each episode records its `seed`
in `extra`.

`out` must be new or empty: a folder that already holds episodes is refused (rerunning would
add the same episodes again) unless `append=true` (more episodes, numbered after the existing
ones, from the smallest seed >= `seed` that none of them used) or `overwrite=true` (the new
dataset is built beside `out` and replaces it only when complete).

From Python (training loops, bag recorder, reward-classifier tests):

    from robot_calql.sim.collect import collect_episodes, iter_episodes
    eps = collect_episodes("cube_in_bowl", 5, image_size=64, seed=0)      # list[Episode]
    for ep in iter_episodes("cube_out_of_bowl", 100, image_size=0): ...   # streaming
"""

from __future__ import annotations

import logging
import os
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from robot_calql.data.dataset import (
    EPISODE_DIR,
    META_FILE,
    Dataset,
    DatasetError,
    DatasetMeta,
    DatasetWriter,
    Episode,
)
from robot_calql.sim.demonstrators import ScriptedDemonstrator
from robot_calql.sim.env import (
    ACTION_DIM,
    CONTROL_HZ,
    DEFAULT_ACTION_SCALE,
    PROPRIO_DIM,
    STATE_DIM,
    StandInEnv,
    make_env,
)
from robot_calql.sim.tasks import get_task, resolve_tasks

log = logging.getLogger(__name__)
DEFAULT_MAX_STEPS = 60


def dataset_meta(image_size: int, action_scale: tuple[float, float] = DEFAULT_ACTION_SCALE) -> DatasetMeta:
    """Metadata of a stand-in dataset with images of `image_size` px (0: none)."""
    return DatasetMeta(
        control_hz=CONTROL_HZ,
        action_dim=ACTION_DIM,
        proprio_dim=PROPRIO_DIM,
        state_dim=STATE_DIM,
        image_shape=(image_size, image_size, 3) if image_size else None,
        robot="sim_standin",
        camera=f"front (third-person, {image_size} px)" if image_size else "none",
        action_space="delta_ee",
        extra={
            "action_scale": {"translation_m": action_scale[0], "rotation_rad": action_scale[1]},
            "proprio": "joint positions (5), gripper opening 0..1, ee position (3), ee yaw",
            "state": "proprio (10), cube position (3), cube quaternion wxyz (4), bowl position (3), cube - ee (3)",
        },
    )


def rollout(env: StandInEnv, policy, max_steps: int, full_reset: bool = True, seed: int | None = None) -> tuple[Episode, dict]:
    """Run one episode of `policy(obs) -> action` in `env`; return it as an Episode and the last info.

    The episode ends on success (terminal) or after `max_steps`. With full_reset=False the scene
    is kept from the previous episode (reset-free).
    """
    obs, info = env.reset(seed=seed, options={"full": full_reset})
    keys = [k for k in ("image", "proprio", "state") if k in obs]
    frames: dict[str, list[np.ndarray]] = {k: [obs[k]] for k in keys}
    actions, rewards, terminals = [], [], []
    for _ in range(max_steps):
        a = np.asarray(policy(obs), dtype=np.float32)
        obs, r, terminated, truncated, info = env.step(a)
        for k in keys:
            frames[k].append(obs[k])
        actions.append(a)
        rewards.append(r)
        terminals.append(terminated)
        if terminated or truncated:
            break
    ep = Episode(
        image=np.stack(frames["image"]) if "image" in frames else None,
        proprio=np.stack(frames["proprio"]),
        state=np.stack(frames["state"]),
        action=np.stack(actions).astype(np.float32),
        reward=np.asarray(rewards, dtype=np.float32),
        terminal=np.asarray(terminals, dtype=bool),
        instruction=env.instruction,
        task=env.task.name,
        success=bool(info["success"]),
    )
    return ep, info


def _seed(seed: int, task: str, kind: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, zlib.crc32(task.encode()), zlib.crc32(kind.encode())])


def iter_episodes(
    task: str,
    episodes: int,
    *,
    image_size: int = 64,
    seed: int = 0,
    noise: float = 0.3,
    source: str = "demo",
    failure: bool | str = False,
    max_episode_steps: int = DEFAULT_MAX_STEPS,
    env: StandInEnv | None = None,
    action_scale: tuple[float, float] = DEFAULT_ACTION_SCALE,
    dropped_start: float = 0.0,
    rolled_start: float = 0.0,
) -> Iterator[Episode]:
    """Yield `episodes` scripted episodes of `task`, each from a full reset (random placement).

    failure: False (a real demo), True (a random failure mode) or a mode name from
    demonstrators.FAILURES. Deterministic for a given seed. Pass `env` to reuse one (its task is
    switched to `task`; its image size, `dropped_start` and `rolled_start` win). dropped_start:
    probability that an episode starting with the cube in the bowl finds it dropped in (tipped or
    leaning) instead of placed flat; rolled_start: probability that an episode starting with the
    cube on the table finds it on a random face (robot_calql.sim.env.StandInEnv).
    """
    get_task(task)
    ss = _seed(seed, task, f"{source}/{failure}")
    env_seed, demo_seed = (int(s.generate_state(1)[0]) for s in ss.spawn(2))
    if env is None:
        env = make_env(task, image_size=image_size, seed=env_seed, max_episode_steps=max_episode_steps,
                       action_scale=action_scale, dropped_start=dropped_start, rolled_start=rolled_start)
        first_seed = None
    else:
        env.set_task(task)
        first_seed = env_seed
    env.max_episode_steps = max_episode_steps
    rng = np.random.default_rng(demo_seed)
    for i in range(episodes):
        demo = ScriptedDemonstrator(task, noise=noise, rng=rng, failure=failure, action_scale=action_scale)
        ep, _ = rollout(env, lambda obs, d=demo: d.act(obs["state"]), max_episode_steps,
                        seed=first_seed if i == 0 else None)
        ep.source = source
        ep.extra = {"seed": seed, **({"failure_mode": demo.failure} if demo.failure else {})}
        yield ep


def collect_episodes(task: str, episodes: int, *, out: str | Path | None = None, overwrite: bool = False,
                     **kwargs) -> list[Episode]:
    """Collect `episodes` episodes of `task` (see iter_episodes for the options); also write them
    to the dataset folder `out` when given (appended to a dataset already there unless
    `overwrite`; the caller picks distinct seeds). Returns the episodes."""
    eps = list(iter_episodes(task, episodes, **kwargs))
    if out is not None:
        writer = DatasetWriter(out, dataset_meta(kwargs.get("image_size", 64),
                                                 kwargs.get("action_scale", DEFAULT_ACTION_SCALE)), overwrite=overwrite)
        for ep in eps:
            writer.write_episode(ep)
    return eps


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
                   dropped_start=float(cfg.dropped_start), rolled_start=float(cfg.rolled_start))
    try:
        writer = DatasetWriter(target, dataset_meta(image_size, scale), overwrite=overwrite)
        results = _collect(writer, env, plan, seed=seed, noise=float(cfg.noise), max_steps=max_steps, scale=scale)
        if target != out:
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
            os.rename(target, out)
            shutil.rmtree(old, ignore_errors=True)
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
             noise: float, max_steps: int, scale: tuple[float, float]) -> dict[tuple[str, str], list[bool]]:
    """Record `plan` ((task, episodes, source, failure) entries) into `writer` with a progress
    bar; return the successes per (task, source)."""
    from tqdm import tqdm

    results: dict[tuple[str, str], list[bool]] = {}
    with tqdm(total=sum(p[1] for p in plan), desc="collect", unit="ep") as bar:
        for task, count, source, failure in plan:
            bar.set_postfix_str(f"{task} ({source})")
            for ep in iter_episodes(task, count, image_size=env.image_size, seed=seed, noise=noise, source=source,
                                    failure=failure, max_episode_steps=max_steps, env=env, action_scale=scale):
                writer.write_episode(ep)
                results.setdefault((task, source), []).append(ep.success)
                bar.update(1)
    return results
