"""Online Cal-QL on any gymnasium env: `robot-calql finetune env=<id>` and `evaluate env=<id>`.

    robot-calql finetune env=InvertedPendulum-v5 steps=20000 out=runs/ip        # a fresh agent
    robot-calql finetune env=InvertedPendulum-v5 checkpoint=runs/pre dataset=data/ip out=runs/ft
    robot-calql evaluate checkpoint=runs/ip env=InvertedPendulum-v5 episodes=10

or from Python, with offline data held in memory:

    from robot_calql.train.gym_finetune import finetune
    summary = finetune("InvertedPendulum-v5", out="runs/ip", steps=20000, episodes=episodes)

The env goes through robot_calql.sim.gym_env (observation dicts, actions in [-1, 1]). The loop
is finetune's standard one: act with the stochastic policy, store the step in the online
buffer, `utd` updates per step on batches that are `mixing_ratio` offline data (when there is
any: `dataset=<folder>`, the checkpoint's dataset, or in-memory episodes) and the rest online.
Without a checkpoint the agent starts from scratch, sized by the env's spaces and `agent.*`.
Episodes end when the env terminates or truncates (its registered time limit unless
`max_episode_steps` is set) and the next one starts from `env.reset()`.

Evaluation is the mean return of the deterministic policy over `eval_episodes` episodes seeded
10000 + i (plus a success rate when the env reports `info["success"]` or `info["is_success"]`).
Checkpoints hold the agent, its optimisers and the counters; a run does not resume (gym envs
cannot restore their state): start a new run from its checkpoint (`checkpoint=<run>`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from robot_calql.config import ConfigError, compose, resolve_path
from robot_calql.train import checkpoint as ckpt
from robot_calql.train.common import (
    GracefulStop,
    NonFiniteTrainingError,
    agent_obs,
    build_agent,
    check_finite_state,
    check_losses,
    finish_early,
    online_calibration,
    set_seed,
    set_threads,
    temperature_setting,
)
from robot_calql.train.logger import Logger, UpdateMeans

log = logging.getLogger("robot_calql.train.gym_finetune")

EVAL_SEED = 10_000  # evaluation episode i is seeded EVAL_SEED + i, as in the stand-in


def is_gym_env(env: Any) -> bool:
    """Whether a config's `env` names a gymnasium env (anything but empty, None and `sim`)."""
    return env is not None and str(env) not in ("", "sim", "None", "null")


# ----------------------------------------------------------------------------- evaluation
def run_return_episode(agent: Any, env: Any, spec: dict[str, tuple[int, ...]], vocab: Any, seed: int,
                       temperature: Any = 0.0) -> dict[str, Any]:
    """One seeded episode of a GymAdapter env with the policy's mean action (temperature 0) or
    tanh(mean + T * std * eps): {"seed", "return", "length", "terminated", "success"}, "success"
    None unless the env reports info["success"] or info["is_success"]."""
    obs, _ = env.reset(seed=int(seed))
    ret, n, done, success = 0.0, 0, False, None
    stochastic = bool(np.any(np.asarray(temperature) > 0))
    terminated = False
    while not done:
        o = agent_obs(obs, spec, vocab)
        a = agent.act(o, deterministic=False, temperature=temperature) if stochastic else agent.act(o, deterministic=True)
        obs, r, terminated, truncated, info = env.step(a)
        ret += float(r)
        n += 1
        for key in ("success", "is_success"):
            if key in info:
                success = bool(success) or bool(info[key])
        done = terminated or truncated
    return {"seed": int(seed), "return": ret, "length": n, "terminated": bool(terminated), "success": success}


def evaluate_returns(agent: Any, env: Any, episodes: int, spec: dict[str, tuple[int, ...]], vocab: Any,
                     seed: int = EVAL_SEED, temperature: Any = 0.0, details: list | None = None) -> dict[str, float]:
    """`episodes` seeded episodes (seed + i): {"mean_return", "std_return", "mean_length"} and
    "success_rate" when the env reports success; each episode's record appended to `details`."""
    eps = [run_return_episode(agent, env, spec, vocab, seed + i, temperature) for i in range(int(episodes))]
    if details is not None:
        details.extend(eps)
    returns = np.asarray([e["return"] for e in eps], dtype=np.float64)
    res = {"mean_return": float(returns.mean()) if len(eps) else 0.0,
           "std_return": float(returns.std()) if len(eps) else 0.0,
           "mean_length": float(np.mean([e["length"] for e in eps])) if eps else 0.0}
    if eps and all(e["success"] is not None for e in eps):
        res["success_rate"] = float(np.mean([e["success"] for e in eps]))
    return res


