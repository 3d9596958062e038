"""Any gymnasium env: the adapter (observation dicts, actions rescaled to [-1, 1], unbounded
action spaces refused), offline episodes from a list, and `robot-calql finetune env=<id>` /
`evaluate` on a gymnasium MuJoCo env (InvertedPendulum-v5)."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

from robot_calql.cli import main
from robot_calql.data.dataset import Dataset
from robot_calql.data.replay import InstructionVocab
from robot_calql.sim.gym_env import GymEnvError, episodes_from_list, make_gym_env, wrap_env
from robot_calql.train.gym_finetune import evaluate_returns, finetune

QUIET = ["progress=false", "tensorboard=false", "threads=1"]
TINY = ["batch_size=32", "+agent.actor_hidden=[32,32]", "+agent.critic_hidden=[32,32]", *QUIET]


class _CameraEnv(gym.Env):
    """A Dict observation (a 32 px camera, two vectors, a text) and asymmetric action bounds; it
    keeps the last action it received."""

    metadata = {"render_modes": [], "render_fps": 20}

    def __init__(self, images: int = 1, high: float = 3.0):
        spaces = {f"camera{i}" if i else "camera": gym.spaces.Box(0, 255, (32, 32, 3), np.uint8) for i in range(images)}
        spaces.update(joints=gym.spaces.Box(-1, 1, (3,), np.float32), speed=gym.spaces.Box(-5, 5, (2,), np.float64),
                      note=gym.spaces.Text(20))
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(np.array([0.0, -1.0], np.float32), np.array([10.0, high], np.float32))
        self.last_action: np.ndarray | None = None
        self.t = 0

    def _obs(self) -> dict:
        o = {k: np.full((32, 32, 3), 10 * self.t, np.uint8) for k in self.observation_space.spaces if k.startswith("camera")}
        o.update(joints=np.array([self.t, 1, 2], np.float32) / 10, speed=np.array([3.0, 4.0]), note="hello")
        return o

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.last_action = np.asarray(action)
        self.t += 1
        return self._obs(), float(action[0]) / 10, False, self.t >= 5, {}


if "RobotCalQLTest/Camera-v0" not in gym.registry:
    gym.register("RobotCalQLTest/Camera-v0", entry_point=_CameraEnv)
    gym.register("RobotCalQLTest/Unbounded-v0", entry_point=_CameraEnv, kwargs={"high": np.inf})


# ----------------------------------------------------------------------------- the adapter
def test_box_observation_becomes_state_and_actions_rescale_to_the_env_bounds():
    env = make_gym_env("InvertedPendulum-v5")
    assert env.obs_spec == {"state": (4,)} and env.action_space.low.tolist() == [-1.0]
    obs, _ = env.reset(seed=0)
    assert obs["state"].dtype == np.float32 and obs["state"].shape == (4,)
    assert obs["instruction"] == "InvertedPendulum-v5"
    assert env.to_env_action([1.0]).tolist() == [3.0] and env.to_env_action([-0.5]).tolist() == [-1.5]
    assert env.to_env_action([7.0]).tolist() == [3.0]  # clipped to [-1, 1] first
    assert env.from_env_action([1.5]).tolist() == [0.5]
    env.close()


def test_dict_observation_with_an_image_becomes_image_and_proprio():
    env = make_gym_env("RobotCalQLTest/Camera-v0", instruction="balance")
    assert env.obs_spec == {"image": (32, 32, 3), "proprio": (5,)}
    env.reset(seed=0)
    obs, reward, *_ = env.step(np.array([0.0, 1.0]))
    assert obs["image"].dtype == np.uint8 and int(obs["image"][0, 0, 0]) == 10
    np.testing.assert_allclose(obs["proprio"], [0.1, 0.1, 0.2, 3.0, 4.0])  # joints then speed; the text dropped
    assert obs["instruction"] == "balance"
    # [-1, 1] -> [low, high] on each axis, and back
    base = env.unwrapped
    np.testing.assert_allclose(base.last_action, [5.0, 3.0])
    assert reward == pytest.approx(0.5)
    for a in ([-1.0, -1.0], [1.0, 1.0], [0.2, -0.6]):
        np.testing.assert_allclose(env.from_env_action(env.to_env_action(a)), a, atol=1e-6)
    np.testing.assert_allclose(env.to_env_action([-1.0, -1.0]), [0.0, -1.0])
    env.close()


def test_several_images_need_image_key():
    with pytest.raises(GymEnvError, match=r"several images \['camera', 'camera1'\].*image_key"):
        wrap_env(_CameraEnv(images=2))
    env = wrap_env(_CameraEnv(images=2), image_key="camera1")
    assert env.obs_spec == {"image": (32, 32, 3), "proprio": (5,)}


def test_unbounded_or_discrete_action_spaces_are_refused():
    with pytest.raises(GymEnvError, match=r"RobotCalQLTest/Unbounded-v0: action space bound high\[1\] = inf is not finite"):
        make_gym_env("RobotCalQLTest/Unbounded-v0")
    with pytest.raises(GymEnvError, match="CartPole-v1: action space Discrete.*continuous"):
        make_gym_env("CartPole-v1")
    with pytest.raises(GymEnvError, match="NoSuchEnv-v7"):
        make_gym_env("NoSuchEnv-v7")


# ----------------------------------------------------------------------------- offline data from a list
def _random_episodes(env_id: str, n: int, seed: int = 0) -> list[dict]:
    """Episodes of a uniformly random policy in the raw env's own action units."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    out = []
    for i in range(n):
        obs, _ = env.reset(seed=seed + i)
        o, a, r, d = [obs], [], [], []
        done = False
        while not done:
            act = env.action_space.sample()
            obs, rew, term, trunc, _ = env.step(act)
            o.append(obs)
            a.append(act)
            r.append(rew)
            d.append(term)
            done = term or trunc
        out.append({"observations": np.array(o), "actions": np.array(a), "rewards": np.array(r), "terminals": np.array(d)})
    env.close()
    return out


