"""Episode event strings: the one convention shared by the episode controller and `ingest`.

The reset-free episode controller (robot_calql/control/episode_controller.py) publishes a
`std_msgs/String` on `/robot_calql/episode_event` (robot config `topics.episode_event`) for
each of its events; `robot-calql ingest` cuts a recorded bag into episodes with the same
strings. A message is `<kind>` or `<kind>:<detail>`:

- `start[:<task>]`   a new episode begins; the latest instruction message names it. An episode
                     still open is closed first, as truncated.
- `end:success`      the task was achieved: the episode ends here, its last step gets reward 1
  (or `success`)     and terminal=True.
- `end[:<reason>]`   the episode ends without success (`end:timeout`, `end:paused`): truncated,
                     every reward 0.
- `abort[:<why>]`    the episode is discarded (robot fault, bad intervention).
- `help[:<text>]`    the controller asks for a human; no effect on episodes.
- `intervention:start` / `intervention:end`   a human takeover starts / ends within the open
                     episode: the steps between them are the human's (`intervention` = true).

The JSON form of the controller's `Event.to_dict()` (`{"event": "end", "reason": "success",
"task": ...}`) is accepted too. Anything else is counted as an unknown event and ignored. Event
messages carry no header, so `ingest` uses the bag's receive time, moved onto the header-stamp
clock (see docs/bags.md).
"""

from __future__ import annotations

import json

START = "start"
SUCCESS = "success"  # as a kind: shorthand for end:success
END = "end"
ABORT = "abort"
HELP = "help"
INTERVENTION = "intervention"   # detail: start or end
KINDS = (START, SUCCESS, END, ABORT, HELP, INTERVENTION)


def format_event(kind: str, detail: str = "") -> str:
    """The string to publish: `format_event("end", "success") -> "end:success"`."""
    if kind not in KINDS:
        raise ValueError(f"unknown episode event '{kind}'; one of {KINDS}")
    return f"{kind}:{detail}" if detail else kind


def parse_event(text: str) -> tuple[str | None, str]:
    """Normalise an event message to (kind, detail), kind one of start / success / end / abort /
    help / intervention, or (None, text) when it is not an event. `end:success` gives ("success", "")."""
    text = text.strip()
    if text.startswith("{"):
        try:
            d = json.loads(text)
            kind, detail = str(d.get("event", "")).lower(), str(d.get("reason") or d.get("task") or "")
            if kind == START:
                detail = str(d.get("task") or "")
        except (json.JSONDecodeError, AttributeError):
            return None, text
    else:
        kind, _, detail = text.partition(":")
        kind, detail = kind.strip().lower(), detail.strip()
    if kind not in KINDS:
        return None, text
    if kind == END and detail.lower() == SUCCESS:
        return SUCCESS, ""
    return kind, detail
