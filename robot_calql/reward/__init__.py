"""Reward classifier: camera frame + task instruction -> P(success). See docs/reward.md.

    from robot_calql.reward import load_classifier, Debouncer
    clf = load_classifier("runs/reward")               # folder written by `robot-calql reward-train`
    p = clf.predict_proba(frame, instruction)           # float32 [B]; frame uint8 [H, W, 3] or [B, H, W, 3]
    deb = Debouncer(k=3, threshold=clf.threshold)       # success after 3 consecutive positive frames
    if deb.update(p[0]): ...

Importing this package does not import transformers; only a Hugging Face backbone does.
"""

from robot_calql.reward.calibrate import (
    Debouncer,
    binary_metrics,
    calibrate_threshold,
    precision_recall_curve,
)
from robot_calql.reward.labels import (
    IGNORED,
    NEGATIVE,
    POSITIVE,
    LabelConfig,
    LabelError,
    frame_labels,
)
from robot_calql.reward.model import (
    ImageSizeError,
    RewardModelError,
    SuccessClassifier,
    UnknownInstructionError,
    build_classifier,
    load_classifier,
)

__all__ = [
    "Debouncer", "binary_metrics", "calibrate_threshold", "precision_recall_curve",
    "IGNORED", "NEGATIVE", "POSITIVE", "LabelConfig", "LabelError", "frame_labels",
    "ImageSizeError", "RewardModelError", "SuccessClassifier", "UnknownInstructionError",
    "build_classifier", "load_classifier",
]