def test_episodes_from_a_list_rescale_actions_and_save_as_a_dataset(tmp_path):
    raw = _random_episodes("InvertedPendulum-v5", 3)
    env = make_gym_env("InvertedPendulum-v5")
    eps = episodes_from_list(raw, env)
    assert len(eps) == 3 and eps.num_steps == sum(len(e["rewards"]) for e in raw)
    first = eps[0]
    np.testing.assert_allclose(first.action, raw[0]["actions"] / 3.0, atol=1e-6)  # [-3, 3] -> [-1, 1]
    np.testing.assert_allclose(first.state, raw[0]["observations"].astype(np.float32))
    assert first.terminal[-1] and first.instruction == "InvertedPendulum-v5"  # the pole fell
    folder = eps.write(tmp_path / "ip")
    back = Dataset(folder)
    back.verify()
    assert len(back) == 3 and back.meta.state_dim == 4
    np.testing.assert_array_equal(back[0].action, first.action)

    bad = [dict(raw[0], actions=raw[0]["actions"] * 2)]  # some recorded actions beyond the env's bounds
    with pytest.raises(GymEnvError, match=r"episode 0: .*outside the action space \[-3, 3\]"):
        episodes_from_list(bad, env)
    short = [dict(raw[1], observations=raw[1]["observations"][:-1])]
    with pytest.raises(GymEnvError, match=r"episode 0: 'observations' has \d+ entries, expected"):
        episodes_from_list(short, env)
    env.close()


def test_episodes_from_a_list_of_dict_observations():
    env = make_gym_env("RobotCalQLTest/Camera-v0")
    obs, _ = env.unwrapped.reset(seed=0)
    frames = [obs] + [env.unwrapped.step(np.array([5.0, 1.0]))[0] for _ in range(3)]
    eps = episodes_from_list([{"observations": frames, "actions": np.tile([5.0, 1.0], (3, 1)),
                               "rewards": np.full(3, 0.5)}], env)
    ep = eps[0]
    assert ep.image.shape == (4, 32, 32, 3) and ep.proprio.shape == (4, 5) and ep.state is None
    np.testing.assert_allclose(ep.action, [[0.0, 0.0]] * 3)
    assert not ep.terminal.any()  # no terminals given: cut by a time limit


