"""The one definition of the fine-tuning node set, shared by every way of starting it.

`node_set(cfg)` turns the composed config (configs/launch_finetune.yaml + robot config +
overrides) into `NodeSpec`s: node name, entry-point module, class, and flat ROS parameters.

- launch/finetune.launch.py (ros2 launch, on machines with ROS 2) makes one launch_ros Node per
  spec, with the spec's parameters;
- robot_calql_ros.launcher (`robot-calql launch finetune sim=true`) starts the same specs as
  subprocesses (`python -m <module> --ros-args --params-file ...`) or in one process;
- the tests build the nodes from the same specs.

Before any node starts, `node_set` checks the robot config against its schema
(robot_calql.robot_config.load_robot_config) and loads its kinematics model (a URDF), and refuses
(ConfigError, one line naming the key) a config the nodes could not run: `sim=false` with the
stand-in's robot config (name the real robot's: `robot=<name>`), a policy or safety node without
an EE pose (`ee_pose: topic` without `topics.ee_pose`; `ee_pose: tf` where the tf2_msgs
package cannot be imported), a joint command interface
without `kinematics`, joint limits beyond the model's, a `task` not in the robot's `tasks`, the
ground-truth reward without the stand-in's `topics.ground_truth_success`, a calibrated crop
outside the camera frame. The nodes get the checked config (defaults filled in) as parameter
`robot`; the tasks (labels and instructions) come from the robot config's `tasks`, and joint
limits the config leaves out from the kinematics model.
The policy and reward nodes get the robot's calibrated crop (calibration/<cell>/crop.yaml, read
by robot_calql.calibration.crop.robot_crop as bag ingestion reads it) as parameter `crop`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from robot_calql.config import REPO_ROOT, ConfigError
from robot_calql.control.cameras import camera_specs, image_keys
from robot_calql.control.episode_controller import HOME_MODES
from robot_calql.data.dataset import is_image_key
from robot_calql.robot_config import (
    RobotConfig,
    RobotConfigError,
    build_kinematics,
    load_robot_config,
    resolve_path,
)
from robot_calql_ros.common import require_tf2_msgs, required_topic, topic_names

NODES = {  # name -> (module, class)
    "sim_robot": ("robot_calql_ros.sim_robot_node", "SimRobotNode"),
    "policy": ("robot_calql_ros.policy_node", "PolicyNode"),
    "reward": ("robot_calql_ros.reward_node", "RewardNode"),
    "episode_controller": ("robot_calql_ros.episode_controller_node", "EpisodeControllerNode"),
    "safety": ("robot_calql_ros.safety_node", "SafetyNode"),
    "learner": ("robot_calql_ros.learner_node", "LearnerNode"),
    # added by `teleop=<device>` (configs/teleop/), not named in `nodes`
    "teleop": ("robot_calql_ros.teleop_node", "TeleopNode"),
    "sim_human": ("robot_calql_ros.sim_human_node", "SimulatedHumanNode"),
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


def _check_robot(c: dict, robot: dict, rcfg: RobotConfig) -> None:
    """ConfigError for a robot config the chosen nodes cannot run with (see the module doc)."""
    if not c["sim"] and robot.get("standin"):
        raise ConfigError(
            f"sim=false runs the nodes against a real robot's drivers, but the robot config is the stand-in's "
            f"('{robot.get('name')}'): name your robot's config, configs/robot/<name>.yaml (e.g. "
            "widowx250_example.yaml): overrides:=\"robot=<name>\" with ros2 launch, robot=<name> with robot-calql "
            "launch; or sim=true for the MuJoCo stand-in")
    topics = topic_names(robot.get("topics"))
    pose_users = [n for n in ("policy", "safety") if n in c["nodes"]]
    if pose_users and rcfg.ee_pose == "tf":
        try:
            require_tf2_msgs()
        except ValueError as e:
            raise RobotConfigError(f"robot config '{rcfg.name}': {e}") from None
    if pose_users and rcfg.ee_pose == "topic":
        required_topic(topics, "ee_pose", f"the {pose_users[0]} node")
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


def _check_observation_source(c: dict, robot: dict) -> None:
    """A state-mode checkpoint reads the stand-in's privileged state, which only a stand-in asked
    for it publishes (sim_robot.publish_sim_state, a debug flag); refuse it anywhere else. A pixel
    checkpoint's image size must be the robot's `image_size` (the policy node resizes to it), and
    every camera it sees must be among the robot's `cameras`."""
    if not c.get("checkpoint") or "policy" not in c["nodes"]:
        return
    from robot_calql.train.checkpoint import CheckpointError, load_meta

    try:
        meta = load_meta(_abs(c["checkpoint"]))
    except CheckpointError:
        return  # the policy node names what is wrong with it when it starts
    obs = meta.get("obs")
    image = (meta.get("obs_spec") or {}).get("image")
    cameras = [k for k in (meta.get("obs_spec") or {}) if is_image_key(k)]
    have = image_keys(camera_specs(robot))
    if obs == "pixels" and (missing := [k for k in cameras if k not in have]):
        raise ConfigError(f"checkpoint {c['checkpoint']} sees the cameras {cameras}, but robot '{robot.get('name')}' "
                          f"has no {missing} (its cameras: {have}): launch with a robot config whose `cameras` "
                          "include them (the stand-in with a wrist camera: robot=sim_standin_wrist)")
    if obs == "pixels" and image and tuple(int(x) for x in image[:2]) != (int(robot["image_size"]),) * 2:
        raise ConfigError(f"checkpoint {c['checkpoint']} was trained on {image[0]}x{image[1]} px frames, but robot "
                          f"'{robot.get('name')}' has image_size {robot['image_size']}: set robot.image_size={image[0]} "
                          "(and, for the stand-in, robot.limits.camera_width/camera_height to the same)")
    if obs != "state":
        return
    if not c["sim"]:
        raise ConfigError(f"checkpoint {c['checkpoint']} was trained on the stand-in's privileged state (obs=state), "
                          "which a real robot does not have: pre-train with obs=pixels")
    if not c["sim_robot"].get("publish_sim_state", False):
        raise ConfigError(f"checkpoint {c['checkpoint']} was trained on the stand-in's privileged state (obs=state): "
                          "pass sim_robot.publish_sim_state=true (debug) or pre-train with obs=pixels")


