"""`robot-calql reward-train dataset=<dir> out=<dir> backbone=<cnn | HF folder or id>`.

Trains the success classifier on labelled frames (see labels.py), calibrates its threshold on
held-out episodes to a target false-positive rate and saves the model folder.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from robot_calql.agent.encoders import random_shift
from robot_calql.reward.calibrate import binary_metrics, calibrate_threshold
from robot_calql.reward.data import (
    Frames,
    labelled_frames,
    open_datasets,
    split_episodes,
)
from robot_calql.reward.labels import LabelConfig
from robot_calql.reward.model import (
    CONFIG_FILE,
    SuccessClassifier,
    build_classifier,
    gripper_open_min_value,
)

log = logging.getLogger(__name__)
BALANCE = ("sampler", "loss_weight", "none")


@dataclass
class TrainConfig:
    """Optimisation and calibration settings (configs/reward_train.yaml, `train:`)."""

    steps: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    lr_schedule: str = "cosine"  # cosine (decay to 0 over the steps) or constant
    weight_decay: float = 1e-4
    balance: str = "sampler"  # sampler: equal draws per (instruction, label); loss_weight; none
    augment: bool = True  # random shifts of up to `shift` pixels (trainable image encoders only)
    shift: int = 4
    val_fraction: float = 0.2  # held-out episodes for threshold calibration
    target_fpr: float = 0.01
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.balance not in BALANCE:
            raise ValueError(f"train.balance must be one of {BALANCE}, got {self.balance!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"train.lr_schedule must be cosine or constant, got {self.lr_schedule!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"train.steps and train.batch_size must be >= 1 (got {self.steps}, {self.batch_size})")

    @classmethod
    def from_dict(cls, d: dict | None) -> TrainConfig:
        d = dict(d or {})
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown train settings {sorted(unknown)}")
        return cls(**d)


def sample_weights(frames: Frames, balance: str) -> np.ndarray:
    """Draw probabilities: every (instruction, label) group gets the same share ("sampler")."""
    if balance != "sampler":
        return np.full(len(frames), 1.0 / len(frames))
    keys = [f"{s}\0{int(y)}" for s, y in zip(frames.instructions, frames.labels, strict=True)]
    _, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inv]
    return w / w.sum()


@torch.no_grad()
def _image_features(clf: SuccessClassifier, images: np.ndarray, batch: int = 64) -> torch.Tensor:
    out = []
    for i in tqdm(range(0, len(images), batch), desc="backbone features", leave=False):
        out.append(clf.backbone.encode_images(torch.from_numpy(np.array(images[i:i + batch])).to(clf.device)))
    return torch.cat(out)


def fit(clf: SuccessClassifier, frames: Frames, cfg: TrainConfig, progress: bool = True) -> list[float]:
    """Train `clf` on labelled frames with BCE; returns the loss per step.

    With a frozen Hugging Face backbone the image features are computed once and only the head
    trains (augmentation is then off); otherwise frames go through the encoder every step.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    clf.to(device).train()
    params = [p for p in clf.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps) if cfg.lr_schedule == "cosine" else None
    cached = None
    if clf.is_hf and not any(p.requires_grad for p in clf.backbone.parameters()):
        cached = _image_features(clf, frames.images)
    probs = sample_weights(frames, cfg.balance)
    labels = torch.from_numpy(frames.labels.astype(np.float32))
    pos_frac = float(frames.labels.mean())
    pos_weight = torch.tensor((1 - pos_frac) / max(pos_frac, 1e-6)) if cfg.balance == "loss_weight" else None
    losses = []
    for _ in tqdm(range(cfg.steps), desc="reward-train", disable=not progress, mininterval=2.0):
        idx = rng.choice(len(frames), size=cfg.batch_size, p=probs)
        instr = [frames.instructions[i] for i in idx]
        text = clf.backbone.encode_text(instr)
        if cached is not None:
            img = cached[idx]
        else:
            x = torch.from_numpy(frames.images[idx])
            if cfg.augment:
                x = random_shift(x, cfg.shift, gen)
            img = clf.backbone.encode_images(x.to(device))
        logits = clf.head(img, text)
        y = labels[idx].to(device)
        loss = F.binary_cross_entropy_with_logits(logits, y, pos_weight=None if pos_weight is None else pos_weight.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(loss.item())
    clf.eval()
    return losses


def per_instruction_metrics(probs: np.ndarray, frames: Frames, threshold: float) -> dict[str, dict[str, float]]:
    out = {"all": binary_metrics(probs, frames.labels, threshold)}
    instr = np.array(frames.instructions)
    for s in sorted(set(frames.instructions)):
        m = instr == s
        out[s] = binary_metrics(probs[m], frames.labels[m], threshold)
    return out


def train_classifier(
    dataset: Any,
    backbone: str = "cnn",
    labels: LabelConfig | None = None,
    train: TrainConfig | None = None,
    local_files_only: bool = True,
    unfreeze_blocks: int = 0,
    head_hidden: int = 256,
    cnn: dict | None = None,
    progress: bool = True,
    gripper_open_min: float | None = None,
) -> tuple[SuccessClassifier, dict[str, Any]]:
    """Train and calibrate a classifier on dataset folder(s); returns (classifier, report).

    gripper_open_min: the release gate stored with the classifier (None: the image alone decides);
    it does not change training or the threshold, only what its consumers count as a success."""
    labels = labels or LabelConfig()
    train = train or TrainConfig()
    refs, image_shape = open_datasets(dataset)
    tr_idx, val_idx = split_episodes(refs, train.val_fraction, train.seed)
    tr = labelled_frames(refs, tr_idx, labels, "training")
    instructions = sorted({r.instruction for r in refs})
    torch.manual_seed(train.seed)  # the initial weights follow the seed, not whatever ran before
    clf = build_classifier(backbone, image_shape, instructions, local_files_only=local_files_only,
                           unfreeze_blocks=unfreeze_blocks, head_hidden=head_hidden, cnn=cnn,
                           gripper_open_min=gripper_open_min)
    clf.config["labels"] = labels.to_json()
    log.info("training on %d frames (%d positive) from %d episodes; %d held-out episodes",
             len(tr), int(tr.labels.sum()), len(tr_idx), len(val_idx))
    t0 = time.time()
    losses = fit(clf, tr, train, progress=progress)
    report: dict[str, Any] = {
        "backbone": clf.config["backbone"],
        "train_episodes": len(tr_idx), "val_episodes": len(val_idx),
        "train_frames": len(tr), "train_positives": int(tr.labels.sum()),
        "steps": train.steps, "train_seconds": round(time.time() - t0, 1),
        "final_loss": float(np.mean(losses[-50:])),
        "train_config": asdict(train), "labels": labels.to_json(), "gripper_open_min": clf.gripper_open_min,
    }
    calib = tr if not val_idx else labelled_frames(refs, val_idx, labels, "held-out calibration")
    if not val_idx:
        log.warning("val_fraction=0: calibrating the threshold on the training frames (optimistic)")
    p_cal = clf.predict_proba(calib.images, calib.instructions)
    clf.threshold = calibrate_threshold(p_cal, calib.labels, train.target_fpr)
    clf.config["calibration"] = {"target_fpr": train.target_fpr, "frames": len(calib),
                                 "episodes": len(val_idx) or len(tr_idx), "held_out": bool(val_idx)}
    report["threshold"] = clf.threshold
    report["calibration"] = per_instruction_metrics(p_cal, calib, clf.threshold)
    return clf, report


def main(cfg) -> int:
    from omegaconf import OmegaConf

    from robot_calql.config import ConfigError, resolve_path

    c = OmegaConf.to_container(cfg, resolve=True)
    gripper_open_min = gripper_open_min_value(c.get("gripper_open_min"), "reward-train gripper_open_min", ConfigError)
    if c.get("dataset") in (None, "", "???"):
        raise ValueError("reward-train needs dataset=<dir> (a robot_calql dataset with images)")
    out = resolve_path(c.get("out"))
    if out is None:
        raise ValueError("reward-train needs out=<dir> for the model folder")
    if (out / CONFIG_FILE).exists() and not c.get("overwrite", False):
        raise FileExistsError(f"{out}: already holds a classifier; pass overwrite=true or another out=")
    datasets = c["dataset"] if isinstance(c["dataset"], list) else [c["dataset"]]
    torch.set_num_threads(int(c.get("threads", 0)) or torch.get_num_threads())
    clf, report = train_classifier(
        [resolve_path(d) for d in datasets],
        backbone=str(c.get("backbone", "cnn")),
        labels=LabelConfig.from_json(c.get("labels")),
        train=TrainConfig.from_dict(c.get("train")),
        local_files_only=bool(c.get("local_files_only", True)),
        unfreeze_blocks=int(c.get("unfreeze_blocks", 0)),
        head_hidden=int(c.get("head_hidden", 256)),
        cnn=c.get("cnn"),
        gripper_open_min=gripper_open_min,
        progress=bool(c.get("progress", True)),
    )
    clf.save(out)
    (out / "train_report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    m = report["calibration"]["all"]
    print(f"saved {out}: threshold {clf.threshold:.4f} (target FPR {report['train_config']['target_fpr']}); "
          f"held-out precision {m['precision']:.3f} recall {m['recall']:.3f} FPR {m['fpr']:.4f}"
          + ("" if gripper_open_min is None else f"; success also needs gripper opening >= {gripper_open_min}"))
    for name, mm in report["calibration"].items():
        if name != "all":
            print(f"  {name!r}: precision {mm['precision']:.3f} recall {mm['recall']:.3f} FPR {mm['fpr']:.4f} "
                  f"({mm['positives']} pos / {mm['negatives']} neg)")
    return 0
