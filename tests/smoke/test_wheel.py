"""A built (non-editable) wheel works on its own: configs, MuJoCo assets and every shipped
robot's calibration and model files (MJCF, URDF) are inside it, and the commands run from a folder outside the repository."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the sources (no stale build/ folder of the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("robot_calql", "configs", "calibration"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
          str(src)], cwd=tmp, env=dict(os.environ), timeout=300)
    (whl,) = (tmp / "dist").glob("robot_calql-*.whl")
    return whl


def test_wheel_holds_every_package_config_and_stand_in_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for init in (ROOT / "robot_calql").rglob("__init__.py"):  # pyproject.toml lists packages by hand
        assert init.relative_to(ROOT).as_posix() in names, f"{init.parent} is missing from pyproject's packages"
    for f in [*(ROOT / "configs").rglob("*.yaml"), *(ROOT / "calibration").glob("*/*.*")]:
        assert f"robot_calql/_data/{f.relative_to(ROOT).as_posix()}" in names, f
    assert "robot_calql/sim/assets/standin_cell.xml" in names
    # a data folder left out of the list still lands in the wheel today, with a setuptools warning
    # that it will not in a later version: every folder must be listed
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    for top in ("configs", "calibration"):
        for d in (ROOT / top).iterdir():
            if d.is_dir() and any(d.iterdir()):
                assert f"robot_calql._data.{top}.{d.name}" in listed, f"{d} is missing from pyproject's packages"
    version = re.search(r'__version__ = "(.+)"', (ROOT / "robot_calql/__init__.py").read_text())[1]
    assert wheel.name.startswith(f"robot_calql-{version}-")
    assert 'dynamic = ["version"]' in (ROOT / "pyproject.toml").read_text()  # one version: __version__


def test_installed_wheel_runs_outside_the_repository(wheel, tmp_path):
    site, work = tmp_path / "site", tmp_path / "work"
    work.mkdir()
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
         cwd=tmp_path, env=dict(os.environ))
    env = {k: v for k, v in os.environ.items() if k not in ("ROBOT_CALQL_CONFIGS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)  # before the checkout's editable install
    check = (
        "import robot_calql, gymnasium as gym\n"
        "from pathlib import Path\n"
        "from robot_calql.config import CONFIG_DIR, compose\n"
        "from robot_calql.calibration import calibration_dir\n"
        "from robot_calql.sim import ENV_ID\n"
        f"site = Path({str(site)!r})\n"
        "assert Path(robot_calql.__file__).is_relative_to(site), robot_calql.__file__\n"
        "assert CONFIG_DIR.is_relative_to(site), CONFIG_DIR\n"
        "cfg = compose('pretrain', ['steps=3'])\n"
        "assert cfg.steps == 3\n"
        "cell = calibration_dir(compose('collect').robot)\n"
        "assert cell.is_relative_to(site) and (cell / 'workspace.yaml').is_file(), cell\n"
        "env = gym.make(ENV_ID, image_size=64, max_episode_steps=5)\n"
        "obs, _ = env.reset(seed=0)\n"
        "assert obs['image'].shape == (64, 64, 3) and env.spec.max_episode_steps == 5\n"
        # every shipped robot: its config, its URDF kinematics and its MuJoCo cell from the wheel
        "import mujoco, numpy as np\n"
        "from robot_calql.robot_config import build_kinematics, load_robot_config, resolve_path\n"
        "from robot_calql.sim.kinematics import sim_arm\n"
        "for name in ('kestrel6', 'widowx250_example'):\n"
        "    node = compose('collect', [f'robot={name}']).robot\n"
        "    robot = load_robot_config(node)\n"
        "    assert resolve_path(robot.kinematics.urdf).is_relative_to(site), robot.kinematics.urdf\n"
        "    kin = build_kinematics(robot)\n"
        "    p, rot = kin.fk(np.zeros(len(robot.joints)))\n"
        "    assert p.shape == (3,) and np.all(np.isfinite(p)), (name, p)\n"
        "    assert calibration_dir(node).is_relative_to(site)\n"
        "arm = sim_arm('kestrel6')\n"
        "assert arm.mjcf.is_relative_to(site) and len(arm.arm_joints) == 6, arm\n"
        "assert mujoco.MjModel.from_xml_path(str(arm.mjcf)).njnt > 6\n"
    )
    _run([sys.executable, "-c", check], cwd=work, env=env)
    cli = [str(site / "bin" / "robot-calql")]  # the wheel's console script
    assert Path(cli[0]).is_file()
    assert _run([*cli, "--version"], cwd=work, env=env).stdout.strip() == f"robot-calql {wheel.name.split('-')[1]}"
    assert "steps=20000" in _run([*cli, "pretrain", "--help"], cwd=work, env=env).stdout
    _run([*cli, "collect", "task=cube_in_bowl", "episodes=1", "image_size=0", "max_episode_steps=5", "out=demos"],
         cwd=work, env=env)
    assert (work / "demos").is_dir()
    # ROBOT_CALQL_CONFIGS still points an installed package at other configs
    mine = tmp_path / "my_configs"
    shutil.copytree(site / "robot_calql" / "_data" / "configs", mine)
    (mine / "collect.yaml").write_text((mine / "collect.yaml").read_text().replace("episodes: 20 ", "episodes: 7 "))
    out = _run([*cli, "collect", "--cfg"], cwd=work, env={**env, "ROBOT_CALQL_CONFIGS": str(mine)}).stdout
    assert "episodes: 7" in out