def _kinematics_params(c: dict, robot: dict, rcfg: RobotConfig) -> None:
    """Load the robot's kinematics model now (a bad URDF stops the set before any node starts),
    write the URDF's absolute path into `robot`, and fill limits.joint_lower / joint_upper from
    the model when the config leaves them out (a config's own limits must lie within the model's)."""
    kin = build_kinematics(rcfg)
    if isinstance(robot.get("kinematics"), dict):
        robot["kinematics"]["urdf"] = str(resolve_path(robot["kinematics"]["urdf"]))
    if kin is None:
        if "safety" in c["nodes"] and rcfg.command_interface != "delta_ee_twist":
            raise RobotConfigError(f"robot config '{rcfg.name}': command_interface {rcfg.command_interface} needs "
                                   "`kinematics` (the safety node checks joint targets through FK/IK): "
                                   "kinematics: {urdf: <the arm's URDF>}")
        if "safety" in c["nodes"] and rcfg.limits.joint_lower is None:
            raise RobotConfigError(f"robot config '{rcfg.name}': limits.joint_lower / joint_upper: missing, and no "
                                   "`kinematics` model to take them from")
        return
    import numpy as np

    if rcfg.limits.joint_lower is None:
        robot["limits"]["joint_lower"] = [float(x) for x in kin.lower]
        robot["limits"]["joint_upper"] = [float(x) for x in kin.upper]
        return
    for key, inside in (("joint_lower", np.asarray(rcfg.limits.joint_lower) >= kin.lower - 1e-9),
                        ("joint_upper", np.asarray(rcfg.limits.joint_upper) <= kin.upper + 1e-9)):
        if not inside.all():
            bad = [j for j, ok in zip(rcfg.joints, inside, strict=True) if not ok]
            raise RobotConfigError(
                f"robot config '{rcfg.name}': limits.{key}: {bad} beyond the kinematics model's limits "
                f"(lower {np.round(kin.lower, 4).tolist()}, upper {np.round(kin.upper, 4).tolist()}); "
                "narrow them, or leave both keys out to use the model's")


def _tasks(c: dict, rcfg: RobotConfig) -> tuple[str, str, str, str]:
    """(forward label, backward label, forward instruction, backward instruction) of launch
    `task` (a pair name or a label) in the robot config's `tasks`; the stand-in's labels must be
    robot_calql.sim tasks."""
    if not rcfg.tasks:
        raise RobotConfigError(f"robot config '{rcfg.name}': no `tasks`: add the task pairs, e.g. tasks: {{my_pair: "
                               "{forward: {label: ..., instruction: ...}, backward: {label: ..., instruction: ...}}}")
    _, pair = rcfg.task_pair(str(c["task"]))
    fwd, bwd = pair.forward, pair.backward
    if c["sim"]:
        from robot_calql.sim import TASKS

        for t in (fwd, bwd):
            if t.label not in TASKS or TASKS[t.label].instruction != t.instruction:
                raise RobotConfigError(f"robot config '{rcfg.name}': task '{t.label}' ('{t.instruction}') is not a "
                                       f"stand-in task (sim=true; known: {', '.join(TASKS)}, instructions as in "
                                       "robot_calql.sim.tasks)")
    return fwd.label, bwd.label, fwd.instruction, bwd.instruction


