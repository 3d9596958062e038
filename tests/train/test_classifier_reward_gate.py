"""Fine-tuning's classifier reward applies the classifier's release gate: a confident frame with the
cube at the goal but the gripper still closed on it is no success; the debouncer keeps its count, so
the first frame with the gripper open succeeds. A real (untrained) classifier whose threshold is 0
(every frame confident) is loaded from its folder."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from robot_calql.reward.model import build_classifier
from robot_calql.sim.env import STANDIN_LAYOUT, StateLayout
from robot_calql.train.finetune import ClassifierReward

INSTR = "put the cube in the bowl"
CLOSED, OPEN = 0.38, 0.8  # the stand-in's gripper closed on the cube; released


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("clf")
    return {gate: build_classifier("cnn", (32, 32, 3), [INSTR], gripper_open_min=gate).save(root / str(gate))
            for gate in (None, 0.5)}


def _reward(path, debounce=2):
    return ClassifierReward(OmegaConf.create({"path": str(path), "threshold": 0.0, "debounce": debounce}), "cpu")


def _obs(opening, layout=STANDIN_LAYOUT):
    proprio = np.zeros(layout.proprio_dim, np.float32)
    proprio[layout.grip] = opening
    proprio[layout.ee] = 0.5  # neighbours that must not be read as the opening
    proprio[layout.q] = 0.9
    return {"image": np.zeros((32, 32, 3), np.uint8), "instruction": INSTR, "proprio": proprio}


def test_with_a_gate_a_closed_gripper_holds_the_success_until_it_opens(folders):
    r = _reward(folders[0.5])
    assert r.clf.gripper_open_min == 0.5
    assert r(_obs(CLOSED), False) is False  # one positive frame: the debouncer is not there yet
    assert r(_obs(CLOSED), False) is False  # debounced, but the cube is still held
    assert r(_obs(CLOSED), False) is False
    assert r.stats()["clf_held_by_gate"] == 2
    assert r(_obs(OPEN), True) is True  # the first open frame succeeds: no new debounce wait
    s = r.stats()
    assert (s["clf_held_by_gate"], s["clf_successes"], s["clf_false_positives"]) == (2, 1, 0)
    # the count survives a checkpoint
    r2 = _reward(folders[0.5])
    r2.load(r.state())
    assert r2.stats() == s


def test_the_gate_reads_the_opening_of_an_arm_with_another_number_of_joints(folders):
    six = StateLayout(6)
    r = _reward(folders[0.5], debounce=1)
    assert r(_obs(CLOSED, six), False) is False
    assert r(_obs(OPEN, six), True) is True


def test_without_a_gate_a_closed_gripper_fires(folders):
    r = _reward(folders[None])
    assert r.clf.gripper_open_min is None
    assert [r(_obs(CLOSED), False) for _ in range(2)] == [False, True]
    assert r.stats()["clf_held_by_gate"] == 0
    # no proprio needed without a gate
    r.reset()
    assert r({"image": np.zeros((32, 32, 3), np.uint8), "instruction": INSTR}, True) is False