# ----------------------------------------------------------------------------- fine-tuning
def _instruction(cfg: DictConfig, ckpt_vocab: Sequence[str] | None, offline: Any) -> str | None:
    """The instruction of every online step: the config's, else the checkpoint's or the offline
    data's only one, else None (the adapter then uses the env id)."""
    if cfg.get("instruction"):
        return str(cfg.instruction)
    if ckpt_vocab is not None and len(ckpt_vocab) == 1:
        return str(ckpt_vocab[0])
    if ckpt_vocab is not None:
        raise ConfigError(f"the checkpoint knows several instructions {list(ckpt_vocab)}: choose one with instruction=")
    names = sorted({i["instruction"] for i in offline.infos}) if offline is not None else []
    return names[0] if len(names) == 1 else None


def finetune_gym(cfg: DictConfig, episodes: Any = None) -> int:
    """`robot-calql finetune env=<gymnasium id>` (see the module docstring). `episodes`: offline
    data held in memory, an EpisodeList or a list of raw episodes (episodes_from_list)."""
    from tqdm import tqdm

    from robot_calql.agent.cpu import configure_cpu_process
    from robot_calql.data.dataset import Dataset
    from robot_calql.data.replay import (
        InstructionVocab,
        MixedReplay,
        OfflineReplay,
        OnlineReplay,
        replay_kwargs,
    )
    from robot_calql.sim.gym_env import EpisodeList, episodes_from_list, make_gym_env
    from robot_calql.train.plots import plot_calibration

    env_id = str(cfg.env)
    if cfg.resume:
        raise ConfigError(f"env={env_id}: resume=true continues stand-in runs only (a gym env's state cannot be "
                          "restored); fine-tune further with checkpoint=<the run> out=<a new folder>")
    if str(cfg.reward_source) != "sim":
        raise ConfigError(f"env={env_id}: reward_source={cfg.reward_source} is for the stand-in; a gym env gives its own reward")
    set_threads(int(cfg.threads))
    configure_cpu_process()  # process-wide: subnormal flush, glibc heap (agent/cpu.py)
    steps = int(cfg.steps)
    if steps < 0:
        raise ConfigError(f"steps must be >= 0, got {steps}")
    temperature_setting(cfg, "explore_temperature", None)

    src = resolve_path(cfg.checkpoint)
    src_ckpt = ckpt.find_checkpoint(src) if src is not None else None
    out = resolve_path(cfg.out) or (src_ckpt.parent.parent / "finetune" if src_ckpt is not None else None)
    if out is None:
        raise ConfigError(f"env={env_id} without a checkpoint needs out=<run folder>")
    if (out / ckpt.CKPT_DIR).is_dir() and not cfg.overwrite:
        raise ConfigError(f"{out} already holds checkpoints: pass overwrite=true to start over")
    if src_ckpt is not None and src_ckpt.is_relative_to(out):
        raise ConfigError(f"out={out} holds the checkpoint {src_ckpt}; write the fine-tuning run elsewhere")
    state = ckpt.load_checkpoint(src_ckpt) if src_ckpt is not None else None
    meta = state["meta"] if state is not None else {}

    offline_data: Any = None
    data_dir = resolve_path(cfg.dataset) or resolve_path(meta.get("dataset"))
    if episodes is not None and data_dir is not None and cfg.dataset:
        raise ConfigError("give the offline data once: dataset=<folder> or in-memory episodes, not both")
    if episodes is not None:
        offline_data = episodes if isinstance(episodes, EpisodeList) else None
    elif data_dir is not None:
        offline_data = Dataset(data_dir)
        offline_data.verify()
    instruction = _instruction(cfg, meta.get("instructions"), offline_data)
    T = cfg.get("max_episode_steps")
    env_kw = {"max_episode_steps": None if T is None else int(T), "instruction": instruction,
              "image_key": cfg.get("image_key")}
    env = make_gym_env(env_id, **env_kw)
    eval_env = make_gym_env(env_id, **env_kw)
    if episodes is not None and offline_data is None:  # raw lists: converted with this env's adapter
        offline_data = episodes_from_list(episodes, env)
    spec, A = dict(env.obs_spec), env.action_dim

    if state is not None:
        saved = {k: tuple(v) for k, v in meta["obs_spec"].items()}
        if saved != spec or int(meta["action_dim"]) != A:
            raise ConfigError(f"the checkpoint {src_ckpt} takes observations {saved} and {meta['action_dim']} action "
                              f"dims; env={env_id} gives {spec} and {A}")
        vocab = InstructionVocab(meta["instructions"])
    else:
        names = {env.instruction} | ({i["instruction"] for i in offline_data.infos} if offline_data is not None else set())
        vocab = InstructionVocab(sorted(names))
    vocab.id(env.instruction)  # the policy must know the instruction it acts on (ReplayError names them)

    set_seed(int(cfg.seed))
    agent = build_agent(spec, A, len(vocab), cfg, base=meta.get("agent") if state is not None else None)
    if state is not None:
        agent.load_state_dict(state["agent_state"])
        if state["trainer"].get("optimizer"):
            agent.load_optimizer_state_dict(state["trainer"]["optimizer"])
    acfg = agent.cfg
    rk = replay_kwargs(acfg)
    mixing = float(cfg.mixing_ratio) if offline_data is not None else 0.0
    offline = None
    if offline_data is not None and mixing > 0:
        offline = OfflineReplay(offline_data, spec, vocab=vocab, device=str(cfg.device), seed=int(cfg.seed) + 1,
                                progress=bool(cfg.progress), **rk)
        if state is None:  # a fresh agent standardises its inputs with the offline data's statistics
            agent.set_obs_normalization(offline.obs_statistics())
    capacity = int(cfg.online_capacity) if cfg.online_capacity else steps + 1
    online = OnlineReplay(spec, A, capacity, vocab=vocab, bound_online=acfg.calql_bound_online,
                          device=str(cfg.device), seed=int(cfg.seed) + 2, **rk)
    replay = MixedReplay(offline, online, mixing, online_warmup=int(cfg.online_warmup)) if offline is not None else None

    ckpt.clear_run(out)
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "config.yaml")
    run_meta = {"phase": "finetune", "env": env_id, "obs": "state" if "state" in spec else "pixels",
                "obs_spec": {k: list(v) for k, v in spec.items()}, "action_dim": A, "instructions": vocab.to_list(),
                "dataset": str(data_dir) if data_dir is not None and offline_data is not None and episodes is None else None,
                "pretrained": str(src_ckpt) if src_ckpt is not None else None,
                "agent": _plain_config(acfg), "image_key": cfg.get("image_key"),
                "image_size": int(spec["image"][0]) if "image" in spec else 0,
                "max_episode_steps": None if T is None else int(T), "instruction": env.instruction}
    loop = {"step": 0, "episodes": 0, "ep_return": 0.0, "ep_len": 0, "returns": [], "evals": []}
    last_good: Path | None = None

    def save() -> Path:
        nonlocal last_good
        weights = agent.state_dict()
        check_finite_state(weights, f"online step {loop['step']}", last_good)
        trainer = {"optimizer": agent.optimizer_state_dict(), "rng": ckpt.rng_state(), "loop": loop}
        last_good = ckpt.save_checkpoint(out, loop["step"], weights, trainer, run_meta, keep=int(cfg.keep_checkpoints))
        return last_good

    eval_episodes = int(cfg.eval_episodes)
    last_eval: dict[str, float] = {}

    def run_eval() -> float:
        res = evaluate_returns(agent, eval_env, eval_episodes, spec, vocab)
        last_eval.clear()
        last_eval.update(res)
        loop["evals"].append([loop["step"], res["mean_return"]])
        logger.log(loop["step"], "eval", res)
        return res["mean_return"]

    logger = Logger(out, tensorboard=bool(cfg.tensorboard))
    log_every, save_every, eval_every = max(1, int(cfg.log_every)), int(cfg.save_every), int(cfg.eval_every)
    utd, bs, starts = int(cfg.utd), int(cfg.batch_size), int(cfg.learning_starts)
    explore_t = temperature_setting(cfg, "explore_temperature", A)
    means = UpdateMeans()
    obs, _ = env.reset(seed=int(cfg.seed))
    bar = tqdm(total=steps, desc=f"finetune {env_id}", unit="step", disable=not cfg.progress, dynamic_ncols=True)
    stop = GracefulStop()
    t0 = time.perf_counter()
    try:
        with stop:
            if eval_every > 0 and eval_episodes > 0:
                run_eval()
            while loop["step"] < steps:
                action = agent.act(agent_obs(obs, spec, vocab), deterministic=False, temperature=explore_t)
                next_obs, reward, terminated, truncated, _ = env.step(action)
                online.add(obs, action, reward, next_obs, terminated, truncated, env.instruction)
                loop["step"] += 1
                loop["ep_return"] += reward
                loop["ep_len"] += 1
                obs = next_obs
                if terminated or truncated:
                    loop["episodes"] += 1
                    loop["returns"].append(loop["ep_return"])
                    loop["ep_return"], loop["ep_len"] = 0.0, 0
                    obs, _ = env.reset()
                if loop["step"] > starts and (replay is not None or len(online)):
                    for _ in range(utd):
                        metrics = agent.update(replay.sample(bs) if replay is not None else online.sample(bs))
                        check_losses(metrics, f"online step {loop['step']} (update {agent.num_updates})", last_good)
                        means.add(metrics)
                bar.update(1)
                step = loop["step"]
                if step % log_every == 0 or step == steps:
                    logger.log(step, "finetune", means.pop())
                    recent = loop["returns"][-10:]
                    logger.log(step, "online", {"episodes": loop["episodes"], "buffer_steps": len(online),
                                                "return_last_10": float(np.mean(recent)) if recent else 0.0})
                if eval_every > 0 and eval_episodes > 0 and step % eval_every == 0:
                    bar.set_postfix(eval_return=f"{run_eval():.1f}")
                if save_every > 0 and step % save_every == 0 and step < steps:
                    save()
                if stop.requested:
                    raise KeyboardInterrupt
    except (KeyboardInterrupt, NonFiniteTrainingError) as e:
        return finish_early(e, bar, logger, save, f"online step {loop['step']}",
                            f"(continue with checkpoint={out} out=<a new folder>)")
    finally:
        env.close()
    bar.close()
    seconds = time.perf_counter() - t0
    if eval_every > 0 and eval_episodes > 0 and (not loop["evals"] or loop["evals"][-1][0] != loop["step"]):
        run_eval()
    eval_env.close()
    path = save()
    logger.close()
    q_on, mc_on = online_calibration(agent, online)
    calib = None
    if len(q_on):
        calib = plot_calibration(np.zeros(0), np.zeros(0), out / "plots" / "calibration.png",
                                 title=f"{env_id}, after {loop['step']} online steps", label="held-out offline episodes",
                                 extra={"recent online episodes": (q_on, mc_on)})
    evals = loop["evals"]
    summary = {
        "env": env_id,
        "steps": loop["step"],
        "checkpoint": str(path),
        "steps_per_s": loop["step"] / seconds if seconds > 0 else None,
        "return_before": evals[0][1] if evals else None,
        "return_after": evals[-1][1] if evals else None,
        "evals": evals,
        "last_eval": dict(last_eval),
        "online_episodes": loop["episodes"],
        "online_return_last_10": float(np.mean(loop["returns"][-10:])) if loop["returns"] else None,
        "offline_steps": int(offline_data.num_steps) if offline is not None else 0,
        "calibration_plot": str(calib) if calib else None,
        "online_calibration": {"states": len(q_on), "mean_q": float(q_on.mean()) if len(q_on) else None,
                               "mean_mc_return": float(mc_on.mean()) if len(q_on) else None},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if evals:
        print(f"{env_id}: mean return {evals[0][1]:.1f} before -> {evals[-1][1]:.1f} after {loop['step']} online steps "
              f"({eval_episodes} episodes, mean action)")
    print(f"checkpoint: {path}")
    return 0


def _plain_config(acfg: Any) -> dict[str, Any]:
    """The agent's CalQLConfig as a JSON-ready dict (the checkpoint rebuilds the same agent from it)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(acfg).items()}


def finetune(env: str, out: str | Path, steps: int, episodes: Any = None,
             overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Python entry point: `robot-calql finetune env=<env> out=<out> steps=<steps>` with the
    offline data `episodes` (an EpisodeList or raw episodes for episodes_from_list; None: none,
    or the checkpoint's dataset) and config `overrides` as {dotted key: value}, e.g.
    {"agent.actor_hidden": [64, 64], "batch_size": 64}. Returns the run's summary.json."""
    cfg = compose("finetune", [f"env={env}", f"out={out}", f"steps={int(steps)}"])
    for key, value in (overrides or {}).items():
        OmegaConf.update(cfg, key, value, force_add=True)
    rc = finetune_gym(cfg, episodes=episodes)
    if rc != 0:
        raise KeyboardInterrupt(f"fine-tuning stopped at a Ctrl-C (exit {rc}); its checkpoint is in {out}")
    return json.loads((Path(str(resolve_path(out))) / "summary.json").read_text())


# ----------------------------------------------------------------------------- evaluate command
def evaluate_gym(cfg: Any, state: dict[str, Any], env_id: str) -> int:
    """`robot-calql evaluate checkpoint=<run> env=<gymnasium id>`: mean return of the saved policy
    over `episodes` seeded episodes (seed + i), with `out=<dir>` also evaluation.json."""
    from robot_calql.data.replay import InstructionVocab
    from robot_calql.sim.gym_env import make_gym_env

    meta = state["meta"]
    episodes = int(cfg.episodes)
    T = cfg.max_episode_steps if cfg.max_episode_steps is not None else meta.get("max_episode_steps")
    vocab = InstructionVocab(meta["instructions"])
    instruction = meta.get("instruction") or (vocab.names[0] if len(vocab) == 1 else None)
    env = make_gym_env(env_id, max_episode_steps=None if T is None else int(T), instruction=instruction,
                       image_key=meta.get("image_key"))
    try:
        spec = {k: tuple(v) for k, v in meta["obs_spec"].items()}
        if spec != env.obs_spec or int(meta["action_dim"]) != env.action_dim:
            raise ConfigError(f"the checkpoint {state['dir']} takes observations {spec} and {meta['action_dim']} action "
                              f"dims; env={env_id} gives {env.obs_spec} and {env.action_dim}")
        vocab.id(env.instruction)
        agent = build_agent(spec, env.action_dim, len(vocab), OmegaConf.create({"agent": {}, "device": cfg.device}),
                            base=meta.get("agent"))
        agent.load_state_dict(state["agent_state"])
        temps = temperature_setting(cfg, "temperature", env.action_dim)
        eps: list[dict[str, Any]] = []
        res = evaluate_returns(agent, env, episodes, spec, vocab, seed=int(cfg.seed), temperature=temps, details=eps)
    finally:
        env.close()
    limit = env.spec.max_episode_steps if env.spec is not None else None
    print(f"{env_id}: mean return {res['mean_return']:.1f} (std {res['std_return']:.1f}) over {episodes} episodes, "
          f"mean length {res['mean_length']:.0f}{f' of a {limit}-step limit' if limit else ''}; "
          f"{'mean action' if not temps.any() else f'temperature {temps.tolist()}'}, seeds {cfg.seed}.."
          f"{int(cfg.seed) + episodes - 1}, checkpoint {state['dir']} (step {meta.get('step', '?')})")
    if "success_rate" in res:
        print(f"  success rate (the env's info): {res['success_rate']:.0%}")
    out = resolve_path(cfg.out)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        report = {"env": env_id, "checkpoint": str(state["dir"]), "step": meta.get("step"), "episodes": episodes,
                  "max_episode_steps": limit, "temperature": temps.tolist(), **res, "per_episode": eps}
        (out / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"  per-episode results: {out / 'evaluation.json'}")
    return 0
