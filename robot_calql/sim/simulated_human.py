"""A simulated operator for the stand-in: takes over when the policy is stuck or heading out of bounds.

`SimulatedHuman.step(ee_pos)` is called once per control step with the end-effector position
and says whether the human drives this step. It takes over when, for `patience_steps` steps,

- the policy is stuck: at every one of those steps the end effector was within `stuck_m` of
  where it was `patience_steps` steps ago (it stood still; an arm that went down to grasp and
  came back up in that time, ending where it started, is not stuck), or
- it heads out of bounds: every one of those steps ended within `edge_margin_m` of a wall of the
  workspace box and moved toward that wall;

then drives (the caller acts with the scripted demonstrator, robot_calql/sim/demonstrators.py)
for at most `takeover_steps` steps and lets go. `budget_steps` bounds the human steps of a whole
run; `reset()` at an episode start ends a takeover and clears the window (not the budget).

Plain logic: the non-ROS `finetune` loop (`simulated_human.enabled=true`) and the ROS
`sim_human` node (robot_calql_ros.sim_human_node, which drives through the teleop topics) both use it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SimulatedHumanConfig", "SimulatedHuman"]


@dataclass(frozen=True)
class SimulatedHumanConfig:
    patience_steps: int = 10       # N: steps stuck or heading out of bounds before taking over
    takeover_steps: int = 25       # at most this many steps per takeover, then it lets go
    budget_steps: int = 1000       # human steps in the whole run (0: never takes over)
    stuck_m: float = 0.02          # stayed within this of where it was N steps ago, at every step since: stuck
    edge_margin_m: float = 0.02    # within this of a workspace wall and moving toward it: heading out
    workspace_min: tuple[float, float, float] = (0.10, -0.28, 0.015)
    workspace_max: tuple[float, float, float] = (0.46, 0.28, 0.25)

    def __post_init__(self):
        for k in ("patience_steps", "takeover_steps"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"simulated_human.{k} must be >= 1, got {getattr(self, k)}")
        if int(self.budget_steps) < 0:
            raise ValueError(f"simulated_human.budget_steps must be >= 0, got {self.budget_steps}")
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


class SimulatedHuman:
    """See the module docstring. Counters: `used_steps` (human steps so far), `takeovers`."""

    def __init__(self, cfg: SimulatedHumanConfig):
        self.cfg = cfg
        self.lo = np.asarray(cfg.workspace_min, np.float64)
        self.hi = np.asarray(cfg.workspace_max, np.float64)
        self.used_steps = 0
        self.takeovers = 0
        self.driving = False
        self._left = 0
        self._window: deque[np.ndarray] = deque(maxlen=cfg.patience_steps + 1)
        self._outward = 0   # consecutive steps near a wall and moving toward it

    def reset(self) -> None:
        """An episode starts: no takeover, empty window (the budget is kept)."""
        self.driving = False
        self._left = 0
        self._window.clear()
        self._outward = 0

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

    def step(self, ee_pos: np.ndarray) -> bool:
        """Call once per control step before acting; True: the human drives this step."""
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
        if self.budget_left > 0 and (self.stuck() or self._outward >= self.cfg.patience_steps):
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
