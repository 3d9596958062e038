"""Episode-level figures of reward-eval, with scripted classifier outputs."""

import numpy as np
from conftest import make_dataset

from robot_calql.reward import LabelConfig
from robot_calql.reward.data import open_datasets
from robot_calql.reward.evaluate import confusion_table, episode_metrics


class Scripted:
    """Stands in for a SuccessClassifier: P(success) rises at a chosen frame of each episode."""

    def __init__(self, fire_at: dict[int, int | None], labels: LabelConfig):
        self.fire_at, self.config, self.calls = fire_at, {"labels": labels.to_json()}, 0

    def predict_proba(self, images, instruction):
        t = self.fire_at[self.calls]
        self.calls += 1
        p = np.zeros(len(images), np.float32)
        if t is not None:
            p[t:] = 0.9
        return p


def test_episode_metrics_classifies_when_success_fires(tmp_path):
    make_dataset(tmp_path / "ds", episodes_per_group=1, T=12)  # order: fwd ok, fwd fail, bwd ok, bwd fail
    refs, _ = open_datasets(tmp_path / "ds")
    assert [r.success for r in refs] == [True, False, True, False]
    labels = LabelConfig(positive_last=3, ambiguous=4)  # 13 frames: 0-5 negative, 6-9 ambiguous, 10-12 positive
    # fwd ok: fires on time at 10; fwd fail: fires at 3; bwd ok: fires early at 2; bwd fail: never
    clf = Scripted({0: 10, 1: 3, 2: 2, 3: None}, labels)
    m = episode_metrics(clf, refs, [0, 1, 2, 3], debounce_k=1, threshold=0.5)
    assert m["false_success_rate"] == 0.5 and m["early_fire_rate"] == 0.5 and m["missed_rate"] == 0.0
    # debounced with k=3: fwd ok fires at 12 (on time), fwd fail at 12; bwd ok at 9 (ambiguous)
    clf = Scripted({0: 10, 1: 10, 2: 7, 3: None}, labels)
    m = episode_metrics(clf, refs, [0, 1, 2, 3], debounce_k=3, threshold=0.5)
    assert m["ambiguous_fire_rate"] == 0.5 and m["early_fire_rate"] == 0.0 and m["false_success_rate"] == 0.5
    # fires on the last frame only: k=2 never gets there
    clf = Scripted({0: 12, 1: None, 2: 12, 3: None}, labels)
    assert episode_metrics(clf, refs, [0, 1, 2, 3], debounce_k=2, threshold=0.5)["missed_rate"] == 1.0


def test_confusion_table_rows():
    m = {"tp": 3, "fp": 1, "tn": 10, "fn": 0, "precision": 0.75, "recall": 1.0, "fpr": 1 / 11, "accuracy": 13 / 14}
    table = confusion_table({"all": m, "put the cube in the bowl": m})
    assert table.count("\n") == 3 and "| put the cube in the bowl | 3 | 1 | 10 | 0 | 0.750 |" in table
