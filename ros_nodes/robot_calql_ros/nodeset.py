"""The one definition of the fine-tuning node set, shared by every way of starting it.

`node_set(cfg)` turns the composed config (configs/launch_finetune.yaml + robot config +
overrides) into `NodeSpec`s: node name, entry-point module, class, and flat ROS parameters.

- launch/finetune.launch.py (ros2 launch, on machines with ROS 2) makes one launch_ros Node per
  spec, with the spec's parameters;
- robot_calql_ros.launcher (`robot-calql launch finetune sim=true`) starts the same specs as
  subprocesses (`python -m <module> --ros-args --params-file ...`) or in one process;
- the tests build the nodes from the same specs.

Before any node starts, `node_set` refuses (ConfigError, one line naming the key) a config the
nodes could not run: `sim=false` with the stand-in's robot config (name the real robot's:
`robot=<name>`), a policy node without `topics.ee_pose`, the ground-truth reward
without the stand-in's `topics.ground_truth_success`, a calibrated crop outside the camera frame.
The policy and reward nodes get the robot's calibrated crop (calibration/<cell>/crop.yaml, read
by robot_calql.calibration.crop.robot_crop as bag ingestion reads it) as parameter `crop`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from robot_calql.config import REPO_ROOT, ConfigError
from robot_calql.control.episode_controller import HOME_MODES
from robot_calql_ros.common import required_topic, topic_names

NODES = {  # name -> (module, class)
    "sim_robot": ("robot_calql_ros.sim_robot_node", "SimRobotNode"),
    "policy": ("robot_calql_ros.policy_node", "PolicyNode"),
    "reward": ("robot_calql_ros.reward_node", "RewardNode"),
    "episode_controller": ("robot_calql_ros.episode_controller_node", "EpisodeControllerNode"),
    "safety": ("robot_calql_ros.safety_node", "SafetyNode"),
    "learner": ("robot_calql_ros.learner_node", "LearnerNode"),
}


@dataclass
class NodeSpec:
    name: str
    module: str
    cls: str
    params: dict = field(default_factory=dict)   # nested; flatten with common.flatten_params

    @property
    def executable(self) -> str:
        """The console script `ros2 run robot_calql <executable>` (setup.py entry_points)."""
        return self.name

    def node_class(self):
        import importlib

        return getattr(importlib.import_module(self.module), self.cls)


def _abs(path: str) -> str:
    if not path:
        return ""
    from pathlib import Path

    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (REPO_ROOT / p if not p.exists() else p.resolve()))


def _check_robot(c: dict, robot: dict) -> None:
    """ConfigError for a robot config the chosen nodes cannot run with (see the module doc)."""
    if not c["sim"] and robot.get("standin"):
        raise ConfigError(
            f"sim=false runs the nodes against a real robot's drivers, but the robot config is the stand-in's "
            f"('{robot.get('name')}'): name your robot's config, configs/robot/<name>.yaml (e.g. "
            "widowx250_example.yaml): overrides:=\"robot=<name>\" with ros2 launch, robot=<name> with robot-calql "
            "launch; or sim=true for the MuJoCo stand-in")
    topics = topic_names(robot.get("topics"))
    if "policy" in c["nodes"]:  # (the safety node, a lifecycle node, says so when it is configured)
        required_topic(topics, "ee_pose", "the policy node")
    if "policy" in c["nodes"] and c["policy"].get("action_source") == "expert":
        required_topic(topics, "expert_action", "the policy node")
    if "reward" in c["nodes"] and c["reward"].get("model") == "ground_truth":
        required_topic(topics, "ground_truth_success", "the reward node")


def _crop_params(robot: dict) -> dict:
    """{"crop": {x, y, width, height}} of the robot's calibrated crop, checked against its camera
    (limits.camera_width / camera_height); {} without a crop.yaml (the whole frame)."""
    from robot_calql.calibration import CalibrationError
    from robot_calql.calibration.crop import robot_crop

    try:
        crop = robot_crop(robot)
        if crop is not None and robot.get("limits", {}).get("camera_width"):
            crop.check(int(robot["limits"]["camera_width"]), int(robot["limits"]["camera_height"]))
    except CalibrationError as e:
        raise ConfigError(f"the calibrated crop of robot '{robot.get('name')}' ({robot.get('calibration')}/crop.yaml, "
                          f"against the camera size limits.camera_width x camera_height): {e}") from None
    if crop is None:
        return {}
    return {"crop": {"x": crop.x, "y": crop.y, "width": crop.width, "height": crop.height}}


def node_set(cfg: DictConfig) -> list[NodeSpec]:
    """NodeSpecs for the nodes named in cfg.nodes (sim_robot only when cfg.sim)."""
    from robot_calql.sim import TASKS, task_pair

    c = OmegaConf.to_container(cfg, resolve=True)
    robot = {k: v for k, v in c["robot"].items() if k != "bag_topics"}
    unknown = [n for n in c["nodes"] if n not in NODES]
    if unknown:
        raise ConfigError(f"nodes: unknown {unknown} (known: {', '.join(NODES)})")
    _check_robot(c, robot)
    crop = _crop_params(robot)
    try:
        fwd, bwd = task_pair(str(c["task"]))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    home_service = str(robot.get("home_service") or "")
    home = str(c["controller"].get("home", "auto"))
    if home == "auto":  # home the arm after a failed try wherever the robot offers a way to
        home = "after_failure" if home_service else "never"
    elif home not in HOME_MODES:
        raise ConfigError(f"controller.home must be auto or one of {', '.join(HOME_MODES)}, got '{home}'")
    elif home != "never" and not home_service:
        raise ConfigError(f"controller.home={home} needs robot.home_service: a std_srvs/Trigger service that moves "
                          "the arm to its home pose (or set controller.home=never)")
    wait = c["controller"].get("wait_for_policy", "auto")
    if wait not in ("auto", True, False):
        raise ConfigError(f"controller.wait_for_policy must be auto, true or false, got '{wait}'")
    # auto: wait for the node set's own policy node; a policy started elsewhere is named policy too
    policy_node = "policy" if wait is True or (wait == "auto" and "policy" in c["nodes"]) else ""
    per_node = {
        "sim_robot": {"robot": robot, "image_encoding": c["sim_robot"]["image_encoding"],
                      "sim": {"task": fwd, "seed": int(c["seed"]),
                              "publish_expert": c["policy"]["action_source"] == "expert",
                              "expert_noise": float(c["sim_robot"]["expert_noise"]),
                              "stand_in_human": bool(c["sim_robot"].get("stand_in_human", True)),
                              "controller_pause_service": "/episode_controller/set_paused"}},
        "policy": {"robot": robot, **crop, "policy": {**c["policy"], "checkpoint": _abs(c["checkpoint"])}},
        "reward": {"robot": robot, **crop, "reward": {**c["reward"], "model": c["reward"]["model"]
                                              if c["reward"]["model"] == "ground_truth" else _abs(c["reward"]["model"])}},
        "episode_controller": {"robot": robot, "controller": {
            **c["controller"], "policy_node": policy_node, "home": home, "home_service": home_service, "forward_task": fwd, "backward_task": bwd,
            "forward_instruction": TASKS[fwd].instruction, "backward_instruction": TASKS[bwd].instruction}},
        "safety": {"robot": robot, "workspace_file": _abs(c["workspace_file"]),
                   "kinematics": c["kinematics"], "autostart": bool(c["sim"]),
                   "home_timeout_s": float(c["controller"].get("home_timeout_s", 30.0))},
        "learner": {"robot": robot, "learner": {**{k: v for k, v in c["learner"].items() if k != "agent"},
                                                "run_dir": _abs(c["run_dir"]),
                                                # agent settings changed for fine-tuning (ROS params are flat)
                                                "agent_overrides_json": json.dumps(c["learner"].get("agent") or {}),
                                                "checkpoint": _abs(c["checkpoint"]),
                                                "transition_history": int(c["policy"]["transition_history"]),
                                                "seed": int(c["seed"]),
                                                # a fresh agent (no checkpoint): its config and vocabulary
                                                "agent_json": json.dumps(c.get("agent") or {}),
                                                "instructions": [TASKS[fwd].instruction, TASKS[bwd].instruction]}},
    }
    specs = []
    for name in c["nodes"]:
        if name == "sim_robot" and not c["sim"]:
            continue
        module, cls = NODES[name]
        specs.append(NodeSpec(name, module, cls, per_node[name]))
    return specs
