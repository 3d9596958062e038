"""Observation standardisation inside the encoder: set from data, carried by every checkpoint."""

import numpy as np
import pytest
import torch

from robot_calql.agent import CalQL, CalQLConfig
from robot_calql.agent.encoders import ObsSpecError

SMALL = dict(actor_hidden=(32, 32), critic_hidden=(32, 32), cql_n_actions=4)


def test_standardised_agent_is_invariant_to_units_of_the_state():
    """An agent normalised with stats (m, s) acting on m + s*z must equal one with (0, 1) on z."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(8, 5)).astype(np.float32)
    mean = rng.normal(size=5).astype(np.float32) * 10
    std = rng.uniform(0.01, 0.05, size=5).astype(np.float32)  # centimetre-scale features
    torch.manual_seed(0)
    a = CalQL({"state": (5,)}, 2, CalQLConfig(**SMALL))
    b = CalQL({"state": (5,)}, 2, CalQLConfig(**SMALL))
    b.load_state_dict(a.state_dict())
    b.set_obs_normalization({"state": (mean, std)})
    np.testing.assert_allclose(a.act({"state": z}), b.act({"state": mean + std * z}), atol=1e-5)
    np.testing.assert_allclose(a.q_values({"state": z}), b.q_values({"state": mean + std * z}), atol=1e-4)


def test_normalisation_travels_with_policy_weights_and_checkpoints():
    torch.manual_seed(0)
    a = CalQL({"state": (4,)}, 2, CalQLConfig(**SMALL))
    a.set_obs_normalization({"state": (np.arange(4.0), np.full(4, 0.1))})
    sd = a.policy_state_dict()
    assert torch.equal(sd["encoder.state_mean"], torch.arange(4.0))
    b = CalQL({"state": (4,)}, 2, CalQLConfig(**SMALL))
    b.load_policy_state_dict(sd)
    obs = {"state": np.ones((3, 4), np.float32)}
    np.testing.assert_array_equal(a.act(obs), b.act(obs))
    c = CalQL({"state": (4,)}, 2, CalQLConfig(**SMALL))
    c.load_state_dict(a.state_dict())
    assert torch.equal(c.encoder_target.state_std, torch.full((4,), 0.1))


def test_constant_dimension_is_not_blown_up_and_bad_stats_are_named():
    a = CalQL({"state": (3,)}, 2, CalQLConfig(**SMALL))
    a.set_obs_normalization({"state": (np.zeros(3), np.array([0.5, 0.0, 1e-6]))})
    assert a.encoder.state_std.tolist() == [0.5, 1.0, 1.0]
    with pytest.raises(ObsSpecError, match="lack 'state'"):
        a.set_obs_normalization({"proprio": (np.zeros(3), np.ones(3))})
    with pytest.raises(ObsSpecError, match="NaN"):
        a.set_obs_normalization({"state": (np.array([0, np.nan, 0]), np.ones(3))})


def test_pixel_agent_normalises_proprio_only():
    a = CalQL({"image": (32, 32, 3), "proprio": (4,)}, 2, CalQLConfig(**SMALL))
    assert a.encoder.normalized_keys == ["proprio"]
    a.set_obs_normalization({"proprio": (np.ones(4), np.full(4, 2.0))})
    assert torch.equal(a.encoder.proprio_mean, torch.ones(4))


def test_loaded_optimizer_state_keeps_the_configured_learning_rates():
    """Adam's state dict stores its lr; fine-tuning with another lr must not be silently undone."""
    a = CalQL({"state": (4,)}, 2, CalQLConfig(**SMALL, policy_lr=1e-3, critic_lr=3e-4))
    b = CalQL({"state": (4,)}, 2, CalQLConfig(**SMALL, policy_lr=1e-4, critic_lr=1e-5))
    b.load_optimizer_state_dict(a.optimizer_state_dict())
    assert b.opt_actor.param_groups[0]["lr"] == 1e-4
    assert b.opt_critic.param_groups[0]["lr"] == 1e-5


def test_standardised_inputs_are_clipped_so_an_unseen_state_cannot_blow_up_the_critic():
    """A dimension that hardly varied in the data (std 0.002) changes online by 0.8: 400 sigma.
    With obs_clip 10 the features, and so Q, see at most 10 sigma; inf turns the clip off."""
    mean, std = np.zeros(4, np.float32), np.array([1.0, 1.0, 1.0, 0.002], np.float32)
    obs = {"state": np.array([[0.5, -0.5, 0.2, 0.8]], np.float32)}
    feats = {}
    for clip in (10.0, float("inf")):
        torch.manual_seed(0)
        agent = CalQL({"state": (4,)}, 2, CalQLConfig(**SMALL, obs_clip=clip))
        agent.set_obs_normalization({"state": (mean, std)})
        with torch.no_grad():
            feats[clip] = agent.encoder({"state": torch.as_tensor(obs["state"])})[0].numpy()
    np.testing.assert_allclose(feats[10.0], [0.5, -0.5, 0.2, 10.0])
    np.testing.assert_allclose(feats[float("inf")], [0.5, -0.5, 0.2, 400.0], rtol=1e-5)
    with pytest.raises(Exception, match="obs_clip must be > 0"):
        CalQLConfig(**SMALL, obs_clip=0.0).validate()
