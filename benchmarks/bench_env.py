"""Stand-in env speed on one CPU core: env steps/s without rendering and with camera images.

    MUJOCO_GL=egl .venv/bin/python benchmarks/bench_env.py            # 600 steps per setting
    MUJOCO_GL=egl .venv/bin/python benchmarks/bench_env.py --steps 2000 --sizes 0 64 100 128

The process pins itself to one core (like `taskset -c N`) and runs single-threaded. Each setting
takes a full reset, a short warm-up, then random actions (episodes end at the 60-step time
limit and continue reset-free, so the reset cost is included). A second figure runs the
scripted demonstrator, i.e. the cost of `robot-calql collect`.
Targets (issue 2): >= 300 steps/s without rendering, >= 60 steps/s with a 64 px image.
"""

from __future__ import annotations

import argparse
import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ.setdefault("MUJOCO_GL", "egl")

import time  # noqa: E402

import numpy as np  # noqa: E402

TARGETS = {0: 300.0, 64: 60.0}


def bench(size: int, steps: int, demo: bool) -> float:
    from robot_calql.sim import make_env
    from robot_calql.sim.demonstrators import make_demonstrator

    env = make_env("cube_in_bowl", image_size=size, seed=0, max_episode_steps=60)
    obs, _ = env.reset()
    rng = np.random.default_rng(0)
    expert = make_demonstrator(env, noise=0.3, seed=0) if demo else None
    for _ in range(20):  # warm-up (renderer creation, caches)
        env.step(rng.uniform(-1, 1, 5).astype(np.float32))
    t0 = time.perf_counter()
    for _ in range(steps):
        a = expert.act(obs) if expert else rng.uniform(-1, 1, 5).astype(np.float32)
        obs, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            if expert:  # a demo collection: full reset, new placement
                obs, _ = env.reset()
                expert.reset()
            else:
                obs, _ = env.reset(options={"full": False})
    dt = time.perf_counter() - t0
    env.close()
    return steps / dt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--sizes", type=int, nargs="+", default=[0, 64, 100, 128])
    p.add_argument("--core", type=int, default=None, help="CPU core to pin to (default: the first allowed)")
    args = p.parse_args()
    core = args.core if args.core is not None else sorted(os.sched_getaffinity(0))[0]
    os.sched_setaffinity(0, {core})
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    print(f"stand-in env on 1 core (core {core}), MUJOCO_GL={os.environ['MUJOCO_GL']}, {args.steps} steps each")
    print(f"{'image':>8} {'policy':>13} {'steps/s':>9} {'ms/step':>8}  target")
    for size in args.sizes:
        for demo in (False, True):
            sps = bench(size, args.steps, demo)
            tgt = TARGETS.get(size) if not demo else None
            verdict = "" if tgt is None else f">= {tgt:.0f}: {'ok' if sps >= tgt else 'MISSED'}"
            label = f"{size} px" if size else "none"
            print(f"{label:>8} {'demonstrator' if demo else 'random':>13} {sps:9.0f} {1000 / sps:8.2f}  {verdict}")


if __name__ == "__main__":
    main()
