"""`robot-calql evaluate checkpoint=<run>`: success rate and failure breakdown of a saved policy.

It runs robot_calql.train.evaluation (full-reset episodes with the deterministic policy, each
with its outcome) and prints the breakdown; with `out=<dir>` it also writes the per-episode JSON
and a picture of one episode of each failure kind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from robot_calql.train.evaluation import (
    FAILURES,
    OUTCOMES,
    critic_summary,
    evaluate,
    run_episode,
    wilson_interval,
)

SIM_MAX_EPISODE_STEPS = 80  # max_episode_steps=null in the stand-in: the benchmark's and the demo's limit


def failure_sheet(rows: list[tuple[str, list[np.ndarray]]], path: Path, columns: int = 8) -> Path:
    """One row of `columns` evenly spaced frames per (label, episode frames); labelled, as a PNG."""
    import cv2

    tiles = []
    for label, frames in rows:
        idx = np.linspace(0, len(frames) - 1, columns).round().astype(int)
        row = np.concatenate([frames[i] for i in idx], axis=1).copy()
        for c, i in enumerate(idx):  # the step number on every frame
            cv2.putText(row, f"t={i}", (c * frames[0].shape[1] + 4, frames[0].shape[0] - 6),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        band = np.full((22, row.shape[1], 3), 255, np.uint8)
        cv2.putText(band, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        tiles += [band, row]
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(tiles, axis=0), cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path


def main(cfg: Any) -> int:
    """`robot-calql evaluate checkpoint=<run>`: success rate and failure breakdown of a saved policy."""
    from tqdm import tqdm

    from robot_calql.agent.cpu import configure_cpu_process
    from robot_calql.config import ConfigError, resolve_path
    from robot_calql.data.replay import InstructionVocab
    from robot_calql.sim import get_task, make_env
    from robot_calql.sim.kinematics import sim_arm
    from robot_calql.train import checkpoint as ckpt
    from robot_calql.train.common import agent_from_meta, set_threads, temperature_setting

    set_threads(int(cfg.threads))
    configure_cpu_process()  # process-wide: subnormal flush, glibc heap (agent/cpu.py)
    src = resolve_path(cfg.checkpoint)
    if src is None:
        raise ConfigError("evaluate needs checkpoint=<run or checkpoint folder>")
    episodes = int(cfg.episodes)
    T = SIM_MAX_EPISODE_STEPS if cfg.max_episode_steps is None else int(cfg.max_episode_steps)
    if episodes < 1 or T < 1:
        raise ConfigError(f"episodes and max_episode_steps must be >= 1, got {episodes} and {T}")
    temperature_setting(cfg, "temperature", None)  # the values now, their number once A is known
    state = ckpt.load_checkpoint(src)
    meta = state["meta"]
    env_id = str(cfg.env or meta.get("env") or "sim")
    if env_id != "sim":  # a gymnasium env: the mean return (robot_calql.train.gym_finetune)
        from robot_calql.train.gym_finetune import evaluate_gym

        return evaluate_gym(cfg, state, env_id)
    task = cfg.eval_task or meta.get("forward_task") or (meta.get("tasks") or [None])[0]
    if task is None:
        raise ConfigError("the checkpoint names no task: set eval_task=<stand-in task>")
    task = get_task(str(task)).name
    spec = {k: tuple(v) for k, v in meta["obs_spec"].items()}
    vocab = InstructionVocab(meta["instructions"])
    vocab.id(get_task(task).instruction)  # the policy must know the task's instruction
    agent = agent_from_meta(meta, str(cfg.device))  # the checkpoint's own agent settings
    agent.load_state_dict(state["agent_state"])
    temps = temperature_setting(cfg, "temperature", int(meta["action_dim"]))

    image_size = 0 if meta["obs"] == "state" else int(meta.get("image_size", 0))
    out = resolve_path(cfg.out)
    starts = {k: float(cfg.get(k, 0.0)) for k in ("dropped_start", "rolled_start")}  # make_env checks them
    env = make_env(task, image_size=image_size, max_episode_steps=T, render_mode="rgb_array" if out else None,
                   render_size=int(cfg.frame_size), arm=sim_arm(meta.get("robot")), **starts)
    eps: list[dict[str, Any]] = []
    try:
        with tqdm(total=episodes, desc="evaluate", unit="episode", disable=not cfg.progress) as bar:
            evaluate(agent, env, task, episodes, spec, vocab, seed=int(cfg.seed), temperature=temps, details=eps,
                     on_episode=lambda _: bar.update(1))
        wins = sum(e["success"] for e in eps)
        lo, hi = wilson_interval(wins, episodes)
        counts = {o: sum(e["outcome"] == o for e in eps) for o in OUTCOMES}
        lengths = np.asarray([e["length"] for e in eps if e["success"]])
        print(f"{task}: {wins}/{episodes} succeeded ({wins / episodes:.0%}, 95% interval {lo:.0%}-{hi:.0%}); "
              f"{T}-step limit, {'mean action' if not temps.any() else f'temperature {temps.tolist()}'}, seeds {cfg.seed}.."
              f"{int(cfg.seed) + episodes - 1}, checkpoint {state['dir']} (step {meta.get('step', '?')})"
              + "".join(f", {k}={v:g}" for k, v in starts.items() if v))
        if len(lengths):
            print(f"  successes took {lengths.mean():.0f} steps on average (p90 {np.percentile(lengths, 90):.0f}, "
                  f"longest {lengths.max()})")
        print("  failures: " + (", ".join(f"{o} {counts[o]}" for o in FAILURES if counts[o]) or "none"))
        critic = critic_summary(eps)  # failed episodes get training's failure fill: the successes are exact
        for name, suffix in (("these episodes", ""), ("the successes", "_success")):
            if f"q_gap{suffix}" in critic:
                q, g, d = (critic[f"{k}{suffix}"] for k in ("q_mean", "mc_return_mean", "q_gap"))
                print(f"  critic along {name}: mean Q(s, pi(s)) {q:.1f} against the discounted return {g:.1f} "
                      f"({'over' if d > 0 else 'under'}-estimates by {abs(d):.1f}; training's reward shaping)")
        if out is not None:
            report = {"task": task, "checkpoint": str(state["dir"]), "step": meta.get("step"), "episodes": episodes,
                      **starts,
                      "max_episode_steps": T, "temperature": temps.tolist(), "success_rate": wins / episodes,
                      "interval95": [lo, hi], "outcomes": counts, "per_episode": eps}
            out.mkdir(parents=True, exist_ok=True)
            (out / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
            rows = []
            for o in FAILURES:  # replay the first episode of each failure kind with rendering
                first = next((e for e in eps if e["outcome"] == o), None)
                if first is not None:
                    frames: list[np.ndarray] = []
                    again = run_episode(agent, env, spec, vocab, first["seed"], temps, frames=frames)
                    rows.append((f"{o}: seed {first['seed']}" + ("" if again["outcome"] == o else
                                 f" (replayed as {again['outcome']})"), frames))
            print(f"  per-episode results: {out / 'evaluation.json'}")
            if rows:
                print(f"  one episode of each failure kind: {failure_sheet(rows, out / 'failures.png')}")
    finally:
        env.close()
    return 0
