"""The ROS learner's update schedule (`updates_owed`), which the online-warm-up benchmark replays."""

from robot_calql.train.common import updates_owed


def test_nothing_is_owed_until_the_online_buffer_holds_min_online_steps():
    assert updates_owed(transitions=49, updates=0, online_steps=49, utd=1.0, min_online=50) == 0
    # then every transition so far is owed at once, and only what is not done yet
    assert updates_owed(transitions=50, updates=0, online_steps=50, utd=1.0, min_online=50) == 50
    assert updates_owed(transitions=50, updates=48, online_steps=50, utd=1.0, min_online=50) == 2
    assert updates_owed(transitions=50, updates=50, online_steps=50, utd=1.0, min_online=50) == 0


def test_fractional_and_high_update_to_data_ratios():
    # utd 0.25: one update per 4 transitions, rounded down; utd 2: two per transition
    assert [updates_owed(n, 0, n, 0.25, 1) for n in (3, 4, 7, 8)] == [0, 1, 1, 2]
    assert updates_owed(10, 15, 10, 2.0, 1) == 5
    # a learner resumed past its schedule (e.g. more updates than a replayed log asks for) owes none
    assert updates_owed(10, 40, 10, 1.0, 1) == 0
