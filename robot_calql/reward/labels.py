"""Per-frame success labels from recorded episodes.

A successful episode ends in the success state, so its last few frames show success; its early
frames do not. The frames just before success (cube touching the bowl rim, gripper opening) are
neither clearly one nor the other, and labelling them either way teaches the classifier noise,
so they are left out. Every frame of a failed episode is a negative.

Frames are the T+1 observation images of an episode (`image[t]`); the last frame `image[T]` is
the observation after the final step, the one the success check saw.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from robot_calql.data.dataset import Episode

POSITIVE, NEGATIVE, IGNORED = 1, 0, -1


class LabelError(ValueError):
    """Labels that cannot be built: no frames, no positives or no negatives, bad settings."""


@dataclass
class LabelConfig:
    """Which frames of an episode are positive, negative or left out.

    positive_last: the last N frames of a successful episode are positives.
    ambiguous: the N frames just before those are left out (neither positive nor negative).
    success_negatives: the remaining (early) frames of successful episodes are negatives.
    failure_negatives: every frame of a failed episode is a negative.
    negative_stride: keep every k-th negative frame (long failure episodes are repetitive).
    """

    positive_last: int = 1
    ambiguous: int = 2
    success_negatives: bool = True
    failure_negatives: bool = True
    negative_stride: int = 1

    def __post_init__(self) -> None:
        if self.positive_last < 1:
            raise LabelError(f"labels.positive_last must be >= 1, got {self.positive_last}")
        if self.ambiguous < 0:
            raise LabelError(f"labels.ambiguous must be >= 0, got {self.ambiguous}")
        if self.negative_stride < 1:
            raise LabelError(f"labels.negative_stride must be >= 1, got {self.negative_stride}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict | None) -> LabelConfig:
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise LabelError(f"unknown label settings {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)


def frame_labels(episode: Episode, cfg: LabelConfig | None = None) -> np.ndarray:
    """Label every observation frame of `episode`: int8 [T+1] of POSITIVE, NEGATIVE or IGNORED."""
    cfg = cfg or LabelConfig()
    n = len(episode) + 1
    labels = np.full(n, IGNORED, dtype=np.int8)
    if episode.success:
        first_pos = max(0, n - cfg.positive_last)
        labels[first_pos:] = POSITIVE
        if cfg.success_negatives:
            last_neg = max(0, first_pos - cfg.ambiguous)  # exclusive
            labels[:last_neg] = NEGATIVE
    elif cfg.failure_negatives:
        labels[:] = NEGATIVE
    if cfg.negative_stride > 1:
        neg = np.flatnonzero(labels == NEGATIVE)
        labels[neg[(np.arange(len(neg)) % cfg.negative_stride) != 0]] = IGNORED
    return labels
