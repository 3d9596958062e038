"""Scripted demonstrators for the stand-in tasks: teleop-like, noisy and suboptimal on purpose.

Every task is a pick-and-place of the cube (grasp it from above, carry it at a safe height, put
it down at a task-dependent spot, let go). The demonstrator reads the privileged `state`
observation (where each quantity sits: robot_calql.sim.env.StateLayout of the arm) and returns a normalised action
like a human with a spacemouse would: a proportional move toward the current waypoint, with
per-step Gaussian noise, a slowly drifting bias, a per-episode speed, jittered waypoints and the
occasional pause. Demos are therefore narrow (one strategy) and noisy, like teleoperated data.

`failure=True` makes it fail on purpose, in one of three ways that real failed demos show:
grasping beside the cube, dropping it on the way, or wandering without finishing.

`put_down` says where the backward task (`cube_out_of_bowl`) leaves the cube: "front" (about
14 cm in front of the bowl, one habit, as one operator would) or "anywhere" (a random spot where a
full reset may place a cube, so reset-free practice of the forward task starts from where an
evaluation does).

    demo = ScriptedDemonstrator("cube_in_bowl", noise=0.3, rng=np.random.default_rng(0))
    obs, _ = env.reset(); demo.reset()
    action = demo.act(obs["state"])
"""

from __future__ import annotations

import numpy as np

from robot_calql.control.conversions import yaw_from_quaternion
from robot_calql.sim.env import DEFAULT_ACTION_SCALE, STANDIN_LAYOUT, StateLayout
from robot_calql.sim.kinematics import wrap_angle
from robot_calql.sim.tasks import BOWL_OUTER_HALF, get_task, table_spot

CARRY_Z = 0.085  # ee height while moving above the scene (cube bottom clears the bowl rim)
GRASP_Z = 0.022  # ee height when closing the fingers around the cube (its centre is at 0.02)
FAILURES = ("miss_grasp", "drop_early", "wander")
PUT_DOWN = ("front", "anywhere")  # where the backward (out of the bowl) demonstrator leaves the cube


def cube_in_hand(state: np.ndarray, layout: StateLayout = STANDIN_LAYOUT) -> bool:
    """Whether the stand-in's state vector has the cube between the fingers: the fingers closed on
    it (stopped part-way by the cube) and the cube at the end effector."""
    ee, cube, grip = state[layout.ee], state[layout.cube], float(state[layout.grip])
    return bool(np.linalg.norm(cube - ee) < 0.03 and 0.15 < grip < 0.8)


