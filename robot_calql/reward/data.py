"""Labelled frames from robot_calql datasets, and an episode-level train / held-out split."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from robot_calql.data.dataset import Dataset, DatasetError
from robot_calql.reward.labels import IGNORED, LabelConfig, LabelError, frame_labels


@dataclass
class Frames:
    """Labelled frames: images uint8 [N, H, W, 3], labels int8 [N] (0/1), instructions, origin."""

    images: np.ndarray
    labels: np.ndarray
    instructions: list[str]
    episode: np.ndarray  # global episode id [N]
    step: np.ndarray  # frame index inside its episode [N]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class EpisodeRef:
    dataset: Dataset
    index: int
    instruction: str
    success: bool


def open_datasets(paths: str | os.PathLike | list) -> tuple[list[EpisodeRef], tuple[int, int, int]]:
    """Open one or more dataset folders that hold images of one shape; list their episodes."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    refs: list[EpisodeRef] = []
    shape = None
    for p in paths:
        ds = Dataset(p)
        if ds.meta.image_shape is None:
            raise DatasetError(f"{p}: dataset has no images; the reward classifier needs camera frames")
        if shape is not None and tuple(ds.meta.image_shape) != shape:
            raise DatasetError(f"{p}: images {ds.meta.image_shape}, other datasets have {shape}")
        shape = tuple(ds.meta.image_shape)
        refs += [EpisodeRef(ds, i, info["instruction"], bool(info["success"])) for i, info in enumerate(ds.infos)]
    if not refs:
        raise DatasetError(f"{', '.join(str(p) for p in paths)}: no episodes")
    assert shape is not None
    return refs, shape  # type: ignore[return-value]


def split_episodes(refs: list[EpisodeRef], val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Held-out episodes, stratified by (instruction, success): ~val_fraction of each group,
    at least one per group that has two or more episodes. Returns (train, val) indices."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, bool], list[int]] = {}
    for i, r in enumerate(refs):
        groups.setdefault((r.instruction, r.success), []).append(i)
    train, val = [], []
    for key in sorted(groups):
        idx = list(rng.permutation(groups[key]))
        n_val = int(round(val_fraction * len(idx)))
        if val_fraction > 0 and len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val += idx[:n_val]
        train += idx[n_val:]
    return sorted(int(i) for i in train), sorted(int(i) for i in val)


def labelled_frames(refs: list[EpisodeRef], which: list[int], cfg: LabelConfig, what: str = "training") -> Frames:
    """Gather the labelled (non-ignored) frames of episodes `which`; LabelError if a class is empty."""
    images, labels, instr, ep_ids, steps = [], [], [], [], []
    for i in which:
        r = refs[i]
        ep = r.dataset[r.index]
        lab = frame_labels(ep, cfg)
        keep = np.flatnonzero(lab != IGNORED)
        if len(keep) == 0:
            continue
        images.append(np.asarray(ep.image[keep]))
        labels.append(lab[keep])
        instr += [r.instruction] * len(keep)
        ep_ids.append(np.full(len(keep), i))
        steps.append(keep)
    n_pos = int(sum(int((x == 1).sum()) for x in labels))
    n_neg = int(sum(int((x == 0).sum()) for x in labels))
    if n_pos == 0 or n_neg == 0:
        raise LabelError(
            f"empty label set for {what}: {n_pos} positive and {n_neg} negative frames from {len(which)} episodes "
            f"(successful episodes give positives, failures and early frames negatives; label settings {cfg.to_json()})"
        )
    return Frames(np.concatenate(images), np.concatenate(labels), instr, np.concatenate(ep_ids), np.concatenate(steps))
