"""Reset-free episode controller (message-free state machine).

RoboFuME practises a task and its reset task in turn, so nobody has to put the scene back:

    forward ("put the cube in the bowl") --success--> backward ("take the cube out") --success--> forward ...

- A phase (one try of one direction) ends on success (the debounced success flag) or on the
  phase time limit. A success switches direction; a timeout retries the same direction.
- Consecutive failed tries are counted (any direction). After `max_failures` in a row the
  controller asks for a human (event `help`), and pauses until `resume()`.
- `pause()` / `resume()` on request: a paused controller ends the running phase (reason
  `paused`) and starts a fresh phase of the same direction on resume.
- Arm homing (`home`): "after_failure" sends the arm home after a try that timed out, "always"
  after every try, "never" keeps the arm where the try left it. The objects stay where they
  are (still reset-free); only the arm starts the next try from its home pose. Without it a
  deterministic policy that ends a try somewhere the data never went (pinned at the workspace
  edge, say) starts every retry from there and fails them all the same way. The controller
  emits a `home` event and starts the next try only when `homed(now)` reports the arm there; a
  failed homing, or none within `home_timeout_s`, pauses it and asks for a human.
- Policy readiness (`update(now, success, policy_ready)`): no try starts while the policy
  cannot act (still loading its weights, restarting, without frames); a try running when it
  stops being ready ends with reason `policy_lost`, counted as neither a try nor a failure,
  and a fresh try of the same direction starts once it is ready again. Without this the first
  try's clock ran out while the policy node was still loading, and that timeout counted.

- Human takeovers (`command_source(source)`, the `source` of each safety-node verdict): the
  first `human` verdict in a running try gives an `intervention` event with reason `start`, the
  first `policy` one after it (or the try's end, which comes right after) reason `end`.

The node calls `update(now, success)` at its rate and publishes what `update` returns:
a list of `Event`s (episode start / end, help, intervention). Times are seconds on any clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["HOME_MODES", "ControllerConfig", "Event", "ResetFreeController", "homes_after"]

HOME_MODES = ("never", "after_failure", "always")


def homes_after(mode: str, success: bool) -> bool:
    """Whether a try that ended (`success` or not) sends the arm home under `mode` (HOME_MODES)."""
    return mode == "always" or (mode == "after_failure" and not success)


@dataclass(frozen=True)
class ControllerConfig:
    forward_task: str
    backward_task: str
    forward_instruction: str
    backward_instruction: str
    phase_time_limit_s: float = 30.0
    max_failures: int = 3          # consecutive failed tries before asking for a human
    min_phase_s: float = 0.5       # ignore a success flag earlier than this in a phase (stale flag)
    home: str = "never"            # send the arm home between tries: never, after_failure, always
    home_timeout_s: float = 30.0   # homing must be reported done within this, or a human is asked

    def __post_init__(self):
        if self.home not in HOME_MODES:
            raise ValueError(f"home must be one of {HOME_MODES}, got '{self.home}'")
        if self.home_timeout_s <= 0:
            raise ValueError(f"home_timeout_s must be positive, got {self.home_timeout_s}")
        if self.phase_time_limit_s <= 0:
            raise ValueError(f"phase_time_limit_s must be positive, got {self.phase_time_limit_s}")
        if self.max_failures < 1:
            raise ValueError(f"max_failures must be at least 1, got {self.max_failures}")


@dataclass
class Event:
    """What the node publishes: kind is 'start', 'end', 'home' (send the arm home, then call
    `homed`), 'help' or 'intervention' (reason 'start' / 'end': a human takeover)."""

    kind: str
    episode: int
    direction: str          # 'forward' or 'backward'
    task: str
    instruction: str
    reason: str = ""        # for 'end': 'success', 'timeout', 'paused', 'policy_lost'; for 'help': the message
    stats: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"event": self.kind, "episode": self.episode, "direction": self.direction,
                "task": self.task, "instruction": self.instruction, "reason": self.reason,
                **({"stats": self.stats} if self.stats else {})}


class ResetFreeController:
    """Forward/backward schedule with a time limit, failure counting and pause/resume."""

    def __init__(self, cfg: ControllerConfig):
        self.cfg = cfg
        self.direction = "forward"
        self.episode = -1
        self.phase_start: float | None = None
        self.homing_since: float | None = None   # waiting for the arm to reach home
        self.paused = False
        self.waiting_for_human = False
        self.policy_ready = True                 # as last reported to update()
        self.consecutive_failures = 0
        self.stats = {"forward": {"tries": 0, "successes": 0},
                      "backward": {"tries": 0, "successes": 0}}
        self.intervening = False   # a human takeover runs in this try
        self.interventions = 0

    @property
    def task(self) -> str:
        return self.cfg.forward_task if self.direction == "forward" else self.cfg.backward_task

    @property
    def instruction(self) -> str:
        return (self.cfg.forward_instruction if self.direction == "forward"
                else self.cfg.backward_instruction)

    @property
    def running(self) -> bool:
        return self.phase_start is not None

    @property
    def homing(self) -> bool:
        return self.homing_since is not None

    def _event(self, kind: str, reason: str = "") -> Event:
        return Event(kind, self.episode, self.direction, self.task, self.instruction, reason,
                     {k: dict(v) for k, v in self.stats.items()} if kind != "start" else {})

    def _start(self, now: float) -> Event:
        self.episode += 1
        self.phase_start = now
        return self._event("start")

    def _end(self, reason: str) -> list[Event]:
        """The try ends (after the end of a takeover still running)."""
        events = self.command_source("policy")
        if reason in ("success", "timeout"):
            self.stats[self.direction]["tries"] += 1
        if reason == "success":
            self.stats[self.direction]["successes"] += 1
        events.append(self._event("end", reason))
        self.phase_start = None
        return events

    def command_source(self, source: str) -> list[Event]:
        """Who commanded the arm ('policy' or 'human', a safety verdict's source): an
        `intervention` event when a takeover starts in the running try or ends."""
        human = source == "human"
        if human == self.intervening or (human and not self.running):
            return []
        self.intervening = human
        self.interventions += int(human)
        return [self._event("intervention", "start" if human else "end")]

    def _next(self, now: float, failed: bool) -> list[Event]:
        """After a try: send the arm home (and wait for `homed`) or start the next try now."""
        if homes_after(self.cfg.home, success=not failed):
            self.homing_since = now
            return [self._event("home")]
        return [self._start(now)]

    def _ask_human(self, msg: str) -> list[Event]:
        self.paused = True
        self.waiting_for_human = True
        self.homing_since = None
        return [self._event("help", msg)]

    def update(self, now: float, success: bool, policy_ready: bool = True) -> list[Event]:
        """Advance the schedule; returns the events to publish (possibly none). `policy_ready`:
        whether the policy can act now (no try starts, and a running one ends, while it cannot)."""
        self.policy_ready = bool(policy_ready)
        if self.paused:
            return []
        if self.homing:
            if now - self.homing_since > self.cfg.home_timeout_s:
                return self._ask_human(f"the arm did not report home within {self.cfg.home_timeout_s:g} s: "
                                       "please check the arm, then resume the episode controller")
            return []
        if not self.policy_ready:
            # neither a try nor a failure: the policy was not there to try
            return self._end("policy_lost") if self.running else []
        if not self.running:
            return [self._start(now)]
        elapsed = now - self.phase_start
        if success and elapsed >= self.cfg.min_phase_s:
            events = self._end("success")
            self.consecutive_failures = 0
            self.direction = "backward" if self.direction == "forward" else "forward"
            return events + self._next(now, failed=False)
        if elapsed >= self.cfg.phase_time_limit_s:
            events = self._end("timeout")
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.cfg.max_failures:
                return events + self._ask_human(
                    f"{self.consecutive_failures} failed tries in a row (last: {self.direction} "
                    f"'{self.instruction}'): please check the scene, then resume the episode controller")
            return events + self._next(now, failed=True)
        return []

    def homed(self, now: float, ok: bool = True, message: str = "") -> list[Event]:
        """The arm reached home (ok) or could not get there (asks for a human). Ignored unless
        the controller is waiting for it (a late answer after a pause or a timeout)."""
        if not self.homing or self.paused:
            return []
        if not ok:
            return self._ask_human(f"homing the arm failed ({message or 'no reason given'}): "
                                   "please check the arm, then resume the episode controller")
        self.homing_since = None
        return [self._start(now)] if self.policy_ready else []   # else update() starts it when ready

    def pause(self) -> list[Event]:
        """Stop practising (ends the running phase); `resume` starts a fresh phase."""
        if self.paused:
            return []
        self.paused = True
        self.homing_since = None
        return self._end("paused") if self.running else []

    def resume(self, now: float) -> list[Event]:
        """Resume after a pause or a call for help (the failure count starts again)."""
        if not self.paused:
            return []
        self.paused = False
        self.waiting_for_human = False
        self.consecutive_failures = 0
        return [self._start(now)] if self.policy_ready else []
