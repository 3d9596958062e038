"""Replay: offline MC returns, shared frames, exact mixing, online episodes and ring wrap."""

import numpy as np
import pytest

from robot_calql.data.dataset import Dataset, DatasetError, DatasetMeta, DatasetWriter, Episode
from robot_calql.data.replay import (
    InstructionVocab,
    MixedReplay,
    OfflineReplay,
    OnlineReplay,
    ReplayError,
)
from robot_calql.data.returns import mc_return_to_go


def _episode(T, success, start, instruction="put the cube in the bowl", image=False):
    # state[t] = start + t lets a test check which frame a batch row came from
    state = (start + np.arange(T + 1, dtype=np.float32))[:, None].repeat(2, 1)
    reward = np.zeros(T, np.float32)
    terminal = np.zeros(T, bool)
    if success:
        reward[-1], terminal[-1] = 1.0, True
    img = None
    if image:
        img = np.zeros((T + 1, 8, 8, 3), np.uint8)
        img[:, 0, 0, 0] = (start + np.arange(T + 1)) % 256
    return Episode(proprio=state.copy(), state=state, action=np.full((T, 2), 0.5, np.float32), reward=reward,
                   terminal=terminal, instruction=instruction, image=img, success=success)


def _dataset(tmp_path, image=False):
    meta = DatasetMeta(control_hz=10, action_dim=2, proprio_dim=2, state_dim=2, image_shape=(8, 8, 3) if image else None)
    w = DatasetWriter(tmp_path / "ds", meta)
    w.write_episode(_episode(3, True, 0, image=image))
    w.write_episode(_episode(4, False, 100, instruction="take the cube out", image=image))
    return Dataset(tmp_path / "ds")


def test_offline_mc_returns_and_shared_frames(tmp_path, capsys):
    buf = OfflineReplay(_dataset(tmp_path), {"state": (2,)}, discount=0.9, failure_reward=0.0, seed=0)
    assert "offline replay: 2 episodes, 7 steps, 9 frames" in capsys.readouterr().out
    assert len(buf) == 7
    np.testing.assert_allclose(buf.mc_return[:3], mc_return_to_go(np.array([0, 0, 1.0]), np.array([0, 0, 1], bool), 0.9))
    np.testing.assert_allclose(buf.mc_return[3:], 0.0)  # failed episode: 0 / (1 - gamma)
    b = buf.sample(64)
    s, s2 = b["obs"]["state"].numpy(), b["next_obs"]["state"].numpy()
    np.testing.assert_array_equal(s2, s + 1)  # next obs is the following frame of the same episode
    assert b["done"].numpy()[s[:, 0] == 2].all() and not b["done"].numpy()[s[:, 0] != 2].any()
    # instruction ids: sorted vocabulary
    assert buf.vocab.to_list() == ["put the cube in the bowl", "take the cube out"]
    np.testing.assert_array_equal(b["obs"]["instruction"].numpy(), (s[:, 0] >= 100).astype(np.int64))
    assert buf.frames["state"].shape[0] == 9  # 7 steps + 2 episodes: each frame stored once


def test_offline_loading_bar_follows_progress(tmp_path, capsys):
    OfflineReplay(_dataset(tmp_path), {"state": (2,)})
    assert "loading offline data" in capsys.readouterr().err
    OfflineReplay(Dataset(tmp_path / "ds"), {"state": (2,)}, progress=False)  # progress=false runs, the ROS learner
    assert "loading offline data" not in capsys.readouterr().err


def test_offline_reward_scale_and_bias_go_into_mc_returns(tmp_path):
    buf = OfflineReplay(_dataset(tmp_path), {"state": (2,)}, discount=0.5, reward_scale=10, reward_bias=-5,
                        failure_reward=-5.0)
    np.testing.assert_allclose(buf.reward[:3], [-5, -5, 5])
    np.testing.assert_allclose(buf.mc_return[:3], [-5 + 0.5 * (-5 + 0.5 * 5), -5 + 0.5 * 5, 5])
    np.testing.assert_allclose(buf.mc_return[3:], -10.0)  # -5 / (1 - 0.5)


def test_offline_images_and_errors(tmp_path):
    ds = _dataset(tmp_path, image=True)
    buf = OfflineReplay(ds, {"image": (8, 8, 3), "proprio": (2,)})
    b = buf.sample(16)
    assert b["obs"]["image"].dtype.is_floating_point is False and tuple(b["obs"]["image"].shape) == (16, 8, 8, 3)
    np.testing.assert_array_equal(b["next_obs"]["image"][:, 0, 0, 0].numpy(), (b["obs"]["proprio"][:, 0].numpy() + 1) % 256)
    with pytest.raises(ReplayError, match="'image'.*expects"):
        OfflineReplay(ds, {"image": (16, 16, 3), "proprio": (2,)})
    with pytest.raises(ReplayError, match="needs 'state'"):
        OfflineReplay(_dataset_no_state(tmp_path), {"state": (2,)})


