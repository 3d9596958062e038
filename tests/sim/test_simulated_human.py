"""The simulated operator's decisions (robot_calql.sim.simulated_human), without ROS; MuJoCo only for
the goal distance along scripted tries."""

import numpy as np
import pytest

from robot_calql.sim.simulated_human import (
    SimulatedHuman,
    SimulatedHumanConfig,
    disagrees,
    goal_distance,
)

MID = np.array([0.25, 0.0, 0.10])


def run(human, positions):
    return [human.step(p) for p in positions]


def test_takes_over_after_n_stuck_steps_drives_a_bounded_number_then_lets_go():
    h = SimulatedHuman(SimulatedHumanConfig(patience_steps=5, takeover_steps=4, budget_steps=100))
    got = run(h, [MID] * 20)
    # the 6th call sees 5 steps without motion; it drives 4 steps, then the policy gets 5 fresh steps
    assert got[:5] == [False] * 5
    assert got[5:9] == [True] * 4
    assert got[9:14] == [False] * 5 and got[14:18] == [True] * 4
    assert got[18:] == [False, False] and h.takeovers == 2 and h.used_steps == 8


def test_a_moving_policy_is_never_taken_over():
    h = SimulatedHuman(SimulatedHumanConfig(patience_steps=5))
    path = [MID + np.array([0.003 * np.sin(k / 3), 0.004 * k % 0.1, 0.0]) for k in range(200)]
    assert not any(run(h, path))
    assert h.used_steps == 0


def test_a_grasp_that_ends_where_it_began_is_not_stuck_but_dithering_in_place_is():
    # down 5 cm to the cube, close, back up: after 10 steps the hand is where it was 10 steps ago,
    # but it moved all the while (the stand-in's backward grasp, which the net-displacement rule took over)
    h = SimulatedHuman(SimulatedHumanConfig(patience_steps=10, stuck_m=0.02))
    zs = [0.10, 0.09, 0.08, 0.07, 0.06, 0.05, 0.05, 0.06, 0.07, 0.08, 0.095, 0.10]
    assert not any(run(h, [MID + np.array([0.0, 0.0, z - 0.10]) for z in zs]))
    # jittering by up to 1.5 cm around one spot for 10 steps is standing still
    h2 = SimulatedHuman(SimulatedHumanConfig(patience_steps=10, stuck_m=0.02))
    jitter = [MID + np.array([0.015 * (k % 2), 0.0, 0.0]) for k in range(11)]
    assert run(h2, jitter) == [False] * 10 + [True]


def test_heading_out_of_the_box_for_n_steps_triggers_a_takeover():
    cfg = SimulatedHumanConfig(patience_steps=4, stuck_m=0.0, edge_margin_m=0.02)
    h = SimulatedHuman(cfg)
    x_hi = cfg.workspace_max[0]
    # fast toward the +x wall: outside the margin first, then 4 steps inside it moving outward
    xs = [x_hi - 0.10, x_hi - 0.05, x_hi - 0.015, x_hi - 0.01, x_hi - 0.005, x_hi - 0.002]
    got = run(h, [np.array([x, 0.0, 0.1]) for x in xs])
    assert got == [False, False, False, False, False, True]
    # moving away from the wall inside the margin is not heading out
    h2 = SimulatedHuman(cfg)
    assert not any(run(h2, [np.array([x, 0.0, 0.1]) for x in reversed(xs)]))


def test_the_budget_bounds_every_human_step():
    h = SimulatedHuman(SimulatedHumanConfig(patience_steps=2, takeover_steps=10, budget_steps=7))
    got = run(h, [MID] * 100)
    assert sum(got) == 7 == h.used_steps and h.budget_left == 0
    h0 = SimulatedHuman(SimulatedHumanConfig(patience_steps=2, budget_steps=0))
    assert not any(run(h0, [MID] * 50))


def test_reset_at_an_episode_start_lets_go_and_clears_the_window():
    h = SimulatedHuman(SimulatedHumanConfig(patience_steps=3, takeover_steps=10))
    assert run(h, [MID] * 4) == [False, False, False, True]
    h.reset()
    assert run(h, [MID] * 4) == [False, False, False, True]
    assert h.takeovers == 2 and h.used_steps == 2


def test_disagrees_on_the_gripper_the_wrong_way_sideways_or_standing_still():
    expert = np.array([1.0, 0.0, 0.0, 0.0, -1.0])   # go +x, hand open
    assert not disagrees([0.8, 0.3, -0.2, 0.5, -0.4], expert)       # mostly its way, hand open: agrees
    assert not disagrees([0.31, 0.0, 0.0, 0.0, -1.0], expert)       # slower, but 31% of its move its way
    assert disagrees([0.8, 0.0, 0.0, 0.0, 0.2], expert)             # closes where it would open
    assert disagrees([-0.8, 0.0, 0.0, 0.0, -1.0], expert)           # the other way
    assert disagrees([0.0, 0.9, 0.0, 0.0, -1.0], expert)            # sideways
    assert disagrees([0.0, 0.0, 0.0, 0.0, -1.0], expert)            # stands still where it would move
    # an operator who would hardly move (holding a grasp, letting go) is judged on the gripper only
    hold = np.array([0.05, 0.0, -0.1, 0.0, 1.0])
    assert not disagrees([-0.5, 0.5, 0.3, 0.0, 0.7], hold)
    assert disagrees([0.05, 0.0, -0.1, 0.0, -0.7], hold)
    # the gripper alone (progress None): any path is fine, the gripper the other way is not
    assert not disagrees([-0.8, 0.0, 0.0, 0.0, -1.0], expert, None)
    assert disagrees([0.8, 0.0, 0.0, 0.0, 0.2], expert, None)
    with pytest.raises(ValueError, match="5 values"):
        disagrees([0.0] * 4, expert)


