"""Transition assembly: only commands the safety node executed become transitions, in order, and
the learner's online replay stores exactly those (obs, action, next obs)."""

import numpy as np
import pytest

from robot_calql.control.transitions import TransitionAssembler
from robot_calql.data.replay import OnlineReplay

PERIOD = 0.1


def _obs(k):
    return {"proprio": np.array([k, -k], np.float32), "instruction": "put the cube in the bowl"}


def _run(verdicts, end=("success", True), late=False, timeout=2 * PERIOD):
    """Command steps 0..n-1 (one per control period, episode 0) with the given verdicts
    (True sent, False held, None: no verdict), then end the episode; returns (transitions, assembler)."""
    asm = TransitionAssembler(timeout)
    out = []
    n = len(verdicts)
    for k, v in enumerate(verdicts):
        now = k * PERIOD
        out += asm.command(_obs(k), np.full(2, k / 100, np.float32), stamp=1000.0 + k * PERIOD, now=now,
                           episode=0, step=k)
        if v is not None:
            # the verdict comes a few ms after the command, or (late=True) after the next tick
            out += asm.verdict(1000.0 + k * PERIOD, v, now + (1.5 * PERIOD if late else 0.005),
                               "" if v else "stale joint_states")
    if end:
        reason, success = end
        out += asm.end(_obs(n - 1), reward=float(success), done=success, truncated=not success, now=n * PERIOD)
    out += asm.expire(n * PERIOD + 1.0)
    return out, asm


def test_every_sent_command_becomes_one_chained_transition():
    out, asm = _run([True] * 5)
    assert [t.step for t in out] == [0, 1, 2, 3, 4]
    for a, b in zip(out, out[1:], strict=False):
        assert a.next_obs is b.obs  # chained: step k's next observation is step k+1's observation
    assert [t.reward for t in out] == [0, 0, 0, 0, 1.0] and out[-1].done and not out[-1].truncated
    assert asm.counts == {"emitted": 5, "held": 0, "no_verdict": 0, "unmatched_verdicts": 0}


def test_verdict_after_the_next_observation_still_counts():
    out, _ = _run([True] * 5, late=True)
    assert [t.step for t in out] == [0, 1, 2, 3, 4]


def test_held_steps_are_dropped_and_never_chained_from():
    out, asm = _run([True, True, True, False, False, False, True, True])
    assert [t.step for t in out] == [0, 1, 2, 6, 7]
    assert asm.counts["held"] == 3 and asm.last_held_reason == "stale joint_states"
    after_gap = out[3]
    assert after_gap.obs["proprio"][0] == 6  # starts from its own observation, not a held step's
    assert out[2].next_obs["proprio"][0] == 3  # what the arm saw after executing step 2


def test_no_verdict_in_time_drops_the_step():
    out, asm = _run([None] * 4)
    assert out == [] and asm.counts["no_verdict"] == 4 and asm.waiting == 0
    # a verdict that arrives after the bound is not used
    asm2 = TransitionAssembler(2 * PERIOD)
    asm2.command(_obs(0), np.zeros(2), stamp=5.0, now=0.0, episode=0, step=0)
    asm2.command(_obs(1), np.zeros(2), stamp=5.1, now=0.1, episode=0, step=1)
    assert asm2.verdict(5.0, True, now=0.5) == []
    assert asm2.counts["no_verdict"] == 1 and asm2.counts["unmatched_verdicts"] == 1


def test_episode_whose_last_step_was_held_still_ends_on_the_last_executed_step():
    out, asm = _run([True, True, True, False])
    assert [t.step for t in out] == [0, 1, 2]
    assert out[-1].done and out[-1].reward == 1.0
    # after step 1 the arm held for three ticks: the episode's final observation is what it led to
    out, _ = _run([True, True, False, False, False])
    assert [t.step for t in out] == [0, 1] and out[-1].done
    assert out[-1].next_obs["proprio"][0] == 4
    out, _ = _run([True, True, False], end=("timeout", False))
    assert [t.step for t in out] == [0, 1] and out[-1].truncated and not out[-1].done