def _dataset_no_state(tmp_path):
    meta = DatasetMeta(control_hz=10, action_dim=2, proprio_dim=2)
    w = DatasetWriter(tmp_path / "ds2", meta)
    ep = _episode(2, True, 0)
    ep.state = None
    w.write_episode(ep)
    return Dataset(tmp_path / "ds2")


def test_nan_reward_in_dataset_is_a_clear_error(tmp_path):
    ds = _dataset(tmp_path)
    path = ds.episode_dirs[1] / "reward.npy"
    r = np.load(path)
    r[2] = np.nan
    np.save(path, r)
    with pytest.raises(DatasetError, match=r"ep_000001.*'reward' has a NaN"):
        OfflineReplay(Dataset(tmp_path / "ds"), {"state": (2,)})


def _online(capacity=100, **kw):
    return OnlineReplay({"state": (2,)}, 2, capacity, discount=0.9, failure_reward=0.0, seed=0, **kw)


def _run_episode(buf, start, T, success):
    for t in range(T):
        last = t == T - 1
        buf.add({"state": np.full(2, start + t, np.float32)}, np.zeros(2), float(success and last),
                {"state": np.full(2, start + t + 1, np.float32)}, terminal=success and last, truncated=last and not success)


def test_online_episode_gets_mc_returns_when_it_ends(tmp_path, capsys):
    buf = _online()
    assert "online replay: capacity 100 steps" in capsys.readouterr().out
    buf.add({"state": np.zeros(2, np.float32)}, np.zeros(2), 0.0, {"state": np.ones(2, np.float32)}, terminal=False)
    assert len(buf) == 0  # the open episode is not sampleable
    with pytest.raises(ReplayError, match="no finished episode"):
        buf.sample(4)
    buf.add({"state": np.ones(2, np.float32)}, np.zeros(2), 1.0, {"state": np.full(2, 2, np.float32)}, terminal=True)
    assert len(buf) == 2
    np.testing.assert_allclose(buf.mc_return[:2], [0.9, 1.0])
    _run_episode(buf, 10, 3, success=False)
    np.testing.assert_allclose(buf.mc_return[2:5], 0.0)  # all-failure fill
    assert buf.frames_written == 3 + 4  # T + 1 frames per episode


def test_bound_off_online_variant_sets_minus_infinity():
    buf = _online(bound_online=False)
    _run_episode(buf, 0, 3, success=True)
    assert np.isneginf(buf.sample(16)["mc_return"].numpy()).all()  # what the agent sees: no bound
    np.testing.assert_allclose(buf.recent_numpy(3)["mc_return"], [0.81, 0.9, 1.0])  # calibration: the truth


def test_online_ring_wrap_keeps_obs_and_next_obs_consistent():
    buf = _online(capacity=8)
    for e in range(10):
        _run_episode(buf, 100 * e, 3, success=e % 2 == 0)
    assert 0 < len(buf) <= 8
    b = buf.sample(256)
    s, s2 = b["obs"]["state"].numpy(), b["next_obs"]["state"].numpy()
    np.testing.assert_array_equal(s2, s + 1)
    assert (s[:, 0] >= 700).all()  # only recent episodes survive


def test_recent_steps_are_the_newest_finished_ones_in_order():
    buf = _online(capacity=8)
    assert len(buf.recent_numpy(5)["mc_return"]) == 0  # nothing finished yet
    for e in range(10):
        _run_episode(buf, 100 * e, 3, success=e % 2 == 0)
    buf.add({"state": np.full(2, 5000, np.float32)}, np.zeros(2), 0.0, {"state": np.full(2, 5001, np.float32)},
            terminal=False)  # an open episode: not finished, never in the recent steps
    r = buf.recent_numpy(4)
    np.testing.assert_array_equal(r["obs"]["state"][:, 0], [802, 900, 901, 902])  # across the ring wrap
    np.testing.assert_allclose(r["mc_return"][1:], buf.mc_return[[(27 + i) % 8 for i in range(3)]])
    assert len(buf.recent_numpy(100)["mc_return"]) == len(buf) < 8


