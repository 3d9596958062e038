"""Gripper flips: the epsilon exploration of the gripper command during online practice."""

from __future__ import annotations

import numpy as np
import pytest

from robot_calql.agent.exploration import GripperFlips


def _a(g):
    return np.array([0.1, -0.2, 0.3, 0.0, g], dtype=np.float32)


def test_no_flips_leaves_the_action_untouched():
    f = GripperFlips(0.0, 3, seed=0)
    a = _a(0.9)
    assert all(f(a) is a for _ in range(100)) and f.flips == 0


def test_a_flip_commands_the_opposite_and_holds_it_for_hold_steps():
    f = GripperFlips(1.0, 3, seed=0)
    out = [f(_a(g)) for g in (0.9, -0.5, 0.2, -0.4)]
    # the first flip opposes the closing policy (0.9 -> -1) and holds -1 for 3 steps even though
    # the policy's own command changes sign under it; the 4th step starts a new flip against -0.4
    assert [float(o[4]) for o in out] == [-1.0, -1.0, -1.0, 1.0]
    assert f.flips == 2
    for o, g in zip(out, (0.9, -0.5, 0.2, -0.4), strict=True):  # the arm's axes are the policy's
        np.testing.assert_array_equal(o[:4], _a(g)[:4])


def test_reset_ends_a_flip_at_the_episode_boundary():
    f = GripperFlips(1.0, 5, seed=0)
    assert f(_a(0.9))[4] == -1.0
    f.reset()
    f.prob = 0.0
    assert f(_a(0.9))[4] == pytest.approx(0.9)


def test_flips_start_at_the_configured_rate():
    f = GripperFlips(0.05, 1, seed=1)
    flipped = np.mean([f(_a(0.8))[4] == -1.0 for _ in range(20000)])
    assert flipped == pytest.approx(0.05, abs=0.006)


def test_state_round_trip_continues_the_same_sequence():
    a, b = GripperFlips(0.3, 4, seed=2), GripperFlips(0.3, 4, seed=99)
    rng = np.random.default_rng(0)
    gs = rng.uniform(-1, 1, size=200)
    for g in gs[:57]:
        a(_a(g))
    b.load(a.state())  # mid-flip or not, b now continues exactly as a does
    assert [float(a(_a(g))[4]) for g in gs[57:]] == [float(b(_a(g))[4]) for g in gs[57:]]


@pytest.mark.parametrize(("prob", "hold", "msg"), [(1.5, 3, "in [0, 1]"), (float("nan"), 3, "in [0, 1]"),
                                                   (0.1, 0, "at least 1 step")])
def test_bad_settings_are_refused(prob, hold, msg):
    with pytest.raises(ValueError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        GripperFlips(prob, hold)
