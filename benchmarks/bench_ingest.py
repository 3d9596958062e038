"""Ingest speed and peak memory: 640x480 rgb8 camera bags into 64 px episodes.

    .venv/bin/python benchmarks/bench_ingest.py                      # 600 and 2400 frames, sqlite3
    .venv/bin/python benchmarks/bench_ingest.py --frames 600 6000 --storage mcap

For each size it writes a synthetic bag (camera 30 Hz, joint states 50 Hz, twist commands 10 Hz,
20 s episodes with events; robot_calql/bags/synthetic.py), then ingests it in a fresh
subprocess pinned to one CPU core (OpenCV single-threaded) and prints camera frames/s and the
child's peak resident memory (VmHWM). Targets: >= 500 frames/s, peak < 500 MB, and the peak
stays flat as the bag grows (the ingestor holds one episode, never the bag).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, os, sys, time
def peak_mb():
    # VmHWM: this process's own high-water mark (ru_maxrss can carry the parent's over fork+exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
import cv2
cv2.setNumThreads(1)
from pathlib import Path
from robot_calql.bags.ingest import ingest, settings_from
from robot_calql.config import compose
bag, out = Path(sys.argv[1]), Path(sys.argv[2])
s = settings_from(compose("ingest", ["bags=x", "out=y", "robot.bag_topics.ee_pose=null"]))
t0 = time.perf_counter()
reports = ingest([bag], s, out, progress=False)
dt = time.perf_counter() - t0
r = reports[0]
print(json.dumps({"seconds": dt, "frames": r.messages["/camera/image_raw"], "messages": sum(r.messages.values()),
                  "episodes": r.episodes, "steps": r.steps,
                  "peak_mb": peak_mb()}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[600, 2400], help="camera frames per bag")
    ap.add_argument("--storage", choices=["sqlite3", "mcap"], default="sqlite3")
    ap.add_argument("--workdir", default=None, help="where to write the bags (default: a temp folder)")
    args = ap.parse_args()

    from robot_calql.bags.synthetic import SyntheticSpec, write_synthetic_bag

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_ingest_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for frames in args.frames:
            steps_per_episode = 200  # 20 s at 10 Hz: 601 camera frames per episode
            episodes = max(1, round(frames / (steps_per_episode * 3 + 1)))
            spec = SyntheticSpec(episodes=episodes, steps=steps_per_episode, image_hw=(480, 640), encoding="rgb8",
                                 success=[True, False], events=True)
            bag = work / f"bag_{frames}"
            t0 = time.perf_counter()
            write_synthetic_bag(bag, spec, storage=args.storage)
            write_s = time.perf_counter() - t0
            size_mb = sum(p.stat().st_size for p in bag.iterdir()) / 2**20
            out = work / f"ds_{frames}"
            proc = subprocess.run([sys.executable, "-c", CHILD, str(bag), str(out)], capture_output=True, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return 1
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r.update(bag_mb=size_mb, write_s=write_s)
            rows.append(r)
            shutil.rmtree(bag)
            shutil.rmtree(out)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\ningest benchmark: 640x480 rgb8 -> 64 px, {args.storage}, one core "
          f"(targets: >= 500 frames/s, peak < 500 MB, flat in bag size)")
    print(f"{'frames':>7} {'bag MB':>8} {'episodes':>8} {'steps':>6} {'seconds':>8} {'frames/s':>9} {'peak MB':>8}")
    for r in rows:
        print(f"{r['frames']:>7} {r['bag_mb']:>8.0f} {r['episodes']:>8} {r['steps']:>6} {r['seconds']:>8.2f} "
              f"{r['frames'] / r['seconds']:>9.0f} {r['peak_mb']:>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
