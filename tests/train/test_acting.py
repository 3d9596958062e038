"""The acting policy (robot_calql.train.acting): encoder + actor (+ the critics with the discrete
gripper), built from a checkpoint, an agent or the learner's weights message, acting exactly as the
full agent does (state, pixels end to end, frozen encoder, two cameras, the discrete gripper),
taking weight updates as the agent does, and naming an unknown instruction. No rclpy."""

import numpy as np
import pytest
import torch

from robot_calql.agent import CalQL, CalQLConfig, CheckpointError
from robot_calql.agent.networks import EnsembleCritic
from robot_calql.control.transport import TransportError, pack_weights, unpack_weights
from robot_calql.train import checkpoint as ckpt
from robot_calql.train.acting import ActingPolicy, UnknownInstructionError, weights_payload

S = 32
INSTRUCTIONS = ["put the cube in the bowl", "take the cube out", "push the cube left"]
SMALL = {"actor_hidden": [32, 32], "critic_hidden": [32, 32], "encoder_latent_dim": 8}
MODES = {
    "state": ({"state": [9]}, {}),
    "pixels": ({"image": [S, S, 3], "proprio": [4]}, {}),
    "frozen": ({"image": [S, S, 3], "proprio": [4]}, {"encoder_frozen": True}),
    "two cameras": ({"image": [S, S, 3], "image_wrist": [S, S, 3], "proprio": [4]}, {}),
    "discrete gripper": ({"image": [S, S, 3], "proprio": [4]}, {"discrete_gripper": True}),  # + the critics
}


def _agent(mode: str, seed: int = 0, instructions=INSTRUCTIONS, **extra) -> tuple[CalQL, dict]:
    spec, cfg = MODES[mode]
    meta = {"obs": mode, "obs_spec": spec, "action_dim": 5, "instructions": list(instructions),
            "agent": {**SMALL, **cfg, **extra}}
    torch.manual_seed(seed)
    agent = CalQL(spec, 5, CalQLConfig.from_dict(meta["agent"]), num_instructions=max(1, len(instructions)))
    key = "state" if "state" in spec else "proprio"
    d = spec[key][0]
    agent.set_obs_normalization({key: (torch.linspace(-1, 1, d), torch.linspace(0.5, 2, d))})  # not 0 / 1
    return agent, meta


def _obs(mode: str, rng) -> dict:
    spec = MODES[mode][0]
    return {k: rng.integers(0, 256, tuple(v), dtype=np.uint8) if k.startswith("image")
            else rng.normal(size=v[0]).astype(np.float32) for k, v in spec.items()}


def _batch(agent: CalQL, mode: str, rng, n: int = 8) -> dict:
    obs = [_obs(mode, rng) for _ in range(2 * n)]

    def stack(rows):
        return {k: torch.as_tensor(np.stack([o[k] for o in rows])) for k in rows[0]} | {
            "instruction": torch.as_tensor(rng.integers(0, len(INSTRUCTIONS), n))}
    return {"obs": stack(obs[:n]), "next_obs": stack(obs[n:]),
            "action": torch.as_tensor(rng.uniform(-1, 1, (n, 5)), dtype=torch.float32),
            "reward": torch.as_tensor(rng.integers(0, 2, n), dtype=torch.float32),
            "done": torch.zeros(n), "mc_return": torch.as_tensor(rng.normal(size=n), dtype=torch.float32)}


def _save(agent: CalQL, meta: dict, run, step: int = 7) -> None:
    trainer = {"optimizer": agent.optimizer_state_dict(), "rng": ckpt.rng_state()}
    ckpt.save_checkpoint(run, step, agent.state_dict(), trainer, meta)