def cube_yaw(quat_wxyz: np.ndarray) -> float:
    """Heading of the cube about z, folded into [-pi/4, pi/4) (a cube is 90-degree symmetric).
    Computed in the precision of `quat_wxyz` (float32 for an observation)."""
    w, x, y, z = quat_wxyz
    yaw = np.asarray(yaw_from_quaternion(x, y, z, w), dtype=np.result_type(quat_wxyz))
    return float((yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4)


class ScriptedDemonstrator:
    """Waypoint pick-and-place policy for one task. Call `reset()` at every episode start."""

    def __init__(
        self,
        task: str,
        noise: float = 0.3,
        rng: np.random.Generator | None = None,
        failure: bool | str = False,
        action_scale: tuple[float, float] = DEFAULT_ACTION_SCALE,
        layout: StateLayout = STANDIN_LAYOUT,
        put_down: str = "front",
    ):
        self.task = get_task(task)
        if put_down not in PUT_DOWN:
            raise ValueError(f"unknown put_down '{put_down}' (known: {PUT_DOWN})")
        self.put_down = put_down
        self.layout = layout  # the state vector of the arm (env.layout)
        self.noise = float(noise)
        self.rng = rng if rng is not None else np.random.default_rng()
        if failure is True:
            failure = str(self.rng.choice(FAILURES))
        if failure and failure not in FAILURES:
            raise ValueError(f"unknown failure mode '{failure}' (known: {FAILURES})")
        self.failure: str = failure or ""
        self.scale = action_scale
        self.reset()

    def reset(self) -> None:
        r = self.rng
        self.phase = "approach"
        self.timer = 0
        self.speed = r.uniform(0.7, 1.0)  # a slower or faster operator
        self.bias = np.zeros(4)
        self.grasp_offset = r.normal(0.0, 0.003, size=2)
        if self.failure == "miss_grasp":
            ang = r.uniform(0, 2 * np.pi)
            self.grasp_offset = 0.045 * np.array([np.cos(ang), np.sin(ang)])
        self.carry_z = CARRY_Z + r.uniform(-0.005, 0.02)
        self.place_xy: np.ndarray | None = None
        self.place_jitter = r.normal(0.0, 0.008, size=2)
        self.drop_after = int(r.integers(1, 5))

    # -- where the cube has to go
    def _place_target(self, state: np.ndarray) -> tuple[np.ndarray, float]:
        """(xy, ee height at which to let go) for the task, chosen once per episode."""
        bowl = state[self.layout.bowl]
        if self.place_xy is None:
            r, name = self.rng, self.task.name
            if name == "cube_in_bowl":
                xy = bowl[:2]
            elif name == "cube_out_of_bowl" and self.put_down == "anywhere":
                xy = table_spot(bowl[:2], r, clearance=0.03)  # 1 cm more room for the placing jitter
            elif name == "cube_out_of_bowl":  # in front of the bowl (toward the robot), on the table
                xy = np.array([bowl[0] - BOWL_OUTER_HALF - 0.07, bowl[1] + r.uniform(-0.05, 0.05)])
            elif name == "cube_left":
                xy = np.array([r.uniform(0.17, 0.23), r.uniform(0.14, 0.2)])
            elif name == "cube_right":
                xy = np.array([r.uniform(0.17, 0.23), r.uniform(-0.2, -0.14)])
            else:  # pragma: no cover - every task has a branch
                raise ValueError(f"no demonstrator for task '{name}'")
            self.place_xy = xy + self.place_jitter
        z = 0.075 if self.task.name == "cube_in_bowl" else 0.04  # let go a little above the surface
        return self.place_xy, z

    def act(self, state: np.ndarray) -> np.ndarray:
        """Normalised action (5,) float32 for the privileged state observation."""
        lay = self.layout
        ee, yaw = state[lay.ee], float(state[lay.yaw])
        cube = state[lay.cube]
        held = cube_in_hand(state, lay)
        target = ee.copy()
        target_yaw = yaw
        close = -1.0
        r = self.rng
        self.timer += 1

        if self.failure == "wander":
            target = np.array([0.28, 0.0, 0.1]) + 0.08 * np.sin(self.timer / 5.0 + np.array([0.0, 1.0, 2.0]))
            return self._to_action(target, ee, yaw, yaw, -1.0)

        if self.phase in ("lift", "carry", "lower") and not held and self.failure != "miss_grasp":
            self.phase = "approach"  # dropped it: try again
        elif self.phase == "approach" and held and not self.failure:
            self.phase = "lift"  # already in the hand (a person taking over mid-carry): carry it, do not drop it
        if self.phase == "approach":
            goal = np.array([*(cube[:2] + self.grasp_offset), self.carry_z])
            target, target_yaw = goal, cube_yaw(state[lay.cube_quat])
            if np.linalg.norm(goal[:2] - ee[:2]) < 0.01 and abs(wrap_angle(target_yaw - yaw)) < 0.12:
                self.phase = "descend"
        elif self.phase == "descend":
            target = np.array([*(cube[:2] + self.grasp_offset), GRASP_Z])
            target_yaw = cube_yaw(state[lay.cube_quat])
            if ee[2] - GRASP_Z < 0.008:
                self.phase, self.timer = "grasp", 0
        elif self.phase == "grasp":
            close = 1.0
            target = np.array([ee[0], ee[1], GRASP_Z])
            if self.timer >= 3:
                self.phase = "lift"
        elif self.phase == "lift":
            close = 1.0
            target = np.array([ee[0], ee[1], self.carry_z + 0.01])
            if ee[2] > self.carry_z - 0.015:
                self.phase, self.timer = "carry", 0
        elif self.phase == "carry":
            close = 1.0
            xy, _ = self._place_target(state)
            target = np.array([xy[0], xy[1], self.carry_z])
            if self.failure == "drop_early" and self.timer >= self.drop_after:
                self.phase, self.timer = "release", 0
            elif np.linalg.norm(xy - ee[:2]) < 0.012:
                self.phase = "lower"
        elif self.phase == "lower":
            close = 1.0
            xy, z = self._place_target(state)
            target = np.array([xy[0], xy[1], z])
            if ee[2] - z < 0.01:
                self.phase, self.timer = "release", 0
        elif self.phase == "release":
            close = -1.0
            if self.timer >= 2:
                self.phase = "retreat"
        elif self.phase == "retreat":
            target = np.array([ee[0], ee[1], self.carry_z])
        if self.failure == "miss_grasp" and self.phase == "lift":
            self.phase = "retreat" if r.random() < 0.5 else "carry"
        return self._to_action(target, ee, target_yaw, yaw, close)

    def _to_action(self, target, ee, target_yaw, yaw, close) -> np.ndarray:
        r = self.rng
        move = np.empty(4)
        move[:3] = 1.5 * (target - ee) / self.scale[0]
        move[3] = wrap_angle(target_yaw - yaw) / self.scale[1]
        move = np.clip(move, -1.0, 1.0) * self.speed
        if r.random() < 0.04:  # the operator hesitates
            move[:] = 0.0
        self.bias = 0.8 * self.bias + r.normal(0.0, 0.5 * self.noise, size=4) * 0.6
        move = move + r.normal(0.0, self.noise, size=4) * 0.5 + self.bias * 0.5
        a = np.concatenate([np.clip(move, -1.0, 1.0), [close]])
        return a.astype(np.float32)


class EnvDemonstrator:
    """A demonstrator that follows an env's current task (for the ROS stand-in's expert action).

    `act(obs)` takes the observation dict (or the state vector); when the env's task changes the
    scripted policy for the new task takes over.
    """

    def __init__(self, env, noise: float = 0.3, seed: int | None = None, failure: bool | str = False):
        self.env = getattr(env, "unwrapped", env)
        self.noise, self.failure = noise, failure
        self.rng = np.random.default_rng(seed)
        self._demo: ScriptedDemonstrator | None = None

    def reset(self) -> None:
        self._demo = None

    def act(self, obs) -> np.ndarray:
        state = obs["state"] if isinstance(obs, dict) else obs
        task = self.env.task.name
        if self._demo is None or self._demo.task.name != task:
            self._demo = ScriptedDemonstrator(task, noise=self.noise, rng=self.rng, failure=self.failure,
                                              action_scale=self.env.action_scale, layout=self.env.layout)
        return self._demo.act(np.asarray(state))


def make_demonstrator(env, noise: float = 0.3, seed: int | None = None, failure: bool | str = False) -> EnvDemonstrator:
    """Scripted demonstrator bound to `env` (follows `env.task`); see EnvDemonstrator."""
    return EnvDemonstrator(env, noise=noise, seed=seed, failure=failure)
