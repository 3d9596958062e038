"""Several cameras (main `image` + `image_wrist`) through the dataset, the offline replay and the
agent's encoder; a one-camera dataset and checkpoint load exactly as before."""

import json

import numpy as np
import pytest
import torch

from robot_calql.agent import CalQL, CalQLConfig
from robot_calql.agent.encoders import ObsSpecError
from robot_calql.data import IMAGE_LATENT
from robot_calql.data.dataset import Dataset, DatasetError, DatasetMeta, DatasetWriter, Episode
from robot_calql.data.replay import OfflineReplay, OnlineReplay, ReplayError
from robot_calql.train.common import obs_spec_from_meta

SMALL = {"actor_hidden": (32, 32), "critic_hidden": (32, 32)}
H = 16


def _meta(cameras=("wrist",)):
    return DatasetMeta(control_hz=10.0, action_dim=5, proprio_dim=4, image_shape=(H, H, 3), robot="test",
                       camera="/front", extra_cameras=list(cameras))


def _episode(seed, T=6, cameras=("wrist",)):
    r = np.random.default_rng(seed)
    term = np.zeros(T, bool)
    term[-1] = True
    return Episode(
        image=r.integers(0, 256, (T + 1, H, H, 3), dtype=np.uint8),
        camera_images={f"image_{c}": r.integers(0, 256, (T + 1, H, H, 3), dtype=np.uint8) for c in cameras},
        proprio=r.normal(size=(T + 1, 4)).astype(np.float32), action=r.uniform(-1, 1, (T, 5)).astype(np.float32),
        reward=term.astype(np.float32), terminal=term, instruction="put the cube in the bowl", source="bag")


def test_two_camera_dataset_round_trip_and_agent_trains_and_acts(tmp_path):
    w = DatasetWriter(tmp_path / "ds", _meta())
    eps = [_episode(s) for s in range(3)]
    for ep in eps:
        w.write_episode(ep)
    assert (tmp_path / "ds/episodes/ep_000000/image_wrist.npy").is_file()
    ds = Dataset(tmp_path / "ds")
    assert ds.meta.extra_cameras == ["wrist"] and ds.meta.image_keys == ["image", "image_wrist"]
    np.testing.assert_array_equal(ds[1].camera_images["image_wrist"], eps[1].camera_images["image_wrist"])
    ds.verify()

    spec = obs_spec_from_meta(ds.meta, "pixels")
    assert spec == {"image": (H, H, 3), "image_wrist": (H, H, 3), "proprio": (4,)}
    replay = OfflineReplay(ds, spec, progress=False, seed=0)
    b = replay.sample(8)
    assert b["obs"]["image_wrist"].shape == (8, H, H, 3) and b["next_obs"]["image_wrist"].dtype == torch.uint8
    # the wrist frames in the replay are the dataset's (step 0 of episode 0 is frame 0)
    np.testing.assert_array_equal(replay.frames["image_wrist"][0], eps[0].camera_images["image_wrist"][0])

    agent = CalQL(spec, 5, CalQLConfig(**SMALL, conv_strides=(2, 2), encoder_latent_dim=8))
    one = CalQL({"image": (H, H, 3), "proprio": (4,)}, 5, CalQLConfig(**SMALL, conv_strides=(2, 2),
                                                                     encoder_latent_dim=8))
    assert agent.encoder.out_dim == one.encoder.out_dim + 8  # one more latent, the CNN's weights shared
    assert sum(p.numel() for p in agent.encoder.parameters()) == sum(p.numel() for p in one.encoder.parameters())
    before = agent.encoder.cnn.proj[0].weight.detach().clone()
    for _ in range(3):
        m = agent.update(replay.sample(8))
        assert all(np.isfinite(v) for k, v in m.items() if k.startswith("loss"))
    assert not torch.equal(before, agent.encoder.cnn.proj[0].weight)

    obs = {"image": eps[0].image[0], "image_wrist": eps[0].camera_images["image_wrist"][0],
           "proprio": eps[0].proprio[0]}
    a = agent.act(obs)
    assert a.shape == (5,) and np.all(np.abs(a) <= 1)
    # the wrist camera reaches the actor: another wrist frame, another action
    other = dict(obs, image_wrist=255 - obs["image_wrist"])
    assert not np.allclose(agent.act(other), a)
    with pytest.raises(ObsSpecError, match="lacks 'image_wrist'"):
        agent.act({"image": obs["image"], "proprio": obs["proprio"]})

    online = OnlineReplay(spec, 5, capacity=50, vocab=replay.vocab)
    online.add_episode(eps[0])
    np.testing.assert_array_equal(online.frames["image_wrist"][1], eps[0].camera_images["image_wrist"][1])


