"""Load an `export-lerobot` folder with LeRobot's own LeRobotDataset and compare it with its source.

Not a CI test: LeRobot needs its own environment, never .venv. On this machine (Python 3.11, CPU
torch) that was: python3 -m venv /tmp/lrvenv; the local torch==2.13.0 CPU wheel; lerobot==0.4.4
--no-deps (0.5+ needs Python 3.12; 0.4.x reads and writes v3.0) with datasets<5,
huggingface-hub<0.36, pandas, av<16, draccus==0.10.0, accelerate, safetensors, jsonlines, einops,
deepdiff, termcolor, gymnasium; torchcodec==0.13.0 (LeRobot's default decoder) on the FFmpeg 7
libraries inside the av wheel (symlinked to their plain sonames, on LD_LIBRARY_PATH); and, as the
registry's torchvision is a CUDA build that cannot load beside the CPU torch, a stub `torchvision`
package on PYTHONPATH that LeRobot imports but never calls on this path (any call raises). Then:

    .venv/bin/robot-calql collect task=cube_in_bowl episodes=50 out=/tmp/lrcheck/ours
    .venv/bin/robot-calql export-lerobot dataset=/tmp/lrcheck/ours out=/tmp/lrcheck/lr
    HF_HUB_OFFLINE=1 PYTHONPATH=. <lerobot venv>/bin/python benchmarks/check_lerobot_export.py \
        --ours /tmp/lrcheck/ours --export /tmp/lrcheck/lr

The reverse direction: `--write-lerobot DIR` (LeRobot venv) records a small dataset with LeRobot's
own writer (LeRobotDataset.create / add_frame / save_episode: its parquet, tasks, stats and AV1
video encoding) and saves the frames it fed as DIR.expected.npz; `--compare-import OURS
--expected DIR.expected.npz` (.venv) compares `robot-calql import-lerobot path=DIR out=OURS` with it:

    HF_HUB_OFFLINE=1 PYTHONPATH=. <lerobot venv>/bin/python benchmarks/check_lerobot_export.py \
        --write-lerobot /tmp/lrcheck/by_lerobot
    .venv/bin/robot-calql import-lerobot path=/tmp/lrcheck/by_lerobot out=/tmp/lrcheck/imported crop=center
    .venv/bin/python benchmarks/check_lerobot_export.py --compare-import /tmp/lrcheck/imported \
        --expected /tmp/lrcheck/by_lerobot.expected.npz

Reads every frame through LeRobotDataset.__getitem__ (LeRobot's parquet loading and its video
decoder at its default 1e-4 s timestamp tolerance) and checks it against the robot_calql episode:
observation.state == proprio, action == action (the last frame: the last action repeated),
next.reward / next.done, episode and frame indices, the task string == instruction, and the
camera frame against the source image (mean absolute error, grey levels). Then asks for an
action chunk across an episode's end (delta_timestamps), which LeRobot pads. Prints what it read;
exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from robot_calql.data.dataset import Dataset

LENGTHS = (12, 7, 15)  # episodes recorded by --write-lerobot


def scene(t: int, e: int, h: int = 96, w: int = 128) -> np.ndarray:
    """A smooth camera-like picture: a gradient and a disc that moves with t."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([80 + 100 * xx / w, 60 + 120 * yy / h, np.full_like(xx, 90.0 + 30 * e)], -1)
    img[(xx - w * (0.3 + 0.03 * t)) ** 2 + (yy - h * 0.5) ** 2 < (0.15 * h) ** 2] = (220, 40, 40)
    return img.astype(np.uint8)


