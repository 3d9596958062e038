"""The README's "Commands" table, run top to bottom as written, with tiny sizes appended.

Every row runs through the real entry point in a fresh folder, so the relative paths of the table
(data/demos, runs/pre, ...) connect one row to the next exactly as they do for a user. Inputs a
user brings (board pictures, a camera frame, a teach-in bag, held-out episodes, recordings of
their own arm) are made by the project's own generators; the row that needs a ROS 2 graph is
only composed (`--cfg`): tests/ros and the demo smoke test run it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from pathlib import Path

import cv2
import numpy as np

from robot_calql.cli import COMMANDS, main
from robot_calql.config import REPO_ROOT

README = Path(__file__).resolve().parents[2] / "README.md"
QUIET = ["progress=false"]
TINY_AGENT = ["agent.actor_hidden=[16,16]", "agent.critic_hidden=[16,16]"]

# appended to each documented command: tiny sizes (later overrides win)
TINY: dict[str, list[str]] = {
    "demo": ["experiment=demo_smoke", "ros_session_s=0", "threads=1"],
    "collect": ["episodes=3"],
    "export-lerobot": [],
    "import-lerobot": [],
    "sim-to-bag": ["episodes=1", "max_episode_steps=10", "camera_size=64"],
    # the documented example reads recordings of a WidowX 250: here the stand-in's bags from sim-to-bag
    "ingest": ["bags=bags/sim", "robot=sim_standin", *QUIET],
    "pretrain": ["steps=4", "batch_size=8", "log_every=2", "tensorboard=false", *TINY_AGENT, *QUIET],
    "finetune": ["steps=6", "batch_size=8", "eval_every=6", "eval_episodes=1", "max_episode_steps=5",
                 "log_every=3", "tensorboard=false", *QUIET],
    "evaluate": ["episodes=2", "max_episode_steps=5", "frame_size=32", *QUIET],
    "reward-train": ["train.steps=3", "train.batch_size=8", "cnn.channels=8", "cnn.feature_dim=16"],
    "reward-eval": [],
    "exploit": ["steps=4", "batch_size=8", "eval_episodes=1", "max_episode_steps=5", "log_every=2",
                "tensorboard=false", *TINY_AGENT, *QUIET],
    "launch": ["--cfg"],  # a ROS 2 graph: composed only (tests/ros run it)
    "calibrate-camera": [],
    # the documented bag is the user's teach-in recording: here the stand-in's bag from sim-to-bag
    "calibrate-workspace": ["bag=bags/sim"],
    "calibrate-crop": [],
}
# what each row must leave behind (relative to the folder the table runs in)
PRODUCES: dict[str, str] = {
    "demo": "runs/demo/demo_summary.json",
    "collect": "data/demos",
    "export-lerobot": "data/demos_lerobot/meta/info.json",
    "import-lerobot": "data/from_lerobot",
    "sim-to-bag": "bags/sim/metadata.yaml",
    "ingest": "data/real",
    "pretrain": "runs/pre/summary.json",
    "finetune": "runs/finetune/summary.json",
    "evaluate": "runs/eval/evaluation.json",
    "reward-train": "runs/reward",
    "reward-eval": "runs/reward/eval",
    "exploit": "runs/exploit/summary.json",
    "calibrate-camera": "calibration/sim_standin/camera_info.yaml",
    "calibrate-workspace": "calibration/sim_standin/workspace.yaml",
    "calibrate-crop": "calibration/sim_standin/crop.yaml",
}


def readme_commands() -> list[list[str]]:
    """The command of each row of the README's "Commands" table, split as a shell would."""
    section = README.read_text().split("\n## Commands", 1)[1].split("\n## ", 1)[0]
    return [shlex.split(m) for m in re.findall(r"^\| `(robot-calql [^`]+)` \|", section, re.M)]


