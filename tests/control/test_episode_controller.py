"""Reset-free forward/backward schedule."""

import dataclasses

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


def test_home_after_failure_waits_for_the_arm_then_retries():
    c = ResetFreeController(dataclasses.replace(CFG, max_failures=3, home="after_failure"))
    c.update(0.0, False)
    ev = c.update(10.0, False)  # timeout: home first, no new try yet
    assert kinds(ev) == [("end", "forward", "timeout"), ("home", "forward", "")]
    assert c.homing and not c.running
    assert c.update(12.0, True) == []  # nothing starts (and no stale success ends anything) while homing
    assert kinds(c.homed(13.0)) == [("start", "forward", "")]
    assert c.homed(13.5) == []  # a second answer is ignored
    ev = c.update(14.0, True)  # a success switches direction without homing in this mode
    assert kinds(ev) == [("end", "forward", "success"), ("start", "backward", "")]


def test_home_always_and_failed_or_late_homing_asks_for_a_human():
    c = ResetFreeController(dataclasses.replace(CFG, home="always", home_timeout_s=5.0))
    c.update(0.0, False)
    assert kinds(c.update(1.0, True)) == [("end", "forward", "success"), ("home", "backward", "")]
    ev = c.homed(2.0, ok=False, message="trajectory aborted")
    assert ev[0].kind == "help" and "trajectory aborted" in ev[0].reason
    assert c.paused and c.waiting_for_human and not c.homing
    assert kinds(c.resume(3.0)) == [("start", "backward", "")]
    c.update(13.0, False)  # timeout -> home
    assert c.homing
    assert c.update(18.0, False) == []
    ev = c.update(18.1, False)  # no answer within 5 s
    assert ev[0].kind == "help" and "did not report home within 5 s" in ev[0].reason
    assert c.homed(19.0) == []  # the late answer does not restart a paused controller


def test_home_setting_is_checked():
    with pytest.raises(ValueError, match="home must be one of"):
        dataclasses.replace(CFG, home="sometimes")
    with pytest.raises(ValueError, match="home_timeout_s"):
        dataclasses.replace(CFG, home_timeout_s=0)


def test_no_try_starts_or_runs_while_the_policy_cannot_act():
    c = ResetFreeController(dataclasses.replace(CFG, home="after_failure"))
    assert c.update(0.0, False, policy_ready=False) == []  # still loading: the clock has not started
    assert c.update(30.0, False, policy_ready=False) == []  # however long it takes, nothing times out
    assert kinds(c.update(31.0, False, policy_ready=True)) == [("start", "forward", "")]
    assert c.phase_start == 31.0 and c.episode == 0
    c.update(33.0, True)  # success at 2 s: backward starts
    # the policy goes away mid-try: the try ends, counted neither as a try nor as a failure
    assert kinds(c.update(35.0, False, policy_ready=False)) == [("end", "backward", "policy_lost")]
    assert c.update(60.0, False, policy_ready=False) == []
    assert c.consecutive_failures == 0 and c.stats["backward"]["tries"] == 0
    ev = c.update(61.0, False, policy_ready=True)  # back: a fresh try of the same direction
    assert kinds(ev) == [("start", "backward", "")] and ev[0].episode == 2
    # homing finished while the policy is away: the retry waits for it
    assert kinds(c.update(71.0, False)) == [("end", "backward", "timeout"), ("home", "backward", "")]
    assert c.update(71.5, False, policy_ready=False) == []
    assert c.homed(72.0) == []
    assert not c.running and not c.homing
    assert kinds(c.update(80.0, False, policy_ready=True)) == [("start", "backward", "")]
    assert c.phase_start == 80.0
