"""OOO benchmark: the exploitation policy against the online policy at the end of the learning benchmark.

For every seed of a benchmarks/bench_learning.py run (its --out folder), `robot-calql exploit`
trains a fresh pessimistic agent (Cal-QL, no bonus; or CQL with --cql) from scratch on that
seed's offline data plus everything the fine-tuning run of --method stored, then scores it and
the run's own final policy on the same --fresh-episodes placements (seeds 20000.., the learning
benchmark's fresh placements). The exploring runs are the learning benchmark's: plain Cal-QL, or
OOO's optimistic explorer with `bench_learning.py --rnd-scale ...`.

Figures: per seed and mean, the exploitation and the online policy's success with 95% intervals,
and the gain (target, issue 30: >= +5 points on average).

    # the learning benchmark first (here with OOO's RND bonus while exploring), then OOO on it
    .venv/bin/python benchmarks/bench_learning.py --methods calql --rnd-scale 1.0 --out runs/bl_rnd
    .venv/bin/python benchmarks/bench_ooo.py --learning runs/bl_rnd --out runs/ooo
    # a short smoke run (minutes on 2 CPU cores)
    .venv/bin/python benchmarks/bench_learning.py --methods calql --seeds 1 --episodes 10 --failures 2 \
        --offline-steps 300 --online-steps 300 --eval-every 150 --eval-episodes 5 --hidden 64 --batch 64 \
        --fresh-episodes 0 --rnd-scale 1.0 --out runs/bl_smoke
    .venv/bin/python benchmarks/bench_ooo.py --learning runs/bl_smoke --exploit-steps 300 --fresh-episodes 20 \
        --out runs/ooo_smoke

Writes <out>/bench_ooo.json and <out>/bench_ooo.png (and --img, e.g. docs/img/bench_ooo.png) and
prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from robot_calql.config import compose  # noqa: E402
from robot_calql.train import exploit  # noqa: E402

FRESH_SEED = 20_000  # bench_learning.py's fresh placements


def exploit_seed(run: Path, out: Path, learning: dict, a: argparse.Namespace) -> dict:
    """`robot-calql exploit` on one seed's fine-tuning run; returns its summary."""
    cfg = learning["config"]
    overrides = [f"run={run}", f"out={out}", f"steps={a.exploit_steps}", f"batch_size={cfg['batch']}",
                 f"mixing_ratio={a.mixing_ratio}", f"eval_episodes={a.fresh_episodes}", f"eval_seed={FRESH_SEED}",
                 f"max_episode_steps={cfg['max_episode_steps']}", f"threads={a.threads}", "progress=false",
                 "tensorboard=false", "overwrite=true", f"seed={a.seed}",
                 # trained from scratch: the offline actor learning rate, not the fine-tuning one
                 f"+agent.policy_lr={cfg['policy_lr']}",
                 *(["+agent.enable_calql=false"] if a.cql else [])]
    rc = exploit.main(compose("exploit", overrides))
    assert rc == 0, f"exploit {run} failed"
    return json.loads((out / "summary.json").read_text())


