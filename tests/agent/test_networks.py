"""The batched critic ensemble equals per-critic networks; actor log-probs are consistent."""

import math

import pytest
import torch

from robot_calql.agent import networks
from robot_calql.agent.encoders import ObsEncoder, random_shift
from robot_calql.agent.networks import (
    EnsembleCritic,
    TanhGaussianActor,
    behaviour_nll,
    tanh_gaussian_log_prob,
)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_batched_ensemble_matches_per_critic_reference(layer_norm):
    torch.manual_seed(0)
    critic = EnsembleCritic(obs_dim=5, action_dim=3, ensemble=3, hidden=(16, 16), layer_norm=layer_norm)
    obs, actions = torch.randn(4, 5), torch.rand(4, 7, 3) * 2 - 1
    q = critic(obs, actions)
    assert q.shape == (3, 4, 7)
    x = torch.cat([obs[:, None].expand(4, 7, 5), actions], -1).reshape(28, 8)
    for i in range(3):
        ref = critic.member(i)(x).view(4, 7)
        torch.testing.assert_close(q[i], ref, rtol=1e-5, atol=1e-5)
    # members differ (independent initialisation)
    assert not torch.allclose(q[0], q[1])


def test_detached_params_give_same_values_and_no_weight_gradients():
    torch.manual_seed(0)
    critic = EnsembleCritic(5, 3, 2, (16, 16), layer_norm=True)
    obs, a = torch.randn(4, 5), torch.zeros(4, 3, requires_grad=True)
    q = critic(obs, a, detach_params=True)
    torch.testing.assert_close(q, critic(obs, a))
    q.sum().backward()
    assert a.grad is not None and all(p.grad is None for p in critic.parameters())


def test_actor_log_prob_of_its_own_samples_and_bounds():
    torch.manual_seed(0)
    actor = TanhGaussianActor(4, 2, (16,))
    obs = torch.randn(64, 4)
    a, logp = actor(obs, n=1)
    assert a.abs().max() < 1 and a.shape == (64, 1, 2)
    torch.testing.assert_close(actor.log_prob(obs, a[:, 0]), logp[:, 0], rtol=1e-3, atol=1e-3)
    _, log_std = actor.dist_params(obs * 1e4)
    assert log_std.min() >= -20 and log_std.max() <= 2


def test_random_shift_moves_content_by_at_most_pad():
    img = torch.zeros(8, 16, 16, 1, dtype=torch.uint8)
    img[:, 8, 8] = 255
    out = random_shift(img, pad=2)
    ys, xs = torch.nonzero(out[..., 0] == 255, as_tuple=True)[1:]
    assert out.shape == img.shape and out.dtype == torch.uint8 and len(ys) == 8
    assert ((ys - 8).abs() <= 2).all() and ((xs - 8).abs() <= 2).all()
    assert len({(int(y), int(x)) for y, x in zip(ys, xs, strict=True)}) > 1  # the frames moved differently


def test_random_shift_is_replicate_pad_then_crop():
    """Pinned against the plain definition: replicate-pad by `pad`, crop at the drawn offset."""
    pad, frames = 3, torch.randint(0, 256, (16, 12, 10, 3), dtype=torch.uint8)
    out = random_shift(frames, pad, torch.Generator().manual_seed(7))
    off = torch.randint(0, 2 * pad + 1, (16, 2), generator=torch.Generator().manual_seed(7))
    padded = torch.nn.functional.pad(frames.permute(0, 3, 1, 2).float(), (pad,) * 4, mode="replicate")
    for b, (oy, ox) in enumerate(off.tolist()):
        want = padded[b, :, oy:oy + 12, ox:ox + 10].permute(1, 2, 0).to(torch.uint8)
        assert torch.equal(out[b], want), f"frame {b}, offset {(oy, ox)}"
    assert random_shift(frames, 0) is frames


def test_pixel_encoder_shapes_and_instruction_embedding():
    torch.manual_seed(0)
    for name in ("robofume", "resnet"):
        enc = ObsEncoder({"image": (32, 32, 3), "proprio": (4,)}, num_instructions=3, encoder=name,
                         latent_dim=8, instruction_dim=5)
        obs = {"image": torch.randint(0, 255, (2, 32, 32, 3), dtype=torch.uint8), "proprio": torch.zeros(2, 4),
               "instruction": torch.tensor([0, 2])}
        f = enc(obs, augment=True)
        assert f.shape == (2, 8 + 4 + 5) == (2, enc.out_dim)
        assert not torch.equal(f[0, -5:], f[1, -5:])  # different instructions, different embeddings


