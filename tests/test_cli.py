"""The `robot-calql` entry point: help, config composition, clear errors for bad overrides."""

import subprocess
import sys

import pytest

from robot_calql import cli
from robot_calql.config import CONFIG_DIR, ConfigError, compose


def test_help_lists_every_command_with_one_line(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, (_, help_) in cli.COMMANDS.items():
        assert f"  {name}" in out
        assert "\n" not in help_


def test_every_command_has_a_config_file():
    for name in cli.COMMANDS:
        if name == "launch":
            assert (CONFIG_DIR / "launch_finetune.yaml").is_file()
        else:
            assert (CONFIG_DIR / f"{name.replace('-', '_')}.yaml").is_file(), name


def test_unknown_command_is_an_error(capsys):
    assert cli.main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


def test_unknown_config_key_is_named(capsys):
    assert cli.main(["collect", "no_such_key=3"]) == 2
    err = capsys.readouterr().err
    assert "no_such_key" in err
    assert "known keys" in err


def test_a_required_key_left_unset_is_named(capsys):
    assert cli.main(["evaluate"]) == 2  # configs/evaluate.yaml: checkpoint: ???
    assert "checkpoint=<value> is required" in capsys.readouterr().err


def test_override_reaches_the_config():
    cfg = compose("collect", ["episodes=7", "seed=3"])
    assert cfg.episodes == 7 and cfg.seed == 3
    assert cfg.robot.name == "sim_standin"


def test_missing_config_is_a_config_error():
    with pytest.raises(ConfigError, match="no config"):
        compose("does_not_exist")


def test_cfg_flag_prints_composed_config(capsys):
    assert cli.main(["collect", "episodes=4", "--cfg"]) == 0
    assert "episodes: 4" in capsys.readouterr().out


def test_core_library_never_imports_rclpy():
    """Import every module of robot_calql in a fresh interpreter: rclpy must not be loaded."""
    code = (
        "import importlib, pkgutil, sys, robot_calql\n"
        "failed = []\n"
        "for m in pkgutil.walk_packages(robot_calql.__path__, 'robot_calql.'):\n"
        "    try:\n"
        "        importlib.import_module(m.name)\n"
        "    except ImportError as e:\n"
        "        failed.append((m.name, str(e)))\n"
        "bad = [m for m in sys.modules if m == 'rclpy' or m.startswith('rclpy.')]\n"
        "assert not bad, f'robot_calql imported rclpy: {bad[:3]}'\n"
        "print('modules that need an optional extra:', failed)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_finetune_reward_group_selects_the_reward_source():
    assert compose("finetune").reward_source == "sim"
    cfg = compose("finetune", ["reward=classifier", "classifier.path=/tmp/clf"])
    assert cfg.reward_source == "classifier" and cfg.classifier.path == "/tmp/clf"
    with pytest.raises(ConfigError, match="reward"):
        compose("finetune", ["reward=oracle"])