def test_frozen_encoder_caches_every_cameras_latent(tmp_path):
    """encoder_frozen with two cameras: the replays store one latent per frame that holds both
    cameras' CNN outputs (main first), the update trains on it, and acting on the live frames gives
    the action acting on the cached latent gives."""
    w = DatasetWriter(tmp_path / "ds", _meta())
    eps = [_episode(s) for s in range(3)]
    for ep in eps:
        w.write_episode(ep)
    ds = Dataset(tmp_path / "ds")
    spec = obs_spec_from_meta(ds.meta, "pixels")
    agent = CalQL(spec, 5, CalQLConfig(**SMALL, conv_strides=(2, 2), encoder_latent_dim=8, encoder_frozen=True))
    fe = agent.frame_encoder()
    assert fe.camera_keys == ("image", "image_wrist") and fe.latent_dim == 16

    replay = OfflineReplay(ds, spec, progress=False, seed=0, frame_encoder=fe)
    assert set(replay.frames) == {IMAGE_LATENT, "proprio"}  # no images kept, of either camera
    with torch.no_grad():
        main = agent.encoder.cnn(agent.encoder.image_to_float(torch.as_tensor(eps[0].image[:1]), False))
        wrist = agent.encoder.cnn(agent.encoder.image_to_float(
            torch.as_tensor(eps[0].camera_images["image_wrist"][:1]), False))
    np.testing.assert_allclose(replay.frames[IMAGE_LATENT][0], torch.cat([main, wrist], 1)[0].numpy(), atol=1e-5)
    b = replay.sample(8)
    assert b["obs"][IMAGE_LATENT].shape == (8, 16) and "image_wrist" not in b["obs"]
    m = agent.update(b)
    assert all(np.isfinite(v) for k, v in m.items() if k.startswith("loss"))

    live = {"image": eps[0].image[0], "image_wrist": eps[0].camera_images["image_wrist"][0], "proprio": eps[0].proprio[0]}
    cached = {IMAGE_LATENT: replay.frames[IMAGE_LATENT][0], "proprio": eps[0].proprio[0]}
    np.testing.assert_allclose(agent.act(live), agent.act(cached), atol=1e-4)
    # the wrist frame moves only the wrist half of the latent
    other = fe({"image": live["image"][None], "image_wrist": 255 - live["image_wrist"][None]})[0]
    np.testing.assert_allclose(other[:8], replay.frames[IMAGE_LATENT][0][:8], atol=1e-5)
    assert not np.allclose(other[8:], replay.frames[IMAGE_LATENT][0][8:])

    online = OnlineReplay(spec, 5, capacity=50, vocab=replay.vocab, frame_encoder=fe)
    online.add_episode(eps[1])
    assert set(online.frames) == {IMAGE_LATENT, "proprio"}
    np.testing.assert_allclose(online.frames[IMAGE_LATENT][:7], replay.frames[IMAGE_LATENT][7:14], atol=1e-5)
    step = {"image": live["image"], "proprio": live["proprio"]}
    with pytest.raises(ReplayError, match="lacks 'image_wrist'"):
        online.add(step, np.zeros(5, np.float32), 0.0, step, False)
    with pytest.raises(ObsSpecError, match="2 cameras"):
        fe(eps[0].image)  # one camera's frames for a two-camera encoder