def _same_actions(policy: ActingPolicy, agent: CalQL, mode: str, seed: int) -> None:
    """Deterministic, sampled (torch's global generator) and per-axis temperatures, every instruction."""
    rng = np.random.default_rng(seed)
    for i, ins in enumerate(INSTRUCTIONS):
        obs = _obs(mode, rng)
        want = agent.act({**obs, "instruction": i}, deterministic=False, temperature=0.0)
        np.testing.assert_array_equal(policy.act(obs, ins), want)
        for temp in (1.0, [0.0, 0.5, 1.0, 0.2, 2.0]):
            torch.manual_seed(seed + i)
            want = agent.act({**obs, "instruction": i}, deterministic=False, temperature=temp)
            torch.manual_seed(seed + i)
            got = policy.act({**obs, "instruction": ins}, explore_temperature=temp)
            assert got.dtype == np.float32 and got.shape == (5,)
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", list(MODES))
def test_policy_from_a_checkpoint_acts_as_the_agent(tmp_path, mode):
    agent, meta = _agent(mode)
    _save(agent, meta, tmp_path / "run")
    policy = ActingPolicy.from_checkpoint(tmp_path / "run")
    assert policy.step == 7 and policy.instructions == INSTRUCTIONS
    assert policy.encoder.frozen_cnn == (mode == "frozen")
    _same_actions(policy, agent, mode, seed=1)


def test_policy_holds_the_actor_and_encoder_only(tmp_path):
    """No critic, target, temperature or optimiser; its tensors are the agent's policy tensors;
    the checkpoint's optimiser states and replay buffer are not read (damaged here)."""
    agent, meta = _agent("frozen")
    _save(agent, meta, tmp_path / "run")
    folder = ckpt.find_checkpoint(tmp_path / "run")
    (folder / ckpt.TRAINER).write_bytes(b"not a torch file")
    (folder / ckpt.BUFFER).write_bytes(b"not an npz file")
    with pytest.raises(ckpt.CheckpointError, match="trainer.pt"):
        ckpt.load_checkpoint(folder)  # what loading the whole checkpoint meets
    policy = ActingPolicy.from_checkpoint(tmp_path / "run")
    modules = {k: v for k, v in vars(policy).items() if isinstance(v, torch.nn.Module)}
    assert sorted(modules) == ["actor", "encoder"]
    assert not any(isinstance(v, torch.optim.Optimizer) for v in vars(policy).values())
    assert not any(isinstance(m, EnsembleCritic) for mod in modules.values() for m in mod.modules())
    n_policy = sum(p.numel() for m in modules.values() for p in m.parameters())
    assert n_policy == sum(p.numel() for m in (agent.actor, agent.encoder) for p in m.parameters())
    assert not any(p.requires_grad for m in modules.values() for p in m.parameters())
    assert not policy.encoder.training and not policy.actor.training
    want = agent.policy_state_dict()
    got = policy.state_dict()
    assert sorted(got) == sorted(want)
    assert all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("extra", [{}, {"encoder": "resnet"}, {"instruction_dim": 4, "obs_clip": 3.0}])
def test_policy_networks_are_the_agents(extra):
    """acting_networks builds what CalQL builds: same tensor names and shapes (resnet and other
    sizes too), and the same actions from a copy."""
    agent, meta = _agent("pixels", seed=3, **extra)
    policy = ActingPolicy.from_agent(agent, INSTRUCTIONS, step=4)
    assert {k: v.shape for k, v in policy.state_dict().items()} == {k: v.shape for k, v in agent.policy_state_dict().items()}
    _same_actions(policy, agent, "pixels", seed=2)