def test_nothing_is_emitted_while_every_command_is_held():
    asm = TransitionAssembler(2 * PERIOD)
    got = []
    for k in range(3):  # executed
        got += asm.command(_obs(k), np.zeros(2), 10.0 + k, k * PERIOD, 0, k)
        got += asm.verdict(10.0 + k, True, k * PERIOD + 0.01)
    # 3 s of held commands (stale joint states); the first one gives step 2 its next observation
    got += asm.command(_obs(3), np.zeros(2), 13.0, 0.3, 0, 3)
    got += asm.verdict(13.0, False, 0.31, "stale joint_states")
    assert [t.step for t in got] == [0, 1]  # step 2 is held back until the episode goes on or ends
    for k in range(4, 33):
        new = asm.command(_obs(k), np.zeros(2), 10.0 + k, k * PERIOD, 0, k)
        new += asm.verdict(10.0 + k, False, k * PERIOD + 0.01, "stale joint_states")
        assert new == [], f"a transition emitted at held step {k}"
    for k in (33, 34):  # fresh again
        got += asm.command(_obs(k), np.zeros(2), 10.0 + k, k * PERIOD, 0, k)
        got += asm.verdict(10.0 + k, True, k * PERIOD + 0.01)
    got += asm.command(_obs(35), np.zeros(2), 45.0, 3.5, 0, 35)
    assert [t.step for t in got] == [0, 1, 2, 33]
    assert got[3].obs["proprio"][0] == 33 and got[2].next_obs["proprio"][0] == 3
    assert asm.counts["held"] == 30


def test_an_episode_without_an_end_is_truncated_when_the_next_one_runs():
    asm = TransitionAssembler(2 * PERIOD)
    got = []
    for k in range(3):
        got += asm.command(_obs(k), np.zeros(2), 10.0 + k, k * PERIOD, 0, k)
        got += asm.verdict(10.0 + k, True, k * PERIOD + 0.01)
    got += asm.start(0.3)  # episode 1 starts; episode 0's end event never came
    for k in range(2):
        got += asm.command(_obs(10 + k), np.zeros(2), 20.0 + k, 0.4 + k * PERIOD, 1, k)
        got += asm.verdict(20.0 + k, True, 0.41 + k * PERIOD)
    assert [(t.episode, t.step) for t in got] == [(0, 0), (0, 1)]  # (1, 0) is held back
    assert got[1].truncated and not got[0].truncated


def test_the_online_replay_stores_what_was_executed_across_a_gap():
    """Fed to the learner's buffer, a transition after a dropped step keeps its own observation
    (the buffer used to reuse the previous step's next observation as every later step's obs)."""
    out, _ = _run([True, True, False, False, True, True, True])
    assert [t.step for t in out] == [0, 1, 4, 5, 6]
    buf = OnlineReplay({"proprio": (2,)}, 2, 50, seed=0)
    for t in out:
        buf.add(t.obs, t.action, t.reward, t.next_obs, t.done, t.truncated, 0)
    b = buf.recent_numpy(50)
    np.testing.assert_array_equal(b["obs"]["proprio"][:, 0], [0, 1, 4, 5, 6])
    np.testing.assert_array_equal(b["next_obs"]["proprio"][:, 0], [1, 2, 5, 6, 6])
    np.testing.assert_allclose(b["action"][:, 0], [0, 0.01, 0.04, 0.05, 0.06])
    assert buf.frames_written == 7  # one extra frame for the step after the gap, shared otherwise


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="verdict_timeout_s"):
        TransitionAssembler(0.0)
    with pytest.raises(ValueError, match="done or truncated"):
        TransitionAssembler(1.0).end(_obs(0), 0.0, False, False, 0.0)
