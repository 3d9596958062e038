"""Teleop mapping and takeover arbitration (robot_calql.control.teleop), without ROS."""

import numpy as np
import pytest

from robot_calql.config import compose
from robot_calql.control.conversions import unpack_policy_command
from robot_calql.control.teleop import (
    TakeoverArbiter,
    TeleopConfig,
    TeleopConfigError,
    TeleopMapper,
    joy_for_action,
    teleop_command,
)

PERIOD = 0.1


def gamepad() -> TeleopConfig:
    from omegaconf import OmegaConf

    return TeleopConfig.from_dict(OmegaConf.to_container(compose("launch_finetune", ["teleop=gamepad"]).teleop))


def joy(axes=None, buttons=None, n=8):
    a, b = [0.0] * n, [0] * 12
    for i, v in (axes or {}).items():
        a[i] = v
    for i in buttons or ():
        b[i] = 1
    return a, b


def test_gamepad_sticks_map_to_the_action_only_while_the_deadman_is_held():
    cfg = gamepad()
    m = TeleopMapper(cfg, PERIOD)
    m.joy(*joy({1: 1.0, 0: -0.55, 4: 0.05}), now=10.0)   # no dead-man
    assert m.action(10.0) is None
    m.joy(*joy({1: 1.0, 0: -0.55, 4: 0.05}, buttons=[cfg.deadman_button]), now=10.0)
    a = m.action(10.01)
    # dx full, dy through the 0.1 deadzone: -(0.55 - 0.1) / 0.9 = -0.5, dz inside the deadzone
    np.testing.assert_allclose(a[:4], [1.0, -0.5, 0.0, 0.0], atol=1e-9)
    assert a[4] == -1.0  # no gripper button yet and no measured gripper: open


def test_a_stale_joy_ends_the_human_command_after_one_control_period():
    cfg = gamepad()
    m = TeleopMapper(cfg, PERIOD)
    m.joy(*joy({1: 0.5}, buttons=[cfg.deadman_button]), now=5.0)
    assert m.action(5.0 + 0.999 * PERIOD) is not None
    assert m.action(5.0 + 1.001 * PERIOD) is None   # the device went quiet (unplugged)
    assert m.input_stamp() == 5.0


def test_gripper_buttons_latch_and_a_takeover_starts_from_the_measured_gripper():
    cfg = gamepad()
    m = TeleopMapper(cfg, PERIOD)
    m.joy(*joy(buttons=[cfg.deadman_button]), now=1.0)
    assert m.action(1.0, start_gripper=1.0)[4] == 1.0   # the arm holds something: keep it closed
    m.joy(*joy(buttons=[cfg.deadman_button, cfg.open_button]), now=1.05)
    m.joy(*joy(buttons=[cfg.deadman_button]), now=1.1)
    assert m.action(1.1, start_gripper=1.0)[4] == -1.0  # opened, and it stays open
    m.joy(*joy(buttons=[cfg.deadman_button, cfg.close_button]), now=1.15)
    assert m.action(1.15)[4] == 1.0


def test_spacemouse_twist_drives_and_its_hold_button_closes_the_gripper():
    from omegaconf import OmegaConf

    cfg = TeleopConfig.from_dict(OmegaConf.to_container(compose("launch_finetune", ["teleop=spacemouse"]).teleop))
    m = TeleopMapper(cfg, PERIOD)
    m.joy([], [1, 1], now=2.0)     # dead-man and gripper held
    m.twist((0.5, 0.0, -1.0), (0.0, 0.0, 0.3), now=2.0)
    a = m.action(2.01)
    np.testing.assert_allclose(a, [(0.5 - 0.05) / 0.95, 0.0, -1.0, (0.3 - 0.05) / 0.95, 1.0], atol=1e-9)
    m.joy([], [1, 0], now=2.02)
    assert m.action(2.02)[4] == -1.0
    assert m.action(2.02 + 0.25 + 1e-6) is None  # Joy older than its input_timeout_s