def node_set(cfg: DictConfig) -> list[NodeSpec]:
    """NodeSpecs for the nodes named in cfg.nodes (sim_robot only when cfg.sim)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    rcfg = load_robot_config(c["robot"])  # the schema: RobotConfigError naming the bad key
    robot = rcfg.node_params()
    unknown = [n for n in c["nodes"] if n not in NODES]
    if unknown:
        raise ConfigError(f"nodes: unknown {unknown} (known: {', '.join(NODES)})")
    _check_robot(c, robot, rcfg)
    _kinematics_params(c, robot, rcfg)
    _check_observation_source(c, robot)
    crop = _crop_params(robot)
    fwd, bwd, fwd_instruction, bwd_instruction = _tasks(c, rcfg)
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
                              "publish_expert": c["policy"]["action_source"] == "expert" or _sim_human(c),
                              "expert_noise": float(c["sim_robot"]["expert_noise"]),
                              "stand_in_human": bool(c["sim_robot"].get("stand_in_human", True)),
                              "publish_sim_state": bool(c["sim_robot"].get("publish_sim_state", False)),
                              "controller_pause_service": "/episode_controller/set_paused"}},
        "policy": {"robot": robot, **crop, "policy": {**c["policy"], "checkpoint": _abs(c["checkpoint"])}},
        "reward": {"robot": robot, **crop, "reward": {**c["reward"], "model": c["reward"]["model"]
                                              if c["reward"]["model"] == "ground_truth" else _abs(c["reward"]["model"])}},
        "episode_controller": {"robot": robot, "controller": {
            **c["controller"], "policy_node": policy_node, "home": home, "home_service": home_service, "forward_task": fwd, "backward_task": bwd,
            "forward_instruction": fwd_instruction, "backward_instruction": bwd_instruction}},
        "safety": {"robot": robot, "workspace_file": _abs(c["workspace_file"]), "autostart": bool(c["sim"]),
                   "home_timeout_s": float(c["controller"].get("home_timeout_s", 30.0))},
        # agent settings as nested parameters, as in the config: `agent.*` a fresh agent's (no
        # checkpoint), `learner.agent.*` the ones changed for fine-tuning (CalQLConfig fields)
        "learner": {"robot": robot, "agent": c.get("agent") or {},
                    "learner": {**c["learner"], "run_dir": _abs(c["run_dir"]), "checkpoint": _abs(c["checkpoint"]),
                                "transition_history": int(c["policy"]["transition_history"]), "seed": int(c["seed"]),
                                "instructions": [fwd_instruction, bwd_instruction]}},
    }
    specs = []
    for name in c["nodes"]:
        if name == "sim_robot" and not c["sim"]:
            continue
        if name not in per_node:  # teleop, sim_human
            raise ConfigError(f"nodes: {name} is started by teleop=<device> (configs/teleop/), not named in nodes")
        module, cls = NODES[name]
        specs.append(NodeSpec(name, module, cls, per_node[name]))
    return specs + _teleop_specs(c, robot)


def _sim_human(c: dict) -> bool:
    """Whether `teleop=simulated_human` (the stand-in's simulated operator) is on."""
    return bool(((c.get("teleop") or {}).get("simulated_human") or {}).get("enabled", False))


def _teleop_specs(c: dict, robot: dict) -> list[NodeSpec]:
    """The teleop node for `teleop.device` other than none, plus the stand-in's simulated human
    (configs/teleop/simulated_human.yaml); a mapping that cannot work is a ConfigError naming the key."""
    from robot_calql.control.teleop import TeleopConfig, TeleopConfigError
    from robot_calql.sim.simulated_human import SimulatedHumanConfig

    teleop = dict(c.get("teleop") or {})
    if str(teleop.get("device", "none")) == "none":
        return []
    mapping = {k: v for k, v in teleop.items() if k != "simulated_human"}
    try:
        TeleopConfig.from_dict(mapping)
    except TeleopConfigError as e:
        raise ConfigError(f"teleop={teleop.get('device')}: {e}") from None
    specs = [NodeSpec("teleop", *NODES["teleop"], {"robot": robot, "teleop": mapping})]
    if _sim_human(c):
        if not c["sim"]:
            raise ConfigError("teleop=simulated_human drives the MuJoCo stand-in's scripted demonstrator: sim=true only")
        try:
            SimulatedHumanConfig.from_dict(teleop["simulated_human"])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"teleop.simulated_human: {e}") from None
        specs.append(NodeSpec("sim_human", *NODES["sim_human"],
                              {"robot": robot, "teleop": teleop, "workspace_file": _abs(c["workspace_file"])}))
    return specs