def test_exact_mixing_counts(tmp_path):
    off = OfflineReplay(_dataset(tmp_path), {"state": (2,)}, seed=0)
    on = _online(vocab=off.vocab)
    mix = MixedReplay(off, on, mixing_ratio=0.25)
    assert mix.sample(10)["online"].sum().item() == 0  # nothing online yet: all offline
    _run_episode(on, 1000, 5, success=True)
    for B in (10, 256, 7):
        b = mix.sample(B)
        n_on = int(b["online"].sum())
        assert n_on == B - round(B * 0.25)
        from_online = b["obs"]["state"][:, 0].numpy() >= 1000
        np.testing.assert_array_equal(from_online, b["online"].numpy())


def test_online_warmup_grows_the_online_share_with_the_buffer(tmp_path):
    off = OfflineReplay(_dataset(tmp_path), {"state": (2,)}, seed=0)
    on = _online(capacity=64, vocab=off.vocab)
    mix = MixedReplay(off, on, mixing_ratio=0.5, online_warmup=40)
    assert mix.split(256) == (256, 0)  # nothing online yet
    _run_episode(on, 1000, 5, success=True)  # 5 finished online steps of the 40
    assert mix.split(256) == (240, 16)  # round(128 * 5 / 40)
    b = mix.sample(256)
    assert int(b["online"].sum()) == 16
    np.testing.assert_array_equal(b["obs"]["state"][:, 0].numpy() >= 1000, b["online"].numpy())
    for e in range(7):  # 40 steps: the full share from here on
        _run_episode(on, 2000 + 100 * e, 5, success=True)
    assert len(on) == 40 and mix.split(256) == (128, 128)
    _run_episode(on, 3000, 5, success=False)
    assert mix.split(256) == (128, 128)
    assert MixedReplay(off, on, 0.5, online_warmup=0).split(10) == (5, 5)
    with pytest.raises(ReplayError, match="online_warmup must be >= 0"):
        MixedReplay(off, on, 0.5, online_warmup=-1)


def test_instruction_vocab_errors():
    v = InstructionVocab(["a", "b"])
    assert v.id("b") == 1 and v.id(0) == 0
    with pytest.raises(ReplayError, match="unknown instruction 'c'"):
        v.id("c")
    buf = _online(vocab=v)
    with pytest.raises(ReplayError, match="unknown instruction"):
        buf.add({"state": np.zeros(2)}, np.zeros(2), 0.0, {"state": np.zeros(2)}, True, instruction="zzz")


def test_online_snapshot_round_trip_continues_exactly(tmp_path):
    buf = _online(capacity=16)
    for e in range(4):
        _run_episode(buf, 100 * e, 3, success=e % 2 == 0)
    buf.add({"state": np.full(2, 900, np.float32)}, np.zeros(2), 0.0, {"state": np.full(2, 901, np.float32)}, False)
    np.savez(tmp_path / "buf.npz", **buf.state_dict())
    other = _online(capacity=16)
    other.load_state_dict(dict(np.load(tmp_path / "buf.npz")))
    assert len(other) == len(buf)
    a, b = buf.sample(32), other.sample(32)
    for k in ("action", "reward", "mc_return"):
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())
    np.testing.assert_array_equal(a["obs"]["state"].numpy(), b["obs"]["state"].numpy())
    # the open episode continues in the restored buffer
    for x in (buf, other):
        x.add({}, np.zeros(2), 1.0, {"state": np.full(2, 902, np.float32)}, terminal=True)
    np.testing.assert_array_equal(buf.mc_return, other.mc_return)
    with pytest.raises(ReplayError, match="frames 'state'"):
        OnlineReplay({"state": (3,)}, 2, 16).load_state_dict(buf.state_dict())


def test_text_embeddings_are_looked_up_by_instruction_id(tmp_path):
    table = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], np.float32)
    buf = OfflineReplay(_dataset(tmp_path), {"state": (2,), "text_embedding": (3,)}, text_embeddings=table)
    b = buf.sample(32)
    ids = b["obs"]["instruction"].numpy()
    np.testing.assert_array_equal(b["obs"]["text_embedding"].numpy(), table[ids])
    with pytest.raises(ReplayError, match="text_embeddings"):
        OfflineReplay(_dataset(tmp_path / "x"), {"state": (2,), "text_embedding": (3,)})