# ----------------------------------------------------------------------------- the commands
def test_finetune_and_evaluate_through_the_cli_on_a_mujoco_env(tmp_path, capsys):
    out = tmp_path / "ip"
    assert main(["finetune", "env=InvertedPendulum-v5", "steps=300", f"out={out}", "eval_every=150",
                 "eval_episodes=3", "log_every=100", *TINY]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 300 and summary["env"] == "InvertedPendulum-v5"
    assert [s for s, _ in summary["evals"]] == [0, 150, 300] and summary["online_episodes"] > 0
    assert (out / "checkpoints" / "step_000000300" / "model.safetensors").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r["tag"] == "finetune" and "loss_critic" in r for r in rows)  # it learned, not only acted
    capsys.readouterr()

    assert main(["evaluate", f"checkpoint={out}", "episodes=4", f"out={tmp_path / 'eval'}", "progress=false"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert f"InvertedPendulum-v5: mean return {report['mean_return']:.1f}" in printed
    assert len(report["per_episode"]) == 4 and report["max_episode_steps"] == 1000

    # the same checkpoint on an env with other spaces is refused, naming both
    assert main(["evaluate", f"checkpoint={out}", "env=Pendulum-v1", "progress=false"]) == 1
    assert "takes observations {'state': (4,)}" in capsys.readouterr().err
    # a gym run does not resume (the env's state cannot be restored)
    assert main(["finetune", "env=InvertedPendulum-v5", f"out={out}", "resume=true", *TINY]) == 1
    assert "resume=true continues stand-in runs only" in capsys.readouterr().err


def test_finetune_mixes_offline_data_from_a_dataset_folder(tmp_path):
    data = episodes_from_list(_random_episodes("InvertedPendulum-v5", 4), make_gym_env("InvertedPendulum-v5"))
    data.write(tmp_path / "data")
    out = tmp_path / "run"
    assert main(["finetune", "env=InvertedPendulum-v5", "steps=40", f"out={out}", f"dataset={tmp_path / 'data'}",
                 "eval_every=0", *TINY]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["offline_steps"] == data.num_steps
    # fine-tuning on from that run's checkpoint takes its dataset along
    assert main(["finetune", "env=InvertedPendulum-v5", f"checkpoint={out}", "steps=10", f"out={tmp_path / 'more'}",
                 "eval_every=0", *TINY]) == 0
    assert json.loads((tmp_path / "more" / "summary.json").read_text())["offline_steps"] == data.num_steps


def test_finetune_from_python_with_episodes_in_memory_and_pixels(tmp_path):
    env = make_gym_env("RobotCalQLTest/Camera-v0")
    obs, _ = env.unwrapped.reset(seed=0)
    frames = [obs] + [env.unwrapped.step(np.array([5.0, 1.0]))[0] for _ in range(5)]
    episodes = [{"observations": frames, "actions": np.tile([5.0, 1.0], (5, 1)), "rewards": np.full(5, 0.5)}] * 2
    summary = finetune("RobotCalQLTest/Camera-v0", out=tmp_path / "cam", steps=12, episodes=episodes,
                       overrides={"batch_size": 8, "agent.actor_hidden": [16], "agent.critic_hidden": [16],
                                  "eval_every": 12, "eval_episodes": 1, "progress": False, "tensorboard": False})
    assert summary["steps"] == 12 and summary["offline_steps"] == 10
    assert summary["last_eval"]["mean_length"] == 5


@pytest.mark.slow
def test_cal_ql_learns_inverted_pendulum_from_scratch(tmp_path):
    """2500 online steps from scratch (about 20 s): the mean return of 5 seeded episodes rises far
    above a uniformly random policy's on the same seeds (about 6; measured after 2500 steps with
    seeds 0, 1, 2: 60, 32, 40)."""
    env = make_gym_env("InvertedPendulum-v5")

    class Random:
        rng = np.random.default_rng(0)

        def act(self, obs, deterministic=True):
            return self.rng.uniform(-1, 1, size=1)

    random_return = evaluate_returns(Random(), env, 5, env.obs_spec, InstructionVocab([env.instruction]))["mean_return"]
    env.close()
    summary = finetune("InvertedPendulum-v5", out=tmp_path / "ip", steps=2500,
                       overrides={"seed": 0, "batch_size": 32, "agent.actor_hidden": [32, 32],
                                  "agent.critic_hidden": [32, 32], "eval_every": 2500, "eval_episodes": 5,
                                  "progress": False, "tensorboard": False})
    assert random_return < 12
    assert summary["return_after"] > max(25.0, 3 * random_return), (random_return, summary["evals"])
