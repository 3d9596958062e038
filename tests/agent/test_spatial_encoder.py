"""The keypoint (spatial softmax) image encoder and the future-proprio target of the encoder
pre-training: frame indices ahead within an episode, and a latent that locates an object."""

import numpy as np
import pytest
import torch

from robot_calql.agent.encoder_pretrain import future_frame_index
from robot_calql.agent.encoders import ObsSpecError, SpatialSoftmaxEncoder


def test_future_frames_stay_inside_their_episode():
    # two episodes: frames 0..3 (3 steps) and 4..6 (2 steps), stored one after the other
    obs_idx = np.array([0, 1, 2, 4, 5])
    next_idx = np.array([1, 2, 3, 5, 6])
    got = future_frame_index(obs_idx, next_idx, (1, 5, -1))
    np.testing.assert_array_equal(got, [[1, 3, 3], [2, 3, 3], [3, 3, 3], [5, 6, 6], [6, 6, 6]])


def test_next_grasp_frame_is_where_the_gripper_next_closes():
    """Horizon -2: the frame of the next step whose gripper command turns closed, within the
    episode; after the last grasp (or in an episode without one) its last frame."""
    # episode A: frames 0..6 (6 steps), the gripper closes at step 2, opens at 4, closes again at 5;
    # episode B: frames 7..10 (3 steps), never closes; episode C: frames 11..13, closed from its first step
    obs_idx = np.array([0, 1, 2, 3, 4, 5, 7, 8, 9, 11, 12])
    next_idx = np.array([1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 13])
    grip = np.array([-1, -1, 1, 1, -1, 1, -1, -1, -1, 1, 1], dtype=np.float32)
    got = future_frame_index(obs_idx, next_idx, (-2, -1), gripper=grip)
    np.testing.assert_array_equal(got[:, 0], [2, 2, 2, 5, 5, 5, 10, 10, 10, 11, 13])
    np.testing.assert_array_equal(got[:, 1], [6] * 6 + [10] * 3 + [13] * 2)
    with pytest.raises(ValueError, match="gripper"):
        future_frame_index(obs_idx, next_idx, (-2,))


def test_unknown_future_horizon_is_a_config_error():
    from robot_calql.agent.calql import CalQLConfig
    from robot_calql.config import ConfigError

    CalQLConfig.from_dict({"encoder_pretrain_future": [5, -1, -2]})
    with pytest.raises(ConfigError, match="-3"):
        CalQLConfig.from_dict({"encoder_pretrain_future": [5, -3]})


def test_keypoints_are_coordinates_in_the_unit_square():
    enc = SpatialSoftmaxEncoder((32, 32, 3), latent_dim=16)
    z = enc(torch.rand(5, 3, 32, 32))
    assert z.shape == (5, 16) and enc.out_dim == 16
    assert float(z.detach().abs().max()) <= 1.0
    with pytest.raises(ObsSpecError, match="even"):
        SpatialSoftmaxEncoder((32, 32, 3), latent_dim=15)


def _spots(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Black 32x32 images with one 4x4 white square; the target is its centre in [-1, 1]."""
    xy = rng.integers(2, 26, size=(n, 2))
    img = np.zeros((n, 3, 32, 32), np.float32)
    for i, (x, y) in enumerate(xy):
        img[i, :, y : y + 4, x : x + 4] = 1.0
    return torch.from_numpy(img), torch.from_numpy(((xy + 2) / 32.0 * 2 - 1).astype(np.float32))


def test_keypoint_latent_learns_where_an_object_is():
    """A linear head on the keypoints regresses a square's position to a few pixels after a short
    training; at the start it cannot (the error falls at least fivefold)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    enc = SpatialSoftmaxEncoder((32, 32, 3), channels=16, latent_dim=16)
    head = torch.nn.Linear(16, 2)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=3e-3)
    test_x, test_y = _spots(200, rng)

    def error() -> float:
        with torch.no_grad():
            return float((head(enc(test_x)) - test_y).abs().mean())

    before = error()
    for _ in range(300):
        x, y = _spots(32, rng)
        loss = torch.nn.functional.mse_loss(head(enc(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = error()
    print(f"mean abs error (unit square): {before:.3f} -> {after:.3f}  (1 px = {2 / 32:.3f})")
    assert after < before / 5 and after < 0.1


def test_precision_auto_follows_the_hardware(monkeypatch):
    """`precision: auto` is bf16 only where bf16 runs natively (else it would be emulated, slower)."""
    from robot_calql.agent import cpu
    from robot_calql.agent.calql import CalQL, CalQLConfig

    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(cpu, "native_bf16", lambda device="cpu", n=native: n)
        agent = CalQL({"state": (4,)}, 2, CalQLConfig(precision="auto", actor_hidden=(8,), critic_hidden=(8,)))
        assert agent.precision == expected
    assert cpu.resolve_precision("fp32") == "fp32" and cpu.resolve_precision("bf16") == "bf16"
