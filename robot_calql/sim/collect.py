"""Record scripted episodes in the stand-in cell: `robot-calql collect` and a Python API.

    robot-calql collect task=cube_in_bowl episodes=20 out=data/cube_in_bowl
    robot-calql collect task=cube_bowl episodes=50 failures=10 prior_tasks=[cube_left,cube_right] out=data/bowl

`task` is a task name or a task-pair name (then `episodes` demos are recorded for each
direction). Demos are stored with source "demo", deliberate failures with "failure", episodes
of `prior_tasks` with "prior" (each under its own instruction).

From Python (training loops, bag recorder, reward-classifier tests):

    from robot_calql.sim.collect import collect_episodes, iter_episodes
    eps = collect_episodes("cube_in_bowl", 5, image_size=64, seed=0)      # list[Episode]
    for ep in iter_episodes("cube_out_of_bowl", 100, image_size=0): ...   # streaming
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from robot_calql.data.dataset import DatasetMeta, DatasetWriter, Episode
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
        ep.extra = {"failure_mode": demo.failure} if demo.failure else {}
        yield ep


def collect_episodes(task: str, episodes: int, *, out: str | Path | None = None, overwrite: bool = False,
                     **kwargs) -> list[Episode]:
    """Collect `episodes` episodes of `task` (see iter_episodes for the options); also write them
    to the dataset folder `out` when given. Returns the episodes."""
    eps = list(iter_episodes(task, episodes, **kwargs))
    if out is not None:
        writer = DatasetWriter(out, dataset_meta(kwargs.get("image_size", 64),
                                                 kwargs.get("action_scale", DEFAULT_ACTION_SCALE)), overwrite=overwrite)
        for ep in eps:
            writer.write_episode(ep)
    return eps


def main(cfg) -> int:
    """`robot-calql collect`: write demos (+ failures, prior data) to a dataset; print success rates."""
    from tqdm import tqdm

    from robot_calql.config import resolve_path

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
    env = make_env(tasks[0], image_size=image_size, max_episode_steps=max_steps, action_scale=scale,
                   dropped_start=float(cfg.dropped_start), rolled_start=float(cfg.rolled_start))
    writer = DatasetWriter(out, dataset_meta(image_size, scale), overwrite=bool(cfg.overwrite))

    plan = [(t, n, "demo", False) for t in tasks]
    plan += [(t, n_fail, "failure", True) for t in tasks if n_fail]
    plan += [(t, n, "prior", False) for t in prior if n]
    total = sum(p[1] for p in plan)
    results: dict[tuple[str, str], list[bool]] = {}
    with tqdm(total=total, desc="collect", unit="ep") as bar:
        for task, count, source, failure in plan:
            bar.set_postfix_str(f"{task} ({source})")
            for ep in iter_episodes(task, count, image_size=image_size, seed=int(cfg.seed), noise=float(cfg.noise),
                                    source=source, failure=failure, max_episode_steps=max_steps, env=env,
                                    action_scale=scale):
                writer.write_episode(ep)
                results.setdefault((task, source), []).append(ep.success)
                bar.update(1)
    env.close()
    print(f"wrote {total} episodes to {out}")
    for (task, source), ok in results.items():
        label = "demonstrator success rate" if source != "failure" else "failure episodes that succeeded anyway"
        print(f"  {task:<18} {source:<8} {label}: {sum(ok)}/{len(ok)} ({100.0 * np.mean(ok):.0f}%)")
    return 0
