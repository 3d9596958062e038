"""Fine-tuning's classifier reward counts its mistakes against the simulator's ground truth per
episode: a success it declared while the simulator said no (false), and an episode in which the
simulator said success but the classifier never ended it (missed). A real (untrained) classifier
is loaded from its folder; the threshold decides whether it fires (0: every frame, 2: never)."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from robot_calql.reward.model import build_classifier
from robot_calql.train.finetune import ClassifierReward

INSTR = "put the cube in the bowl"


@pytest.fixture(scope="module")
def clf_dir(tmp_path_factory):
    return build_classifier("cnn", (32, 32, 3), [INSTR]).save(tmp_path_factory.mktemp("clf") / "clf")


def _reward(path, threshold):
    return ClassifierReward(OmegaConf.create({"path": str(path), "threshold": threshold, "debounce": 1}), "cpu")


def _obs():
    return {"image": np.zeros((32, 32, 3), np.uint8), "instruction": INSTR}


def test_a_classifier_that_never_fires_misses_each_real_success_once(clf_dir):
    r = _reward(clf_dir, 2.0)
    for gt in (False, True, True, False):  # the simulator saw success for two frames
        assert r(_obs(), gt) is False
    r.reset()  # the episode ran to its time limit
    for gt in (False, False):
        r(_obs(), gt)
    r.reset()  # an honest failure: nothing missed
    s = r.stats()
    assert s["clf_missed_successes"] == 1 and s["clf_miss_rate"] == 1.0 and s["clf_successes"] == 0


def test_a_classifier_that_always_fires_counts_false_successes(clf_dir):
    r = _reward(clf_dir, 0.0)
    assert r(_obs(), False) is True  # declared success, the simulator said no
    r.reset()
    assert r(_obs(), True) is True  # a true success
    r.reset()
    s = r.stats()
    assert (s["clf_successes"], s["clf_false_positives"], s["clf_missed_successes"]) == (2, 1, 0)
    # the counts survive a checkpoint
    r2 = _reward(clf_dir, 0.0)
    r2.load(r.state())
    assert r2.stats() == s
