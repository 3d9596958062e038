"""Human steps in the data: datasets store the flag, MC returns of mixed episodes are the whole
episode's, and the replay draws human steps on the offline (demo) side too, as HIL-SERL does."""

import numpy as np
import pytest

from robot_calql.agent import CalQLConfig
from robot_calql.config import ConfigError
from robot_calql.data.dataset import Dataset, DatasetError, DatasetMeta, DatasetWriter, Episode
from robot_calql.data.replay import (
    InstructionVocab,
    MixedReplay,
    OfflineReplay,
    OnlineReplay,
    replay_kwargs,
)
from robot_calql.data.returns import (
    episode_rewards_and_returns,
    mc_return_to_go,
    success_rows,
    takeover_penalties,
)

GAMMA = 0.9


def _episode(T, success, start, human=None):
    state = (start + np.arange(T + 1, dtype=np.float32))[:, None].repeat(2, 1)
    reward, terminal = np.zeros(T, np.float32), np.zeros(T, bool)
    if success:
        reward[-1], terminal[-1] = 1.0, True
    return Episode(proprio=state.copy(), state=state, action=np.full((T, 2), 0.5, np.float32), reward=reward,
                   terminal=terminal, instruction="go", success=success, intervention=human)


META = DatasetMeta(control_hz=10, action_dim=2, proprio_dim=2, state_dim=2)


def test_datasets_store_the_intervention_flag_and_refuse_a_bad_one(tmp_path):
    w = DatasetWriter(tmp_path / "ds", META)
    human = np.array([False, True, True, False, False])
    w.write_episode(_episode(5, True, 0, human))
    w.write_episode(_episode(3, False, 100))            # all policy: no intervention.npy
    ds = Dataset(tmp_path / "ds")
    ds.verify()
    np.testing.assert_array_equal(ds[0].intervention, human)
    assert ds[1].intervention is None and not (ds.episode_dirs[1] / "intervention.npy").exists()
    with pytest.raises(DatasetError, match="'intervention' has shape"):
        w.write_episode(_episode(4, True, 0, np.ones(3, bool)))
    np.save(ds.episode_dirs[0] / "intervention.npy", np.ones(5, np.float32))
    with pytest.raises(DatasetError, match="intervention.npy"):
        Dataset(tmp_path / "ds")[0]


def test_mc_returns_of_an_episode_mixing_policy_and_human_steps_run_over_the_whole_episode():
    # policy, policy, human x3 (the human finishes the task), reward on the last step
    rewards = np.array([0, 0, 0, 0, 1], np.float32)
    terminals = np.array([0, 0, 0, 0, 1], bool)
    human = np.array([0, 0, 1, 1, 1], bool)
    g = mc_return_to_go(rewards, terminals, GAMMA)
    np.testing.assert_allclose(g, [GAMMA ** 4, GAMMA ** 3, GAMMA ** 2, GAMMA, 1.0], rtol=1e-6)
    # cutting the human segment out as an episode of its own would give its steps the same returns here, but
    # the policy's steps before it would lose the success the human reached: returns are per whole episode
    seg = mc_return_to_go(rewards[~human], terminals[~human], GAMMA)
    assert np.all(seg == 0) and np.all(g[~human] > 0)
    # in the online replay, human and policy steps of one episode share that episode's returns
    buf = OnlineReplay({"state": (2,)}, 2, capacity=50, discount=GAMMA, vocab=InstructionVocab(["go"]))
    buf.add_episode(_episode(5, True, 0, human))
    np.testing.assert_allclose(buf.mc_return[:5], g, rtol=1e-6)
    np.testing.assert_array_equal(buf.intervention[:5], human)