def test_the_wrong_way_rule_takes_over_once_most_of_its_window_disagreed():
    cfg = SimulatedHumanConfig(patience_steps=50, takeover_steps=3, watch_steps=10, watch_share=0.7)
    h = SimulatedHuman(cfg)
    expert = np.array([1.0, 0.0, 0.0, 0.0, -1.0])
    good, bad = expert * 0.9, -expert
    path = [MID + np.array([0.01 * k, 0.0, 0.0]) for k in range(60)]   # it moves: never stuck
    got = []
    for k, pos in enumerate(path):
        drive = h.step(pos)
        got.append(drive)
        if not drive:   # 6 of every 10 steps wrong: below 70%, never a takeover
            h.watch(bad if k % 10 < 6 else good, expert)
    assert not any(got) and h.takeovers == 0
    # 7 wrong of the last 10: the next step is the human's, for 3 steps; then a fresh window of 10
    h2 = SimulatedHuman(cfg)
    got = []
    for k, pos in enumerate(path[:30]):
        drive = h2.step(pos)
        got.append(drive)
        if not drive:
            h2.watch(bad if k % 10 < 7 else good, expert)
    assert got[:10] == [False] * 10 and got[10:13] == [True] * 3 and h2.rule == "wrong_way"
    assert got[13:23] == [False] * 10 and got[23] is True
    # off by default: the same wrong actions never take over
    h3 = SimulatedHuman(SimulatedHumanConfig(patience_steps=50))
    for pos in path:
        assert not h3.step(pos)
        h3.watch(bad, expert)
    assert h3.takeovers == 0 and h3.rule == ""


def test_the_no_progress_rule_takes_over_when_the_goal_gets_no_closer_in_its_window():
    cfg = SimulatedHumanConfig(patience_steps=100, stuck_m=0.0, progress_steps=4, progress_m=0.015, takeover_steps=2)
    h = SimulatedHuman(cfg)
    moving = [MID + np.array([0.01 * k, 0.0, 0.0]) for k in range(40)]   # never stuck
    # 1 cm closer every step: progress, never a takeover
    assert not any(h.step(p, 0.5 - 0.01 * k) for k, p in enumerate(moving[:30]))
    # 1 cm closer per step, then flat from step 4: the window of steps 3-7 came only 1 cm closer
    h2 = SimulatedHuman(cfg)
    dists = [0.30, 0.29, 0.28, 0.27, 0.26] + [0.26] * 6
    got = [h2.step(p, d) for p, d in zip(moving, dists, strict=False)]
    assert got == [False] * 7 + [True, True] + [False, False] and h2.rule == "no_progress"
    # a distance that wavers by less than progress_m around one value makes no progress
    h3 = SimulatedHuman(cfg)
    got = [h3.step(p, 0.2 + 0.01 * (k % 2)) for k, p in enumerate(moving[:5])]
    assert got == [False] * 4 + [True]
    # without distances (or with progress_steps 0) the rule never fires
    h4 = SimulatedHuman(SimulatedHumanConfig(patience_steps=100, stuck_m=0.0))
    assert not any(h4.step(p, 0.2) for p in moving)


def test_goal_distance_follows_a_scripted_try_of_each_task_down_to_its_goal():
    from robot_calql.sim import make_env
    from robot_calql.sim.demonstrators import make_demonstrator

    for task in ("cube_in_bowl", "cube_out_of_bowl"):
        env = make_env(task, image_size=0, seed=3)
        demo = make_demonstrator(env, noise=0.0, seed=1)
        obs, _ = env.reset(seed=7)
        d = [goal_distance(obs["state"], task, env.layout)]
        assert d[0] > 0.5   # the cube is not in the hand yet
        for _ in range(120):
            obs, _, _, _, info = env.step(demo.act(obs))
            if info["success"]:
                break
            d.append(goal_distance(obs["state"], task, env.layout))
        assert info["success"], task
        d = np.asarray(d)
        assert d[-1] <= 0.0 < d[0] - 0.5   # it ends above its goal, low enough to let go
        grasp = int(np.argmax(d < 0.5))    # the first step with the cube in the hand
        assert 0 < grasp and np.all(d[grasp:] < 0.5)
        # never more than 2 cm further from the goal than 10 steps before: a clean try always progresses
        assert np.all(d[10:] < d[:-10] + 0.02), task
    assert goal_distance(obs["state"], "cube_left", env.layout) is None


@pytest.mark.parametrize("bad", [{"patience_steps": 0}, {"budget_steps": -1}, {"stuck_m": -1.0},
                                 {"workspace_min": (0.5, 0, 0)}, {"speed": 2}, {"watch_steps": -1},
                                 {"watch_share": 0.0}, {"watch_progress": 1.5},
                                 {"progress_steps": -1}, {"progress_m": 0.0}])
def test_bad_settings_are_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad)).split("_")[0]):
        SimulatedHumanConfig.from_dict(bad)