def test_success_flags_mark_every_step_of_a_successful_episode(tmp_path):
    off = OfflineReplay(_dataset(tmp_path), {"state": (2,)}, seed=0)
    np.testing.assert_array_equal(off.success, [True] * 3 + [False] * 4)
    b = off.sample(64)
    np.testing.assert_array_equal(b["success"].numpy(), b["obs"]["state"][:, 0].numpy() < 100)
    on = _online()
    _run_episode(on, 0, 3, success=False)
    _run_episode(on, 10, 2, success=True)
    on.add({"state": np.zeros(2, np.float32)}, np.zeros(2), 0.0, {"state": np.ones(2, np.float32)}, terminal=False)
    # the open episode is not flagged yet (its outcome is unknown)
    np.testing.assert_array_equal(on.success[:6], [False, False, False, True, True, False])
    restored = _online()
    restored.load_state_dict(on.state_dict())
    np.testing.assert_array_equal(restored.success[:6], on.success[:6])
    # a snapshot written before the flag existed still loads; its rows are simply not flagged
    old = {k: v for k, v in on.state_dict().items() if k != "success"}
    _online().load_state_dict(old)


def test_n_step_rows_sum_the_window_and_bootstrap_from_the_state_after_it(tmp_path):
    """state[t] = start + t, so a row's obs and next_obs say which window it covers."""
    off = OfflineReplay(_dataset(tmp_path), {"state": (2,)}, discount=0.5, n_step=3, seed=0)
    on = _online(n_step=3)
    _run_episode(on, 0, 3, success=True)
    _run_episode(on, 100, 4, success=False)
    for buf, lengths in ((off, {0: 3, 100: 4}), (on, {0: 3, 100: 4})):
        g = buf.discount
        b = buf.sample(256)
        s, s2 = b["obs"]["state"][:, 0].numpy(), b["next_obs"]["state"][:, 0].numpy()
        start = np.where(s >= 100, 100, 0)
        t, T = s - start, np.where(start == 100, lengths[100], lengths[0])
        m = np.minimum(3, T - t)
        np.testing.assert_array_equal(s2, s + m)  # the state after the window
        np.testing.assert_allclose(b["discount"].numpy(), g ** m, rtol=1e-6)
        # only the successful episode (start 0) has a reward, 1 at its last step, terminal
        reaches_end = t + m == T
        want_r = np.where((start == 0) & reaches_end, g ** (m - 1), 0.0)
        np.testing.assert_allclose(b["reward"].numpy(), want_r, rtol=1e-6)
        np.testing.assert_array_equal(b["done"].numpy(), (start == 0) & reaches_end)
    one = _online()  # a one-step buffer keeps the one-step batch: no per-row discount
    _run_episode(one, 0, 3, success=True)
    b = one.sample(64)
    assert "discount" not in b
    np.testing.assert_array_equal(b["next_obs"]["state"].numpy(), b["obs"]["state"].numpy() + 1)


def test_n_step_snapshot_round_trip_and_old_snapshots(tmp_path):
    buf = _online(n_step=3)
    _run_episode(buf, 0, 5, success=True)
    other = _online(n_step=3)
    other.load_state_dict(buf.state_dict())
    a, b = buf.sample(32), other.sample(32)
    for k in ("reward", "done", "discount"):
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())
    np.testing.assert_array_equal(a["next_obs"]["state"].numpy(), b["next_obs"]["state"].numpy())
    old = {k: v for k, v in buf.state_dict().items() if not k.startswith("n_")}
    _online().load_state_dict(old)  # a one-step buffer does not need the n-step fields
    with pytest.raises(ReplayError, match="resume it with n_step=1"):
        _online(n_step=3).load_state_dict(old)


def test_snapshot_grows_into_a_larger_buffer_until_its_ring_wraps():
    small, big = _online(capacity=16), _online(capacity=64)
    for e in range(3):
        for buf in (small, big):
            _run_episode(buf, 100 * e, 3, success=e % 2 == 0)
    assert not OnlineReplay.snapshot_wrapped(small.state_dict())
    grown = _online(capacity=64)
    grown.load_state_dict(small.state_dict())  # a run extended to more steps: what a big buffer would hold
    for e in range(3, 12):  # well past the small capacity
        for buf in (big, grown):
            _run_episode(buf, 100 * e, 3, success=e % 2 == 0)
    a, b = big.sample(64), grown.sample(64)
    for k in ("action", "reward", "mc_return"):
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())
    np.testing.assert_array_equal(a["obs"]["state"].numpy(), b["obs"]["state"].numpy())
    assert (a["obs"]["state"].numpy()[:, 0] < 300).any()  # the first episodes were kept, not overwritten
    # a ring that has wrapped stores indices modulo its capacity: refused by any other capacity
    for e in range(3, 8):
        _run_episode(small, 100 * e, 3, success=False)
    wrapped = small.state_dict()
    assert OnlineReplay.snapshot_wrapped(wrapped)
    with pytest.raises(ReplayError, match="another capacity that had wrapped"):
        _online(capacity=64).load_state_dict(wrapped)
    _online(capacity=16).load_state_dict(wrapped)  # its own capacity is fine