def test_policy_with_one_instruction_and_a_torch_generator():
    agent, _ = _agent("state", instructions=["put the cube in the bowl"])
    policy = ActingPolicy.from_agent(agent, ["put the cube in the bowl"])
    obs = _obs("state", np.random.default_rng(0))
    np.testing.assert_array_equal(policy.act(obs), agent.act(obs))  # no instruction needed
    a = policy.act(obs, None, 1.0, torch.Generator().manual_seed(5))
    b = policy.act(obs, None, 1.0, torch.Generator().manual_seed(5))
    c = policy.act(obs, None, 1.0, torch.Generator().manual_seed(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("mode", ["state", "pixels", "two cameras"])
def test_weight_updates_change_the_policy_as_the_agent(tmp_path, mode):
    """The learner's weights message (and a whole agent state dict) after updates: the policy
    then acts as the updated agent, and differently from before."""
    agent, meta = _agent(mode)
    _save(agent, meta, tmp_path / "run")
    policy = ActingPolicy.from_checkpoint(tmp_path / "run")
    rng = np.random.default_rng(4)
    probe = _obs(mode, rng)
    before = policy.act(probe, INSTRUCTIONS[1])
    for _ in range(3):
        agent.update(_batch(agent, mode, rng))
    payload = weights_payload(agent, meta, 10)
    sd, _ = unpack_weights(payload)
    assert sorted(sd) == sorted(agent.policy_state_dict())  # the message carries no critic
    assert policy.load_weights(payload) == 10 and policy.step == 10
    assert not np.array_equal(policy.act(probe, INSTRUCTIONS[1]), before)
    _same_actions(policy, agent, mode, seed=5)
    other = ActingPolicy.from_checkpoint(tmp_path / "run")
    other.load_weights(agent.state_dict(), step=10)  # a whole agent's state: its policy part
    _same_actions(other, agent, mode, seed=6)
    fresh = ActingPolicy.from_payload(payload, threads=None)
    assert fresh.step == 10
    _same_actions(fresh, agent, mode, seed=7)


def test_unknown_instruction_is_an_error_naming_it():
    agent, _ = _agent("state")
    policy = ActingPolicy.from_agent(agent, INSTRUCTIONS)
    obs = _obs("state", np.random.default_rng(0))
    with pytest.raises(UnknownInstructionError, match=r"'stack the cubes' unknown to the policy.*take the cube out"):
        policy.instruction_id("stack the cubes")
    with pytest.raises(UnknownInstructionError, match="'stack the cubes'"):
        policy.act(obs, "stack the cubes")
    with pytest.raises(UnknownInstructionError, match="3 unknown"):
        policy.act(obs, 3)
    with pytest.raises(UnknownInstructionError, match="no instruction given"):
        policy.act(obs)
    assert policy.instruction_id("take the cube out") == 1 and policy.instruction_id(np.int64(2)) == 2


def test_weights_that_do_not_fit_are_refused_naming_why(tmp_path):
    agent, meta = _agent("state")
    policy = ActingPolicy.from_agent(agent, INSTRUCTIONS)
    other, other_meta = _agent("state", instructions=INSTRUCTIONS[::-1])
    with pytest.raises(ValueError, match=r"another policy \(different \['instructions'\]\)"):
        policy.load_weights(weights_payload(other, other_meta, 1))
    sd = agent.policy_state_dict()
    del sd["actor.net.0.weight"]
    with pytest.raises(CheckpointError, match="missing.*actor.net.0.weight"):
        policy.load_weights(sd)
    with pytest.raises(TransportError, match="no policy_meta"):
        ActingPolicy.from_payload(pack_weights(agent.policy_state_dict(), 1))
    with pytest.raises(ValueError, match="instructions given"):
        ActingPolicy.from_agent(agent, INSTRUCTIONS[:2])


# ---------------------------------------------------------------------- PA-RL (agent.policy=diffusion)
def _pa_rl(k: int) -> dict:
    return {"policy": "diffusion", "pa_rl": {"hidden": [16, 16], "diffusion_steps": 3, "act_samples": k}}


def _same_pa_rl_actions(policy: ActingPolicy, agent: CalQL, mode: str, seed: int) -> None:
    """Temperature 0, 1 and per axis (PA-RL samples at their max), torch's global generator and a
    torch.Generator seeded alike: bit-identical to the agent's act, every instruction."""
    rng = np.random.default_rng(seed)
    for i, ins in enumerate(INSTRUCTIONS):
        obs = _obs(mode, rng)
        for j, temp in enumerate((0.0, 1.0, [0.0, 0.5, 1.0, 0.2, 2.0])):
            torch.manual_seed(seed + 10 * i + j)
            want = agent.act({**obs, "instruction": i}, deterministic=False, temperature=temp)
            torch.manual_seed(seed + 10 * i + j)
            got = policy.act(obs, ins, temp)
            assert got.dtype == np.float32 and got.shape == (5,)
            np.testing.assert_array_equal(got, want)
            gen = torch.Generator().manual_seed(seed + 10 * i + j)
            np.testing.assert_array_equal(policy.act(obs, ins, temp, gen), want)


@pytest.mark.parametrize("k", [1, 16])
@pytest.mark.parametrize("mode", ["state", "pixels"])
def test_pa_rl_policy_from_a_checkpoint_acts_as_the_agent(tmp_path, mode, k):
    agent, meta = _agent(mode, **_pa_rl(k))
    _save(agent, meta, tmp_path / "run")
    policy = ActingPolicy.from_checkpoint(tmp_path / "run")
    assert policy.step == 7 and policy.act_samples == k
    _same_pa_rl_actions(policy, agent, mode, seed=1)
    if k > 1:  # the critics rank the samples: not always the base policy's temperature-0 sample
        base = ActingPolicy({**meta, "agent": {**meta["agent"], **_pa_rl(1)}}, agent.state_dict())
        rng = np.random.default_rng(2)
        obs = [_obs(mode, rng) for _ in range(6)]
        assert any(not np.array_equal(policy.act(o, INSTRUCTIONS[0]), base.act(o, INSTRUCTIONS[0])) for o in obs)


@pytest.mark.parametrize("k", [1, 16])
def test_pa_rl_policy_holds_critics_only_to_rank_samples(tmp_path, k):
    """K = 1: encoder + diffusion policy, no critic. K = 16: + the online critic ensemble, in eval
    mode without gradients; never the target critics or encoder, nor an optimiser (the
    checkpoint's optimiser states are damaged here: not read)."""
    agent, meta = _agent("pixels", **_pa_rl(k))
    _save(agent, meta, tmp_path / "run")
    (ckpt.find_checkpoint(tmp_path / "run") / ckpt.TRAINER).write_bytes(b"not a torch file")
    policy = ActingPolicy.from_checkpoint(tmp_path / "run")
    modules = {k: v for k, v in vars(policy).items() if isinstance(v, torch.nn.Module)}
    held = ["critic", "diffusion", "encoder"] if k > 1 else ["diffusion", "encoder"]
    assert sorted(modules) == held and sorted(policy.modules) == held
    critics = [m for mod in modules.values() for m in mod.modules() if isinstance(m, EnsembleCritic)]
    assert len(critics) == (1 if k > 1 else 0)
    assert not any(isinstance(v, torch.optim.Optimizer) for v in vars(policy).values())
    want_modules = [agent.encoder, agent.pa_rl.policy, *([agent.critic] if k > 1 else [])]
    n_policy = sum(p.numel() for m in modules.values() for p in m.parameters())
    assert n_policy == sum(p.numel() for m in want_modules for p in m.parameters())  # no target copy, no actor
    assert not any(p.requires_grad for m in modules.values() for p in m.parameters())
    assert not any(m.training for m in modules.values())
    want = {n: v for n, v in agent.policy_state_dict().items() if not n.startswith("actor.")}
    got = policy.state_dict()
    assert sorted(got) == sorted(want) and all(torch.equal(got[n], want[n]) for n in want)
    assert any(n.startswith("critic.") for n in got) == (k > 1)


@pytest.mark.parametrize("k", [1, 16])
def test_pa_rl_weight_updates_change_the_policy_as_the_agent(tmp_path, k):
    """The learner's weights message after offline (BC) and online (distillation) updates carries
    the agent's policy tensors (+ the critics when K > 1); the policy then acts as the updated agent."""
    mode = "pixels"
    agent, meta = _agent(mode, **_pa_rl(k))
    _save(agent, meta, tmp_path / "run")
    policy = ActingPolicy.from_checkpoint(tmp_path / "run")
    rng = np.random.default_rng(4)
    probe = _obs(mode, rng)
    before = policy.act(probe, INSTRUCTIONS[1])
    for online in (False, True, True):
        batch = _batch(agent, mode, rng)
        agent.update({**batch, "online": torch.arange(8) % 2 == 1} if online else batch)
    payload = weights_payload(agent, meta, 10)
    sd, _ = unpack_weights(payload)
    assert sorted(sd) == sorted(policy.state_dict())   # what the policy holds: not the Gaussian actor
    assert not any(n.startswith("actor.") for n in sd) and any(n.startswith("diffusion.") for n in sd)
    assert any(n.startswith("critic.") for n in sd) == (k > 1)
    assert not any(n.startswith(("critic_target.", "encoder_target.")) for n in sd)
    assert policy.load_weights(payload) == 10
    assert not np.array_equal(policy.act(probe, INSTRUCTIONS[1]), before)
    _same_pa_rl_actions(policy, agent, mode, seed=5)
    fresh = ActingPolicy.from_payload(payload, threads=None)
    assert fresh.step == 10
    _same_pa_rl_actions(fresh, agent, mode, seed=6)
    other, other_meta = _agent(mode, **_pa_rl(17 - k))  # K 1 <-> 16: another policy
    with pytest.raises(ValueError, match=r"another policy \(different \[.*'agent.pa_rl.act_samples'"):
        policy.load_weights(weights_payload(other, other_meta, 1))
