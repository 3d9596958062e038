"""Scripted episodes of the stand-in cell as Episodes: the Python API behind `robot-calql collect`.

    from robot_calql.sim.episodes import collect_episodes, iter_episodes
    eps = collect_episodes("cube_in_bowl", 5, image_size=64, seed=0)      # list[Episode]
    for ep in iter_episodes("cube_out_of_bowl", 100, image_size=0): ...   # streaming

Used by the collect command (robot_calql.sim.collect), the demo, sim-to-bag and the tests.
"""

from __future__ import annotations

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
    StandInEnv,
    StateLayout,
    make_env,
)
from robot_calql.sim.kinematics import STANDIN_ARM, ArmSpec
from robot_calql.sim.tasks import get_task

DEFAULT_MAX_STEPS = 60


def dataset_meta(image_size: int, action_scale: tuple[float, float] = DEFAULT_ACTION_SCALE,
                 arm: ArmSpec = STANDIN_ARM, robot: str = "sim_standin") -> DatasetMeta:
    """Metadata of a dataset of the simulated `arm` (robot config `robot`) with images of
    `image_size` px (0: none): the main camera as `image`, every other camera as `image_<name>`."""
    lay = StateLayout(len(arm.arm_joints))
    return DatasetMeta(
        control_hz=CONTROL_HZ,
        action_dim=ACTION_DIM,
        proprio_dim=lay.proprio_dim,
        state_dim=lay.state_dim,
        image_shape=(image_size, image_size, 3) if image_size else None,
        robot=robot,
        camera=f"{arm.cameras[0]} (third-person, {image_size} px)" if image_size else "none",
        action_space="delta_ee",
        extra={
            "action_scale": {"translation_m": action_scale[0], "rotation_rad": action_scale[1]},
            "proprio": f"joint positions ({lay.n_joints}), gripper opening 0..1, ee position (3), ee yaw",
            "state": f"proprio ({lay.proprio_dim}), cube position (3), cube quaternion wxyz (4), bowl position (3), "
                     "cube - ee (3)",
        },
        extra_cameras=list(arm.cameras[1:]) if image_size else [],
    )


def rollout(env: StandInEnv, policy, max_steps: int, full_reset: bool = True, seed: int | None = None) -> tuple[Episode, dict]:
    """Run one episode of `policy(obs) -> action` in `env`; return it as an Episode and the last info.

    The episode ends on success (terminal) or after `max_steps`. With full_reset=False the scene
    is kept from the previous episode (reset-free).
    """
    obs, info = env.reset(seed=seed, options={"full": full_reset})
    cameras = [k for k in obs if k.startswith("image_")]  # the other cameras (image_<name>)
    keys = [k for k in ("image", "proprio", "state", *cameras) if k in obs]
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
        camera_images={k: np.stack(frames[k]) for k in cameras},
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
    arm: ArmSpec = STANDIN_ARM,
    put_down: str = "front",
) -> Iterator[Episode]:
    """Yield `episodes` scripted episodes of `task`, each from a full reset (random placement).

    failure: False (a real demo), True (a random failure mode) or a mode name from
    demonstrators.FAILURES. Deterministic for a given seed. Pass `env` to reuse one (its task is
    switched to `task`; its image size, `dropped_start` and `rolled_start` win). dropped_start:
    probability that an episode starting with the cube in the bowl finds it dropped in (tipped or
    leaning) instead of placed flat; rolled_start: probability that an episode starting with the
    cube on the table finds it on a random face (robot_calql.sim.env.StandInEnv). arm: the simulated
    arm (robot_calql.sim.kinematics.arm_spec; a given `env`'s own arm wins). put_down: where the
    backward task's demonstrator leaves the cube (robot_calql.sim.demonstrators.PUT_DOWN).
    """
    get_task(task)
    ss = _seed(seed, task, f"{source}/{failure}")
    env_seed, demo_seed = (int(s.generate_state(1)[0]) for s in ss.spawn(2))
    if env is None:
        env = make_env(task, image_size=image_size, seed=env_seed, max_episode_steps=max_episode_steps,
                       action_scale=action_scale, dropped_start=dropped_start, rolled_start=rolled_start, arm=arm)
        first_seed = None
    else:
        env.set_task(task)
        first_seed = env_seed
    env.max_episode_steps = max_episode_steps
    rng = np.random.default_rng(demo_seed)
    for i in range(episodes):
        demo = ScriptedDemonstrator(task, noise=noise, rng=rng, failure=failure, action_scale=action_scale,
                                    layout=env.layout, put_down=put_down)
        ep, _ = rollout(env, lambda obs, d=demo: d.act(obs["state"]), max_episode_steps,
                        seed=first_seed if i == 0 else None)
        ep.source = source
        ep.extra = {"seed": seed, **({"failure_mode": demo.failure} if demo.failure else {})}
        yield ep


def collect_episodes(task: str, episodes: int, *, out: str | Path | None = None, overwrite: bool = False,
                     **kwargs) -> list[Episode]:
    """Collect `episodes` episodes of `task` (see iter_episodes for the options); also write them
    to the dataset folder `out` when given (appended to a dataset already there unless
    `overwrite`; the caller picks distinct seeds; `robot`: the robot config's name in its metadata).
    Returns the episodes."""
    robot = str(kwargs.pop("robot", "sim_standin"))
    eps = list(iter_episodes(task, episodes, **kwargs))
    if out is not None:
        writer = DatasetWriter(out, dataset_meta(kwargs.get("image_size", 64),
                                                 kwargs.get("action_scale", DEFAULT_ACTION_SCALE),
                                                 kwargs.get("arm", STANDIN_ARM), robot),
                               overwrite=overwrite)
        for ep in eps:
            writer.write_episode(ep)
    return eps