def write_lerobot(root: str) -> int:
    """Record LENGTHS episodes with LeRobot's own writer; the last frame of episodes 0 and 2 is done
    with reward 1 (LeRobot's gym recorder convention); actions in degrees."""
    import lerobot
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {
        "observation.images.top": {"dtype": "video", "shape": (96, 128, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (3,), "names": ["a", "b", "c"]},
        "action": {"dtype": "float32", "shape": (2,), "names": ["shoulder.pos", "gripper.pos"]},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
        "next.done": {"dtype": "bool", "shape": (1,), "names": None},
    }
    ds = LeRobotDataset.create("local/written_by_lerobot", fps=10, features=features, root=root, robot_type="so100")
    rng = np.random.default_rng(0)
    expected: dict[str, np.ndarray] = {}
    for e, n in enumerate(LENGTHS):
        state = rng.normal(size=(n, 3)).astype(np.float32)
        action = rng.uniform(-90, 90, (n, 2)).astype(np.float32)
        action[0], action[1] = (-90, 90), (90, -90)
        images = np.stack([scene(t, e) for t in range(n)])
        for t in range(n):
            last = t == n - 1 and e != 1
            ds.add_frame({"observation.images.top": images[t], "observation.state": state[t], "action": action[t],
                          "next.reward": np.array([1.0 if last else 0.0], np.float32), "next.done": np.array([last]),
                          "task": ["pick the cube", "stack the cube"][e % 2]})
        ds.save_episode()
        expected.update({f"state_{e}": state, f"action_{e}": action, f"images_{e}": images})
    ds.finalize()
    np.savez(root.rstrip("/") + ".expected.npz", **expected)
    print(f"lerobot {lerobot.__version__} wrote {len(LENGTHS)} episodes ({sum(LENGTHS)} frames) to {root}")
    return 0


def compare_import(imported: str, expected_npz: str) -> int:
    """Compare `import-lerobot` of a --write-lerobot folder (crop=center, 64 px) with what was fed."""
    from robot_calql.calibration.crop import centered_square, crop_and_resize

    ds, exp, failures = Dataset(imported), np.load(expected_npz), []
    ds.verify()
    maes = []
    for e, ep in enumerate(ds):
        n = LENGTHS[e]
        if len(ep) != n - 1:
            failures.append(f"episode {e}: {len(ep)} steps, expected {n - 1}")
            continue
        if not np.array_equal(ep.proprio, exp[f"state_{e}"]):
            failures.append(f"episode {e}: proprio")
        if not np.allclose(ep.action, exp[f"action_{e}"][:-1] / 90.0, atol=1e-6):
            failures.append(f"episode {e}: action scaling")
        if bool(ep.terminal[-1]) != (e != 1) or float(ep.reward.sum()) != float(e != 1):
            failures.append(f"episode {e}: terminal/reward {ep.terminal[-1]} {ep.reward.sum()}")
        if ep.instruction != ["pick the cube", "stack the cube"][e % 2]:
            failures.append(f"episode {e}: instruction {ep.instruction!r}")
        want = np.stack([crop_and_resize(img, centered_square(128, 96), ep.image.shape[1]) for img in exp[f"images_{e}"]])
        maes.append(float(np.abs(want.astype(int) - ep.image.astype(int)).mean()))
    print(f"import of LeRobot's own recording: {len(ds)} episodes, {ds.num_steps} steps; state, actions "
          f"(degrees / 90), rewards, terminals, instructions: {'all as recorded' if not failures else failures}; "
          f"images vs the recorded frames after the same crop and resize: mean abs error {np.mean(maes):.2f}")
    return 1 if failures or len(ds) != len(LENGTHS) or np.mean(maes) > 6.0 else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ours", help="the robot_calql dataset that was exported")
    ap.add_argument("--export", help="the export-lerobot output folder")
    ap.add_argument("--camera", default="observation.images.front")
    ap.add_argument("--backend", default=None, help="LeRobot video backend (default: LeRobot's own choice)")
    ap.add_argument("--write-lerobot", help="record a small dataset here with LeRobot's own writer")
    ap.add_argument("--compare-import", help="a robot_calql import of a --write-lerobot folder")
    ap.add_argument("--expected", help="the .expected.npz that --write-lerobot saved")
    args = ap.parse_args()
    if args.write_lerobot:
        return write_lerobot(args.write_lerobot)
    if args.compare_import:
        return compare_import(args.compare_import, args.expected)
    if not (args.ours and args.export):
        ap.error("give --ours and --export (or --write-lerobot / --compare-import)")

    import lerobot
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ours = Dataset(args.ours)
    t0 = time.time()
    lr = LeRobotDataset("local/robot_calql_export", root=args.export, video_backend=args.backend)
    print(f"lerobot {lerobot.__version__}: LeRobotDataset opened in {time.time() - t0:.2f}s, video backend "
          f"{lr.video_backend}")
    print(f"  codebase_version {lr.meta.info['codebase_version']}, fps {lr.fps}, robot_type {lr.meta.robot_type}, "
          f"{lr.num_episodes} episodes, {lr.num_frames} frames")
    feats = ", ".join(f"{k} {v['dtype']}{list(v['shape'])}" for k, v in lr.features.items())
    print(f"  features: {feats}")
    print(f"  tasks: {list(lr.meta.tasks.index)}; stats for {sorted(lr.meta.stats)}")
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            failures.append(what)

    check(lr.num_episodes == len(ours), f"episodes {lr.num_episodes} != {len(ours)}")
    check(lr.num_frames == ours.num_steps + len(ours), f"frames {lr.num_frames} != {ours.num_steps + len(ours)}")
    t0 = time.time()
    i, maes = 0, []
    for e, ep in enumerate(ours):
        T = len(ep)
        bounds = (int(lr.meta.episodes[e]["dataset_from_index"]), int(lr.meta.episodes[e]["dataset_to_index"]))
        check(bounds == (i, i + T + 1), f"episode {e}: bounds {bounds} != {(i, i + T + 1)}")
        for t in range(T + 1):
            item = lr[i]
            a = min(t, T - 1)
            check(int(item["episode_index"]) == e and int(item["frame_index"]) == t, f"frame {i}: indices")
            check(np.array_equal(item["observation.state"].numpy(), ep.proprio[t]), f"frame {i}: observation.state")
            check(np.array_equal(item["action"].numpy(), ep.action[a]), f"frame {i}: action")
            r = float(ep.reward[t]) if t < T else 0.0
            check(float(item["next.reward"]) == r, f"frame {i}: next.reward {float(item['next.reward'])} != {r}")
            check(bool(item["next.done"]) == bool(ep.terminal[a]), f"frame {i}: next.done")
            check(item["task"] == ep.instruction, f"frame {i}: task {item['task']!r}")
            img = (item[args.camera].numpy().transpose(1, 2, 0) * 255.0).round()
            check(img.shape == ep.image[t].shape, f"frame {i}: image shape {img.shape}")
            maes.append(float(np.abs(img - ep.image[t].astype(np.float64)).mean()))
            i += 1
    dt = time.time() - t0
    print(f"read all {i} frames through __getitem__ in {dt:.1f}s ({1000 * dt / max(i, 1):.1f} ms/frame)")
    print(f"  state, action, next.reward, next.done, indices, tasks: "
          f"{'all equal to the source' if not failures else f'{len(failures)} mismatches'}")
    print(f"  camera frames vs the source images: mean abs error {np.mean(maes):.2f} grey levels "
          f"(worst frame {np.max(maes):.2f})")
    check(np.mean(maes) < 6.0, f"image error {np.mean(maes):.2f}")

    # an action chunk over the end of episode 0: LeRobot pads past the last frame
    fps = lr.fps
    chunk = LeRobotDataset("local/robot_calql_export", root=args.export, video_backend=args.backend,
                           delta_timestamps={"action": [k / fps for k in range(5)], args.camera: [-1 / fps, 0.0]})
    T0 = len(ours[0])
    item = chunk[T0 - 2]
    pad = item["action_is_pad"].tolist()
    print(f"  delta_timestamps: action chunk at frame {T0 - 2} of episode 0 ({T0 + 1} frames) has shape "
          f"{tuple(item['action'].shape)}, action_is_pad {pad}; images {tuple(item[args.camera].shape)}")
    check(pad == [False, False, False, True, True], f"action_is_pad {pad}")
    if failures:
        print("FAILED:", *failures[:20], sep="\n  ")
        return 1
    print("LeRobot's loader read the export: every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
