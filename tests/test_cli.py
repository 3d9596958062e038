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


def _config_name(command: str) -> str:
    return "launch_finetune" if command == "launch" else command.replace("-", "_")


def test_version_prints_the_package_version(capsys):
    from robot_calql import __version__

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"robot-calql {__version__}"


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_help_lists_every_key_with_a_one_line_description(command, capsys):
    """`robot-calql <command> --help`: every key of the command's config (and every config group)
    on one line with its default and the comment on its line in the YAML; a key without a
    comment fails here, so new keys get documented."""
    from omegaconf import OmegaConf

    from robot_calql.config import describe

    argv = [command, "finetune", "--help"] if command == "launch" else [command, "--help"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    docs = describe(_config_name(command))
    undocumented = [d.key for d in docs if not d.doc.strip()]
    assert not undocumented, f"configs/{_config_name(command)}.yaml: add a comment on the line of {undocumented}"
    lines = out.splitlines()
    for d in docs:
        (line,) = [ln for ln in lines if ln.strip().startswith(f"{d.key}={d.default}")]
        assert line.rstrip().endswith(d.doc) and "\n" not in d.doc
    # every key of the composed config is listed, or belongs to a listed config group
    listed = {d.key for d in docs}
    cfg = OmegaConf.to_container(compose(_config_name(command)), resolve=False)
    for key in cfg:
        assert key in listed or any(k.startswith(f"{key}.") for k in listed), key


def test_launch_help_needs_no_node_set(capsys):
    assert cli.main(["launch", "--help"]) == 0
    out = capsys.readouterr().out
    assert "node sets: finetune" in out and "learner.batch_size=256" in out and "robot=sim_standin" in out


def test_launch_names_an_unknown_node_set(capsys):
    assert cli.main(["launch", "fly", "sim=true"]) == 2
    assert "unknown node set 'fly' (known: finetune)" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["pretrain", "steps=abc"], "steps=abc: steps expects an integer (default: 20000)"),
    (["pretrain", "steps=2.5"], "steps expects an integer"),
    (["pretrain", "agent.discount=abc"], "agent.discount=abc: agent.discount expects a number (default: 0.99)"),
    (["finetune", "+agent.discount=abc"], "agent.discount expects a number (default: 0.99)"),  # a CalQLConfig field
    (["finetune", "resume=maybe"], "resume expects true or false"),
    (["collect", "prior_tasks=cube_left"], "prior_tasks expects a list"),
    (["launch", "finetune", "learner.batch_size=[1,2]"], "learner.batch_size expects an integer"),
])
def test_a_value_of_the_wrong_type_names_the_key_and_type(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_values_of_the_right_type_pass():
    assert compose("pretrain", ["steps=5", "agent.policy_lr=1e-3", "agent.discount=1"]).agent.discount == 1
    assert list(compose("finetune", ["explore_temperature=[0,0,0,0,1]"]).explore_temperature) == [0, 0, 0, 0, 1]
    assert compose("launch_finetune", ["duration_s=2.5", "checkpoint=runs/pre"]).duration_s == 2.5  # seconds
    assert compose("collect", ["prior_tasks=[cube_left]", "out=null", "task=cube_bowl"]).prior_tasks == ["cube_left"]
    assert compose("ingest", ["bags=x", "out=y", "robot.bag_topics.ee_pose=null"]).robot.bag_topics.ee_pose is None
    assert compose("finetune", ["+agent.max_target_backup=false"]).agent.max_target_backup is False


def test_a_type_error_from_the_shell_is_one_line_without_a_traceback():
    r = subprocess.run([sys.executable, "-m", "robot_calql.cli", "pretrain", "agent.discount=abc"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == ("robot-calql pretrain: agent.discount=abc: agent.discount expects a number "
                                "(default: 0.99)")


def test_yaml_comments_reads_the_comment_on_each_key_line(tmp_path):
    from robot_calql.config import yaml_comments

    f = tmp_path / "c.yaml"
    f.write_text(
        "# header\n"
        "defaults:\n"
        "  - robot: sim_standin   # the cell\n"
        "  - _self_\n"
        "\n"
        "name: 'a # b'   # quoted hash kept\n"
        "url: http://x/#frag\n"
        "long: 1         # first line\n"
        "                # and its continuation\n"
        "# a section comment\n"
        "block:\n"
        "  inner: 2      # nested\n"
    )
    keys, groups = yaml_comments(f)
    assert groups == {"robot": ("sim_standin", "the cell")}
    assert keys == {"name": "quoted hash kept", "url": "", "long": "first line and its continuation",
                    "block": "", "block.inner": "nested"}
