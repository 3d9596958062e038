"""The RND exploration bonus (robot_calql/agent/rnd.py): high on novel observations, low on
trained ones, added to the online rows of a batch only."""

import numpy as np
import pytest
import torch

from robot_calql.agent.rnd import RNDBonus, RNDConfig, observation_vector, rnd_obs_dim


def test_bonus_is_higher_on_novel_states_than_on_trained_ones():
    torch.manual_seed(0)
    rnd = RNDBonus(2, RNDConfig(scale=1.0, lr=1e-3), seed=0)
    near = lambda n: torch.randn(n, 2) * 0.3 + torch.tensor([1.0, -1.0])  # noqa: E731 - the visited region
    for _ in range(400):
        rnd.train_step(near(128))
    trained, novel = rnd.bonus(near(256)).mean(), rnd.bonus(torch.randn(256, 2) * 0.3 + torch.tensor([-3.0, 3.0])).mean()
    assert novel > 5 * trained, (float(trained), float(novel))
    # the state round trip keeps the bonus
    other = RNDBonus(2, RNDConfig(scale=1.0, lr=1e-3), seed=123)
    other.load_state_dict(rnd.state_dict())
    x = torch.randn(8, 2)
    assert torch.allclose(other.bonus(x), rnd.bonus(x))


def test_bonus_goes_to_the_online_rows_only():
    rnd = RNDBonus(3, RNDConfig(scale=2.0), seed=0)
    reward = torch.zeros(6)
    batch = {"obs": {"state": torch.randn(6, 3)}, "next_obs": {"state": torch.randn(6, 3),
                                                              "instruction": torch.zeros(6, dtype=torch.long)},
             "reward": reward, "online": torch.tensor([False, False, False, True, True, True])}
    m = rnd.apply(batch)
    assert (batch["reward"][:3] == 0).all() and (batch["reward"][3:] > 0).all()
    assert (reward == 0).all()  # the sampled tensor itself is not changed in place
    assert m["rnd_bonus"] > 0 and m["rnd_loss"] > 0
    offline_only = {**batch, "reward": torch.zeros(6), "online": torch.zeros(6, dtype=torch.bool)}
    assert rnd.apply(offline_only) == {"rnd_bonus": 0.0, "rnd_loss": 0.0}
    assert (offline_only["reward"] == 0).all()


def test_pixel_observations_use_proprio_and_a_pooled_image():
    obs = {"image": np.zeros((2, 64, 64, 3), np.uint8), "proprio": np.ones((2, 10), np.float32)}
    v = observation_vector(obs, image_pool=4)
    assert v.shape == (2, rnd_obs_dim({"image": (64, 64, 3), "proprio": (10,)}, 4)) == (2, 10 + 48)
    with pytest.raises(ValueError, match="needs 'state' or 'proprio'"):
        observation_vector({"image": obs["image"]})
    with pytest.raises(ValueError, match="rnd.scale must be >= 0"):
        RNDConfig(scale=-1.0).validate()
