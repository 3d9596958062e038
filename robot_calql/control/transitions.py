"""Transition assembly for the policy node: only commands the arm executed become transitions.

The policy sends one command per control tick (stamped with its camera frame); the safety node
answers each with a verdict: sent to the arm, or held (stale inputs, e-stop, unsafe, ...). A
transition (obs, action, next obs) is what the arm did, so it is emitted only for a command whose
verdict said sent. `TransitionAssembler` keeps the steps in order:

- `command(obs, action, stamp, now, ...)`: a command went out; the open step before it gets
  this observation as its next observation (reward 0, not done);
- `end(next_obs, reward, done, truncated, now)`: the episode ended; the open step gets its end
  flags; `start()` drops an open step left from an episode that never ended;
- `verdict(stamp, sent, now, reason, source, action)`: the safety node's verdict for the command
  of that stamp. With `source="human"` (a takeover: the safety node executed the human's command
  in place of the policy's) the step's action becomes the executed `action` and the transition
  carries `intervention=True`.

Each call returns the transitions that became ready, in command order. A step is executed when
its verdict said sent; it is dropped, and counted, when its verdict says held (`held`) or when no
verdict came within `verdict_timeout_s` of the command (`no_verdict`: the safety node is missing
or late). A dropped step never becomes the start of the next transition: that one starts from
its own observation, which the learner's replay stores as a frame of its own
(robot_calql.data.replay.OnlineReplay.add).

The newest executed step is held back until the next step is executed or the episode ends, so
an episode whose last step was dropped still ends for the learner: the held-back step takes the
end (the final observation as its next observation, reward, done / truncated; the arm held in
between). A held-back step whose episode ended without an `end` call is
emitted truncated when a step of the next episode is executed.

Plain logic, no ROS: the policy node (ros_nodes/robot_calql_ros/policy_node.py) is its adapter.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Transition", "TransitionAssembler"]


@dataclass
class Transition:
    """One executed step, ready to send to the learner."""

    obs: dict[str, Any]
    action: np.ndarray
    next_obs: dict[str, Any]
    reward: float
    done: bool
    truncated: bool
    episode: int
    step: int
    stamp: float  # stamp of the camera frame `obs` was built from (seconds)
    intervention: bool = False  # the human's command was executed (the action is the human's)


@dataclass
class _Step:
    obs: dict[str, Any]
    action: np.ndarray
    stamp: float
    deadline: float        # drop the step if no verdict has come by this time
    episode: int
    step: int
    sent: bool | None = None   # the verdict: None until it arrives
    next_obs: dict[str, Any] | None = None
    reward: float = 0.0
    done: bool = False
    truncated: bool = False
    intervention: bool = False


class TransitionAssembler:
    """Pairs each command with its next observation and its verdict; see the module docstring.

    `verdict_timeout_s`: how long after a command its verdict may arrive (the policy node uses
    two control periods, at least 0.5 s). `stamp_tolerance_s`: how close a verdict's stamp must be
    to the command's (stamps travel as float64, so equal in practice).
    """

    def __init__(self, verdict_timeout_s: float, stamp_tolerance_s: float = 1e-6):
        if not verdict_timeout_s > 0:
            raise ValueError(f"verdict_timeout_s must be > 0, got {verdict_timeout_s}")
        self.timeout = float(verdict_timeout_s)
        self.tolerance = float(stamp_tolerance_s)
        self._steps: deque[_Step] = deque()   # in command order; only the last may be open
        self._last: Transition | None = None  # the newest executed step, held back one step
        self.counts = {"emitted": 0, "held": 0, "no_verdict": 0, "unmatched_verdicts": 0}
        self.last_held_reason = ""

    @property
    def waiting(self) -> int:
        """Steps not yet emitted or dropped (the held-back one included)."""
        return len(self._steps) + (self._last is not None)

    def _open(self) -> _Step | None:
        last = self._steps[-1] if self._steps else None
        return last if last is not None and last.next_obs is None else None

    def command(self, obs: dict[str, Any], action: np.ndarray, stamp: float, now: float,
                episode: int, step: int) -> list[Transition]:
        """A command computed from `obs` (frame `stamp`) was sent at `now`."""
        prev = self._open()
        if prev is not None:
            prev.next_obs = obs
        self._steps.append(_Step(obs, np.asarray(action, np.float32), float(stamp), now + self.timeout,
                                 int(episode), int(step)))
        return self._resolve(now)

    def end(self, next_obs: dict[str, Any], reward: float, done: bool, truncated: bool,
            now: float) -> list[Transition]:
        """The episode ended: the open step (if any) ends it with `next_obs` and these flags
        (`done` or `truncated` must be true)."""
        if not (done or truncated):
            raise ValueError("an episode ends with done or truncated")
        prev = self._open()
        if prev is not None:
            prev.next_obs, prev.reward, prev.done, prev.truncated = next_obs, float(reward), bool(done), bool(truncated)
        return self._resolve(now)

    def start(self, now: float) -> list[Transition]:
        """A new episode starts: an open step of the previous one has no next observation; drop it."""
        if self._open() is not None:
            self._steps.pop()
        return self._resolve(now)

    def verdict(self, stamp: float, sent: bool, now: float, reason: str = "", source: str = "policy",
                action: np.ndarray | None = None) -> list[Transition]:
        """The safety node's verdict on the command computed from frame `stamp`; `source` "human"
        with the executed (normalised) `action`: the human's command ran in place of this step's."""
        if source not in ("policy", "human"):
            raise ValueError(f"verdict source must be 'policy' or 'human', got {source!r}")
        if source == "human" and sent and action is None:
            raise ValueError("a human step's verdict needs the executed action")
        for s in self._steps:
            if s.sent is None and now <= s.deadline and abs(s.stamp - float(stamp)) <= self.tolerance:
                s.sent = bool(sent)
                if not sent:
                    self.last_held_reason = reason
                elif source == "human":
                    s.action = np.asarray(action, np.float32).reshape(s.action.shape)
                    s.intervention = True
                break
        else:  # a verdict after its deadline (that step is dropped), or for another policy's command
            self.counts["unmatched_verdicts"] += 1
        return self._resolve(now)

    def expire(self, now: float) -> list[Transition]:
        """Resolve steps whose verdict is overdue (call it now and then while nothing else happens)."""
        return self._resolve(now)

    def _resolve(self, now: float) -> list[Transition]:
        """Emit or drop the oldest steps that have their next observation and a verdict (or an
        overdue one). The newest executed step is held back until the next one is executed or
        the episode ends: if the step that ends the episode was not executed, the held-back step
        takes its end flags, so the learner's episode still ends."""
        out: list[Transition] = []
        while self._steps:
            s = self._steps[0]
            if s.next_obs is None or (s.sent is None and now <= s.deadline):
                break  # the oldest step still waits for its next observation or its verdict
            self._steps.popleft()
            ends = s.done or s.truncated
            last = self._last
            if s.sent:
                if last is not None:
                    if last.episode != s.episode and not (last.done or last.truncated):
                        last.truncated = True  # its episode ended without an end event
                    out.append(last)
                tr = Transition(s.obs, s.action, s.next_obs, s.reward, s.done, s.truncated, s.episode, s.step,
                                s.stamp, s.intervention)
                out, self._last = (out + [tr], None) if ends else (out, tr)
                continue
            self.counts["held" if s.sent is False else "no_verdict"] += 1
            if ends and last is not None and last.episode == s.episode:
                # the arm held after `last`: the episode's final observation is what it led to
                last.next_obs, last.reward, last.done, last.truncated = s.next_obs, s.reward, s.done, s.truncated
                out.append(last)
                self._last = None
        self.counts["emitted"] += len(out)
        return out
