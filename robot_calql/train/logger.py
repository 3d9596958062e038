"""Training metrics: TensorBoard scalars and a JSON-lines file with the same numbers.

`<run>/metrics.jsonl` has one object per logged point: {"step": int, "tag": str, ...scalars};
`InterventionStats` turns the online steps' `intervention` flags into one `human/*` row per
episode (intervention rate, human steps, human minutes);
tests, plots and the demo read it without TensorBoard. `<run>/tb/` holds the TensorBoard events
(`tensorboard --logdir <run>/tb`). On resume the JSON-lines file is truncated back to the resumed
step, so it never holds the same step twice.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

METRICS = "metrics.jsonl"


class Logger:
    """Write scalars under `<tag>/<name>` to TensorBoard and to metrics.jsonl."""

    def __init__(self, run_dir: str | os.PathLike, tensorboard: bool = True, resume_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS
        if resume_step is not None and self.path.exists():
            keep = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
            tmp = self.path.with_name(f".{METRICS}.tmp")
            with open(tmp, "w") as f:
                for r in keep:
                    f.write(json.dumps(r) + "\n")
            os.replace(tmp, self.path)
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._file = open(self.path, "a")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=resume_step)

    def log(self, step: int, tag: str, scalars: dict[str, Any]) -> None:
        clean = {k: float(v) for k, v in scalars.items() if _is_number(v)}
        self._file.write(json.dumps({"step": int(step), "tag": tag, **clean}) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(f"{tag}/{k}", v, int(step))

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class InterventionStats:
    """Human takeovers per online episode: `add(intervention, episode_end)` once per step returns,
    at an episode's end, the row to log under tag `human`: `intervention_rate` (the episode's share
    of human steps), `human_steps` (in the episode), `episode_steps`, and the run's totals so far
    `human_steps_total`, `human_minutes_total` (human steps / control_hz / 60) and
    `intervention_rate_total`."""

    def __init__(self, control_hz: float):
        if not control_hz > 0:
            raise ValueError(f"control_hz must be > 0, got {control_hz}")
        self.control_hz = float(control_hz)
        self.steps = self.human = 0            # this episode
        self.total_steps = self.total_human = 0
        self.episodes = 0

    def add(self, intervention: bool, episode_end: bool) -> dict[str, float] | None:
        self.steps += 1
        self.human += int(bool(intervention))
        self.total_steps += 1
        self.total_human += int(bool(intervention))
        if not episode_end:
            return None
        row = {"intervention_rate": self.human / self.steps, "human_steps": self.human, "episode_steps": self.steps,
               "human_steps_total": self.total_human, "human_minutes_total": self.total_human / self.control_hz / 60,
               "intervention_rate_total": self.total_human / self.total_steps}
        self.episodes += 1
        self.steps = self.human = 0
        return row

    def state(self) -> dict[str, int]:
        return {"steps": self.steps, "human": self.human, "total_steps": self.total_steps,
                "total_human": self.total_human, "episodes": self.episodes}

    def load(self, s: dict[str, int]) -> None:
        for k in ("steps", "human", "total_steps", "total_human", "episodes"):
            setattr(self, k, int(s.get(k, 0)))


class UpdateMeans:
    """Running means of `agent.update` metrics between two logged points, and the update rate."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.t0 = time.perf_counter()

    def add(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1

    def pop(self) -> dict[str, float]:
        """The means since the last pop (plus `updates_per_s`), and start again."""
        out = {k: v / max(self.count, 1) for k, v in self.sums.items()}
        out["updates_per_s"] = self.count / max(time.perf_counter() - self.t0, 1e-9)
        self.reset()
        return out


def _is_number(v: Any) -> bool:
    if isinstance(v, bool):
        return True
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def read_metrics(path: str | os.PathLike, tag: str | None = None) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl (a run folder or the file), optionally only one tag."""
    p = Path(path)
    if p.is_dir():
        p = p / METRICS
    if not p.exists():
        return []
    return [r for r in _rows(p) if tag is None or r.get("tag") == tag]


def _rows(p: Path) -> Iterator[dict[str, Any]]:
    with open(p) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:  # a line cut by a crash: skip it
                    continue