def _user_inputs(root: Path) -> None:
    """What a user brings to the table: board pictures, a camera frame, held-out episodes, and an
    empty calibration folder for the cell (the robot config's `calibration:`) to write into."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("board_synthetic", Path(__file__).parents[1] / "calibration/synthetic.py")
    synthetic = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(synthetic)
    (root / "calib").mkdir()
    images, _, _ = synthetic.checkerboard_views(n_views=6, seed=0)
    for i, img in enumerate(images):
        cv2.imwrite(str(root / "calib" / f"board_{i:02d}.png"), img)
    from robot_calql.sim import make_env

    env = make_env("cube_in_bowl", image_size=128, seed=0)
    obs, _ = env.reset()
    cv2.imwrite(str(root / "frame.png"), cv2.cvtColor(obs["image"], cv2.COLOR_RGB2BGR))
    env.close()
    (root / "calibration" / "sim_standin").mkdir(parents=True)  # a new cell's calibration folder
    assert main(["collect", "task=cube_bowl", "episodes=1", "seed=1000",
                 "out=data/heldout"]) == 0


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_readme_table_lists_known_commands_with_documented_keys():
    rows = readme_commands()
    names = [r[1] for r in rows]
    assert len(rows) >= 10 and set(names) <= set(COMMANDS), names
    assert set(names) == set(TINY), "a new README row needs its tiny sizes in TINY"


def test_readme_commands_run_top_to_bottom(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _user_inputs(tmp_path)
    repo_calibration = _digest(REPO_ROOT / "calibration" / "sim_standin")
    for row in readme_commands():
        name = row[1]
        argv = [*row[1:], *TINY[name]]
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 0, f"`{' '.join(row)}` (+ {' '.join(TINY[name])}) exited {rc}:\n{err[-3000:]}"
        if name in PRODUCES:
            assert (tmp_path / PRODUCES[name]).exists(), f"`{' '.join(row)}` left no {PRODUCES[name]}"
    # the rows connect: evaluate scored the fine-tuned run that the pre-trained run started
    summary = json.loads((tmp_path / "runs/finetune/summary.json").read_text())
    assert summary["steps"] == 6
    assert np.isfinite(json.loads((tmp_path / "runs/eval/evaluation.json").read_text())["success_rate"])
    # the calibration rows wrote into the user's folder, never into the repository's
    assert _digest(REPO_ROOT / "calibration" / "sim_standin") == repo_calibration


def test_finetune_of_a_one_direction_checkpoint_names_the_fix(tmp_path, capsys):
    """Reset-free fine-tuning practises the backward task too: a checkpoint pre-trained on the
    forward task alone gets an error that says how to collect both directions (or switch it off)."""
    data, pre = tmp_path / "data", tmp_path / "pre"
    assert main(["collect", "task=cube_in_bowl", "episodes=1", "image_size=0", "max_episode_steps=10", f"out={data}"]) == 0
    assert main(["pretrain", f"dataset={data}", f"out={pre}", "steps=2", "batch_size=8", "tensorboard=false",
                 *TINY_AGENT, *QUIET]) == 0
    capsys.readouterr()
    assert main(["finetune", f"checkpoint={pre}", f"out={tmp_path / 'ft'}", "steps=2", "eval_every=0",
                 "eval_episodes=1", "batch_size=8", "tensorboard=false", *QUIET]) == 1
    err = capsys.readouterr().err
    assert "cube_out_of_bowl" in err and "collect task=cube_bowl" in err and "backward=false" in err
    assert main(["finetune", f"checkpoint={pre}", f"out={tmp_path / 'ft'}", "steps=2", "eval_every=0",
                 "eval_episodes=1", "batch_size=8", "tensorboard=false", "backward=false", *QUIET]) == 0
    # a run that exists is not deleted by an overwrite=true whose settings then fail
    ckpts = sorted((tmp_path / "ft" / "checkpoints").glob("step_*"))
    assert ckpts
    capsys.readouterr()
    assert main(["finetune", f"checkpoint={pre}", f"out={tmp_path / 'ft'}", "steps=2", "eval_every=0",
                 "eval_episodes=1", "batch_size=8", "tensorboard=false", "overwrite=true", *QUIET]) == 1
    assert "backward=false" in capsys.readouterr().err
    assert sorted((tmp_path / "ft" / "checkpoints").glob("step_*")) == ckpts
