"""MC return-to-go on hand-computed episodes."""

import numpy as np
import pytest

from robot_calql.data.returns import ReturnsError, mc_return_to_go, n_step_returns


def test_terminal_episode_hand_computed():
    # rewards 0, 0, 1 then terminal, gamma 0.5: G = [0.25, 0.5, 1]
    g = mc_return_to_go(np.array([0.0, 0.0, 1.0]), np.array([False, False, True]), 0.5)
    np.testing.assert_allclose(g, [0.25, 0.5, 1.0])
    assert g.dtype == np.float32


def test_truncated_episode_bootstraps_zero_by_default_or_given_value():
    r = np.array([1.0, 2.0])
    d = np.array([False, False])
    np.testing.assert_allclose(mc_return_to_go(r, d, 0.9), [1.0 + 0.9 * 2.0, 2.0])
    # with a bootstrap value V = 10 after the last step
    np.testing.assert_allclose(mc_return_to_go(r, d, 0.9, truncated_value=10.0), [1.0 + 0.9 * (2.0 + 9.0), 2.0 + 9.0])


def test_terminal_ignores_truncated_value():
    g = mc_return_to_go(np.array([1.0]), np.array([True]), 0.9, truncated_value=100.0)
    np.testing.assert_allclose(g, [1.0])


def test_all_failure_episode_gets_infinite_horizon_fill():
    r = np.full(4, -5.0)
    g = mc_return_to_go(r, np.zeros(4, bool), 0.99, failure_reward=-5.0)
    np.testing.assert_allclose(g, np.full(4, -500.0), rtol=1e-6)
    # without the fill the return depends on the remaining length
    g0 = mc_return_to_go(r, np.zeros(4, bool), 0.99)
    assert g0[0] < g0[-1] == -5.0


def test_successful_episode_is_not_filled():
    r = np.array([0.0, 0.0, 1.0])
    g = mc_return_to_go(r, np.array([False, False, True]), 0.99, failure_reward=0.0)
    np.testing.assert_allclose(g, [0.99**2, 0.99, 1.0], rtol=1e-6)


def test_zero_reward_failure_fill_is_zero_and_nan_is_rejected():
    g = mc_return_to_go(np.zeros(3), np.zeros(3, bool), 0.99, failure_reward=0.0)
    np.testing.assert_allclose(g, 0.0)
    with pytest.raises(ReturnsError, match="NaN"):
        mc_return_to_go(np.array([0.0, np.nan]), np.zeros(2, bool), 0.99)
    with pytest.raises(ReturnsError, match="discount"):
        mc_return_to_go(np.zeros(2), np.zeros(2, bool), 1.0)


def test_n_step_windows_stop_at_the_episode_end_and_at_terminals():
    r = np.array([1.0, 2.0, 3.0, 4.0])
    sums, m = n_step_returns(r, np.array([0, 0, 0, 1], bool), 2, 0.5)
    np.testing.assert_allclose(sums, [1 + 0.5 * 2, 2 + 0.5 * 3, 3 + 0.5 * 4, 4])
    np.testing.assert_array_equal(m, [2, 2, 2, 1])
    # a terminal inside the window ends it (step 1 is terminal: step 0 sums 2 rewards, not 3)
    sums, m = n_step_returns(r, np.array([0, 1, 0, 0], bool), 3, 0.5)
    np.testing.assert_allclose(sums, [1 + 0.5 * 2, 2, 3 + 0.5 * 4, 4])
    np.testing.assert_array_equal(m, [2, 1, 2, 1])
    # n = 1 is the one-step target
    sums, m = n_step_returns(r, np.zeros(4, bool), 1, 0.9)
    np.testing.assert_allclose(sums, r)
    np.testing.assert_array_equal(m, 1)
    with pytest.raises(ReturnsError, match="n-step must be >= 1"):
        n_step_returns(r, np.zeros(4, bool), 0, 0.9)
