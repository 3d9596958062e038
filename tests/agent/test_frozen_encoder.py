"""Pixels with a frozen, pre-trained encoder: the latent cache of both replays, frozen weights,
pixel agents never reading `state`, encoder pre-training, a toy task learned from cached
latents, and the frozen agent's checkpoint in the acting policy (robot_calql.train.acting)."""

import numpy as np
import pytest
import torch
from toy_task import GOAL, rollout

from robot_calql.agent import CalQL, CalQLConfig, ObsSpecError
from robot_calql.agent.encoder_pretrain import pretrain_encoder
from robot_calql.agent.encoders import IMAGE_LATENT
from robot_calql.config import ConfigError
from robot_calql.data.dataset import Dataset, DatasetMeta, DatasetWriter, Episode
from robot_calql.data.replay import OfflineReplay, OnlineReplay, ReplayError
from robot_calql.data.returns import mc_return_to_go

S = 32  # image size (the RoboFuME encoder with strides 2, 2, 1, 1 needs >= 24 px)
SPEC = {"image": (S, S, 3), "proprio": (2,)}
SMALL = {"actor_hidden": (32, 32), "critic_hidden": (32, 32), "encoder_latent_dim": 8}


def _agent(frozen=True, seed=0, **kw):
    torch.manual_seed(seed)
    return CalQL(SPEC, 2, CalQLConfig(encoder_frozen=frozen, **{**SMALL, **kw}), num_instructions=2)


def _episode(T, start, seed, instruction="put the cube in the bowl"):
    # proprio[t] = (start + t, 0) names the frame a batch row came from
    rng = np.random.default_rng(seed)
    proprio = np.zeros((T + 1, 2), np.float32)
    proprio[:, 0] = start + np.arange(T + 1)
    term = np.zeros(T, bool)
    term[-1] = True
    return Episode(proprio=proprio, action=rng.uniform(-1, 1, (T, 2)).astype(np.float32),
                   reward=term.astype(np.float32), terminal=term, instruction=instruction,
                   image=rng.integers(0, 256, (T + 1, S, S, 3), dtype=np.uint8), success=True)


def _direct_latents(agent, images):
    """The CNN's output for the images, computed here without the replay or FrameEncoder."""
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        return agent.encoder.cnn(x).numpy()


def _check_rows(agent, batch, images_by_frame):
    for o in ("obs", "next_obs"):
        assert "image" not in batch[o]
        frames = batch[o]["proprio"][:, 0].astype(int)
        want = _direct_latents(agent, np.stack([images_by_frame[f] for f in frames]))
        np.testing.assert_allclose(batch[o][IMAGE_LATENT], want, atol=1e-5)