def test_human_steps_are_drawn_on_the_offline_side_with_their_episodes_returns(tmp_path):
    w = DatasetWriter(tmp_path / "ds", META)
    for e in range(4):
        w.write_episode(_episode(6, True, 1000 + 10 * e))
    offline = OfflineReplay(Dataset(tmp_path / "ds"), {"state": (2,)}, discount=GAMMA, seed=0, progress=False)
    online = OnlineReplay({"state": (2,)}, 2, capacity=200, discount=GAMMA, vocab=offline.vocab, seed=1,
                          bound_online=False)
    human = np.zeros(20, bool)
    human[8:14] = True
    online.add_episode(_episode(20, True, 0, human))       # states 0..20; human steps 8..13
    online.add_episode(_episode(10, False, 500))           # a policy episode
    mixed = MixedReplay(offline, online, mixing_ratio=0.5)
    g = mc_return_to_go(np.eye(20, dtype=np.float32)[-1], np.eye(20, dtype=bool)[-1], GAMMA)
    n_human_off = n_off = 0
    for _ in range(200):
        b = mixed.sample(32)
        s, on, mc = b["obs"]["state"][:, 0].numpy(), b["online"].numpy(), b["mc_return"].numpy()
        off = ~on
        n_off += off.sum()
        from_online = off & (s < 1000)                       # offline-side rows that came from the online buffer
        n_human_off += from_online.sum()
        assert np.all((s[from_online] >= 8) & (s[from_online] <= 13)), "a policy step on the offline side"
        np.testing.assert_allclose(mc[from_online], g[s[from_online].astype(int)], rtol=1e-6)
        assert np.all(np.isinf(mc[on])), "online rows keep bound_online=False (-inf)"
    share = n_human_off / n_off
    expect = 6 / (len(offline) + 6)                           # uniform over offline steps + human steps
    print(f"human share of the offline side: {share:.3f} (expected {expect:.3f})")
    assert abs(share - expect) < 0.03
    # with no human step the offline side is the offline data alone
    plain = OnlineReplay({"state": (2,)}, 2, capacity=50, vocab=offline.vocab)
    plain.add_episode(_episode(10, False, 500))
    b = MixedReplay(offline, plain, 0.5).sample(64)
    assert np.all(b["obs"]["state"][~b["online"]][:, 0].numpy() >= 1000)


def test_the_flag_survives_a_replay_snapshot():
    buf = OnlineReplay({"state": (2,)}, 2, capacity=50, vocab=InstructionVocab(["go"]))
    buf.add_episode(_episode(6, True, 0, np.array([0, 1, 1, 0, 0, 0], bool)))
    sd = buf.state_dict()
    again = OnlineReplay({"state": (2,)}, 2, capacity=50, vocab=InstructionVocab(["go"]))
    again.load_state_dict(sd)
    np.testing.assert_array_equal(np.sort(again.intervention_steps()), [1, 2])
    del sd["intervention"]                                   # a snapshot from before the flag existed
    old = OnlineReplay({"state": (2,)}, 2, capacity=50, vocab=InstructionVocab(["go"]))
    old.load_state_dict(sd)
    assert len(old.intervention_steps()) == 0


def test_takeover_penalty_lands_on_the_policy_step_before_each_takeover():
    human = np.array([1, 0, 0, 1, 1, 0, 1, 0], bool)     # a takeover at the start (no policy step before it)
    np.testing.assert_array_equal(takeover_penalties(human, 2.0), [0, 0, -2, 0, 0, -2, 0, 0])
    assert not takeover_penalties(human, 0.0).any()
    # a failed try (sparse fill: every task reward is the failure reward) stays a failure at the fill's scale,
    # with the penalties still ahead of each step added, discounted
    r, done = np.full(8, -5.0, np.float32), np.zeros(8, bool)
    rr, mc = episode_rewards_and_returns(r, done, GAMMA, failure_reward=-5.0, intervention=human, takeover_penalty=2.0)
    ahead = mc_return_to_go(takeover_penalties(human, 2.0), done, GAMMA)
    np.testing.assert_allclose(rr, r + takeover_penalties(human, 2.0))
    np.testing.assert_allclose(mc, -5.0 / (1 - GAMMA) + ahead, rtol=1e-6)
    assert mc[0] < mc[6] == pytest.approx(-50.0)              # nothing ahead of step 6 is penalised
    # no penalty, or no human step: the task rewards and returns unchanged
    for h, p in ((human, 0.0), (np.zeros(8, bool), 2.0), (None, 2.0)):
        rr, mc = episode_rewards_and_returns(r, done, GAMMA, failure_reward=-5.0, intervention=h, takeover_penalty=p)
        np.testing.assert_array_equal(rr, r)
        np.testing.assert_allclose(mc, -50.0)