def test_ensemble_gradients_match_per_critic_reference():
    torch.manual_seed(0)
    critic = EnsembleCritic(5, 3, 2, (16, 16), layer_norm=True)
    obs, actions = torch.randn(4, 5), torch.rand(4, 6, 3) * 2 - 1
    critic(obs, actions).pow(2).sum().backward()
    ref = critic.member(1)
    x = torch.cat([obs[:, None].expand(4, 6, 5), actions], -1).reshape(24, 8)
    ref(x).pow(2).sum().backward()
    torch.testing.assert_close(critic.out.weight.grad[1, :, 0], ref[-1].weight.grad[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(critic.out.bias.grad[1].flatten(), ref[-1].bias.grad, rtol=1e-4, atol=1e-5)
    first = torch.cat([critic.w_obs.grad[1], critic.w_act.grad[1]], 0).T
    torch.testing.assert_close(first, ref[0].weight.grad, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_keeps_q_in_fp32_close_to_fp32():
    torch.manual_seed(0)
    critic = EnsembleCritic(5, 3, 2, (64, 64))
    obs, actions = torch.randn(8, 5), torch.rand(8, 4, 3) * 2 - 1
    q32 = critic(obs, actions)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q16 = critic(obs, actions)
    assert q16.dtype == torch.float32
    torch.testing.assert_close(q16, q32, rtol=0.05, atol=0.02)


def _values_and_grads(critic, run):
    torch.manual_seed(1)
    obs = torch.randn(6, 5, requires_grad=True)
    actions = (torch.rand(6, 4, 3) * 2 - 1).requires_grad_()
    critic.zero_grad(set_to_none=True)
    q = run(obs, actions)
    (q * torch.linspace(-1, 1, q.numel()).view_as(q)).sum().backward()
    return [q.detach(), obs.grad, actions.grad] + [p.grad for p in critic.parameters()]


@pytest.mark.skipif(not networks._HAS_ONEDNN_LINEAR, reason="torch built without oneDNN")
def test_fused_cpu_critic_equals_the_batched_critic_in_values_and_every_gradient():
    torch.manual_seed(0)
    critic = EnsembleCritic(5, 3, 2, (16, 16, 16))
    plain = _values_and_grads(critic, critic.forward)  # fp32: the batched bmm path
    fused = _values_and_grads(critic, lambda o, a: critic.forward_fused(o, a, torch.float32))
    assert len(plain) == 3 + len(list(critic.parameters()))
    for p, f in zip(plain, fused, strict=True):
        torch.testing.assert_close(f, p, rtol=1e-5, atol=1e-6)
    # weights held fixed (the actor's Q): gradients reach the actions only
    a = torch.rand(6, 3, requires_grad=True)
    critic.zero_grad(set_to_none=True)
    critic.forward_fused(torch.randn(6, 5), a, torch.float32, detach_params=True).sum().backward()
    assert a.grad is not None and all(p.grad is None for p in critic.parameters())


@pytest.mark.skipif(not networks._HAS_ONEDNN_LINEAR, reason="torch built without oneDNN")
def test_bf16_autocast_on_cpu_takes_the_fused_path_and_matches_the_batched_one(monkeypatch):
    torch.manual_seed(0)
    critic = EnsembleCritic(5, 3, 2, (64, 64))
    calls = []
    fused_apply = networks._FusedCPUCritic.apply
    monkeypatch.setattr(networks._FusedCPUCritic, "apply", lambda *a: calls.append(1) or fused_apply(*a))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = _values_and_grads(critic, critic.forward)
        critic.fused_cpu = False
        batched = _values_and_grads(critic, critic.forward)
    assert len(calls) == 1 and fused[0].dtype == torch.float32
    ref = _values_and_grads(critic, critic.forward)  # fp32
    for f, b, r in zip(fused, batched, ref, strict=True):
        # both bf16 paths are as close to fp32 as each other (bf16 has 8 significant bits)
        err_f, err_b = (f - r).norm() / r.norm(), (b - r).norm() / r.norm()
        assert err_f < 0.1 and err_f < 2 * err_b + 0.01, (err_f, err_b)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # LayerNorm critics keep the batched path
        EnsembleCritic(5, 3, 2, (16, 16), layer_norm=True)(torch.randn(2, 5), torch.rand(2, 3))
    assert len(calls) == 1


def test_behaviour_nll_is_minus_log_prob_and_its_huber_form_bounds_outliers():
    g = torch.Generator().manual_seed(0)
    mean, log_std = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g) * 0.5 - 1.0
    u = mean + log_std.exp() * torch.randn(8, 3, generator=g)
    plain = behaviour_nll(u, mean, log_std)
    torch.testing.assert_close(plain, -tanh_gaussian_log_prob(u, (u - mean) / log_std.exp(), log_std))
    # rows within 3 sigma on every dimension are unchanged by the clip
    inside = ((u - mean) / log_std.exp()).abs().amax(-1) <= 3.0
    assert inside.any()
    torch.testing.assert_close(behaviour_nll(u, mean, log_std, 3.0)[inside], plain[inside])
    # a demo action clipped to +1 under a narrow policy: 350 sigma away
    u_far = torch.full((1, 1), math.atanh(1 - 1e-6))
    m = torch.zeros(1, 1, requires_grad=True)
    ls = torch.full((1, 1), math.log(0.02))
    for clip, lo, hi in ((math.inf, 5e4, 1e6), (3.0, 100.0, 2000.0)):
        m.grad = None
        nll = behaviour_nll(u_far, m, ls, clip)
        nll.sum().backward()
        assert lo < nll.item() < hi, (clip, nll.item())
    assert m.grad.abs().item() == pytest.approx(3.0 / 0.02)  # Huber: the pull is capped at z_clip / std