def plot(rows: list[dict], path: Path, title: str) -> Path:
    """Grouped bars per seed and their mean: the online policy and the exploitation policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"seed {r['seed']}" for r in rows] + ["mean"]
    on = [r["online_policy"]["success"] for r in rows]
    ex = [r["exploit"]["success"] for r in rows]
    on.append(float(np.mean(on)))
    ex.append(float(np.mean(ex)))
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 2, 3.5))
    for dx, vals, name, rs in ((-0.2, on, "online policy", [r["online_policy"] for r in rows]),
                               (0.2, ex, "exploitation policy (OOO)", [r["exploit"] for r in rows])):
        lo = [v - r["interval95"][0] for v, r in zip(vals, rs, strict=False)] + [0.0]
        hi = [r["interval95"][1] - v for v, r in zip(vals, rs, strict=False)] + [0.0]
        ax.bar(x + dx, vals, 0.4, yerr=[lo, hi], capsize=4, label=name)
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("success rate (95% interval)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--learning", required=True, help="a bench_learning.py --out folder (its seed*/ runs)")
    p.add_argument("--method", default="calql", help="whose fine-tuning runs to exploit (<method>_ft)")
    p.add_argument("--exploit-steps", type=int, default=20000, help="updates of each fresh agent")
    p.add_argument("--mixing-ratio", type=float, default=0.5, help="offline share of every batch")
    p.add_argument("--fresh-episodes", type=int, default=100, help="placements scored per seed")
    p.add_argument("--cql", action="store_true", help="the exploitation agent is CQL (the bound off)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fresh agents")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/bench_ooo")
    p.add_argument("--img", default=None, help="also copy the plot here (e.g. docs/img/bench_ooo.png)")
    a = p.parse_args()
    learning_dir = Path(a.learning).resolve()
    f = learning_dir / "bench_learning.json"
    if not f.is_file():
        raise SystemExit(f"--learning {a.learning}: no bench_learning.json there")
    learning = json.loads(f.read_text())
    runs = sorted(d / f"{a.method}_ft" for d in learning_dir.glob("seed*") if (d / f"{a.method}_ft" / "checkpoints").is_dir())
    if not runs:
        raise SystemExit(f"--learning {a.learning}: no seed*/{a.method}_ft fine-tuning run")
    out = Path(a.out).resolve()
    t0 = time.time()
    rows = []
    for run in runs:
        seed = int(run.parent.name[len("seed"):])
        s = exploit_seed(run, out / run.parent.name, learning, a)
        rows.append({"seed": seed, "run": str(run), "online_steps": s["online_steps"], "exploit": s["exploit"],
                     "online_policy": s["online_policy"], "gain": s["gain"]})
        print(f"[seed {seed}] online policy {s['online_policy']['success']:.0%} -> exploitation policy "
              f"{s['exploit']['success']:.0%} ({(time.time() - t0) / 60:.1f} min)", flush=True)
    gain = float(np.mean([r["gain"] for r in rows]))
    cfg = learning["config"]
    result = {"config": vars(a), "learning_config": cfg, "learning_code": learning.get("code", "unknown"),
              "rows": rows, "mean_online": float(np.mean([r["online_policy"]["success"] for r in rows])),
              "mean_exploit": float(np.mean([r["exploit"]["success"] for r in rows])), "mean_gain": gain,
              "target_gain_ge_5pts": gain >= 0.05, "minutes": (time.time() - t0) / 60}
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_ooo.json").write_text(json.dumps(result, indent=2) + "\n")
    title = (f"OOO on {cfg['task']}: {cfg['online_steps']} online steps (rnd.scale {cfg.get('rnd_scale', 0.0)}),\n"
             f"{a.exploit_steps} exploitation updates, {a.fresh_episodes} fresh placements per seed")
    png = plot(rows, out / "bench_ooo.png", title)
    if a.img:
        Path(a.img).parent.mkdir(parents=True, exist_ok=True)
        Path(a.img).write_bytes(png.read_bytes())
    print(f"\nOOO ({len(rows)} seed(s), {a.fresh_episodes} fresh placements each, {result['minutes']:.1f} min)")
    print(f"{'seed':<6} {'online':>8} {'exploit':>8} {'gain':>7}")
    for r in rows:
        print(f"{r['seed']:<6} {r['online_policy']['success']:>8.2f} {r['exploit']['success']:>8.2f} {r['gain']:>+7.2f}")
    print(f"{'mean':<6} {result['mean_online']:>8.2f} {result['mean_exploit']:>8.2f} {gain:>+7.2f}  "
          f"(target >= +0.05: {result['target_gain_ge_5pts']})")
    print(f"JSON: {out / 'bench_ooo.json'}\nplot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
