"""`robot-calql pretrain dataset=<dir> out=<run> steps=<N>`: offline Cal-QL on a dataset.

What it does, in order:
1. opens the dataset and reads every value (`Dataset.verify`: missing arrays, NaN or infinite
   rewards/actions are a DatasetError naming the file), keeps `holdout_fraction` of the episodes
   out of training for the calibration plot; every action must lie in the action bounds [-1, 1];
2. builds the agent (`obs=state` or `obs=pixels`) and the offline replay (MC returns per episode);
   with `agent.encoder_frozen` (pixels), pre-trains the image encoder on the data
   (robot_calql.agent.encoder_pretrain, logged under `encoder/`), freezes it and replaces the
   replay's images by their latents, encoded once (a resumed run takes the encoder from its
   checkpoint);
3. runs `steps` updates with a progress bar, logs every loss term to TensorBoard and
   `<out>/metrics.jsonl`, checkpoints every `save_every` updates, at the end, and on Ctrl-C
   (then exits 130); `resume=true` continues from the latest checkpoint exactly; the first update
   with a NaN or infinite loss stops the run with a NonFiniteTrainingError naming the update, the
   losses and the last good checkpoint, which stays the newest on disk (exit 1);
4. writes `<out>/plots/calibration.png` (learned Q against MC return on held-out episodes) and
   `<out>/summary.json`.

See docs/training.md for every config key and output file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from robot_calql.config import ConfigError, resolve_path
from robot_calql.train import checkpoint as ckpt
from robot_calql.train.common import (
    DatasetSubset,
    GracefulStop,
    NonFiniteTrainingError,
    build_agent,
    check_finite_state,
    check_losses,
    check_obs_mode,
    finish_early,
    obs_spec_from_meta,
    set_seed,
    set_threads,
)
from robot_calql.train.evaluation import calibration_points
from robot_calql.train.logger import Logger, UpdateMeans

log = logging.getLogger("robot_calql.train.pretrain")


def split_episodes(n: int, holdout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) episode indices; at least one training episode, held-out may be empty."""
    if not 0.0 <= holdout_fraction < 1.0:
        raise ConfigError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    idx = np.random.default_rng(seed).permutation(n)
    k = int(round(n * holdout_fraction)) if n > 1 else 0
    k = min(k, n - 1)
    return sorted(idx[k:].tolist()), sorted(idx[:k].tolist())


