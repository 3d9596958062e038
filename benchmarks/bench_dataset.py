"""Dataset write and read throughput (MB/s) for stand-in-sized episodes.

    .venv/bin/python benchmarks/bench_dataset.py                 # 200 episodes x 60 steps, 64 px
    .venv/bin/python benchmarks/bench_dataset.py --episodes 500 --image-size 128 --dir /data/tmp

Writes synthetic episodes (random uint8 images, float32 proprio/state/action) with
DatasetWriter (validation, one fsync per file, atomic rename), then reads them back with
Dataset: opening (metadata and file checks), a full sequential read of every array, and a
random access pattern like a replay buffer (one step from a random episode). The read figures
come from the page cache when the dataset fits in memory; they are an upper bound for disk.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from robot_calql.data.dataset import Dataset, DatasetMeta, DatasetWriter, Episode


def make_episodes(n: int, T: int, size: int, rng: np.random.Generator) -> list[Episode]:
    eps = []
    for _ in range(n):
        term = np.zeros(T, bool)
        term[-1] = True
        eps.append(Episode(
            image=rng.integers(0, 256, (T + 1, size, size, 3), dtype=np.uint8) if size else None,
            proprio=rng.normal(size=(T + 1, 10)).astype(np.float32),
            state=rng.normal(size=(T + 1, 23)).astype(np.float32),
            action=rng.uniform(-1, 1, (T, 5)).astype(np.float32),
            reward=term.astype(np.float32), terminal=term,
            instruction="put the cube in the bowl", task="cube_in_bowl", success=True,
        ))
    return eps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench_dataset_", dir=args.dir))
    root = base / "d"
    try:
        rng = np.random.default_rng(0)
        size = args.image_size
        meta = DatasetMeta(control_hz=10, action_dim=5, proprio_dim=10, state_dim=23,
                           image_shape=(size, size, 3) if size else None)
        eps = make_episodes(args.episodes, args.steps, size, rng)
        nbytes = sum(a.nbytes for e in eps for a in e.arrays().values())
        mb = nbytes / 1e6

        t0 = time.perf_counter()
        w = DatasetWriter(root, meta)
        for e in eps:
            w.write_episode(e)
        t_write = time.perf_counter() - t0

        t0 = time.perf_counter()
        ds = Dataset(root)
        t_open = time.perf_counter() - t0
        t0 = time.perf_counter()
        total = 0
        for e in ds:
            for a in e.arrays().values():
                total += int(np.asarray(a).view(np.uint8).sum() & 1)  # touch every byte
        t_read = time.perf_counter() - t0

        n_samples = 5000
        t0 = time.perf_counter()
        episodes = [ds[i] for i in range(len(ds))]
        for _ in range(n_samples):
            e = episodes[int(rng.integers(len(episodes)))]
            t = int(rng.integers(len(e)))
            _ = (np.array(e.image[t]) if e.image is not None else None, np.array(e.proprio[t]),
                 np.array(e.action[t]), np.array(e.proprio[t + 1]))
        t_rand = time.perf_counter() - t0

        disk = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 1e6
        print(f"dataset: {args.episodes} episodes x {args.steps} steps, image {size or 'none'} px, "
              f"{mb:.1f} MB of arrays ({disk:.1f} MB on disk) in {root}")
        print(f"  write (validate + fsync + atomic rename): {mb / t_write:8.1f} MB/s  "
              f"({args.episodes / t_write:.0f} episodes/s)")
        print(f"  open  (metadata + file checks):           {t_open * 1000:8.1f} ms for {len(ds)} episodes")
        print(f"  read  (every array, sequential):          {mb / t_read:8.1f} MB/s")
        print(f"  random single-step reads (replay-like):   {n_samples / t_rand:8.0f} samples/s")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
