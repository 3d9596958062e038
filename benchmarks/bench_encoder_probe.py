"""How well a pixel checkpoint's CNN locates the cube: a linear probe on its image latents.

A pixel agent never sees the simulator's state, so what it knows about the cube is what its
CNN's latent carries. This fits a ridge regression from the latent of each camera frame to
the cube's position and yaw (the stand-in's hidden state, stored beside the frames by
`robot-calql collect`) on most episodes of a dataset, and reports the error on the held-out
episodes: median and 90th percentile of the xy and z error in mm, of the yaw error in degrees
(the cube looks the same every 90 degrees, so yaw is fitted as sin/cos of 4*yaw), and of the
cube's xy relative to the gripper ("hand xy", what a grasp needs) in mm.

A lower error here is a necessary condition for grasping from pixels, not a sufficient one;
success on fresh placements is what decides (docs/training.md).

    .venv/bin/python benchmarks/bench_encoder_probe.py --checkpoint runs/demo/pretrain --data runs/demo/data
    .venv/bin/python benchmarks/bench_encoder_probe.py --checkpoint A/pretrain B/pretrain \\
        --data A/data B/data --json runs/probe.json      # pairs: checkpoint i on dataset i

Only the CNN is probed (frozen or trained end to end), on every camera the checkpoint sees (a
wrist camera's latent beside the front one's); the proprio and instruction parts of the
observation are not in the regression.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def latents(agent, frames: dict[str, np.ndarray]) -> np.ndarray:
    """The CNN's latents of one episode's uint8 (N, H, W, 3) frames of every camera the agent sees
    ({observation key: frames}), concatenated main camera first, in fp32 and without augmentation
    (robot_calql.agent.encoders.FrameEncoder, frozen or not)."""
    from robot_calql.agent.encoders import FrameEncoder

    if agent.encoder.cnn is None:
        raise SystemExit("the checkpoint is not a pixel agent (obs=state has no CNN to probe)")
    return FrameEncoder(agent.encoder, frozen_only=False)(frames)


def cube_targets(state: np.ndarray, proprio_dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cube xyz (N, 3) in m, yaw (N,) in rad (folded, as the cube is 90-degree symmetric) and the
    cube's xy relative to the gripper (N, 2) in m, from the stand-in's state vectors
    (robot_calql.sim.env.StateLayout of the dataset's arm)."""
    from robot_calql.sim.demonstrators import cube_yaw
    from robot_calql.sim.env import STANDIN_LAYOUT, StateLayout

    lay = StateLayout(proprio_dim - (STANDIN_LAYOUT.proprio_dim - STANDIN_LAYOUT.n_joints))
    yaw = np.array([cube_yaw(q) for q in state[:, lay.cube_quat]])
    return state[:, lay.cube], yaw, state[:, lay.cube_rel][:, :2]