def main(cfg: DictConfig) -> int:
    from tqdm import tqdm

    from robot_calql.agent.cpu import configure_cpu_process
    from robot_calql.data.dataset import Dataset
    from robot_calql.data.replay import InstructionVocab, OfflineReplay, replay_kwargs
    from robot_calql.train.plots import plot_calibration

    set_threads(int(cfg.threads))
    configure_cpu_process()  # process-wide: subnormal flush, glibc heap (agent/cpu.py)
    mode = check_obs_mode(str(cfg.obs))
    steps = int(cfg.steps)
    if steps < 0:
        raise ConfigError(f"steps must be >= 0, got {steps}")
    data_dir = resolve_path(cfg.dataset)
    out = resolve_path(cfg.out)
    if data_dir is None or out is None:
        raise ConfigError("pretrain needs dataset=<dir> and out=<run folder>")

    dataset = Dataset(data_dir)
    if len(dataset) == 0:
        raise ConfigError(f"dataset {data_dir} has no episodes")
    log.info("checking every value of %s (%d episodes, %d steps)", data_dir, len(dataset), dataset.num_steps)
    dataset.verify()
    spec = obs_spec_from_meta(dataset.meta, mode)
    vocab = InstructionVocab.from_dataset(dataset)
    train_idx, holdout_idx = split_episodes(len(dataset), float(cfg.holdout_fraction), int(cfg.seed))

    resuming = bool(cfg.resume) and (out / ckpt.CKPT_DIR).is_dir()
    if not resuming and (out / ckpt.CKPT_DIR).is_dir() and not cfg.overwrite:
        raise ConfigError(f"{out} already holds checkpoints: pass resume=true to continue or overwrite=true")
    if not resuming:
        ckpt.clear_run(out)
    out.mkdir(parents=True, exist_ok=True)

    set_seed(int(cfg.seed))
    agent = build_agent(spec, int(dataset.meta.action_dim), len(vocab), cfg)
    acfg = agent.cfg
    replay = OfflineReplay(DatasetSubset(dataset, train_idx), spec, vocab=vocab, device=str(cfg.device),
                           seed=int(cfg.seed), progress=bool(cfg.progress), **replay_kwargs(acfg))
    # standardise state/proprio inputs with the training data's statistics (kept in the checkpoint)
    agent.set_obs_normalization(replay.obs_statistics())

    start = 0
    last_good: Path | None = None  # the newest checkpoint of this run on disk
    if resuming:
        state = ckpt.load_checkpoint(out)
        last_good = Path(state["dir"])
        _check_same_run(state["meta"], mode, vocab, str(data_dir))
        agent.load_state_dict(state["agent_state"])
        agent.load_optimizer_state_dict(state["trainer"]["optimizer"])
        ckpt.set_rng_state(state["trainer"]["rng"], replay.rng)
        start = int(state["meta"]["step"])
        log.info("resuming %s at update %d", out, start)
    OmegaConf.save(cfg, out / "config.yaml")
    meta = {
        "phase": "pretrain",
        "obs": mode,
        "obs_spec": {k: list(v) for k, v in spec.items()},
        "action_dim": int(dataset.meta.action_dim),
        "instructions": vocab.to_list(),
        "dataset": str(data_dir),
        "holdout_episodes": holdout_idx,
        "tasks": sorted({info.get("task", "") for info in dataset.infos} - {""}),
        "agent": OmegaConf.to_container(cfg.agent, resolve=True),
        "image_size": int(dataset.meta.image_shape[0]) if dataset.meta.image_shape else 0,
        "robot": str(dataset.meta.robot),  # its simulated arm evaluates the policy (sim.kinematics.sim_arm)
    }

    def save(step: int) -> Path:
        nonlocal last_good
        weights = agent.state_dict()
        check_finite_state(weights, f"update {step}", last_good)
        trainer = {"optimizer": agent.optimizer_state_dict(), "rng": ckpt.rng_state(replay.rng)}
        last_good = ckpt.save_checkpoint(out, step, weights, trainer, meta, keep=int(cfg.keep_checkpoints))
        return last_good

    logger = Logger(out, tensorboard=bool(cfg.tensorboard), resume_step=start if resuming else None)
    log_every, save_every, eval_every = max(1, int(cfg.log_every)), int(cfg.save_every), int(cfg.eval_every)
    encoder_summary = None
    if agent.frozen:  # pixels with a frozen encoder: pre-train it (a fresh run), then cache the latents
        if not resuming:
            encoder_summary = _pretrain_encoder(agent, replay, cfg, logger, log_every)
            meta["encoder_pretrain"] = encoder_summary
        replay.cache_latents(agent.frame_encoder())
    means = UpdateMeans()
    step = start
    bar = tqdm(total=steps, initial=start, desc="pretrain", unit="upd", disable=not cfg.progress, dynamic_ncols=True)
    stop = GracefulStop()
    try:
        with stop:
            while step < steps:
                metrics = agent.update(replay.sample(int(cfg.batch_size)))
                step += 1
                check_losses(metrics, f"update {step}", last_good)
                bar.update(1)
                means.add(metrics)
                if step % log_every == 0 or step == steps:
                    avg = means.pop()
                    logger.log(step, "pretrain", avg)
                    bar.set_postfix(q=f"{avg.get('q_data', 0):.2f}", cql=f"{avg.get('loss_cql', 0):.2f}")
                if save_every > 0 and step % save_every == 0 and step < steps:
                    save(step)
                if eval_every > 0 and step % eval_every == 0 and step < steps:
                    res = _eval_in_sim(agent, cfg, meta, spec, vocab)
                    logger.log(step, "eval", res)
                    bar.set_postfix(success=f"{res['success_rate']:.2f}")
                if stop.requested:
                    raise KeyboardInterrupt
    except (KeyboardInterrupt, NonFiniteTrainingError) as e:
        return finish_early(e, bar, logger, lambda: save(step), f"update {step}", "(resume with resume=true)")
    bar.close()
    path = save(step)

    holdout = [dataset[i] for i in holdout_idx] or [dataset[i] for i in train_idx[:5]]
    q, mc = calibration_points(agent, holdout, spec, vocab, acfg)
    calib_png = plot_calibration(q, mc, out / "plots" / "calibration.png",
                                 title=f"{'Cal-QL' if acfg.enable_calql else 'CQL'} after {step} updates")
    summary = {
        "steps": step,
        "checkpoint": str(path),
        "calibration_plot": str(calib_png),
        "holdout_q_mean": float(np.mean(q)) if len(q) else None,
        "holdout_mc_mean": float(np.mean(mc)) if len(mc) else None,
        "holdout_q_below_mc": float(np.mean(q < mc)) if len(q) else None,
    }
    if encoder_summary is not None:
        summary["encoder_pretrain"] = encoder_summary
    if eval_every > 0 or cfg.eval_task:
        summary["eval"] = _eval_in_sim(agent, cfg, meta, spec, vocab)
        logger.log(step, "eval", summary["eval"])
    logger.close()
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"pre-trained {step} updates -> {path}\ncalibration plot: {calib_png}")
    return 0


