"""The reset-free episode logic of the fine-tuning loop (_next_episode) on a recording fake env."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from robot_calql.config import ConfigError, compose
from robot_calql.train import finetune
from robot_calql.train.finetune import _next_episode


class FakeEnv:
    def __init__(self):
        self.calls = []
        self.task = "fwd"

    def set_task(self, name):
        self.task = name
        self.calls.append(("set_task", name))

    def reset(self, seed=None, options=None):
        full = True if options is None else options.get("full", True)
        self.calls.append(("reset", "full" if full else "arm home" if options.get("home") else "keep scene"))
        return {"task": self.task}, {}


def _loop():
    return {"step": 0, "episodes": 0, "task": "fwd", "ep_return": 0.0, "ep_len": 0,
            "successes": {"fwd": 0, "bwd": 0}, "episodes_by_task": {"fwd": 0, "bwd": 0}, "homes": 0}


def _cfg(**kw):
    return OmegaConf.create({"reset_free": True, "backward": True, "full_reset_every": 0, "home": "after_failure", **kw})


def test_success_switches_direction_without_touching_the_scene():
    env, loop = FakeEnv(), _loop()
    obs = _next_episode(env, loop, True, "fwd", "bwd", _cfg(), None)
    assert obs["task"] == "bwd" and loop["task"] == "bwd"
    assert env.calls == [("set_task", "bwd"), ("reset", "keep scene")]
    assert loop["successes"] == {"fwd": 1, "bwd": 0} and loop["episodes"] == 1
    env.calls.clear()
    _next_episode(env, loop, True, "fwd", "bwd", _cfg(), None)  # the backward task succeeded too
    assert loop["task"] == "fwd" and env.calls == [("set_task", "fwd"), ("reset", "keep scene")]


def test_time_limit_keeps_task_and_objects_and_sends_the_arm_home():
    env, loop = FakeEnv(), _loop()
    loop["task"] = "bwd"
    _next_episode(env, loop, False, "fwd", "bwd", _cfg(), None)
    assert loop["task"] == "bwd" and env.calls == [("reset", "arm home")]
    assert loop["episodes_by_task"] == {"fwd": 0, "bwd": 1} and loop["successes"]["bwd"] == 0
    assert loop["homes"] == 1


def test_home_never_and_always():
    env, loop = FakeEnv(), _loop()
    _next_episode(env, loop, False, "fwd", "bwd", _cfg(home="never"), None)
    _next_episode(env, loop, True, "fwd", "bwd", _cfg(home="always"), None)
    assert env.calls == [("reset", "keep scene"), ("set_task", "bwd"), ("reset", "arm home")]
    assert loop["homes"] == 1


def test_full_resets_when_asked():
    env, loop = FakeEnv(), _loop()
    _next_episode(env, loop, True, "fwd", "bwd", _cfg(reset_free=False), None)
    assert loop["task"] == "fwd" and env.calls == [("set_task", "fwd"), ("reset", "full")]
    env, loop = FakeEnv(), _loop()
    _next_episode(env, loop, False, "fwd", "bwd", _cfg(full_reset_every=2), None)
    _next_episode(env, loop, False, "fwd", "bwd", _cfg(full_reset_every=2), None)
    assert env.calls == [("reset", "arm home"), ("set_task", "fwd"), ("reset", "full")]
    env, loop = FakeEnv(), _loop()
    _next_episode(env, loop, True, "fwd", "bwd", _cfg(backward=False), None)  # no backward practice
    assert loop["task"] == "fwd" and env.calls[-1] == ("reset", "full")


def test_unknown_home_setting_is_a_config_error():
    with pytest.raises(ConfigError, match="home=sometimes: must be one of never, after_failure, always"):
        finetune.main(compose("finetune", ["home=sometimes"]))


class ReachEnv(FakeEnv):
    """FakeEnv whose cube is out of the arm's reach until a full reset puts it back."""

    def __init__(self):
        super().__init__()
        self.unreachable = True

    def needs_reset(self):
        return self.unreachable

    def reset(self, seed=None, options=None):
        if options is None or options.get("full", True):
            self.unreachable = False
        return super().reset(seed, options)


def test_an_unreachable_cube_is_put_back_by_a_full_reset_and_counted():
    env, loop = ReachEnv(), _loop()
    loop["task"] = "bwd"
    _next_episode(env, loop, False, "fwd", "bwd", _cfg(reset_unreachable=True), None)
    assert env.calls == [("set_task", "fwd"), ("reset", "full")] and loop["task"] == "fwd"
    assert loop["person_resets"] == 1 and loop["homes"] == 0
    env.calls.clear()
    _next_episode(env, loop, False, "fwd", "bwd", _cfg(reset_unreachable=True), None)  # back in reach
    assert env.calls == [("reset", "arm home")] and loop["person_resets"] == 1


def test_without_reset_unreachable_the_scene_is_kept():
    env, loop = ReachEnv(), _loop()
    _next_episode(env, loop, False, "fwd", "bwd", _cfg(reset_unreachable=False), None)
    assert env.calls == [("reset", "arm home")] and loop.get("person_resets", 0) == 0
    env, loop = FakeEnv(), _loop()  # a gym env (no needs_reset) is never reset for it
    _next_episode(env, loop, False, "fwd", "bwd", _cfg(reset_unreachable=True), None)
    assert env.calls == [("reset", "arm home")]


def test_help_after_failures_in_a_row_is_a_full_reset_and_the_count_starts_again():
    env, loop = FakeEnv(), _loop()
    cfg = _cfg(help_after_failures=3, home="never")
    _next_episode(env, loop, False, "fwd", "bwd", cfg, None)
    _next_episode(env, loop, True, "fwd", "bwd", cfg, None)      # a success: the count starts again
    _next_episode(env, loop, False, "fwd", "bwd", cfg, None)
    _next_episode(env, loop, False, "fwd", "bwd", cfg, None)
    assert env.calls == [("reset", "keep scene"), ("set_task", "bwd"), ("reset", "keep scene"),
                         ("reset", "keep scene"), ("reset", "keep scene")]
    assert loop.get("help_calls", 0) == 0 and loop["task"] == "bwd"
    env.calls.clear()
    _next_episode(env, loop, False, "fwd", "bwd", cfg, None)     # third failure in a row (backward)
    assert env.calls == [("set_task", "fwd"), ("reset", "full")] and loop["task"] == "fwd"
    assert loop["help_calls"] == 1 and loop["person_resets"] == 1 and loop["failures_in_a_row"] == 0
    env.calls.clear()
    _next_episode(env, loop, False, "fwd", "bwd", cfg, None)
    assert env.calls == [("reset", "keep scene")] and loop["help_calls"] == 1
    env, loop = FakeEnv(), _loop()                                # off (0): never
    for _ in range(6):
        _next_episode(env, loop, False, "fwd", "bwd", _cfg(home="never"), None)
    assert loop.get("help_calls", 0) == 0 and all(c == ("reset", "keep scene") for c in env.calls)
