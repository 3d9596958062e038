"""`robot-calql reward-eval model=<dir> dataset=<dir>`: how good is a classifier on episodes.

Labels the dataset's frames the way the model was trained (or with overridden label settings),
then reports precision, recall, false-positive rate and accuracy per instruction at the
calibrated threshold, a confusion table, a precision-recall plot, and episode-level figures
with the online debouncer (does a failed episode ever fire, how many frames early or late does a
successful one fire).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from robot_calql.reward.calibrate import Debouncer, binary_metrics, precision_recall_curve
from robot_calql.reward.data import labelled_frames, open_datasets
from robot_calql.reward.labels import LabelConfig
from robot_calql.reward.model import SuccessClassifier, load_classifier

log = logging.getLogger(__name__)


def episode_metrics(clf: SuccessClassifier, refs, which: list[int], debounce_k: int, threshold: float) -> dict[str, Any]:
    """Run the debouncer over whole episodes, as the reward node would online.

    false_success_rate: failed episodes in which success fired at all.
    early_fire_rate: successful episodes in which it fired on a frame labelled negative (before
        the ambiguous frames that precede success).
    ambiguous_fire_rate: successful episodes in which it first fired on an ambiguous frame (a
        step or two before the success frame).
    missed_rate: successful episodes in which it never fired.
    """
    from robot_calql.reward.labels import IGNORED, POSITIVE, frame_labels

    fail_fired = fail_n = succ_n = early = ambiguous = missed = 0
    labels_cfg = LabelConfig.from_json(clf.config.get("labels"))
    for i in which:
        r = refs[i]
        ep = r.dataset[r.index]
        probs = clf.predict_proba(np.asarray(ep.image), r.instruction)
        deb = Debouncer(debounce_k, threshold)
        fired = next((t for t, p in enumerate(probs) if deb.update(float(p))), None)
        if r.success:
            succ_n += 1
            lab = frame_labels(ep, labels_cfg)
            if fired is None:
                missed += 1
            elif fired < int(np.argmax(lab == POSITIVE)):
                # the debouncer needs k frames, so firing k-1 frames into the positives is on time
                if lab[fired] == IGNORED:
                    ambiguous += 1
                else:
                    early += 1
        else:
            fail_n += 1
            fail_fired += fired is not None

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return {"debounce_k": debounce_k, "failed_episodes": fail_n, "successful_episodes": succ_n,
            "false_success_rate": ratio(fail_fired, fail_n), "early_fire_rate": ratio(early, succ_n),
            "ambiguous_fire_rate": ratio(ambiguous, succ_n), "missed_rate": ratio(missed, succ_n)}


def confusion_table(metrics: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per instruction (and 'all') with counts and rates."""
    rows = ["| instruction | TP | FP | TN | FN | precision | recall | FPR | accuracy |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in metrics.items():
        rows.append(f"| {name} | {m['tp']} | {m['fp']} | {m['tn']} | {m['fn']} | {m['precision']:.3f} | "
                    f"{m['recall']:.3f} | {m['fpr']:.4f} | {m['accuracy']:.4f} |")
    return "\n".join(rows)


def plot_pr(curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], points: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.2))
    for name, (prec, rec, _) in curves.items():
        line, = ax.plot(rec, prec, label=name, drawstyle="steps-post")
        m = points[name]
        ax.plot([m["recall"]], [m["precision"]], "o", color=line.get_color())
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title("success classifier (dot: calibrated threshold)")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate(clf: SuccessClassifier, dataset: Any, labels: LabelConfig | None = None,
             threshold: float | None = None, debounce_k: int = 1) -> tuple[dict[str, Any], dict]:
    """Metrics of `clf` on every episode of dataset folder(s). Returns (report, PR curves)."""
    refs, shape = open_datasets(dataset)
    if tuple(shape) != tuple(clf.image_shape):
        from robot_calql.reward.model import ImageSizeError

        raise ImageSizeError(f"dataset frames are {tuple(shape)}, the classifier was trained on {clf.image_shape}")
    labels = labels or LabelConfig.from_json(clf.config.get("labels"))
    thr = clf.threshold if threshold is None else float(threshold)
    which = list(range(len(refs)))
    frames = labelled_frames(refs, which, labels, "evaluation")
    probs = clf.predict_proba(frames.images, frames.instructions)
    instr = np.array(frames.instructions)
    metrics = {"all": binary_metrics(probs, frames.labels, thr)}
    curves = {"all": precision_recall_curve(probs, frames.labels)}
    for s in sorted(set(frames.instructions)):
        m = instr == s
        metrics[s] = binary_metrics(probs[m], frames.labels[m], thr)
        curves[s] = precision_recall_curve(probs[m], frames.labels[m])
    report = {"threshold": thr, "episodes": len(refs), "frames": len(frames), "labels": labels.to_json(),
              "frame_metrics": metrics, "episode_metrics": episode_metrics(clf, refs, which, debounce_k, thr)}
    return report, curves


def main(cfg) -> int:
    from omegaconf import OmegaConf

    from robot_calql.config import resolve_path

    c = OmegaConf.to_container(cfg, resolve=True)
    if c.get("model") in (None, "", "???") or c.get("dataset") in (None, "", "???"):
        raise ValueError("reward-eval needs model=<classifier folder> and dataset=<dir>")
    model, dataset = resolve_path(c["model"]), c["dataset"]
    clf = load_classifier(model, device=str(c.get("device", "cpu")))
    datasets = dataset if isinstance(dataset, list) else [dataset]
    report, curves = evaluate(clf, [resolve_path(d) for d in datasets],
                              labels=LabelConfig.from_json(c["labels"]) if c.get("labels") else None,
                              threshold=c.get("threshold"), debounce_k=int(c.get("debounce_k", 1)))
    out = resolve_path(c.get("out")) or (model / "eval")
    out.mkdir(parents=True, exist_ok=True)
    table = confusion_table(report["frame_metrics"])
    (out / "metrics.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    (out / "confusion.md").write_text(table + "\n")
    plot_pr(curves, report["frame_metrics"], out / "pr_curve.png")
    e = report["episode_metrics"]
    print(f"threshold {report['threshold']:.4f}, {report['episodes']} episodes, {report['frames']} labelled frames\n")
    print(table)
    print(f"\nepisodes (debounce k={e['debounce_k']}): success fired in {e['false_success_rate']:.3f} of "
          f"{e['failed_episodes']} failed ones; of {e['successful_episodes']} successful ones it fired early in "
          f"{e['early_fire_rate']:.3f}, on an ambiguous frame just before success in {e['ambiguous_fire_rate']:.3f}, "
          f"never in {e['missed_rate']:.3f}")
    print(f"\nwrote {out}/metrics.json, confusion.md, pr_curve.png")
    return 0
