"""Pre-train and fine-tune on a simulated arm, through the commands a user runs, from its robot
config alone (configs/robot/<name>.yaml with a `sim:` section: its MJCF cell, joints, cameras).

    MUJOCO_GL=egl .venv/bin/python benchmarks/bench_sim_robot_learning.py --robot <name>
    MUJOCO_GL=egl .venv/bin/python benchmarks/bench_sim_robot_learning.py --robot <name> --pretrain-steps 4000

Steps (state mode, forward task cube_in_bowl):
1. `robot-calql collect robot=<name>`: scripted demos + failures of that arm;
2. `robot-calql evaluate` of an untrained policy (pretrain steps=0) on --episodes fresh placements;
3. `robot-calql pretrain` for --pretrain-steps updates, then `evaluate` on the same placements;
4. `robot-calql finetune` for --online-steps online steps (the checkpoint's robot: that arm; the
   demo's explore_temperature and online policy_lr), then `evaluate` again.
Prints each success rate with its 95% interval and the wall time of each step.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ.setdefault("MUJOCO_GL", "egl")

QUIET = ["progress=false", "threads=1"]


def evaluate(run: Path, out: Path, episodes: int, max_steps: int) -> dict:
    from robot_calql.cli import main

    assert main(["evaluate", f"checkpoint={run}", "eval_task=cube_in_bowl", f"episodes={episodes}", "seed=20000",
                 f"max_episode_steps={max_steps}", f"out={out}", *QUIET]) == 0
    return json.loads((out / "evaluation.json").read_text())


def main() -> None:
    from robot_calql.cli import main as cli

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robot", required=True, help="a robot config with a `sim:` section (configs/robot/<name>.yaml)")
    ap.add_argument("--demos", type=int, default=40)
    ap.add_argument("--failures", type=int, default=5)
    ap.add_argument("--noise", type=float, default=0.1, help="demonstrator noise (configs/demo.yaml's)")
    ap.add_argument("--pretrain-steps", type=int, default=6000)
    ap.add_argument("--online-steps", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--max-episode-steps", type=int, default=80)
    ap.add_argument("--episodes", type=int, default=20, help="evaluation episodes (fresh placements)")
    ap.add_argument("--out", default="runs/bench_sim_robot_learning")
    a = ap.parse_args()
    root = Path(a.out)
    shutil.rmtree(root, ignore_errors=True)
    agent = [f"agent.actor_hidden=[{a.hidden},{a.hidden}]", f"agent.critic_hidden=[{a.hidden},{a.hidden}]",
             "agent.reward_scale=10.0", "agent.reward_bias=-5.0", "agent.failure_reward=-5.0",
             "agent.policy_lr=1e-3", "agent.bc_weight=20.0"]
    figures: dict = {}
    t = time.perf_counter()
    assert cli(["collect", f"robot={a.robot}", "task=cube_in_bowl", f"episodes={a.demos}", f"failures={a.failures}",
                f"noise={a.noise}", f"max_episode_steps={a.max_episode_steps}", "image_size=0",
                f"out={root / 'data'}"]) == 0
    figures["collect_s"] = time.perf_counter() - t
    common = [f"dataset={root / 'data'}", "obs=state", "batch_size=128", "tensorboard=false", *QUIET, *agent]
    assert cli(["pretrain", *common, f"out={root / 'untrained'}", "steps=0"]) == 0
    figures["untrained"] = evaluate(root / "untrained", root / "eval_untrained", a.episodes, a.max_episode_steps)
    t = time.perf_counter()
    assert cli(["pretrain", *common, f"out={root / 'pre'}", f"steps={a.pretrain_steps}"]) == 0
    figures["pretrain_s"] = time.perf_counter() - t
    figures["pretrained"] = evaluate(root / "pre", root / "eval_pre", a.episodes, a.max_episode_steps)
    t = time.perf_counter()
    assert cli(["finetune", f"checkpoint={root / 'pre'}", f"out={root / 'ft'}", "forward_task=cube_in_bowl",
                f"steps={a.online_steps}", f"max_episode_steps={a.max_episode_steps}", "backward=false",
                # the demo's fine-tuning settings (configs/demo.yaml)
                "explore_temperature=0.2", "+agent.policy_lr=1e-4", "eval_every=0", "tensorboard=false", *QUIET]) == 0
    figures["finetune_s"] = time.perf_counter() - t
    figures["finetuned"] = evaluate(root / "ft", root / "eval_ft", a.episodes, a.max_episode_steps)
    (root / "bench_sim_robot_learning.json").write_text(json.dumps(figures, indent=1))
    print(f"\n{a.robot}: {a.demos} demos + {a.failures} failures, {a.pretrain_steps} pretrain updates, "
          f"{a.online_steps} online steps, {a.episodes} fresh placements")
    for k in ("untrained", "pretrained", "finetuned"):
        f = figures[k]
        print(f"  {k:<11} success {f['success_rate']:.2f} "
              f"(95% interval {f['interval95'][0]:.2f}-{f['interval95'][1]:.2f})")
    print(f"  times: collect {figures['collect_s']:.0f} s, pretrain {figures['pretrain_s']:.0f} s, "
          f"finetune {figures['finetune_s']:.0f} s")


if __name__ == "__main__":
    main()
