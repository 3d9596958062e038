"""A simulated operator for the stand-in: takes over when the policy is stuck or heading out of bounds.

`SimulatedHuman.step(ee_pos)` is called once per control step with the end-effector position
and says whether the human drives this step. It takes over when, for `patience_steps` steps,

- the policy is stuck: at every one of those steps the end effector was within `stuck_m` of
  where it was `patience_steps` steps ago (it stood still; an arm that went down to grasp and
  came back up in that time, ending where it started, is not stuck), or
- it heads out of bounds: every one of those steps ended within `edge_margin_m` of a wall of the
  workspace box and moved toward that wall;

or, with `watch_steps` > 0,

- the policy goes the wrong way: at least `watch_share` of its last `watch_steps` actions disagreed
  with what the operator would have done (`disagrees`: the caller passes the scripted
  demonstrator's action for the same state as `expert_action`, and the policy's own as
  `policy_action`; `watch_move=false` judges the gripper only). This is the operator of HG-DAgger (Kelly et al. 2019) and HIL-SERL, who steps
  in when the arm heads somewhere they would not send it, not only once it has stopped;

or, with `progress_steps` > 0,

- the try makes no progress: for `progress_steps` steps the distance to the task's goal
  (`goal_distance`: to the cube while it is not held; to the bowl, or to anywhere outside it,
  while it is, and low enough to let go) never came `progress_m` closer than it was at the start
  of that window. It judges the goal, not a path: any way that gets there is fine, and a held
  cube at its goal that is not let go makes no progress;

then drives (the caller acts with the scripted demonstrator, robot_calql/sim/demonstrators.py)
for at most `takeover_steps` steps and lets go. `budget_steps` bounds the human steps of a whole
run; `reset()` at an episode start ends a takeover and clears the window (not the budget).

Plain logic: the non-ROS `finetune` loop (`simulated_human.enabled=true`) and the ROS
`sim_human` node (robot_calql_ros.sim_human_node, which drives through the teleop topics) both use it.
The no-progress rule needs `goal_distance` of the scene's state: the `finetune` loop computes it,
the ROS stand-in publishes it on `topics.goal_distance`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SimulatedHumanConfig", "SimulatedHuman", "disagrees", "goal_distance"]


@dataclass(frozen=True)
class SimulatedHumanConfig:
    patience_steps: int = 10       # N: steps stuck or heading out of bounds before taking over
    takeover_steps: int = 25       # at most this many steps per takeover, then it lets go
    budget_steps: int = 1000       # human steps in the whole run (0: never takes over)
    stuck_m: float = 0.02          # stayed within this of where it was N steps ago, at every step since: stuck
    edge_margin_m: float = 0.02    # within this of a workspace wall and moving toward it: heading out
    watch_steps: int = 0           # the wrong-way rule's window of policy steps (0: off)
    watch_share: float = 0.7       # takes over when at least this share of that window disagreed
    watch_progress: float = 0.3    # a step agrees when it moves at least this share of the operator's move their way
    watch_move: bool = True        # False: the wrong-way rule judges the gripper only (any path to the goal is fine)
    progress_steps: int = 0        # the no-progress rule's window of steps (0: off)
    progress_m: float = 0.01       # progress: the goal distance came this much closer than at the window's start
    workspace_min: tuple[float, float, float] = (0.10, -0.28, 0.015)
    workspace_max: tuple[float, float, float] = (0.46, 0.28, 0.25)

    def __post_init__(self):
        for k in ("patience_steps", "takeover_steps"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"simulated_human.{k} must be >= 1, got {getattr(self, k)}")
        if int(self.budget_steps) < 0:
            raise ValueError(f"simulated_human.budget_steps must be >= 0, got {self.budget_steps}")
        if int(self.progress_steps) < 0 or not float(self.progress_m) > 0:
            raise ValueError(f"simulated_human.progress_steps must be >= 0 (0: off) and progress_m > 0, got "
                             f"{self.progress_steps} and {self.progress_m}")
        if int(self.watch_steps) < 0:
            raise ValueError(f"simulated_human.watch_steps must be >= 0 (0: off), got {self.watch_steps}")
        if not (0.0 < float(self.watch_share) <= 1.0):
            raise ValueError(f"simulated_human.watch_share must be in (0, 1], got {self.watch_share}")
        if not (0.0 <= float(self.watch_progress) <= 1.0):
            raise ValueError(f"simulated_human.watch_progress must be in [0, 1], got {self.watch_progress}")
        if not (self.stuck_m >= 0 and self.edge_margin_m >= 0):
            raise ValueError("simulated_human.stuck_m and edge_margin_m must be >= 0")
        if not np.all(np.asarray(self.workspace_min) < np.asarray(self.workspace_max)):
            raise ValueError(f"simulated_human workspace_min {self.workspace_min} must lie below workspace_max "
                             f"{self.workspace_max} on every axis")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SimulatedHumanConfig:
        """From a config section (unknown keys are an error naming them; `enabled` is ignored)."""
        d = {k: v for k, v in dict(d or {}).items() if k != "enabled"}
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"simulated_human: unknown keys {sorted(unknown)} (known: {sorted(cls.__dataclass_fields__)})")
        for k in ("workspace_min", "workspace_max"):
            if k in d:
                d[k] = tuple(float(x) for x in d[k])
        return cls(**d)


MIN_MOVE = 0.25  # an operator's translation (normalised action units) below this: too small to judge its way


def disagrees(policy_action: np.ndarray, expert_action: np.ndarray, progress: float | None = 0.3) -> bool:
    """Whether the policy's normalised action (dx, dy, dz, dyaw, gripper) goes another way than the
    operator's for the same state: its gripper command has the other sign (closing where they would
    open, or the reverse), or (`progress` not None) the operator would move the hand (by at least
    MIN_MOVE) and the policy's move along that direction is less than `progress` of theirs (the
    wrong way, sideways, or standing still). Yaw is not judged."""
    p = np.asarray(policy_action, np.float64).reshape(-1)
    e = np.asarray(expert_action, np.float64).reshape(-1)
    if p.shape != (5,) or e.shape != (5,):
        raise ValueError(f"disagrees: actions must have 5 values (dx, dy, dz, dyaw, gripper), got {p.size} and {e.size}")
    if (p[4] > 0) != (e[4] > 0):
        return True
    if progress is None:
        return False
    move = float(np.linalg.norm(e[:3]))
    return move >= MIN_MOVE and float(p[:3] @ e[:3]) / move < progress * move


HEIGHT_WEIGHT = 0.5  # how much a held cube's height counts: lowering it over its goal, lifting it out of the bowl
HIGH_M = 0.10        # heights count up to this much above the table
PUT_DOWN_M = 0.05    # the backward goal: at least this far beyond the bowl's outer wall


def goal_distance(state: np.ndarray, task: str, layout: Any = None) -> float | None:
    """How far a try of `task` (cube_in_bowl or cube_out_of_bowl) is from done (metres, with stage
    offsets), from the stand-in's state vector. While the cube is not in the hand: 0.5 + the
    hand's distance to the cube. Once it is: how far the cube is from above the bowl's inside
    (forward) or from PUT_DOWN_M beyond the bowl's wall (backward: where a person would put it
    down), plus, backward while still over the bowl, HEIGHT_WEIGHT times how far it is below
    HIGH_M (lifting it out is progress); above its goal, HEIGHT_WEIGHT times its height minus
    HIGH_M (at most 0: lowering it is progress). A grasp is progress, a dropped cube is not, a held
    cube that is not let go makes none. None for other tasks."""
    from robot_calql.sim.demonstrators import cube_in_hand
    from robot_calql.sim.env import STANDIN_LAYOUT
    from robot_calql.sim.tasks import BOWL_INNER_HALF, BOWL_OUTER_HALF, CUBE_HALF

    lay = layout if layout is not None else STANDIN_LAYOUT
    ee, cube, bowl = (np.asarray(state[k], np.float64) for k in (lay.ee, lay.cube, lay.bowl))
    if task not in ("cube_in_bowl", "cube_out_of_bowl"):
        return None
    if not cube_in_hand(state, lay):
        return 0.5 + float(np.linalg.norm(ee - cube))
    off = float(np.abs(cube[:2] - bowl[:2]).max())   # how far from the bowl's centre, along x or y
    h = min(max(float(cube[2]) - CUBE_HALF, 0.0), HIGH_M)   # its height above the table, up to HIGH_M
    if task == "cube_in_bowl":
        away, over_bowl = max(off - (BOWL_INNER_HALF - CUBE_HALF), 0.0), False
    else:
        away, over_bowl = max(BOWL_OUTER_HALF + PUT_DOWN_M - off, 0.0), off < BOWL_OUTER_HALF + CUBE_HALF
    if away == 0.0:   # above its goal: lowering it is progress (at most 0, so arriving is too)
        return HEIGHT_WEIGHT * (h - HIGH_M)
    if over_bowl:     # backward, still over the bowl: lifting it out is progress
        return away + HEIGHT_WEIGHT * (HIGH_M - h)
    return away


class SimulatedHuman:
    """See the module docstring. Counters: `used_steps` (human steps so far), `takeovers`; `rule`: why
    the latest takeover began."""

    def __init__(self, cfg: SimulatedHumanConfig):
        self.cfg = cfg
        self.lo = np.asarray(cfg.workspace_min, np.float64)
        self.hi = np.asarray(cfg.workspace_max, np.float64)
        self.used_steps = 0
        self.takeovers = 0
        self.driving = False
        self.rule = ""      # the rule of the latest takeover: stuck, heading_out, wrong_way or no_progress
        self._left = 0
        self._window: deque[np.ndarray] = deque(maxlen=cfg.patience_steps + 1)
        self._outward = 0   # consecutive steps near a wall and moving toward it
        self._wrong: deque[bool] = deque(maxlen=max(1, int(cfg.watch_steps)))  # the wrong-way rule's window
        self._goal: deque[float] = deque(maxlen=int(cfg.progress_steps) + 1)  # the no-progress rule's distances

    def reset(self) -> None:
        """An episode starts: no takeover, empty window (the budget is kept)."""
        self.driving = False
        self._left = 0
        self._window.clear()
        self._outward = 0
        self._wrong.clear()
        self._goal.clear()

    @property
    def budget_left(self) -> int:
        return max(0, int(self.cfg.budget_steps) - self.used_steps)

    def _heading_out(self, prev: np.ndarray, ee: np.ndarray) -> bool:
        move = ee - prev
        near_lo = (ee - self.lo <= self.cfg.edge_margin_m) & (move < 0)
        near_hi = (self.hi - ee <= self.cfg.edge_margin_m) & (move > 0)
        return bool(np.any(near_lo | near_hi))

    def stuck(self) -> bool:
        """The window is full and every position in it is within stuck_m of the oldest one."""
        w = self._window
        if len(w) < w.maxlen:
            return False
        return float(np.linalg.norm(np.asarray(w) - w[0], axis=1).max()) < self.cfg.stuck_m

    def wrong_way(self) -> bool:
        """The wrong-way rule (watch_steps > 0): its window is full and at least watch_share of it disagreed."""
        n = int(self.cfg.watch_steps)
        return n > 0 and len(self._wrong) == n and sum(self._wrong) >= self.cfg.watch_share * n

    def watch(self, policy_action: np.ndarray, expert_action: np.ndarray) -> bool:
        """Call after each step the policy drove, with its action and the operator's for the same
        state (the wrong-way rule, watch_steps > 0); returns whether they disagreed."""
        wrong = disagrees(policy_action, expert_action, self.cfg.watch_progress if self.cfg.watch_move else None)
        if self.cfg.watch_steps > 0 and not self.driving:
            self._wrong.append(wrong)
        return wrong

    def no_progress(self) -> bool:
        """The no-progress rule (progress_steps > 0): its window is full and no distance in it came
        progress_m below the first."""
        g = self._goal
        return self.cfg.progress_steps > 0 and len(g) == g.maxlen and min(list(g)[1:]) > g[0] - self.cfg.progress_m

    def step(self, ee_pos: np.ndarray, goal_dist: float | None = None) -> bool:
        """Call once per control step before acting (with the try's `goal_distance` for the
        no-progress rule); True: the human drives this step."""
        ee = np.asarray(ee_pos, np.float64).reshape(3)
        if self.driving:
            if self._left > 0 and self.budget_left > 0:
                self._left -= 1
                self.used_steps += 1
                return True
            self.reset()   # lets go: the policy gets a fresh window of N steps
        prev = self._window[-1] if self._window else None
        self._window.append(ee)
        self._outward = self._outward + 1 if prev is not None and self._heading_out(prev, ee) else 0
        if goal_dist is not None and self.cfg.progress_steps > 0:
            self._goal.append(float(goal_dist))
        rule = ("stuck" if self.stuck() else "heading_out" if self._outward >= self.cfg.patience_steps
                else "wrong_way" if self.wrong_way() else "no_progress" if self.no_progress() else "")
        if self.budget_left > 0 and rule:
            self.rule = rule
            self.driving = True
            self.takeovers += 1
            self._left = int(self.cfg.takeover_steps) - 1
            self.used_steps += 1
            return True
        return False

    def state(self) -> dict[str, int]:
        """Counters to keep in a checkpoint (`load` restores them)."""
        return {"used_steps": self.used_steps, "takeovers": self.takeovers}

    def load(self, s: dict[str, int]) -> None:
        self.used_steps, self.takeovers = int(s.get("used_steps", 0)), int(s.get("takeovers", 0))
