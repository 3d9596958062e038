"""Does a reset-free ROS 2 fine-tuning session improve the policy? (issue 4)

Runs `robot-calql launch finetune sim=true` (the node set `finetune.launch.py` starts: stand-in,
policy, reward, episode controller, lifecycle safety, learner; real rclpy + DDS) from a
pre-trained checkpoint for --duration seconds, and measures the forward task's success with the
checkpoint's deterministic policy before and the learner's final checkpoint after (the same
--eval-episodes full-reset episodes, seeds 10000.., ground truth, no ROS), plus the session's
own reset-free tries per window of time.

Without --checkpoint it first makes a deliberately half-trained one: scripted demos of the
cube_bowl pair (the demo's settings) and --pretrain-steps Cal-QL updates (2000 by default).

    .venv/bin/python benchmarks/bench_ros_finetune.py --duration 600 --eval-episodes 40

Writes <out>/bench_ros_finetune.json and prints a summary. Needs rclpy (`pip install -e .[ros]`).
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

from robot_calql.config import compose  # noqa: E402


def make_checkpoint(out: Path, a: argparse.Namespace) -> Path:
    from robot_calql.demo import agent_overrides, collect
    from robot_calql.train import pretrain

    demo = compose("demo", [f"out={out}", f"seed={a.seed}", "progress=false"])
    data, pre = out / "data", out / "pretrain"
    collect(demo, data)
    agent = agent_overrides(demo)
    rc = pretrain.main(compose("pretrain", [f"dataset={data}", f"out={pre}", f"steps={a.pretrain_steps}",
                                            f"batch_size={demo.batch_size}", f"seed={a.seed}", "threads=1",
                                            "progress=false", "overwrite=true", "tensorboard=false", *agent]))
    if rc:
        raise SystemExit(f"pretrain failed ({rc})")
    return pre


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="pre-trained run (default: make a half-trained one)")
    p.add_argument("--pretrain-steps", type=int, default=2000)
    p.add_argument("--duration", type=float, default=600.0, help="session length in seconds")
    p.add_argument("--eval-episodes", type=int, default=40)
    p.add_argument("--window", type=float, default=100.0, help="seconds per window of reset-free tries")
    p.add_argument("--batch", type=int, default=128, help="learner batch size")
    p.add_argument("--explore-temperature", type=float, default=0.2, help="policy.explore_temperature")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench_ros_finetune")
    a = p.parse_args()
    from robot_calql_ros.launcher import run_session

    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    ckpt = Path(a.checkpoint).resolve() if a.checkpoint else make_checkpoint(out, a)
    from robot_calql.train.checkpoint import load_meta

    state_mode = load_meta(ckpt).get("obs") == "state"  # reads the stand-in's privileged state (debug flag)
    r = run_session([f"checkpoint={ckpt}", f"run_dir={out / 'session'}", f"learner.batch_size={a.batch}",
                     f"policy.explore_temperature={a.explore_temperature}",
                     f"sim_robot.publish_sim_state={str(state_mode).lower()}"],
                    duration_s=a.duration, eval_episodes=a.eval_episodes, window_s=a.window)
    r["checkpoint"] = str(ckpt)
    r["minutes"] = round((time.time() - t0) / 60, 1)
    (out / "bench_ros_finetune.json").write_text(json.dumps(r, indent=1))

    def pct(x):
        return "-" if x is None else f"{x:.0%}"

    print(f"\nROS fine-tuning session, {a.duration:.0f} s from {ckpt}")
    print(f"  deterministic evaluation ({a.eval_episodes} episodes): before {pct(r['eval_success_before'])}"
          f" -> after {pct(r['eval_success_after'])}")
    print(f"  reset-free forward tries: {r['forward_successes']}/{r['forward_tries']} "
          f"(first half {pct(r['forward_first_half'])}, second half {pct(r['forward_second_half'])}); "
          f"backward {r['backward_successes']}/{r['backward_tries']}")
    print("  per window: " + ", ".join(f"{w['t0_s']:.0f}s {w['successes']}/{w['tries']}" for w in r["windows"]))
    print(f"  transitions received {r['transitions_received']}, stored {r['transitions_stored']}; "
          f"updates {r['updates']}; weights published {r['weights_published']}, received "
          f"{r['weights_received']}; calls for help {r['human_help']}; arm sent home {r['arm_homes']} times")
    if r["missed_rate"] is not None:
        print(f"  commands at the arm: {r['commands_applied']} applied of {r['commands_received']} received, "
              f"{r['ticks_missed']} physics ticks without a fresh one, {r['commands_replaced']} overwritten unused "
              f"({r['missed_rate']:.1%} of the policy's actions did not land one per period)")
    print(f"  {r['minutes']} min; {out / 'bench_ros_finetune.json'}")
    return int(r["rc"])


if __name__ == "__main__":
    sys.exit(main())