def test_one_camera_dataset_and_checkpoint_state_load_as_before(tmp_path):
    """A dataset written before extra cameras existed (no extra_cameras key) reads as one camera, and
    a one-camera agent's state dict has exactly the keys and shapes it had (checkpoints load)."""
    w = DatasetWriter(tmp_path / "ds", _meta(cameras=()))
    w.write_episode(_episode(0, cameras=()))
    raw = json.loads((tmp_path / "ds/dataset.json").read_text())
    assert "extra_cameras" not in raw  # the metadata file is the one older versions wrote
    # dataset.json exactly as the version before cameras wrote it
    (tmp_path / "ds/dataset.json").write_text(json.dumps({
        "action_dim": 5, "action_space": "delta_ee", "camera": "/front", "control_hz": 10.0, "extra": {},
        "image_shape": [H, H, 3], "proprio_dim": 4, "robot": "test", "schema_version": 1, "state_dim": None}))
    ds = Dataset(tmp_path / "ds")
    assert ds.meta.image_keys == ["image"] and ds[0].camera_images == {}
    assert obs_spec_from_meta(ds.meta, "pixels") == {"image": (H, H, 3), "proprio": (4,)}

    cfg = CalQLConfig(**SMALL, conv_strides=(2, 2), encoder_latent_dim=8)
    a = CalQL({"image": (H, H, 3), "proprio": (4,)}, 5, cfg)
    sd = a.state_dict()
    # the encoder layout robot_calql had before cameras existed (recorded from that version)
    before = {"proprio_mean": (4,), "proprio_std": (4,), "cnn.convs.0.weight": (32, 3, 3, 3), "cnn.convs.0.bias": (32,),
              "cnn.convs.1.weight": (32,), "cnn.convs.1.bias": (32,), "cnn.convs.3.weight": (32, 32, 3, 3),
              "cnn.convs.3.bias": (32,), "cnn.convs.4.weight": (32,), "cnn.convs.4.bias": (32,),
              "cnn.proj.0.weight": (8, 288), "cnn.proj.0.bias": (8,), "cnn.proj.1.weight": (8,), "cnn.proj.1.bias": (8,)}
    assert {k[len("encoder."):]: tuple(v.shape) for k, v in sd.items() if k.startswith("encoder.")} == before
    b = CalQL({"image": (H, H, 3), "proprio": (4,)}, 5, cfg)
    b.load_state_dict(sd)  # the layout of a checkpoint written before cameras existed
    obs = {"image": np.zeros((H, H, 3), np.uint8), "proprio": np.zeros(4, np.float32)}
    np.testing.assert_allclose(a.act(obs), b.act(obs))


def test_camera_mismatches_are_named(tmp_path):
    w = DatasetWriter(tmp_path / "ds", _meta())
    with pytest.raises(DatasetError, match="missing 'image_wrist'"):
        w.write_episode(_episode(0, cameras=()))
    with pytest.raises(DatasetError, match=r"camera images \['image_side'\]"):
        w.write_episode(_episode(0, cameras=("wrist", "side")))
    with pytest.raises(DatasetError, match="extra_cameras"):
        DatasetWriter(tmp_path / "ds", _meta(cameras=("side",)))  # appending another camera set
    with pytest.raises(DatasetError, match="names must be distinct identifiers"):
        _meta(cameras=("latent",))

    one = DatasetWriter(tmp_path / "one", _meta(cameras=()))
    one.write_episode(_episode(0, cameras=()))
    with pytest.raises(ReplayError, match="needs 'image_wrist' observations but the dataset has none"):
        OfflineReplay(Dataset(tmp_path / "one"), {"image": (H, H, 3), "image_wrist": (H, H, 3), "proprio": (4,)},
                      progress=False)
    with pytest.raises(ObsSpecError, match="every camera's image must be"):
        CalQL({"image": (H, H, 3), "image_wrist": (8, 8, 3), "proprio": (4,)}, 5, CalQLConfig(**SMALL))


def test_lerobot_export_refuses_extra_cameras_instead_of_dropping_them(tmp_path):
    pytest.importorskip("pyarrow")
    from robot_calql.data.lerobot import LeRobotFormatError, export_lerobot

    w = DatasetWriter(tmp_path / "ds", _meta())
    w.write_episode(_episode(0))
    with pytest.raises(LeRobotFormatError, match=r"extra cameras \['wrist'\]"):
        export_lerobot(tmp_path / "ds", tmp_path / "lr")
    assert not (tmp_path / "lr").exists()
