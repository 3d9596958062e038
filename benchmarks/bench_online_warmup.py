"""The ROS learner's first updates: what they do to the policy, with and without `online_warmup`.

A reset-free ROS session acts at once with every weight set the learner publishes (every 50
updates). This replays a session's `transitions.log` (every transition the policy sent, in
order) through the learner's schedule, offline and without ROS: from the same pre-trained
checkpoint and optimizer state, updates start once `learner.min_online` finished online steps are
in, then `learner.utd` per transition, the owed ones at once (as the learner catches up), on
batches mixing offline data and the online buffer (`learner.mixing_ratio`, `online_warmup`).
The weight sets the policy would have received after --eval-at updates are evaluated in the
stand-in: forward and backward task, full resets, 120-step tries (the ROS controller's 12 s at
10 Hz), deterministic policy, the same placements for every weight set.

    make demo    # writes runs/demo/pretrain and runs/demo/ros_session/transitions.log
    .venv/bin/python benchmarks/bench_online_warmup.py --warmups 0 1000 --seeds 0 1

Writes <out>/bench_online_warmup.json and bench_online_warmup.png. About 1 minute per
(warmup, seed) on one core at the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "ros_nodes")]

import numpy as np  # noqa: E402

from robot_calql.config import compose  # noqa: E402


def replay_session(checkpoint: Path, payloads: list[bytes], warmup: int, seed: int, eval_at: list[int],
                   episodes: int, lc, batch: int) -> list[dict]:
    import torch

    from robot_calql.control.transport import transition_step, unpack_transition
    from robot_calql.sim import get_task, make_env
    from robot_calql.train import checkpoint as ckpt
    from robot_calql.train.common import updates_owed
    from robot_calql.train.evaluation import evaluate
    from robot_calql.train.session import open_session

    torch.manual_seed(seed)
    state = ckpt.load_checkpoint(checkpoint)
    if not state["trainer"].get("optimizer"):
        raise SystemExit(f"{state['dir']}: no optimizer state (a weights-only export?): pass the pre-training run")
    # the learner's session: the checkpoint's settings with the online actor rate (learner.policy_lr)
    s = open_session(state["meta"], state, agent_overrides={"policy_lr": float(lc.policy_lr)},
                     online_capacity=len(payloads) + 1, dataset=state["meta"]["dataset"],
                     mixing_ratio=float(lc.mixing_ratio), online_warmup=warmup, online_seed=seed, offline_seed=seed)
    meta, agent, spec, vocab, online, replay = s.meta, s.agent, s.spec, s.vocab, s.online, s.replay
    forward = str(meta.get("forward_task") or meta["tasks"][0])
    backward = get_task(forward).reverse
    env = make_env(forward, image_size=0, max_episode_steps=120)

    rows: list[dict] = []

    def measure(updates: int, transitions: int) -> None:
        f = evaluate(agent, env, forward, episodes, spec, vocab, seed=30_000)["success_rate"]
        b = evaluate(agent, env, backward, episodes, spec, vocab, seed=31_000)["success_rate"]
        rows.append({"updates": updates, "transitions": transitions, "online_steps": len(online),
                     "online_share": replay.split(batch)[1] / batch, "forward": f, "backward": b})
        print(f"  warmup {warmup:5d} seed {seed}: {updates:4d} updates ({transitions:4d} transitions, "
              f"{len(online):4d} online steps): forward {f:.0%}, backward {b:.0%}", flush=True)

    if 0 in eval_at:
        measure(0, 0)
    updates = 0
    for n, payload in enumerate(payloads, start=1):
        online.add(**transition_step(*unpack_transition(payload), spec))
        while updates_owed(n, updates, len(online), float(lc.utd), int(lc.min_online)) >= 1:
            agent.update(replay.sample(batch))
            updates += 1
            if updates in eval_at:
                measure(updates, n)
        if updates >= max(eval_at):
            break
    return rows


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for warmup, runs in results.items():
        u = [r["updates"] for r in runs[0]]
        f = np.mean([[r["forward"] for r in run] for run in runs], axis=0)
        ax.plot(u, 100 * f, marker="o", label=f"online_warmup {warmup} ({len(runs)} seed(s))")
    ax.set_xlabel("learner updates (a weight set every 50)")
    ax.set_ylabel("forward success, % (full resets)")
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("the weights a reset-free ROS session acts with")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/demo/pretrain", help="the session's pre-trained run")
    p.add_argument("--transitions", default="runs/demo/ros_session/transitions.log",
                   help="the session's transitions.log (the learner's run_dir)")
    p.add_argument("--warmups", type=int, nargs="+", default=[0, 1000], help="online_warmup values to compare")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="sampling seeds of the learner")
    p.add_argument("--eval-at", type=int, nargs="+", default=[0, 50, 100, 200, 400, 800],
                   help="updates after which the weights are evaluated")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes per task and weight set")
    p.add_argument("--batch", type=int, default=128, help="learner batch size (the demo's 128)")
    p.add_argument("--out", default="runs/bench_online_warmup")
    a = p.parse_args()

    import torch

    from robot_calql.agent.cpu import configure_cpu_process
    from robot_calql.control.transport import TransitionLog

    torch.set_num_threads(1)
    configure_cpu_process()  # as the learner node does
    log_path = Path(a.transitions)
    if not log_path.is_file():
        raise SystemExit(f"{log_path}: no transitions.log (run `make demo`, or pass --transitions <run_dir>/transitions.log)")
    log = TransitionLog(log_path)
    payloads = list(log.read())
    log.close()
    lc = compose("launch_finetune", []).learner
    print(f"{len(payloads)} transitions from {log_path}; learner: min_online {lc.min_online}, utd {lc.utd}, "
          f"mixing_ratio {lc.mixing_ratio}, policy_lr {lc.policy_lr}, batch {a.batch}", flush=True)
    t0 = time.time()
    results = {w: [replay_session(Path(a.checkpoint), payloads, w, s, sorted(set(a.eval_at)), a.episodes, lc, a.batch)
                   for s in a.seeds] for w in a.warmups}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"checkpoint": a.checkpoint, "transitions": str(log_path), "episodes": a.episodes, "batch": a.batch,
               "seeds": a.seeds, "minutes": round((time.time() - t0) / 60, 1),
               "results": {str(w): runs for w, runs in results.items()}}
    (out / "bench_online_warmup.json").write_text(json.dumps(summary, indent=1))
    plot(results, out / "bench_online_warmup.png")
    print(f"\nforward success (mean over seeds {a.seeds}, {a.episodes} episodes each) after N updates:")
    print("  online_warmup | " + " | ".join(f"{u:>4d}" for u in sorted(set(a.eval_at))))
    for w, runs in results.items():
        f = np.mean([[r["forward"] for r in run] for run in runs], axis=0)
        b = np.mean([[r["backward"] for r in run] for run in runs], axis=0)
        print(f"  {w:13d} | " + " | ".join(f"{x:4.0%}" for x in f) + "   (backward: "
              + ", ".join(f"{x:.0%}" for x in b) + ")")
    print(f"\n{out / 'bench_online_warmup.json'}, {out / 'bench_online_warmup.png'} ({summary['minutes']} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