def test_replays_apply_the_agents_takeover_penalty_to_online_and_recorded_human_steps(tmp_path):
    human = np.array([0, 0, 1, 1, 1], bool)                 # the human finishes a try the policy started
    rk = replay_kwargs(CalQLConfig(discount=GAMMA, takeover_penalty=0.5))
    online = OnlineReplay({"state": (2,)}, 2, capacity=50, vocab=InstructionVocab(["go"]), **rk)
    online.add_episode(_episode(5, True, 0, human))
    want_r = np.array([0, -0.5, 0, 0, 1], np.float32)
    np.testing.assert_allclose(online.reward[:5], want_r)
    np.testing.assert_allclose(online.mc_return[:5], mc_return_to_go(want_r, np.eye(5, dtype=bool)[-1], GAMMA),
                               rtol=1e-6)
    # a steps-one-at-a-time episode (the ROS learner's way) gets the same
    stepwise = OnlineReplay({"state": (2,)}, 2, capacity=50, vocab=InstructionVocab(["go"]), **rk)
    ep = _episode(5, True, 0, human)
    for t in range(5):
        stepwise.add({"state": ep.state[t]}, ep.action[t], float(ep.reward[t]), {"state": ep.state[t + 1]},
                     bool(ep.terminal[t]), instruction="go", intervention=bool(human[t]))
    np.testing.assert_allclose(stepwise.reward[:5], want_r)
    np.testing.assert_allclose(stepwise.mc_return[:5], online.mc_return[:5])
    # recorded takeovers (bags, datasets) get it in the offline replay too
    w = DatasetWriter(tmp_path / "ds", META)
    w.write_episode(_episode(5, True, 0, human))
    offline = OfflineReplay(Dataset(tmp_path / "ds"), {"state": (2,)}, progress=False, **rk)
    np.testing.assert_allclose(offline.reward[:5], want_r)
    np.testing.assert_allclose(offline.mc_return[:5], online.mc_return[:5])
    with pytest.raises(ConfigError, match="takeover_penalty"):
        CalQLConfig.from_dict({"takeover_penalty": -1.0})


def test_success_filtered_bc_leaves_out_the_policy_steps_a_person_had_to_rescue(tmp_path):
    # policy x2, human x2 (lets go), policy x2, human x2 (finishes): only the human's steps are the success
    human = np.array([0, 0, 1, 1, 0, 0, 1, 1], bool)
    np.testing.assert_array_equal(success_rows(True, human, 8), human)
    # the policy finished on its own after the last takeover: those steps count, the stall before it does not
    human = np.array([0, 0, 1, 1, 0, 0], bool)
    np.testing.assert_array_equal(success_rows(True, human, 6), [0, 0, 1, 1, 1, 1])
    assert not success_rows(False, human, 6).any()
    assert success_rows(True, None, 4).all() and success_rows(True, np.array([1, 1, 0], bool), 3).all()
    # both replays store it, so bc_success_only never clones a stall that ended in a rescue
    online = OnlineReplay({"state": (2,)}, 2, capacity=50, vocab=InstructionVocab(["go"]))
    online.add_episode(_episode(6, True, 0, human))
    online.add_episode(_episode(4, True, 100))                # the policy's own success: every step
    np.testing.assert_array_equal(online.success[:10], [0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    w = DatasetWriter(tmp_path / "ds", META)
    w.write_episode(_episode(6, True, 0, human))
    offline = OfflineReplay(Dataset(tmp_path / "ds"), {"state": (2,)}, progress=False)
    np.testing.assert_array_equal(offline.success[:6], [0, 0, 1, 1, 1, 1])
