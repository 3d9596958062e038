"""Threshold calibration, metrics and online debouncing for the success classifier.

A false "success" is the expensive mistake: it gives the learner a wrong reward and makes the
reset-free controller switch to the backward task too early. So the decision threshold is set
on held-out episodes to a target false-positive rate, and online a success is only reported
after k consecutive positive frames.
"""

from __future__ import annotations

import math

import numpy as np


def _logit(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def calibrate_threshold(probs: np.ndarray, labels: np.ndarray, target_fpr: float = 0.01) -> float:
    """Decision threshold (success when p >= threshold) with false-positive rate <= target_fpr.

    Among thresholds that meet the target the lowest one has the best recall. Every threshold
    between the highest negative it must reject and the lowest positive it still accepts gives
    the same recall on this data, so the midpoint (in logit space) is returned: the largest
    margin on both sides for frames the calibration set did not contain.

    probs: float [N] in [0, 1]; labels: [N] with 1 = positive, 0 = negative (others ignored).
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.shape != labels.shape or probs.ndim != 1:
        raise ValueError(f"probs {probs.shape} and labels {labels.shape} must be equal 1-D shapes")
    if not 0.0 <= target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr}")
    neg = np.sort(probs[labels == 0])[::-1]  # descending
    pos = np.sort(probs[labels == 1])
    if len(neg) == 0:
        raise ValueError("cannot calibrate a threshold without negative frames")
    allowed = int(math.floor(target_fpr * len(neg) + 1e-9))  # negatives that may score above
    if allowed >= len(neg):
        return 0.0
    # the threshold must be strictly above the (allowed+1)-th highest negative
    floor = float(np.nextafter(neg[allowed], np.inf))
    accepted = pos[pos >= floor]
    if len(accepted) == 0:
        return floor
    ceiling = float(accepted[0])  # lowest positive still accepted; any t in (floor, ceiling] is equal
    return float(min(max(_sigmoid(0.5 * (_logit(floor) + _logit(ceiling))), floor), ceiling))


def binary_metrics(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Confusion counts, precision, recall, false-positive rate and accuracy at `threshold`.

    Frames whose label is not 0 or 1 are ignored. A ratio with an empty denominator is NaN.
    """
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    keep = (labels == 0) | (labels == 1)
    pred = probs[keep] >= threshold
    y = labels[keep] == 1
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    tn = int(np.sum(~pred & ~y))
    fn = int(np.sum(~pred & y))

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return {
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "positives": tp + fn, "negatives": fp + tn,
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "fpr": ratio(fp, fp + tn),
        "accuracy": ratio(tp + tn, tp + fp + tn + fn),
    }


def precision_recall_curve(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds), one point per distinct score, thresholds descending."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    keep = (labels == 0) | (labels == 1)
    p, y = probs[keep], labels[keep] == 1
    order = np.argsort(-p, kind="stable")
    p, y = p[order], y[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[np.flatnonzero(np.diff(p)), len(p) - 1]  # last index of each distinct score
    tp, fp, thr = tp[last], fp[last], p[last]
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / max(int(y.sum()), 1)
    return precision, recall, thr


class Debouncer:
    """Report success only after `k` consecutive positive frames.

    One instance per stream of frames (one camera, one episode at a time); call `reset()` when a
    new episode starts or the instruction changes. `update()` takes a bool (the frame is
    positive) or, when the debouncer was built with a threshold, a probability.

        deb = Debouncer(k=3, threshold=clf.threshold)
        for frame in stream:
            if deb.update(clf.predict_proba(frame, instruction)[0]):
                ...  # success: end the episode, switch the task, deb.reset()
    """

    def __init__(self, k: int = 3, threshold: float | None = None):
        if int(k) < 1:
            raise ValueError(f"Debouncer k must be >= 1, got {k}")
        self.k = int(k)
        self.threshold = threshold
        self.count = 0

    def update(self, value: bool | float) -> bool:
        """Feed one frame's decision; True once the last k frames were all positive."""
        if isinstance(value, (bool, np.bool_)):
            positive = bool(value)
        elif self.threshold is None:
            raise ValueError("Debouncer got a probability but has no threshold; pass a bool or set threshold")
        else:
            positive = float(value) >= self.threshold
        self.count = self.count + 1 if positive else 0
        return self.count >= self.k

    @property
    def success(self) -> bool:
        return self.count >= self.k

    def reset(self) -> None:
        self.count = 0