def _pretrain_encoder(agent: Any, replay: Any, cfg: DictConfig, logger: Logger, log_every: int) -> dict[str, float]:
    """The frozen agent's encoder pre-training on the replay's frames, with a progress bar, the
    losses logged under `encoder/` and a NonFiniteTrainingError at the first non-finite loss."""
    from tqdm import tqdm

    from robot_calql.agent.encoder_pretrain import future_sampler, pretrain_encoder

    n = int(agent.cfg.encoder_pretrain_steps)
    bar = tqdm(total=n, desc="encoder pre-training", unit="step", disable=not cfg.progress, dynamic_ncols=True)
    means = UpdateMeans()

    def on_step(i: int, losses: dict[str, float]) -> None:
        check_losses(losses, f"encoder pre-training step {i}", None)
        bar.update(1)
        means.add(losses)
        if i % log_every == 0 or i == n:
            avg = means.pop()
            logger.log(i, "encoder", avg)
            bar.set_postfix(bc=f"{avg['loss_encoder_bc']:.3f}", proprio=f"{avg['loss_encoder_proprio']:.3f}")

    try:
        horizons = tuple(agent.cfg.encoder_pretrain_future)
        sample = future_sampler(replay, horizons) if horizons else replay.sample
        res = pretrain_encoder(agent, sample, on_step=on_step)
    finally:
        bar.close()
    log.info("encoder pre-trained: %d steps in %.0f s, loss %.3f -> %.3f", n, res["seconds"],
             res.get("first_loss_encoder", float("nan")), res.get("last_loss_encoder", float("nan")))
    return res


def _eval_in_sim(agent: Any, cfg: DictConfig, meta: dict, spec: dict, vocab: Any) -> dict[str, float]:
    from robot_calql.sim import make_env
    from robot_calql.sim.kinematics import sim_arm
    from robot_calql.train.evaluation import evaluate

    task = cfg.eval_task or (meta["tasks"][0] if meta["tasks"] else None)
    if task is None:
        raise ConfigError("eval: the dataset names no task; set eval_task=<stand-in task>")
    env = make_env(task, image_size=meta["image_size"], max_episode_steps=int(cfg.max_episode_steps),
                   arm=sim_arm(meta.get("robot")))
    try:
        return evaluate(agent, env, task, int(cfg.eval_episodes), spec, vocab)
    finally:
        env.close()


def _check_same_run(meta: dict, mode: str, vocab: Any, dataset: str) -> None:
    if meta.get("obs") != mode:
        raise ConfigError(f"resume: the run was trained with obs={meta.get('obs')}, not obs={mode}")
    if meta.get("instructions") != vocab.to_list():
        raise ConfigError("resume: the dataset's instructions differ from the run's; was the dataset changed?")
