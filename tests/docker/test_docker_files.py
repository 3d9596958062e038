"""The Dockerfiles and compose file parse, copy what exists, and run commands that exist.

There is no Docker engine here, so this is the check: a small Dockerfile line parser, yaml for
compose, and the repository tree.
"""

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from robot_calql import cli

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = ["Dockerfile.robot", "Dockerfile.learner"]


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs; comments dropped, backslash continuations joined."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1].rstrip() + " "
            continue
        full = (buf + s).strip()
        buf = ""
        instr, _, args = full.partition(" ")
        out.append((instr.upper(), args.strip()))
    assert not buf, f"{path.name} ends inside a continued line"
    return out


def exec_form(args: str) -> list[str]:
    """CMD/ENTRYPOINT arguments: JSON exec form, else shell words."""
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def check_command(argv: list[str]) -> None:
    """A command a container runs names a launch file, ROS executable or CLI command that exists."""
    setup_py = (ROOT / "ros_nodes" / "setup.py").read_text()
    package = re.search(r"<name>(.*?)</name>", (ROOT / "ros_nodes" / "package.xml").read_text()).group(1)
    if argv[:2] == ["ros2", "launch"]:
        assert argv[2] == package, argv
        assert (ROOT / "ros_nodes" / "launch" / argv[3]).is_file(), argv[3]
        assert "launch/*.launch.py" in setup_py  # the launch file is installed by colcon
    elif argv[:2] == ["ros2", "run"]:
        assert argv[2] == package
        nodes = re.search(r"NODES = \[(.*?)\]", setup_py).group(1)
        assert f'"{argv[3]}"' in nodes, argv[3]
    elif argv[0] == "robot-calql":
        assert argv[1] in cli.COMMANDS
    else:
        pytest.fail(f"unexpected command {argv}")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile(name):
    steps = parse_dockerfile(DOCKER / name)
    instrs = [i for i, _ in steps]
    known = {"FROM", "RUN", "COPY", "ADD", "ENV", "WORKDIR", "CMD", "ENTRYPOINT", "ARG", "LABEL",
             "EXPOSE", "USER", "VOLUME", "SHELL", "HEALTHCHECK"}
    assert set(instrs) <= known, set(instrs) - known
    assert instrs[0] == "FROM"
    for instr, args in steps:
        if instr == "FROM":
            image = args.split()[0]
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image} by tag"
        if instr in ("COPY", "ADD"):
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            assert "--from" not in args
            for src in words[:-1]:
                assert (ROOT / src).exists(), f"{name}: COPY source {src} not in the repository"
    env = " ".join(a for i, a in steps if i == "ENV")
    assert "MUJOCO_GL=egl" in env
    cmd = [a for i, a in steps if i == "CMD"]
    assert len(cmd) == 1
    check_command(exec_form(cmd[0]))
    entry = [a for i, a in steps if i == "ENTRYPOINT"]
    if entry:
        script = exec_form(entry[0])[0]
        copied = [shlex.split(a) for i, a in steps if i == "COPY"]
        src = [c[0] for c in copied if c[-1] == script]
        assert src and (ROOT / src[0]).is_file(), f"{name}: entrypoint {script} is not copied in"
    # the project is installed and the ROS package built
    runs = " ".join(a for i, a in steps if i == "RUN")
    assert "pip install" in runs and "-e ." in runs
    assert "colcon build" in runs


def test_robot_image_defaults_to_the_finetune_launch():
    steps = parse_dockerfile(DOCKER / "Dockerfile.robot")
    cmd = exec_form([a for i, a in steps if i == "CMD"][0])
    assert cmd == ["ros2", "launch", "robot_calql", "finetune.launch.py"]
    assert any(a.startswith("ros:") for i, a in steps if i == "FROM")


def test_learner_image_uses_cuda_torch():
    runs = " ".join(a for i, a in parse_dockerfile(DOCKER / "Dockerfile.learner") if i == "RUN")
    assert re.search(r"download\.pytorch\.org/whl/cu\d+", runs)


def test_compose_starts_both_services():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"robot", "learner"}
    dockerfiles = set()
    for name, svc in services.items():
        ctx = (DOCKER / svc["build"]["context"]).resolve()
        assert ctx == ROOT, f"{name}: build context must be the repository root"
        assert (ctx / svc["build"]["dockerfile"]).is_file()
        dockerfiles.add(svc["build"]["dockerfile"])
        assert svc["network_mode"] == "host"   # DDS discovery between the containers
        assert svc["environment"]["MUJOCO_GL"] == "egl"
        mounts = {v.split(":")[1] for v in svc["volumes"]}
        assert {"/opt/robot_calql/data", "/opt/robot_calql/runs", "/opt/robot_calql/calibration"} <= mounts
        for v in svc["volumes"]:
            host = (DOCKER / v.split(":")[0]).resolve()
            assert host.parent == ROOT, f"{name}: volume {v} outside the repository"
        check_command(svc["command"])
    assert dockerfiles == {"docker/Dockerfile.robot", "docker/Dockerfile.learner"}
    gpu = services["learner"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert "gpu" in gpu["capabilities"]
    # the robot runs every node but the learner, the learner only the learner
    assert "learner" not in " ".join(services["robot"]["command"]).split("nodes=")[1]
    assert "nodes=[learner]" in " ".join(services["learner"]["command"])


def test_dockerignore_keeps_what_the_images_copy():
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for name in DOCKERFILES:
        for instr, args in parse_dockerfile(DOCKER / name):
            if instr == "COPY":
                for src in shlex.split(args)[:-1]:
                    top = src.rstrip("/").split("/")[0]
                    assert top not in ignored, f"{src} is copied but .dockerignore drops it"
    assert ".venv" in ignored and ".git" in ignored


def test_parser_sees_continuations(tmp_path):
    f = tmp_path / "Dockerfile"
    f.write_text("FROM a:1\n# c\nRUN x \\\n    && y\nCMD [\"b\"]\n")
    assert parse_dockerfile(f) == [("FROM", "a:1"), ("RUN", "x && y"), ("CMD", '["b"]')]


def test_compose_overrides_give_the_intended_node_sets():
    """The `overrides:=` of each service compose (hydra) into the node set it should run."""
    nodeset = pytest.importorskip("robot_calql_ros.nodeset")
    from robot_calql.config import compose

    services = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    got = {}
    for name, svc in services.items():
        args = dict(a.split(":=", 1) for a in svc["command"][4:])
        overrides = [f"sim={args.get('sim', 'true')}"] + args.get("overrides", "").split()
        got[name] = sorted(s.name for s in nodeset.node_set(compose("launch_finetune", overrides)))
    assert got["learner"] == ["learner"]
    assert "learner" not in got["robot"] and {"policy", "safety", "sim_robot"} <= set(got["robot"])
