"""Training metrics: TensorBoard scalars and a JSON-lines file with the same numbers.

`<run>/metrics.jsonl` has one object per logged point: {"step": int, "tag": str, ...scalars};
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
