"""Imports go one way (docs/architecture.md, "Module map").

An AST walk over robot_calql/ and ros_nodes/robot_calql_ros/ finds every import, function-local
ones and `importlib.import_module("...")` with a literal name included, and checks:

- the core library (robot_calql) never imports the ROS package (robot_calql_ros) or rclpy;
- a core package imports only the packages its arrows reach in the module map (EDGES);
- a command's module (a module with a top-level `main`) does not import another command's module
  for a helper: shared code lives in a module that is not a command;
- a ROS node module imports, of the ROS package, only common, agent_io, nodeset and run.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"robot_calql": REPO / "robot_calql", "robot_calql_ros": REPO / "ros_nodes" / "robot_calql_ros"}
ROS_PREFIXES = ("robot_calql_ros", "rclpy")

# Core areas: a subpackage (robot_calql.<area>.*) or a top-level module (robot_calql.<area>).
# EDGES is the module map of docs/architecture.md: an area may import the areas its arrows
# reach, directly or through others, plus itself, config and the package root ("robot_calql",
# for __version__).
BASE = {"robot_calql", "config"}
EDGES: dict[str, set[str]] = {
    "robot_calql": set(),
    "config": set(),
    "ros_process": set(),  # starts robot_calql_ros modules as child processes, imports none
    "calibration": {"ros_process"},  # calibration files, their readers and the crop
    "data": {"calibration"},
    "agent": {"data"},
    "control": {"agent"},
    "reward": {"agent"},
    "sim": {"control"},
    "bags": {"sim"},
    "robot_config": {"sim"},  # the robot config schema; builds a robot's kinematics (stand-in or URDF)
    "train": {"bags", "reward"},
    "demo": {"train"},
    "cli": set(),  # finds each command's module by name in COMMANDS, at run time
}


def reachable(start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(EDGES[start])
    while todo:
        a = todo.pop()
        if a not in seen:
            seen.add(a)
            todo += EDGES[a]
    return seen


ALLOWED = {a: reachable(a) | BASE | {a} for a in EDGES}

# (importer, imported) pairs that are right by design: the demo runs these commands' main(cfg)
# as its stages, in its own process.
COMMANDS_RUN_BY_THE_DEMO = {
    ("robot_calql.demo", "robot_calql.train.pretrain"),
    ("robot_calql.demo", "robot_calql.train.finetune"),
    ("robot_calql.demo", "robot_calql.reward.train"),  # the success classifier (reward_source=classifier)
}

# Of the ROS package, a node module (*_node.py) may import only these.
NODE_MAY_IMPORT = {"robot_calql_ros.common", "robot_calql_ros.agent_io", "robot_calql_ros.nodeset",
                   "robot_calql_ros.run"}

@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    imported: str  # dotted module name (a submodule where `from pkg import mod` names one)
    where: str  # path:line

    def __str__(self) -> str:
        return f"{self.where}: {self.importer} imports {self.imported}"


def module_name(root: str, base: Path, path: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([root, *parts])


def imports_of(source: str, module: str, is_package: bool, where: str, modules: set[str]) -> list[Import]:
    """Every import in `source` (the module `module`), at any depth of the tree."""
    out: list[Import] = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for a in node.names:  # `from pkg import mod` imports the submodule pkg.mod
                sub = f"{base}.{a.name}"
                targets.append(sub if sub in modules else base)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in ("import_module", "__import__"):
                targets = [node.args[0].value]
        out += [Import(module, t, f"{where}:{node.lineno}") for t in dict.fromkeys(targets)]
    return out


def scan() -> tuple[list[Import], set[str], set[str]]:
    """(all imports of both packages, all module names, the modules with a top-level main)."""
    files: dict[str, Path] = {}
    for root, base in ROOTS.items():
        for path in sorted(base.rglob("*.py")):
            files[module_name(root, base, path)] = path
    modules = set(files)
    found: list[Import] = []
    entry_points: set[str] = set()
    for mod, path in files.items():
        src = path.read_text()
        found += imports_of(src, mod, path.name == "__init__.py", str(path.relative_to(REPO)), modules)
        if any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in ast.parse(src).body):
            entry_points.add(mod)
    return found, modules, entry_points


def area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def is_ros(name: str) -> bool:
    return name.split(".")[0] in ROS_PREFIXES


def is_core(name: str) -> bool:
    return name.split(".")[0] == "robot_calql"


def problem(imp: Import, entry_points: set[str]) -> str | None:
    """What is wrong with `imp`, or None."""
    src, dst = imp.importer, imp.imported
    if is_core(src) and is_ros(dst):
        return "the core library imports the ROS side"
    if is_core(src) and is_core(dst) and area(dst) not in ALLOWED[area(src)]:
        return f"{area(src)} may not import {area(dst)}"
    if is_core(src) and src in entry_points and dst in entry_points and src != dst \
            and (src, dst) not in COMMANDS_RUN_BY_THE_DEMO:
        return "a command's module imports another command's module"
    if src.endswith("_node") and dst.startswith("robot_calql_ros") and dst not in NODE_MAY_IMPORT:
        return "a ROS node imports a ROS module other than common, agent_io, nodeset, run"
    return None


def violations() -> list[tuple[Import, str]]:
    found, _, entry_points = scan()
    return [(imp, why) for imp in found if (why := problem(imp, entry_points))]


def test_every_core_area_is_in_the_table():
    _, modules, _ = scan()
    areas = {area(m) for m in modules if m.split(".")[0] == "robot_calql"}
    assert areas <= set(EDGES), f"add {sorted(areas - set(EDGES))} to EDGES (and to docs/architecture.md)"


def test_imports_go_one_way():
    bad = [f"{imp} ({why})" for imp, why in violations()]
    assert not bad, "imports against the layering (docs/architecture.md, Module map):\n" + "\n".join(bad)


def test_the_checker_sees_local_relative_and_by_name_imports():
    src = (
        "import os\n"
        "def f():\n"
        "    from robot_calql_ros.launcher import run_session\n"
        "    from ..agent import encoders\n"
        "    import importlib\n"
        "    importlib.import_module('rclpy')\n"
    )
    modules = {"robot_calql.data.replay", "robot_calql.agent", "robot_calql.agent.encoders"}
    got = {i.imported for i in imports_of(src, "robot_calql.data.replay", False, "x.py", modules)}
    assert {"robot_calql_ros.launcher", "robot_calql.agent.encoders", "rclpy"} <= got


@pytest.mark.ros
def test_demo_ros_stage_runs_in_a_child_process(tmp_path):
    """The demo's ROS 2 stage is `python -m robot_calql_ros.session`: nothing of the ROS package
    is imported into the demo's process, and a bad setting comes back as an error naming it."""
    pytest.importorskip("rclpy")
    from omegaconf import OmegaConf

    from robot_calql.demo import ros_session

    cfg = OmegaConf.create({"ros_session_s": 1.0, "batch_size": "abc", "obs": "state", "reward_source": "sim",
                           "robot": {"name": "sim_standin"}})
    loaded = set(sys.modules)
    with pytest.raises(ValueError, match="batch_size"):
        ros_session(cfg, tmp_path / "pretrain", tmp_path / "ros_session")
    assert not [m for m in set(sys.modules) - loaded if is_ros(m)]