def test_spacemouse_gripper_keys_stick_between_the_hold_buttons_changes():
    """spacenav_node repeats the buttons' state at its rate: a gripper key must not be undone by the
    next message, only by the close button's next press or release."""
    from omegaconf import OmegaConf

    d = OmegaConf.to_container(compose("launch_finetune", ["teleop=spacemouse"]).teleop)
    keyboard = OmegaConf.to_container(compose("launch_finetune", ["teleop=keyboard"]).teleop)
    m = TeleopMapper(TeleopConfig.from_dict({**d, "keyboard": True, "keys": keyboard["keys"]}), PERIOD)
    m.joy([], [1, 0], now=5.0)
    assert m.action(5.0)[4] == -1.0
    m.key("c", 5.01)                     # close by key while the button rests
    for t in (5.05, 5.1, 5.2):
        m.joy([], [1, 0], now=t)
        assert m.action(t)[4] == 1.0, t
    m.joy([], [1, 1], now=5.25)          # press: closed (already)
    m.key("o", 5.3)                      # open by key while the button is held
    m.joy([], [1, 1], now=5.35)
    assert m.action(5.35)[4] == -1.0
    m.joy([], [1, 0], now=5.4)           # release: open
    m.joy([], [1, 1], now=5.45)          # press: closed again
    assert m.action(5.45)[4] == 1.0


def test_keyboard_keys_drive_for_key_hold_s():
    from omegaconf import OmegaConf

    cfg = TeleopConfig.from_dict(OmegaConf.to_container(compose("launch_finetune", ["teleop=keyboard"]).teleop))
    m = TeleopMapper(cfg, PERIOD)
    assert m.action(0.0) is None
    assert m.key("w", 3.0) and not m.key("x", 3.0)
    np.testing.assert_allclose(m.action(3.1)[:4], [1, 0, 0, 0])
    m.key("c", 3.2)
    assert m.action(3.2)[4] == 1.0
    assert m.action(3.2 + cfg.key_hold_s + 1e-6) is None



def test_keys_next_to_a_gamepad_a_resting_stick_keeps_the_key_motion_a_deflected_one_wins():
    from omegaconf import OmegaConf

    d = OmegaConf.to_container(compose("launch_finetune", ["teleop=gamepad"]).teleop)
    keyboard = OmegaConf.to_container(compose("launch_finetune", ["teleop=keyboard"]).teleop)
    cfg = TeleopConfig.from_dict({**d, "keyboard": True, "keys": keyboard["keys"], "key_hold_s": 0.6})
    m = TeleopMapper(cfg, PERIOD)
    held = [cfg.deadman_button]
    m.joy(*joy(buttons=held), now=10.0)
    assert m.key("w", 10.0)
    # joy_node at rest publishes zeros at its rate: the key's motion lasts its key_hold_s
    for t in (10.05, 10.1, 10.3, 10.55):
        m.joy(*joy({1: 0.05}, buttons=held), now=t)   # a stick inside the deadzone is at rest
        np.testing.assert_allclose(m.action(t)[:4], [1, 0, 0, 0], err_msg=f"t={t}")
    # a deflected stick wins over the key (no mix of the two)
    m.joy(*joy({0: -0.55}, buttons=held), now=10.56)
    np.testing.assert_allclose(m.action(10.56)[:4], [0, -0.5, 0, 0], atol=1e-9)
    m.joy(*joy(buttons=held), now=10.58)              # back at rest within the hold: the key again
    np.testing.assert_allclose(m.action(10.58)[:4], [1, 0, 0, 0])
    m.joy(*joy(buttons=held), now=10.61)              # the hold is over: the resting stick's zeros
    np.testing.assert_allclose(m.action(10.61)[:4], [0, 0, 0, 0])
    m.key("c", 10.62)                                 # a gripper key moves nothing
    m.joy(*joy(buttons=held), now=10.65)
    np.testing.assert_allclose(m.action(10.65), [0, 0, 0, 0, 1])
    m.key("a", 10.7)
    m.joy(*joy({1: 1.0}, buttons=held), now=10.7)     # stick deflected as the key comes: the stick
    np.testing.assert_allclose(m.action(10.7)[:4], [1, 0, 0, 0])
    m.joy(*joy({1: 1.0}), now=10.75)                  # dead-man released: neither drives
    assert m.action(10.75) is None


