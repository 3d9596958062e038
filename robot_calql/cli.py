"""`robot-calql <command> key=value ...`: one entry point for every job.

Each command is `main(cfg) -> int | None` in the module named below, with its config in
configs/<command>.yaml. Modules are imported only when their command runs, so `--help` is fast
and a command that needs an optional extra (transformers, rclpy) fails only when used.
`robot-calql <command> --help` lists the command's keys with their defaults and the comment on
each key's line in its YAML; `robot-calql --version` prints the package version.
"""

from __future__ import annotations

import importlib
import logging
import sys

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("robot_calql.demo", "the whole pipeline in the MuJoCo stand-in: collect, pretrain, fine-tune, report"),
    "collect": ("robot_calql.sim.collect", "record scripted demonstrations in the stand-in: task=<name> episodes=<N> out=<dir>"),
    "pretrain": ("robot_calql.train.pretrain", "offline Cal-QL pre-training: dataset=<dir> out=<run> steps=<N>"),
    "finetune": ("robot_calql.train.finetune", "online Cal-QL fine-tuning: env=sim (or a gymnasium id) checkpoint=<run> steps=<N>"),
    "exploit": ("robot_calql.train.exploit", "OOO: a fresh pessimistic agent on a run's offline + online data, scored beside its online policy: run=<run>"),
    "evaluate": ("robot_calql.train.evaluate", "success rate and failure breakdown of a saved policy: checkpoint=<run>"),
    "ingest": ("robot_calql.bags.ingest", "rosbag2 (sqlite3/mcap) to dataset: bags=<path or glob> robot=<config> out=<dir>"),
    "import-lerobot": ("robot_calql.data.import_lerobot", "LeRobotDataset v3.0 folder to dataset: path=<dir> robot=<config> out=<dir>"),
    "export-lerobot": ("robot_calql.data.export_lerobot", "dataset to a LeRobotDataset v3.0 folder: dataset=<dir> out=<dir>"),
    "sim-to-bag": ("robot_calql.bags.sim_to_bag", "record stand-in episodes as a real rosbag2: task=<name> episodes=<N> out=<dir>"),
    "reward-train": ("robot_calql.reward.train", "train the success classifier: dataset=<dir> out=<dir> backbone=<name or path>"),
    "reward-eval": ("robot_calql.reward.evaluate", "evaluate a classifier: model=<dir> dataset=<dir>"),
    "launch": ("robot_calql_ros.launcher", "run a ROS 2 node set without the ros2 CLI: launch finetune sim=true"),
    "calibrate-camera": ("robot_calql.calibration.camera", "camera intrinsics from board images: images=<dir> board=<spec>"),
    "calibrate-workspace": ("robot_calql.calibration.workspace", "safety box from joint states (bag or live): bag=<path> out=<file>"),
    "calibrate-crop": ("robot_calql.calibration.calibrate_crop", "choose the policy camera's crop region from a frame: image=<file>"),
}


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = [
        "usage: robot-calql <command> [key=value ...]",
        "       robot-calql <command> --help     the command's keys, defaults and what each does",
        "       robot-calql --version",
        "",
        "Overrides use hydra's grammar (key=value, group=option, +new_key=value);",
        "`robot-calql <command> --cfg` prints the composed config.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def _node_sets() -> list[str]:
    """The node sets `robot-calql launch <set>` knows: configs/launch_<set>.yaml."""
    from robot_calql.config import CONFIG_DIR

    return sorted(p.stem[len("launch_"):] for p in CONFIG_DIR.glob("launch_*.yaml"))


def _keys_help(config_name: str) -> list[str]:
    """One line per config group and per key of configs/<config_name>.yaml."""
    from robot_calql.config import describe

    docs = describe(config_name)
    width = min(32, max(len(f"{d.key}={d.default}") for d in docs))
    lines = []
    for title, group in (("config groups (group=option):", True), ("keys (key=default):", False)):
        rows = [d for d in docs if d.group == group]
        if rows:
            lines += ["", title]
            lines += [f"  {f'{d.key}={d.default}':<{width}}  {'(required) ' if d.default == '???' else ''}{d.doc}"
                      for d in rows]
    return lines


def _command_help(name: str, config_name: str | None) -> str:
    """`robot-calql <command> --help`: what it does, its usage and every key with one line."""
    from robot_calql.config import CONFIG_DIR

    lines = [f"robot-calql {name}: {COMMANDS[name][1]}", ""]
    if name == "launch":
        lines.append("usage: robot-calql launch <node set> [key=value ...] [--cfg]")
        lines.append(f"node sets: {', '.join(_node_sets())} (configs/launch_<set>.yaml)")
    else:
        lines.append(f"usage: robot-calql {name} [key=value ...] [--cfg]")
    for cfg_name in [config_name] if config_name else [f"launch_{s}" for s in _node_sets()]:
        lines += ["", f"{CONFIG_DIR / (cfg_name + '.yaml')}:", *_keys_help(cfg_name)[1:]]
    return "\n".join(lines)


def _print(text: str) -> None:
    try:
        print(text)
    except BrokenPipeError:  # `robot-calql x --help | head`
        sys.stderr.close()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        _print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from robot_calql import __version__

        print(f"robot-calql {__version__}")
        return 0
    name, args = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"robot-calql: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(name)s: %(message)s")
    for noisy in ("OpenGL", "matplotlib", "PIL", "h5py", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    module_name, help_ = COMMANDS[name]
    want_help = "-h" in args or "--help" in args
    args = [a for a in args if a not in ("-h", "--help")]

    from omegaconf import OmegaConf

    from robot_calql.config import ConfigError, compose

    # `launch` takes a node-set name first (launch finetune sim=true): its config is launch_<set>.
    config_name: str | None = name.replace("-", "_")
    if name == "launch":
        if not args or "=" in args[0] or args[0].startswith("-"):
            config_name = None
        elif args[0] not in _node_sets():
            print(f"robot-calql launch: unknown node set '{args[0]}' (known: {', '.join(_node_sets())})",
                  file=sys.stderr)
            return 2
        else:
            config_name, args = f"launch_{args[0]}", args[1:]
    if want_help:
        try:
            _print(_command_help(name, config_name))
        except ConfigError as e:
            print(f"robot-calql {name}: {e}", file=sys.stderr)
            return 2
        return 0
    if config_name is None:
        print("robot-calql launch: name a node set, e.g. `robot-calql launch finetune sim=true`", file=sys.stderr)
        return 2
    show_cfg = "--cfg" in args
    overrides = [a for a in args if a != "--cfg"]

    try:
        cfg = compose(config_name, overrides)
    except ConfigError as e:
        print(f"robot-calql {name}: {e}", file=sys.stderr)
        return 2
    if show_cfg:
        _print(OmegaConf.to_yaml(cfg))
        return 0
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        print(f"robot-calql {name}: cannot import {module_name} ({e}). "
              "Is the matching extra installed (pip install -e '.[vlm,ros]')?", file=sys.stderr)
        return 2
    from omegaconf.errors import MissingMandatoryValue

    try:
        rc = module.main(cfg)
    except MissingMandatoryValue as e:  # a `???` key in configs/<command>.yaml left unset
        print(f"robot-calql {name}: error: {e.full_key}=<value> is required ({e.full_key}: ??? in "
              f"configs/{config_name}.yaml)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nrobot-calql {name}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        # our own errors (DatasetError, ConfigError, ...) are ValueErrors with a clear message
        logging.getLogger("robot_calql").debug("details", exc_info=True)
        print(f"robot-calql {name}: error: {e}", file=sys.stderr)
        return 1
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
