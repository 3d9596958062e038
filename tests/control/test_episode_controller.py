"""Reset-free forward/backward schedule."""

import pytest

from robot_calql.control.episode_controller import ControllerConfig, ResetFreeController

CFG = ControllerConfig("fwd", "bwd", "put it in", "take it out", phase_time_limit_s=10.0,
                       max_failures=2, min_phase_s=0.5)


def kinds(events):
    return [(e.kind, e.direction, e.reason) for e in events]


def test_switches_direction_on_success_and_counts():
    c = ResetFreeController(CFG)
    assert kinds(c.update(0.0, False)) == [("start", "forward", "")]
    assert c.update(0.2, True) == []  # a success flag right at the start is the old phase's
    ev = c.update(1.0, True)
    assert kinds(ev) == [("end", "forward", "success"), ("start", "backward", "")]
    assert ev[1].instruction == "take it out" and ev[1].task == "bwd" and ev[1].episode == 1
    ev = c.update(3.0, True)
    assert kinds(ev) == [("end", "backward", "success"), ("start", "forward", "")]
    assert c.stats == {"forward": {"tries": 1, "successes": 1}, "backward": {"tries": 1, "successes": 1}}


def test_timeout_retries_then_asks_for_a_human_and_pauses():
    c = ResetFreeController(CFG)
    c.update(0.0, False)
    assert c.update(9.9, False) == []
    assert kinds(c.update(10.0, False)) == [("end", "forward", "timeout"), ("start", "forward", "")]
    ev = c.update(20.0, False)
    assert kinds(ev)[:1] == [("end", "forward", "timeout")]
    assert ev[1].kind == "help" and "2 failed tries in a row" in ev[1].reason
    assert c.paused and c.waiting_for_human
    assert c.update(100.0, True) == []  # paused: nothing happens
    assert kinds(c.resume(101.0)) == [("start", "forward", "")]
    assert c.consecutive_failures == 0


def test_success_resets_failure_count():
    c = ResetFreeController(CFG)
    c.update(0.0, False)
    c.update(10.0, False)  # one failure
    c.update(12.0, True)   # success of the retry
    assert c.consecutive_failures == 0
    c.update(22.0, False)  # backward times out once: no help yet
    assert not c.paused


def test_pause_and_resume_on_request():
    c = ResetFreeController(CFG)
    c.update(0.0, False)
    assert kinds(c.pause()) == [("end", "forward", "paused")]
    assert c.pause() == []
    assert c.update(50.0, True) == []
    assert kinds(c.resume(51.0)) == [("start", "forward", "")]
    assert c.resume(52.0) == []
    assert c.stats["forward"]["tries"] == 0  # a paused phase is not a try


def test_bad_config():
    with pytest.raises(ValueError, match="max_failures"):
        ControllerConfig("a", "b", "x", "y", max_failures=0)
