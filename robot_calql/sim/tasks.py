"""Tasks of the stand-in cell: instructions, start placements and ground-truth success.

Every task has a reverse task, so the reset-free loop can alternate between them; a *task pair*
is (forward, backward). Success is computed from the simulator's ground truth (object poses,
gripper opening); the env turns it into a sparse reward.

| pair              | forward        | backward          |
| ----------------- | -------------- | ----------------- |
| `cube_bowl`       | `cube_in_bowl` | `cube_out_of_bowl`|
| `cube_left_right` | `cube_left`    | `cube_right`      |

Geometry (metres, robot base frame: x forward, y left, z up, table top at z = 0): the cube is
4 cm; the bowl is an open box with a 12 x 12 cm inside and 4.5 cm walls (14 x 14 cm outside).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CUBE_HALF = 0.02
BOWL_INNER_HALF = 0.06
BOWL_OUTER_HALF = 0.07
BOWL_FLOOR_TOP = 0.008
BOWL_RIM = 0.045
# where a full reset may put things
BOWL_X = (0.33, 0.37)
BOWL_Y = (-0.06, 0.06)
CUBE_X = (0.15, 0.42)
CUBE_Y = (-0.2, 0.2)
REACH_R = 0.42  # cubes farther than this from the base axis are not placed
SIDE_Y = 0.10  # "left side" is y > SIDE_Y, "right side" is y < -SIDE_Y
RELEASED = 0.5  # gripper opening fraction (0 closed, 1 open) that counts as "let go"


class UnknownTaskError(ValueError):
    """A task or task-pair name that the stand-in does not know."""


@dataclass(frozen=True)
class Scene:
    """Ground truth the success checks need (positions in metres, gripper opening in [0, 1])."""

    cube_pos: np.ndarray
    bowl_pos: np.ndarray
    gripper_open: float


def cube_in_bowl(s: Scene) -> bool:
    d = np.abs(s.cube_pos[:2] - s.bowl_pos[:2])
    return bool(d.max() < BOWL_INNER_HALF and s.cube_pos[2] < BOWL_RIM and s.gripper_open > RELEASED)


def cube_on_table(s: Scene) -> bool:
    """Cube resting on the table top (not in the bowl, not lifted) and outside the bowl."""
    d = np.abs(s.cube_pos[:2] - s.bowl_pos[:2])
    outside = d.max() > BOWL_OUTER_HALF + CUBE_HALF * 0.5
    return bool(outside and s.cube_pos[2] < CUBE_HALF + 0.005)


def cube_out_of_bowl(s: Scene) -> bool:
    return cube_on_table(s) and s.gripper_open > RELEASED


def cube_left(s: Scene) -> bool:
    return cube_on_table(s) and s.cube_pos[1] > SIDE_Y and s.gripper_open > RELEASED


def cube_right(s: Scene) -> bool:
    return cube_on_table(s) and s.cube_pos[1] < -SIDE_Y and s.gripper_open > RELEASED


@dataclass(frozen=True)
class Task:
    """One stand-in task. `start` says where a full reset puts the cube: on_table / in_bowl /
    right_half / left_half (the half that is not already a success)."""

    name: str
    instruction: str
    reverse: str
    pair: str
    success: Callable[[Scene], bool]
    start: str


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("cube_in_bowl", "put the cube in the bowl", "cube_out_of_bowl", "cube_bowl", cube_in_bowl, "on_table"),
        Task("cube_out_of_bowl", "take the cube out of the bowl and put it on the table", "cube_in_bowl",
             "cube_bowl", cube_out_of_bowl, "in_bowl"),
        Task("cube_left", "move the cube to the left side of the table", "cube_right", "cube_left_right",
             cube_left, "right_half"),
        Task("cube_right", "move the cube to the right side of the table", "cube_left", "cube_left_right",
             cube_right, "left_half"),
    )
}
PAIRS: dict[str, tuple[str, str]] = {"cube_bowl": ("cube_in_bowl", "cube_out_of_bowl"),
                                     "cube_left_right": ("cube_left", "cube_right")}
INSTRUCTIONS: tuple[str, ...] = tuple(t.instruction for t in TASKS.values())


def known_names() -> str:
    return f"tasks: {', '.join(TASKS)}; task pairs: {', '.join(PAIRS)}"


def get_task(name: str) -> Task:
    """The task called `name`; UnknownTaskError lists the known ones."""
    if name not in TASKS:
        raise UnknownTaskError(f"unknown task '{name}' (known {known_names()})")
    return TASKS[name]


def task_pair(name: str) -> tuple[str, str]:
    """(forward, backward) task names of a pair name, or of the pair that task `name` belongs to."""
    if name in PAIRS:
        return PAIRS[name]
    return PAIRS[get_task(name).pair]


def resolve_tasks(name: str) -> list[str]:
    """Task names a CLI `task=` value stands for: one task, or both directions of a pair."""
    if name in PAIRS:
        return list(PAIRS[name])
    return [get_task(name).name]


def instruction_index(instruction: str) -> int:
    """Stable integer id of an instruction (its position in INSTRUCTIONS), for embeddings."""
    try:
        return INSTRUCTIONS.index(instruction)
    except ValueError:
        raise UnknownTaskError(f"unknown instruction '{instruction}' (known: {list(INSTRUCTIONS)})") from None


def sample_placement(task: Task, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Random (cube_pos, bowl_pos, cube_yaw) for a full reset into `task`'s start condition."""
    bowl = np.array([rng.uniform(*BOWL_X), rng.uniform(*BOWL_Y), 0.0])
    yaw = float(rng.uniform(-np.pi / 4, np.pi / 4))
    if task.start == "in_bowl":
        off = rng.uniform(-0.02, 0.02, size=2)
        return np.array([bowl[0] + off[0], bowl[1] + off[1], BOWL_FLOOR_TOP + CUBE_HALF]), bowl, yaw
    xy = table_spot(bowl[:2], rng, side=task.start)
    return np.array([xy[0], xy[1], CUBE_HALF]), bowl, yaw


def table_spot(bowl_xy: np.ndarray, rng: np.random.Generator, clearance: float = 0.02, side: str = "") -> np.ndarray:
    """A random cube position (x, y) on the table where a full reset may put it: within reach and
    `clearance` clear of touching the bowl; `side` right_half / left_half keeps it off the other half."""
    for _ in range(1000):
        xy = np.array([rng.uniform(*CUBE_X), rng.uniform(*CUBE_Y)])
        if np.hypot(*xy) > REACH_R or np.abs(xy - bowl_xy).max() < BOWL_OUTER_HALF + CUBE_HALF + clearance:
            continue
        if side == "right_half" and xy[1] > 0.03:
            continue
        if side == "left_half" and xy[1] < -0.03:
            continue
        return xy
    raise RuntimeError("could not place the cube")  # pragma: no cover - the regions are large
