import numpy as np
import pytest

from robot_calql.reward import (
    Debouncer,
    binary_metrics,
    calibrate_threshold,
    precision_recall_curve,
)


def test_threshold_meets_target_fpr_and_sits_between_classes():
    neg = np.array([0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.95])
    pos = np.array([0.9, 0.97, 0.99])
    probs, labels = np.r_[neg, pos], np.r_[np.zeros(10), np.ones(3)]
    # 10% of 10 negatives: one (0.95) may score above; the next negative 0.8 must be rejected
    t = calibrate_threshold(probs, labels, target_fpr=0.1)
    assert 0.8 < t <= 0.9
    m = binary_metrics(probs, labels, t)
    assert m["fp"] == 1 and m["tp"] == 3 and m["fpr"] == pytest.approx(0.1)
    # zero tolerance: above every negative; positives below it are lost
    t0 = calibrate_threshold(probs, labels, target_fpr=0.0)
    assert 0.95 < t0 <= 0.97
    assert binary_metrics(probs, labels, t0)["fp"] == 0


def test_threshold_on_random_scores_is_the_best_allowed():
    rng = np.random.default_rng(0)
    probs = np.r_[rng.beta(2, 5, 500), rng.beta(5, 2, 100)]
    labels = np.r_[np.zeros(500), np.ones(100)]
    for target in (0.0, 0.01, 0.05, 0.2):
        t = calibrate_threshold(probs, labels, target)
        m = binary_metrics(probs, labels, t)
        assert m["fpr"] <= target
        # no threshold that meets the target has a better recall (brute force over all scores)
        best = max(binary_metrics(probs, labels, c)["recall"] for c in np.r_[probs, 1.01]
                   if binary_metrics(probs, labels, c)["fpr"] <= target)
        assert m["recall"] == best


def test_calibrate_needs_negatives_and_valid_target():
    with pytest.raises(ValueError, match="negative"):
        calibrate_threshold(np.array([0.9]), np.array([1]), 0.01)
    with pytest.raises(ValueError, match="target_fpr"):
        calibrate_threshold(np.array([0.1]), np.array([0]), 1.5)


def test_metrics_ignore_unlabelled_frames():
    m = binary_metrics(np.array([0.9, 0.1, 0.8, 0.7]), np.array([1, 0, 0, -1]), 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (1, 1, 1, 0)
    assert m["precision"] == 0.5 and m["recall"] == 1.0 and m["fpr"] == 0.5


def test_precision_recall_curve_matches_counts():
    probs = np.array([0.9, 0.8, 0.8, 0.3, 0.1])
    labels = np.array([1, 0, 1, 1, 0])
    prec, rec, thr = precision_recall_curve(probs, labels)
    assert thr.tolist() == [0.9, 0.8, 0.3, 0.1]
    for p, r, t in zip(prec, rec, thr, strict=True):
        m = binary_metrics(probs, labels, t)
        assert p == pytest.approx(m["precision"]) and r == pytest.approx(m["recall"])


def test_debouncer_needs_k_consecutive_positives():
    d = Debouncer(3)
    out = [d.update(x) for x in [True, True, False, True, True, True, True, False]]
    assert out == [False, False, False, False, False, True, True, False]
    d.update(True)
    d.reset()
    assert not d.update(True) and d.count == 1


def test_debouncer_with_threshold_takes_probabilities():
    d = Debouncer(2, threshold=0.7)
    assert [d.update(p) for p in [0.9, 0.69, 0.7, 0.99]] == [False, False, False, True]
    assert d.success
    with pytest.raises(ValueError, match="threshold"):
        Debouncer(2).update(0.9)
    with pytest.raises(ValueError, match="k must be"):
        Debouncer(0)