@pytest.mark.parametrize("bad, words", [
    ({"motion": "wheel"}, "teleop.motion"),
    ({"axes": {"dq": {"index": 0}}}, "teleop.axes.dq"),
    ({"axes": {"dx": {"index": -1}}}, "teleop.axes.dx.index"),
    ({"motion": "twist", "axes": {"dx": {"field": "linear.w"}}}, "teleop.axes.dx.field"),
    ({"deadman_button": None}, "teleop.deadman_button"),
    ({"deadman_button": ""}, "teleop.deadman_button"),
    ({"deadzone": 1.0}, "teleop.deadzone"),
    ({"motion": "keyboard", "deadman_button": None}, "teleop.keys"),
    ({"keys": {"w": ["dx", 1]}}, "teleop.keys.w"),
    ({"wobble": 1}, "unknown keys ['wobble']"),
])
def test_a_bad_mapping_is_refused_naming_the_key(bad, words):
    with pytest.raises(TeleopConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        TeleopConfig.from_dict(bad)


def test_joy_for_action_is_what_the_mapping_turns_back_into_the_action():
    cfg = gamepad()
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = np.concatenate([rng.uniform(-1, 1, 4), [rng.choice([-1.0, 1.0])]])
        m = TeleopMapper(cfg, PERIOD)
        m.joy(*joy_for_action(cfg, a), now=0.0)
        np.testing.assert_allclose(m.action(0.0), a, atol=1e-9)
    m = TeleopMapper(cfg, PERIOD)
    m.joy(*joy_for_action(cfg, np.zeros(5), deadman=False), now=0.0)
    assert m.action(0.0) is None


def test_teleop_command_is_the_policy_command_layout_stamped_with_the_input_time():
    delta, stamp = unpack_policy_command(teleop_command(np.array([1.0, -0.5, 0, 0.2, 1.0]), 0.02, 0.15, 12.5))
    np.testing.assert_allclose(delta, [0.02, -0.01, 0.0, 0.03, 1.0])
    assert stamp == 12.5


def test_arbiter_takes_the_human_command_while_fresh_and_reports_the_end_once():
    arb = TakeoverArbiter(PERIOD)
    assert arb.current(0.0) is None and not arb.ended(0.0)
    assert arb.human(np.ones(5), 1.0, now=1.01) == ""
    np.testing.assert_array_equal(arb.current(1.05), np.ones(5))
    assert arb.active and arb.takeovers == 1
    assert not arb.ended(1.0 + 0.999 * PERIOD)   # within one period: still fresh
    assert arb.ended(1.0 + 1.001 * PERIOD)       # stale: the takeover ends ...
    assert not arb.ended(1.3) and not arb.active  # ... once
    assert arb.current(1.3) is None


def test_arbiter_ignores_old_future_and_out_of_order_input():
    arb = TakeoverArbiter(PERIOD)
    assert "old" in arb.human(np.ones(5), 0.0, now=0.5)
    assert "ahead" in arb.human(np.ones(5), 2.0, now=0.5)
    assert arb.current(0.5) is None
    assert arb.human(np.full(5, 2.0), 1.0, now=1.0) == ""
    assert arb.human(np.full(5, 3.0), 0.95, now=1.0) == ""   # older than the one held: kept out
    np.testing.assert_array_equal(arb.current(1.0), np.full(5, 2.0))
