"""Human steps through the data path without ROS: verdict -> transition -> payload -> learner's log
-> online replay; the controller's intervention events; the per-episode human statistics."""

import numpy as np
import pytest

from robot_calql.control.episode_controller import ControllerConfig, ResetFreeController
from robot_calql.control.transitions import TransitionAssembler
from robot_calql.control.transport import (
    TransitionLog,
    pack_transition,
    transition_step,
    unpack_transition,
)
from robot_calql.train.logger import InterventionStats

PERIOD = 0.1


def _obs(k):
    return {"proprio": np.full(3, float(k), np.float32), "instruction": "go"}


def test_a_human_verdict_puts_the_executed_action_and_the_flag_in_the_transition():
    asm = TransitionAssembler(2 * PERIOD)
    out = []
    human = np.array([1.0, -0.5, 0.0, 0.0, 1.0], np.float32)
    for k in range(4):
        out += asm.command(_obs(k), np.full(5, 0.1, np.float32), stamp=float(k), now=k * PERIOD, episode=0, step=k)
        src = "human" if k in (1, 2) else "policy"
        out += asm.verdict(float(k), True, k * PERIOD + 0.01, source=src, action=human if src == "human" else None)
    out += asm.end(_obs(4), reward=1.0, done=True, truncated=False, now=0.5)
    assert [t.intervention for t in out] == [False, True, True, False]
    np.testing.assert_array_equal(out[1].action, human)
    np.testing.assert_array_equal(out[0].action, np.full(5, 0.1, np.float32))  # the policy's own
    with pytest.raises(ValueError, match="executed action"):
        asm.verdict(9.0, True, 1.0, source="human")
    with pytest.raises(ValueError, match="source"):
        asm.verdict(9.0, True, 1.0, source="robot")


def test_the_flag_survives_the_payload_the_crash_safe_log_and_the_online_replay(tmp_path):
    from robot_calql.data.replay import InstructionVocab, OnlineReplay

    log = TransitionLog(tmp_path / "transitions.log")
    for k in range(6):
        meta = {"actor": "a", "seq": k, "reward": float(k == 5), "done": k == 5, "truncated": False,
                "instruction": "go", "intervention": k in (2, 3)}
        arrays = {"proprio": np.full(3, k, np.float32), "next_proprio": np.full(3, k + 1, np.float32),
                  "action": np.zeros(5, np.float32)}
        log.append(pack_transition(meta, arrays))
    log.close()
    online = OnlineReplay({"proprio": (3,)}, 5, capacity=20, vocab=InstructionVocab(["go"]))
    flags = []
    for payload in TransitionLog(tmp_path / "transitions.log").read():  # as the restarted learner replays it
        step = transition_step(*unpack_transition(payload), ["proprio"])
        flags.append(step["intervention"])
        online.add(**step)
    assert flags == [False, False, True, True, False, False]
    np.testing.assert_array_equal(online.intervention[:6], flags)
    np.testing.assert_array_equal(np.sort(online.intervention_steps()), [2, 3])
    # a payload from a policy before interventions existed reads as a policy step
    meta = {"actor": "a", "seq": 0, "reward": 0.0, "done": False, "truncated": True, "instruction": "go"}
    step = transition_step(meta, {"proprio": np.zeros(3, np.float32), "next_proprio": np.zeros(3, np.float32),
                                  "action": np.zeros(5, np.float32)}, ["proprio"])
    assert step["intervention"] is False


def test_the_controller_publishes_a_takeovers_start_and_its_end_before_the_try_ends():
    ctl = ResetFreeController(ControllerConfig("f", "b", "do f", "do b", phase_time_limit_s=10.0, max_failures=5))
    assert ctl.command_source("human") == []          # no try running: nothing to mark
    assert [e.kind for e in ctl.update(0.0, False)] == ["start"]
    assert ctl.command_source("policy") == []
    ev = ctl.command_source("human")
    assert [(e.kind, e.reason, e.episode) for e in ev] == [("intervention", "start", 0)]
    assert ctl.command_source("human") == []          # still the same takeover
    assert [(e.kind, e.reason) for e in ctl.command_source("policy")] == [("intervention", "end")]
    ctl.command_source("human")
    events = ctl.update(11.0, False)                  # the try times out during a takeover
    assert [(e.kind, e.reason) for e in events[:2]] == [("intervention", "end"), ("end", "timeout")]
    assert events[0].episode == events[1].episode == 0 and ctl.interventions == 2
    assert [e.kind for e in events[2:]] == ["start"] and not ctl.intervening


def test_intervention_stats_per_episode_and_in_total():
    s = InterventionStats(control_hz=10.0)
    rows = [s.add(h, end) for h, end in [(False, False), (True, False), (True, False), (False, True),
                                         (True, False), (True, True)]]
    assert rows[:3] == [None] * 3 and rows[4] is None
    assert rows[3]["intervention_rate"] == 0.5 and rows[3]["human_steps"] == 2 and rows[3]["episode_steps"] == 4
    assert rows[5]["intervention_rate"] == 1.0 and rows[5]["human_steps_total"] == 4
    assert rows[5]["human_minutes_total"] == pytest.approx(4 / 10 / 60)
    assert rows[5]["intervention_rate_total"] == pytest.approx(4 / 6)
    s2 = InterventionStats(10.0)
    s2.load(s.state())
    assert s2.add(True, True)["human_steps_total"] == 5