def test_offline_replay_with_a_frame_encoder_never_holds_the_datasets_images(tmp_path):
    """Built with the frozen encoder (fine-tuning, the learner node), the offline replay encodes
    each episode as it loads: its peak memory is a small part of the dataset's images, which a
    real robot's hours of frames would not fit (before: every image in memory, then latents)."""
    import tracemalloc

    w = DatasetWriter(tmp_path / "ds", DatasetMeta(control_hz=10, action_dim=2, proprio_dim=2, image_shape=(S, S, 3)))
    eps = [_episode(39, 40 * i, i) for i in range(30)]
    for ep in eps:
        w.write_episode(ep)
    images = {int(p[0]): img for ep in eps for p, img in zip(ep.proprio, ep.image, strict=True)}
    image_bytes = sum(ep.image.nbytes for ep in eps)  # 1200 frames, 3.7 MB
    agent = _agent()
    enc = agent.frame_encoder()
    enc(eps[0].image)  # torch's one-time allocations outside the measurement
    ds = Dataset(tmp_path / "ds")  # memory-mapped
    tracemalloc.start()
    try:
        off = OfflineReplay(ds, SPEC, frame_encoder=enc, seed=0, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < image_bytes / 4, (peak, image_bytes)
    assert "image" not in off.frames and off.frames[IMAGE_LATENT].shape == (1200, 8)
    _check_rows(agent, off.sample_numpy(64), images)


def test_offline_and_online_replays_store_the_frozen_encoders_latents(tmp_path, capsys):
    agent = _agent()
    eps = [_episode(5, 0, 1), _episode(4, 100, 2, "take the cube out")]
    images = {int(p[0]): img for ep in eps for p, img in zip(ep.proprio, ep.image, strict=True)}
    w = DatasetWriter(tmp_path / "ds", DatasetMeta(control_hz=10, action_dim=2, proprio_dim=2, image_shape=(S, S, 3)))
    for ep in eps:
        w.write_episode(ep)
    off = OfflineReplay(Dataset(tmp_path / "ds"), SPEC, frame_encoder=agent.frame_encoder(), seed=0, progress=False)
    assert "image" not in off.frames and off.frames[IMAGE_LATENT].shape == (11, 8)
    assert "encoded once" in capsys.readouterr().out
    _check_rows(agent, off.sample_numpy(64), images)

    on = OnlineReplay(SPEC, 2, 20, frame_encoder=agent.frame_encoder(), vocab=off.vocab, seed=0)
    on.add_episode(eps[0])
    assert on.frames_written == 6  # step t's next frame is step t+1's frame, encoded once
    ep = eps[1]
    for t in range(len(ep)):  # step by step, as the learner node adds them
        on.add({"image": ep.image[t], "proprio": ep.proprio[t]}, ep.action[t], 0.0,
               {"image": ep.image[t + 1], "proprio": ep.proprio[t + 1]}, t == len(ep) - 1, instruction=1)
    assert on.frames_written == 11
    # a step whose observation is not the previous next observation (only its image differs) is a frame of its own
    other = dict(images)
    other[999] = np.full((S, S, 3), 7, np.uint8)
    on.add({"image": other[999], "proprio": ep.proprio[0]}, ep.action[0], 0.0,
           {"image": ep.image[1], "proprio": ep.proprio[1]}, True, instruction=1)
    assert on.frames_written == 13
    batch = on.sample_numpy(64)
    odd = batch["obs"]["proprio"][:, 0] == 100
    its = np.isclose(batch["obs"][IMAGE_LATENT], _direct_latents(agent, other[999][None]), atol=1e-5).all(1)
    batch["obs"]["proprio"][odd & its, 0] = 999  # the odd step's own frame
    _check_rows(agent, batch, other)
    assert (batch["obs"]["proprio"][:, 0] == 999).any()

    # the online snapshot holds latents; a buffer that stores images refuses it, naming the setting
    again = OnlineReplay(SPEC, 2, 20, frame_encoder=agent.frame_encoder(), vocab=off.vocab, seed=0)
    again.load_state_dict(on.state_dict())
    np.testing.assert_array_equal(again.sample_numpy(8)["obs"][IMAGE_LATENT], on.sample_numpy(8)["obs"][IMAGE_LATENT])
    with pytest.raises(ReplayError, match="encoder_frozen"):
        OnlineReplay(SPEC, 2, 20).load_state_dict(on.state_dict())
    with pytest.raises(ReplayError, match="takes"):
        OnlineReplay({"image": (40, 40, 3), "proprio": (2,)}, 2, 20, frame_encoder=agent.frame_encoder())


def _pixel_batch(B=8, seed=0):
    g = torch.Generator().manual_seed(seed)

    def obs():
        return {"image": torch.randint(0, 256, (B, S, S, 3), dtype=torch.uint8, generator=g),
                "proprio": torch.randn(B, 2, generator=g), "instruction": torch.randint(0, 2, (B,), generator=g)}

    return {"obs": obs(), "next_obs": obs(), "action": torch.rand(B, 2, generator=g) * 2 - 1,
            "reward": torch.randn(B, generator=g), "done": torch.zeros(B), "mc_return": torch.randn(B, generator=g)}


def _cached(agent, batch):
    enc = agent.frame_encoder()
    out = dict(batch)
    for o in ("obs", "next_obs"):
        out[o] = {**{k: v for k, v in batch[o].items() if k != "image"},
                  IMAGE_LATENT: torch.from_numpy(enc(batch[o]["image"]))}
    return out


def test_frozen_encoder_weights_never_change_in_updates_and_cached_latents_give_the_same_losses():
    agent = _agent()
    cnn_before = {k: v.clone() for k, v in agent.encoder.cnn.state_dict().items()}
    emb_before = agent.encoder.instruction.weight.detach().clone()
    critic_before = [p.detach().clone() for p in agent.critic.parameters()]
    assert agent.encoder_target.cnn is agent.encoder.cnn
    optimised = {id(p) for g in agent.opt_critic.param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in agent.encoder.cnn.parameters()}

    raw = _pixel_batch()
    cached = _cached(agent, raw)
    torch.manual_seed(3)
    _, m_raw = agent._losses(raw)
    torch.manual_seed(3)
    _, m_cached = agent._losses(cached)
    for k in m_raw:  # no random shift in frozen mode: the cache is exactly what the CNN would give
        torch.testing.assert_close(m_cached[k], m_raw[k], rtol=1e-5, atol=1e-5)

    for _ in range(3):
        agent.update(cached)
        agent.update(raw)  # a replay without the cache (images) works too, and trains no CNN either
    for k, v in agent.encoder.cnn.state_dict().items():
        assert torch.equal(v, cnn_before[k]), k
    assert not torch.equal(agent.encoder.instruction.weight, emb_before)  # the rest of the encoder trains
    assert any(not torch.equal(p, q) for p, q in zip(critic_before, agent.critic.parameters(), strict=True))


@pytest.mark.parametrize("frozen", [False, True])
def test_pixel_agents_never_read_the_privileged_state(frozen):
    agent = _agent(frozen)
    rng = np.random.default_rng(0)
    obs = {"image": rng.integers(0, 256, (S, S, 3), dtype=np.uint8), "proprio": np.ones(2, np.float32),
           "instruction": 1, "state": rng.normal(size=12).astype(np.float32)}
    a = agent.act(obs)
    for scrambled in (rng.normal(size=12) * 100, np.full(12, np.nan), np.zeros(3)):
        np.testing.assert_array_equal(agent.act({**obs, "state": scrambled.astype(np.float32)}), a)
    assert not np.array_equal(agent.act({**obs, "image": 255 - obs["image"]}), a)  # the image is read


def test_cached_latents_need_a_frozen_agent_and_bad_settings_are_named():
    e2e = _agent(frozen=False)
    assert e2e.frame_encoder() is None
    with pytest.raises(ValueError, match="encoder_frozen"):
        e2e.update(_cached(_agent(), _pixel_batch()))
    frozen = _agent()
    bad = _cached(frozen, _pixel_batch())
    bad["obs"][IMAGE_LATENT] = bad["obs"][IMAGE_LATENT][:, :5]
    with pytest.raises(ValueError, match=IMAGE_LATENT):
        frozen.update(bad)
    with pytest.raises(ConfigError, match="encoder_pretrain_steps"):
        CalQLConfig.from_dict({"encoder_frozen": True, "encoder_pretrain_steps": -1})
    assert CalQL({"state": (4,)}, 2, CalQLConfig(encoder_frozen=True, **SMALL)).frame_encoder() is None
    with pytest.raises(ObsSpecError, match="encoder_frozen"):  # nor may an observation carry one
        e2e.encoder({IMAGE_LATENT: torch.zeros(1, 8), "proprio": torch.zeros(1, 2), "instruction": torch.zeros(1)})


def test_frame_encoder_reads_an_end_to_end_cnn_only_when_asked():
    from robot_calql.agent.encoders import FrameEncoder

    e2e = _agent(frozen=False)
    with pytest.raises(ObsSpecError, match="frozen CNN"):  # a replay's cache must not hold a CNN that trains
        FrameEncoder(e2e.encoder)
    images = np.random.default_rng(3).integers(0, 256, (5, S, S, 3), dtype=np.uint8)
    got = FrameEncoder(e2e.encoder, chunk=2, frozen_only=False)({"image": images})  # bench_encoder_probe
    np.testing.assert_allclose(got, _direct_latents(e2e, images), atol=1e-5)


# ------------------------------------------------------------------ learning from images
STARTS = np.concatenate([np.linspace(-1, -0.5, 10), np.linspace(0.5, 1, 10)])


def _render(x):
    """The line task of test_learning.py seen by a camera: the point's column (red, top half) and
    the goal's (green, bottom half), so a random shift moves both; proprio carries nothing."""
    img = np.zeros((S, S, 3), np.uint8)
    img[: S // 2, int(round((x + 1.5) / 3.0 * (S - 1))), 0] = 255
    img[S // 2 :, (S - 1) // 2, 1] = 255
    return img


def _success_rate(agent):
    zero = np.zeros(2, np.float32)
    wins = [rollout(lambda x, _: agent.act({"image": _render(x), "proprio": zero})[0], x0)[3].any() for x0 in STARTS]
    return float(np.mean(wins))


def _line_agent():
    torch.manual_seed(0)
    cfg = CalQLConfig(actor_hidden=(64, 64), critic_hidden=(64, 64), discount=0.9, policy_lr=3e-4, critic_lr=1e-3,
                      encoder_frozen=True, encoder_latent_dim=16, aug_pad=2)
    return CalQL({"image": (S, S, 3), "proprio": (2,)}, 1, cfg)


def test_encoder_pretraining_reduces_its_loss():
    agent = _line_agent()
    xs = np.random.default_rng(0).uniform(-1.5, 1.5, 500).astype(np.float32)
    images = torch.from_numpy(np.stack([_render(x) for x in xs]))
    actions = torch.from_numpy(np.clip(2.0 * (GOAL - xs), -1, 1))[:, None]  # a demonstrator that reads the image
    proprio = torch.zeros(len(xs), 2)

    def sample(B):
        i = torch.randint(0, len(xs), (B,))
        return {"obs": {"image": images[i], "proprio": proprio[i]}, "action": actions[i]}

    cnn = {k: v.clone() for k, v in agent.encoder.cnn.state_dict().items()}
    res = pretrain_encoder(agent, sample, steps=150, batch_size=32)
    assert res["first_loss_encoder_bc"] > 0.3 and res["last_loss_encoder_bc"] < 0.05, res
    assert any(not torch.equal(v, cnn[k]) for k, v in agent.encoder.cnn.state_dict().items())
    assert not any(p.requires_grad for p in agent.encoder.cnn.parameters())  # frozen again afterwards


def test_frozen_latent_agent_learns_the_line_task_from_images():
    agent = _line_agent()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(80):  # a noisy demonstrator (about half its episodes fail) and random episodes
        noisy = (lambda x, r: 2.0 * (GOAL - x) + r.normal(0, 3.0)) if i < 60 else (lambda x, r: r.uniform(-1, 1))
        xs, acts, rews, terms = rollout(noisy, float(rng.choice([-1, 1]) * rng.uniform(0.5, 1.0)), rng)
        rows.append((xs, acts, rews, terms, mc_return_to_go(rews, terms, agent.cfg.discount, failure_reward=0.0)))
    img = torch.from_numpy(np.stack([_render(x) for r in rows for x in r[0][:-1]]))
    nimg = torch.from_numpy(np.stack([_render(x) for r in rows for x in r[0][1:]]))
    a, rew, term, mc = (torch.from_numpy(np.concatenate([r[k] for r in rows])) for k in (1, 2, 3, 4))
    n, zero = len(a), torch.zeros(len(a), 2)
    assert _success_rate(agent) < 0.5

    def sample(B):
        i = torch.randint(0, n, (B,))
        return {"obs": {"image": img[i], "proprio": zero[i]}, "action": a[i, None]}

    pretrain_encoder(agent, sample, steps=300, batch_size=64)
    enc = agent.frame_encoder()
    z, nz = torch.from_numpy(enc(img)), torch.from_numpy(enc(nimg))  # each frame encoded once
    for _ in range(500):
        i = torch.randint(0, n, (128,))
        m = agent.update({"obs": {IMAGE_LATENT: z[i], "proprio": zero[i]},
                          "next_obs": {IMAGE_LATENT: nz[i], "proprio": zero[i]}, "action": a[i, None],
                          "reward": rew[i], "done": term[i].float(), "mc_return": mc[i]})
    assert np.isfinite(list(m.values())).all()
    assert _success_rate(agent) >= 0.9  # acting runs the frozen CNN on each live frame


# ------------------------------------------------------------------ checkpoint -> policy node
def test_frozen_agent_checkpoint_acts_the_same_in_the_policy_actor(tmp_path):
    from robot_calql.train import checkpoint as ckpt
    from robot_calql.train.acting import ActingPolicy, weights_payload

    agent = _agent()
    pretrain_encoder(agent, lambda B: _pixel_batch(B), steps=3, batch_size=8)
    batch = _cached(agent, _pixel_batch())
    for _ in range(3):
        agent.update(batch)
    meta = {"obs": "pixels", "obs_spec": {k: list(v) for k, v in SPEC.items()}, "action_dim": 2,
            "instructions": ["put the cube in the bowl", "take the cube out"],
            "agent": {"encoder_frozen": True, "actor_hidden": [32, 32], "critic_hidden": [32, 32],
                      "encoder_latent_dim": 8}}
    ckpt.save_checkpoint(tmp_path / "run", 3, agent.state_dict(), {}, meta)
    rng = np.random.default_rng(1)
    for actor in (ActingPolicy.from_checkpoint(tmp_path / "run"),
                  ActingPolicy.from_payload(weights_payload(agent, meta, 3))):
        assert actor.encoder.frozen_cnn
        for _ in range(3):
            obs = {"image": rng.integers(0, 256, (S, S, 3), dtype=np.uint8),
                   "proprio": rng.normal(size=2).astype(np.float32), "instruction": "take the cube out"}
            np.testing.assert_array_equal(actor.act(obs), agent.act({**obs, "instruction": 1}))
