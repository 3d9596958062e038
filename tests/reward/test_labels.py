import numpy as np
import pytest

from robot_calql.data.dataset import Episode
from robot_calql.reward import IGNORED, NEGATIVE, POSITIVE, LabelConfig, LabelError, frame_labels


def episode(T: int, success: bool) -> Episode:
    terminal = np.zeros(T, dtype=bool)
    terminal[-1] = success
    return Episode(proprio=np.zeros((T + 1, 1), np.float32), action=np.zeros((T, 5), np.float32),
                   reward=terminal.astype(np.float32), terminal=terminal, instruction="x", success=success)


P, N, X = POSITIVE, NEGATIVE, IGNORED


def test_successful_episode_last_frames_positive_then_gap_then_negatives():
    lab = frame_labels(episode(9, True), LabelConfig(positive_last=3, ambiguous=2))
    assert lab.tolist() == [N, N, N, N, N, X, X, P, P, P]  # T+1 = 10 frames


def test_failed_episode_is_all_negative():
    assert frame_labels(episode(5, False), LabelConfig()).tolist() == [N] * 6


def test_switches_for_negatives():
    cfg = LabelConfig(positive_last=2, ambiguous=1, success_negatives=False, failure_negatives=False)
    assert frame_labels(episode(5, True), cfg).tolist() == [X, X, X, X, P, P]
    assert frame_labels(episode(5, False), cfg).tolist() == [X] * 6


def test_negative_stride_keeps_every_kth_negative():
    lab = frame_labels(episode(6, False), LabelConfig(negative_stride=3))
    assert lab.tolist() == [N, X, X, N, X, X, N]


def test_short_successful_episode_has_no_negatives():
    lab = frame_labels(episode(3, True), LabelConfig(positive_last=2, ambiguous=5))
    assert lab.tolist() == [X, X, P, P]


def test_bad_settings_are_errors():
    with pytest.raises(LabelError, match="positive_last"):
        LabelConfig(positive_last=0)
    with pytest.raises(LabelError, match="ambiguous"):
        LabelConfig(ambiguous=-1)
    with pytest.raises(LabelError, match="unknown label settings"):
        LabelConfig.from_json({"positives": 3})
    assert LabelConfig.from_json(LabelConfig(ambiguous=7).to_json()).ambiguous == 7
