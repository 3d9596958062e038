"""Gripper flips: epsilon exploration of the gripper command during online practice.

The Gaussian policy explores every axis with the same kind of small noise around its mean. The
gripper is different: it acts like a switch (the fingers close on the object or open away from
it), and after pre-training on demos whose gripper command is always -1 or +1 the policy's mean
sits deep in tanh's flat tail (0.9 and above), where a sample almost never crosses zero, so a
policy that hovers over the goal still closed rarely tries letting go there. HIL-SERL's answer is
a discrete gripper action explored epsilon-greedily; this is the same exploration for the
continuous gripper axis: with probability `prob` per step, command the gripper the opposite way
to the policy for the next `hold` steps.

Off by default (`prob` 0): a flip while carrying drops the object. Why the default:
docs/experiments/2026-11-22-hover-backups-and-20k-steps.md.

The flipped action is the one executed, so it is the one stored in the replay: the transitions
stay true to what the robot did. Evaluation never flips.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class GripperFlips:
    """Replaces the gripper command (action[axis]) by the opposite of the policy's for `hold` steps,
    starting with probability `prob` at each step that is not already in a flip. The opposite of
    a command g is -1 if g > 0 (closing) and +1 otherwise.

    Call reset() at the start of every episode (a flip never carries over into the next try);
    state() / load() carry an unfinished flip and the random generator through a checkpoint.
    """

    def __init__(self, prob: float, hold: int, axis: int = -1, seed: int | None = None):
        if not (0.0 <= float(prob) <= 1.0):  # also catches NaN
            raise ValueError(f"gripper flip probability must be in [0, 1], got {prob}")
        if int(hold) < 1:
            raise ValueError(f"gripper flip hold must be at least 1 step, got {hold}")
        self.prob, self.hold, self.axis = float(prob), int(hold), int(axis)
        self.rng = np.random.default_rng(seed)
        self.left, self.command, self.flips = 0, 0.0, 0

    def __call__(self, action: np.ndarray) -> np.ndarray:
        """The action to execute: `action` itself, or a copy with the gripper flipped."""
        if self.prob <= 0.0:
            return action
        if self.left == 0 and self.rng.random() < self.prob:
            self.left = self.hold
            self.command = -1.0 if float(action[self.axis]) > 0.0 else 1.0
            self.flips += 1
        if self.left == 0:
            return action
        self.left -= 1
        out = np.array(action, dtype=np.float32, copy=True)
        out[self.axis] = self.command
        return out

    def reset(self) -> None:
        self.left = 0

    def state(self) -> dict[str, Any]:
        return {"left": self.left, "command": self.command, "flips": self.flips,
                "rng": self.rng.bit_generator.state}

    def load(self, state: dict[str, Any]) -> None:
        self.left, self.command, self.flips = int(state["left"]), float(state["command"]), int(state["flips"])
        self.rng.bit_generator.state = state["rng"]
