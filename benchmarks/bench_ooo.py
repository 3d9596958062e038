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
prints a table. Seeds run as separate processes (a --learning folder per seed) combine with

    .venv/bin/python benchmarks/bench_ooo.py --merge runs/ooo/s0 runs/ooo/s1 runs/ooo/s2 --out runs/ooo
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


def report(rows: list[dict], config: dict, learning_cfg: dict, learning_code: str, out: Path, img: str | None,
           minutes: float, **extra) -> None:
    """Write <out>/bench_ooo.json and bench_ooo.png (and `img`), and print the table."""
    gain = float(np.mean([r["gain"] for r in rows]))
    result = {"config": config, "learning_config": learning_cfg, "learning_code": learning_code, "rows": rows,
              "mean_online": float(np.mean([r["online_policy"]["success"] for r in rows])),
              "mean_exploit": float(np.mean([r["exploit"]["success"] for r in rows])), "mean_gain": gain,
              "target_gain_ge_5pts": gain >= 0.05, "minutes": minutes, **extra}
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_ooo.json").write_text(json.dumps(result, indent=2) + "\n")
    title = (f"OOO on {learning_cfg['task']}: {learning_cfg['online_steps']} online steps "
             f"(rnd.scale {learning_cfg.get('rnd_scale', 0.0)}),\n{config['exploit_steps']} exploitation updates, "
             f"{config['fresh_episodes']} fresh placements per seed")
    png = plot(rows, out / "bench_ooo.png", title)
    if img:
        Path(img).parent.mkdir(parents=True, exist_ok=True)
        Path(img).write_bytes(png.read_bytes())
    print(f"\nOOO ({len(rows)} seed(s), {config['fresh_episodes']} fresh placements each, {minutes:.1f} min)")
    print(f"{'seed':<6} {'online':>8} {'exploit':>8} {'gain':>7}")
    for r in rows:
        print(f"{r['seed']:<6} {r['online_policy']['success']:>8.2f} {r['exploit']['success']:>8.2f} {r['gain']:>+7.2f}")
    print(f"{'mean':<6} {result['mean_online']:>8.2f} {result['mean_exploit']:>8.2f} {gain:>+7.2f}  "
          f"(target >= +0.05: {result['target_gain_ge_5pts']})")
    print(f"JSON: {out / 'bench_ooo.json'}\nplot: {png}")


# the settings that must match for --merge (the exploitation's, and the learning runs' but their seeds)
MERGE_SKIP = {"learning", "out", "img", "merge", "threads", "seeds", "first_seed", "pretrained", "extend", "merge_across_commits"}


def merge(paths: list[str], out: Path, img: str | None) -> int:
    """Combine bench_ooo.json files of runs made separately (one seed's learning run each) into one
    report; their exploitation settings and their learning runs' settings must match."""
    parts = [json.loads((Path(p) / "bench_ooo.json" if Path(p).is_dir() else Path(p)).read_text()) for p in paths]

    def key(part: dict) -> dict:
        return {**{f"exploit.{k}": v for k, v in part["config"].items() if k not in MERGE_SKIP},
                **{f"learning.{k}": v for k, v in part["learning_config"].items() if k not in MERGE_SKIP}}

    base = key(parts[0])
    for p, part in zip(paths, parts, strict=True):
        other = key(part)
        if other != base:
            diff = sorted(k for k in set(base) | set(other) if base.get(k) != other.get(k))
            raise SystemExit(f"{p}: settings differ from {paths[0]} in {diff}; only like runs merge")
    rows = sorted((r for part in parts for r in part["rows"]), key=lambda r: r["seed"])
    seeds = [r["seed"] for r in rows]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"--merge: a seed appears twice ({seeds})")
    codes = sorted({part.get("learning_code", "unknown") for part in parts})
    report(rows, parts[0]["config"], parts[0]["learning_config"], ", ".join(codes), out, img,
           sum(part.get("minutes", 0.0) for part in parts), merged_from=[str(p) for p in paths])
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--learning", help="a bench_learning.py --out folder (its seed*/ runs)")
    p.add_argument("--merge", nargs="+", metavar="RUN", help="combine earlier bench_ooo.py --out folders into --out")
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
    out = Path(a.out).resolve()
    if a.merge:
        return merge(a.merge, out, a.img)
    if not a.learning:
        p.error("--learning (or --merge) is required")
    learning_dir = Path(a.learning).resolve()
    f = learning_dir / "bench_learning.json"
    if not f.is_file():
        raise SystemExit(f"--learning {a.learning}: no bench_learning.json there")
    learning = json.loads(f.read_text())
    runs = sorted(d / f"{a.method}_ft" for d in learning_dir.glob("seed*") if (d / f"{a.method}_ft" / "checkpoints").is_dir())
    if not runs:
        raise SystemExit(f"--learning {a.learning}: no seed*/{a.method}_ft fine-tuning run")
    t0 = time.time()
    rows = []
    for run in runs:
        seed = int(run.parent.name[len("seed"):])
        s = exploit_seed(run, out / run.parent.name, learning, a)
        rows.append({"seed": seed, "run": str(run), "online_steps": s["online_steps"], "exploit": s["exploit"],
                     "online_policy": s["online_policy"], "gain": s["gain"]})
        print(f"[seed {seed}] online policy {s['online_policy']['success']:.0%} -> exploitation policy "
              f"{s['exploit']['success']:.0%} ({(time.time() - t0) / 60:.1f} min)", flush=True)
    report(rows, vars(a), learning["config"], learning.get("code", "unknown"), out, a.img, (time.time() - t0) / 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