def _design(x: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Standardised features and a bias column."""
    return np.hstack([(x - mu) / sd, np.ones((len(x), 1))])


def ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge regression on standardised features: (mean, std, weights incl. bias row)."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = _design(x, mu, sd)
    reg = lam * np.eye(z.shape[1])
    reg[-1, -1] = 0.0
    return mu, sd, np.linalg.solve(z.T @ z + reg, z.T @ y)


def predict(model: tuple[np.ndarray, np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    return _design(x, model[0], model[1]) @ model[2]


def probe(checkpoint: str, data: str, holdout: float, lam: float, seed: int) -> dict:
    from robot_calql.data.dataset import Dataset
    from robot_calql.train import checkpoint as ckpt
    from robot_calql.train.common import agent_from_meta

    state = ckpt.load_checkpoint(checkpoint)
    meta = state["meta"]
    agent = agent_from_meta(meta)
    agent.load_state_dict(state["agent_state"])
    ds = Dataset(data)
    if ds.meta.state_dim is None or ds.meta.image_shape is None:
        raise SystemExit(f"{data}: the probe needs episodes with both 'image' and 'state' (robot-calql collect)")
    proprio_dim = int(ds.meta.proprio_dim)
    n_eps = len(ds)
    order = np.random.default_rng(seed).permutation(n_eps)
    test_eps = set(order[: max(1, round(holdout * n_eps))].tolist())
    parts: dict[str, list] = {"train": [], "test": []}
    for i in range(n_eps):
        ep = ds[i]
        frames = {k: np.asarray(ep.obs(k)) for k in agent.encoder.image_keys}  # each camera read once
        for k, f in frames.items():
            if tuple(f.shape[1:]) != tuple(meta["obs_spec"]["image"]):
                raise SystemExit(f"{data}: '{k}' frames are {f.shape[1:]}, the checkpoint expects {meta['obs_spec']['image']}")
        xyz, yaw, hand = cube_targets(np.asarray(ep.obs("state"), dtype=np.float64), proprio_dim)
        z = latents(agent, frames)
        parts["test" if i in test_eps else "train"].append((z, xyz, yaw, hand))
    cat = {k: [np.concatenate([p[j] for p in v]) for j in range(4)] for k, v in parts.items()}
    (ztr, xyztr, yawtr, handtr), (zte, xyzte, yawte, handte) = cat["train"], cat["test"]
    # columns: xyz, sin/cos of 4*yaw, the cube's xy relative to the gripper
    targets = lambda xyz, yaw, hand: np.hstack([xyz, np.sin(4 * yaw)[:, None], np.cos(4 * yaw)[:, None], hand])  # noqa: E731
    model = ridge(ztr, targets(xyztr, yawtr, handtr), lam)
    out = {"checkpoint": str(checkpoint), "data": str(data), "image_shape": list(meta["obs_spec"]["image"]),
           "latent_dim": int(ztr.shape[1]), "train_frames": int(len(ztr)), "test_frames": int(len(zte)),
           "test_episodes": len(test_eps)}
    for split, z, xyz, yaw, hand in (("train", ztr, xyztr, yawtr, handtr), ("test", zte, xyzte, yawte, handte)):
        p = predict(model, z)
        exy = np.linalg.norm(p[:, :2] - xyz[:, :2], axis=1) * 1000
        ez = np.abs(p[:, 2] - xyz[:, 2]) * 1000
        dyaw = np.angle(np.exp(1j * (np.arctan2(p[:, 3], p[:, 4]) - 4 * yaw))) / 4
        eyaw = np.degrees(np.abs(dyaw))
        ehand = np.linalg.norm(p[:, 5:7] - hand, axis=1) * 1000
        out[split] = {name: {"median": float(np.median(e)), "p90": float(np.percentile(e, 90))}
                      for name, e in (("xy_mm", exy), ("z_mm", ez), ("yaw_deg", eyaw), ("hand_xy_mm", ehand))}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", nargs="+", required=True, help="pixel run or checkpoint folder(s)")
    ap.add_argument("--data", nargs="+", required=True, help="dataset folder(s), one per checkpoint or one for all")
    ap.add_argument("--holdout", type=float, default=0.2, help="share of episodes held out (default 0.2)")
    ap.add_argument("--ridge", type=float, default=1.0, help="ridge penalty on standardised latents (default 1.0)")
    ap.add_argument("--seed", type=int, default=0, help="which episodes are held out")
    ap.add_argument("--json", default=None, help="also write the figures here")
    a = ap.parse_args(argv)
    if len(a.data) not in (1, len(a.checkpoint)):
        ap.error("--data takes one folder, or one per --checkpoint")
    if not 0 < a.holdout < 1:
        ap.error("--holdout must be in (0, 1)")
    import torch

    torch.set_num_threads(1)
    datas = a.data * len(a.checkpoint) if len(a.data) == 1 else a.data
    rows = [probe(c, d, a.holdout, a.ridge, a.seed) for c, d in zip(a.checkpoint, datas, strict=True)]
    print("held-out episodes: median / p90 error of a linear probe on the CNN latent")
    print(f"{'checkpoint':<40} {'image':>9} {'latent':>6} {'xy mm':>13} {'z mm':>11} {'yaw deg':>11} {'hand xy mm':>13}")
    for r in rows:
        t = r["test"]
        h, w = r["image_shape"][:2]
        print(f"{r['checkpoint'][-40:]:<40} {f'{h}x{w}':>9} {r['latent_dim']:>6} "
              f"{t['xy_mm']['median']:>6.1f} /{t['xy_mm']['p90']:>5.1f} {t['z_mm']['median']:>4.1f} /{t['z_mm']['p90']:>5.1f} "
              f"{t['yaw_deg']['median']:>4.1f} /{t['yaw_deg']['p90']:>5.1f} "
              f"{t['hand_xy_mm']['median']:>6.1f} /{t['hand_xy_mm']['p90']:>5.1f}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0 if all(math.isfinite(r["test"]["xy_mm"]["median"]) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
