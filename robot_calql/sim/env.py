"""The MuJoCo stand-in robot cell as a gymnasium environment (see docs/sim.md).

A 5-joint arm with a parallel gripper (WidowX 250 class), a cube and a bowl on a table, a
third-person camera. The policy commands normalised end-effector deltas; damped least-squares
IK turns them into joint position targets that the simulated servos track for one control
period (10 Hz, 20 physics substeps of 5 ms).

The arm is an `ArmSpec` (robot_calql.sim.kinematics; a robot config's `sim:` section through
`arm_spec`): any MJCF cell with the same table, cube and bowl, an arm of n joints and its cameras.
Observation "proprio" = joints (n), gripper opening, ee xyz, ee yaw; "state" = proprio, cube xyz,
cube quaternion, bowl xyz, cube - ee (`StateLayout(n)` says where each sits; S_* below are the
stand-in's); "image" is the main camera, "image_<name>" every other camera.

Reset-free use: `reset(options={"full": False})` starts a new episode where the last one ended
(the scene is kept; with `"home": True` the arm goes home first, objects kept); `reset()` / `reset(seed=...)` is a full reset that re-randomises the objects
into the current task's start condition and puts the arm at home.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from robot_calql.sim import kinematics as kin
from robot_calql.sim.tasks import (
    BOWL_FLOOR_TOP,
    CUBE_HALF,
    Scene,
    cube_in_bowl,
    get_task,
    sample_placement,
)

CONTROL_HZ = 10.0
ACTION_DIM = 5
# a normalised action of 1.0 moves this much per control step (configs/robot/sim_standin.yaml)
DEFAULT_ACTION_SCALE = (0.02, 0.15)  # metres, radians
# End-effector workspace box (base frame, metres); the IK target is clipped into it.
WORKSPACE_MIN = np.array([0.10, -0.28, 0.015])
WORKSPACE_MAX = np.array([0.46, 0.28, 0.25])
CUBE_REACH_MAX = 0.46  # a cube farther than this from the base axis cannot be grasped from above
YAW_LIMIT = np.pi / 2  # the cube is square: +-90 degrees of heading is enough
DEFAULT_MAX_EPISODE_STEPS = 60  # time limit at 10 Hz (also gymnasium.make's default)
HOME_EE = np.array([0.25, 0.0, 0.15])
HOME_Q = np.array(kin.HOME_Q)  # the stand-in arm's IK seed near HOME_EE (pointing down)
IMAGE_SIZES = (0, 64, 100, 128)
PROPRIO_DIM = 10  # joints (5), gripper opening (1), ee position (3), ee yaw (1)
STATE_DIM = 23  # proprio (10), cube position (3), cube quaternion wxyz (4), bowl position (3), cube - ee (3)
# state slices, for demonstrators and tests
S_Q, S_GRIP, S_EE, S_YAW = slice(0, 5), 5, slice(6, 9), 9
S_CUBE, S_CUBE_QUAT, S_BOWL, S_CUBE_REL = slice(10, 13), slice(13, 17), slice(17, 20), slice(20, 23)


@dataclass(frozen=True)
class StateLayout:
    """Where each quantity sits in the proprio and state vectors of an arm with `n_joints` joints."""

    n_joints: int

    @property
    def q(self) -> slice:
        return slice(0, self.n_joints)

    @property
    def grip(self) -> int:
        return self.n_joints

    @property
    def ee(self) -> slice:
        return slice(self.n_joints + 1, self.n_joints + 4)

    @property
    def yaw(self) -> int:
        return self.n_joints + 4

    @property
    def proprio_dim(self) -> int:
        return self.n_joints + 5

    @property
    def cube(self) -> slice:
        return slice(self.proprio_dim, self.proprio_dim + 3)

    @property
    def cube_quat(self) -> slice:
        return slice(self.proprio_dim + 3, self.proprio_dim + 7)

    @property
    def bowl(self) -> slice:
        return slice(self.proprio_dim + 7, self.proprio_dim + 10)

    @property
    def cube_rel(self) -> slice:
        return slice(self.proprio_dim + 10, self.proprio_dim + 13)

    @property
    def state_dim(self) -> int:
        return self.proprio_dim + 13


STANDIN_LAYOUT = StateLayout(5)


class ActionError(ValueError):
    """An action or joint command the cell cannot execute (wrong shape, NaN, infinite)."""


class StandInEnv(gym.Env):
    """Gymnasium env of the stand-in cell. Construct with `make_env` (or gymnasium.make)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(CONTROL_HZ)}

    def __init__(
        self,
        task: str = "cube_in_bowl",
        image_size: int = 64,
        seed: int | None = None,
        max_episode_steps: int | None = DEFAULT_MAX_EPISODE_STEPS,
        render_mode: str | None = None,
        render_size: int = 256,
        action_scale: tuple[float, float] = DEFAULT_ACTION_SCALE,
        dropped_start: float = 0.0,
        rolled_start: float = 0.0,
        arm: kin.ArmSpec = kin.STANDIN_ARM,
    ):
        if image_size not in IMAGE_SIZES:
            raise ValueError(f"image_size must be one of {IMAGE_SIZES} (0 = no image), got {image_size}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        if not 0.0 <= dropped_start <= 1.0:
            raise ValueError(f"dropped_start must be a probability in [0, 1], got {dropped_start}")
        if not 0.0 <= rolled_start <= 1.0:
            raise ValueError(f"rolled_start must be a probability in [0, 1], got {rolled_start}")
        self.dropped_start = float(dropped_start)
        self.rolled_start = float(rolled_start)
        self.task = get_task(task)
        self.image_size = int(image_size)
        # None: no time limit of its own (gymnasium.make's TimeLimit wrapper sets it)
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.render_mode = render_mode
        self.render_size = int(render_size)
        self.action_scale = (float(action_scale[0]), float(action_scale[1]))

        self.arm = arm
        self.layout = StateLayout(len(arm.arm_joints))
        self.model = mujoco.MjModel.from_xml_path(str(arm.mjcf))
        side = max(self.image_size, self.render_size if render_mode else 0, 1)
        self.model.vis.global_.offwidth = side
        self.model.vis.global_.offheight = side
        self.data = mujoco.MjData(self.model)
        self.kin = kin.ArmKinematics(self.model, arm)
        m = self.model
        self.n_substeps = int(round(1.0 / CONTROL_HZ / m.opt.timestep))
        self.joint_names: tuple[str, ...] = arm.arm_joints
        self._home_q = np.array(arm.home_q, dtype=np.float64)
        self._finger_open = float(arm.finger_open_m)
        self._q_adr = self.kin.qpos_adr
        try:
            self._finger_adr = np.array([m.jnt_qposadr[m.joint(n).id] for n in arm.finger_joints])
            self._finger_dof = np.array([m.jnt_dofadr[m.joint(n).id] for n in arm.finger_joints])
            self._arm_act = np.array([m.actuator(n).id for n in arm.arm_joints])
            self._finger_act = np.array([m.actuator(n).id for n in arm.finger_joints])
            for c in arm.cameras:
                m.camera(c)
        except KeyError as e:
            raise kin.KinematicsError(f"MJCF {arm.mjcf}: {e} (robot config `sim` section)") from None
        # observation keys of the cameras: "image" (main), "image_<name>" (others)
        self.camera_keys = {c: ("image" if i == 0 else f"image_{c}") for i, c in enumerate(arm.cameras)}
        self._cube_adr = m.jnt_qposadr[m.joint("cube").id]
        self._cube_dof = m.jnt_dofadr[m.joint("cube").id]
        self._bowl_mocap = m.body_mocapid[m.body("bowl").id]
        self._site = self.kin.site
        self._renderer: mujoco.Renderer | None = None
        self._big_renderer: mujoco.Renderer | None = None

        spaces: dict[str, gym.Space] = {
            "proprio": gym.spaces.Box(-np.inf, np.inf, (self.layout.proprio_dim,), np.float32),
            "state": gym.spaces.Box(-np.inf, np.inf, (self.layout.state_dim,), np.float32),
            "instruction": gym.spaces.Text(max_length=200, min_length=1,
                                           charset="abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,.-'"),
        }
        if self.image_size:
            for key in self.camera_keys.values():
                spaces[key] = gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

        self._seed = seed
        self._needs_full_reset = True
        self._elapsed = 0
        self._target_pos = HOME_EE.copy()
        self._target_yaw = 0.0
        self._q_cmd = self._home_q.copy()

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None and self._seed is not None:
            seed, self._seed = self._seed, None
        super().reset(seed=seed)
        full = True if options is None else bool(options.get("full", True))
        if "task" in (options or {}):
            self.set_task(options["task"])
        if full or self._needs_full_reset or seed is not None:
            self._full_reset()
        elif (options or {}).get("home", False):
            self.home_arm()
        self._elapsed = 0
        return self._obs(), self._info()

    def step(self, action):
        a = self._check_action(action)
        dpos = a[:3].astype(np.float64) * self.action_scale[0]
        dyaw = float(a[3]) * self.action_scale[1]
        ee_pos, ee_yaw = self.ee_pose()
        # integrate from the last commanded target; re-anchor when the arm is far from it (blocked)
        if np.linalg.norm(self._target_pos - ee_pos) > 0.03:
            self._target_pos = ee_pos.copy()
        self._target_pos = np.clip(self._target_pos + dpos, WORKSPACE_MIN, WORKSPACE_MAX)
        self._target_yaw = float(np.clip(self._target_yaw + dyaw, -YAW_LIMIT, YAW_LIMIT))
        q = self.kin.ik(self._target_pos, self._target_yaw, self._q_cmd)
        return self._apply(q, float(a[4]))

    def render(self):
        """A larger third-person frame (render_size px) for videos; needs render_mode='rgb_array'."""
        if self.render_mode != "rgb_array":
            return None
        if self._big_renderer is None:
            self._big_renderer = self._make_renderer(self.render_size)
        self._big_renderer.update_scene(self.data, camera=self.arm.cameras[0])
        return self._big_renderer.render().copy()

    def close(self):
        for r in (self._renderer, self._big_renderer):
            if r is not None:
                r.close()
        self._renderer = self._big_renderer = None

    # ------------------------------------------------------------------ snapshots
    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue this env exactly (a resumed fine-tuning run): the MuJoCo
        integration state, the commanded targets and counters, the task and the RNG. Plain
        numpy / Python values; `set_state` restores it."""
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        phys = np.empty(mujoco.mj_stateSize(self.model, spec), dtype=np.float64)
        mujoco.mj_getState(self.model, self.data, phys, spec)
        return {
            "physics": phys,
            "task": self.task.name,
            "elapsed": int(self._elapsed),
            "target_pos": np.array(self._target_pos),
            "target_yaw": float(self._target_yaw),
            "q_cmd": np.array(self._q_cmd),
            "needs_full_reset": bool(self._needs_full_reset),
            "np_random": self.np_random.bit_generator.state,
        }

    def set_state(self, s: dict[str, Any]) -> None:
        """Restore a `get_state` snapshot (same model); the next step continues where it left."""
        self.set_task(s["task"])
        mujoco.mj_setState(self.model, self.data, np.asarray(s["physics"], dtype=np.float64),
                           mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(self.model, self.data)
        self._elapsed = int(s["elapsed"])
        self._target_pos = np.array(s["target_pos"])
        self._target_yaw = float(s["target_yaw"])
        self._q_cmd = np.array(s["q_cmd"])
        self._needs_full_reset = bool(s["needs_full_reset"])
        self._seed = None
        self.np_random.bit_generator.state = s["np_random"]

    # ------------------------------------------------------------------ task / scene
    def set_task(self, name: str) -> None:
        """Switch task and instruction without touching the scene (reset-free)."""
        self.task = get_task(name)

    @property
    def instruction(self) -> str:
        return self.task.instruction

    def success(self) -> bool:
        """Ground-truth success of the current task in the current scene."""
        return self.task.success(self.scene())

    def needs_reset(self) -> bool:
        """True when the cube is out of the arm's reach or off the table: a person (or a full
        reset) has to put it back. The stand-in's answer to a real cell's human intervention."""
        c = self.cube_pos()
        r = float(np.hypot(c[0], c[1]))
        return bool(c[2] < -0.005 or r > CUBE_REACH_MAX or c[0] < WORKSPACE_MIN[0] - 0.02
                    or abs(c[1]) > WORKSPACE_MAX[1] + 0.02)

    def scene(self) -> Scene:
        return Scene(cube_pos=self.cube_pos(), bowl_pos=self.bowl_pos(), gripper_open=self.gripper_opening())

    def cube_pos(self) -> np.ndarray:
        return self.data.qpos[self._cube_adr:self._cube_adr + 3].copy()

    def cube_quat(self) -> np.ndarray:
        return self.data.qpos[self._cube_adr + 3:self._cube_adr + 7].copy()

    def bowl_pos(self) -> np.ndarray:
        return self.data.mocap_pos[self._bowl_mocap].copy()

    def set_scene(self, cube_pos, bowl_pos=None, cube_yaw: float = 0.0) -> None:
        """Place the cube (and the bowl) by hand, e.g. for tests; the arm is left where it is."""
        if bowl_pos is not None:
            self.data.mocap_pos[self._bowl_mocap] = np.asarray(bowl_pos, dtype=np.float64)
        a = self._cube_adr
        self.data.qpos[a:a + 3] = np.asarray(cube_pos, dtype=np.float64)
        self.data.qpos[a + 3:a + 7] = [np.cos(cube_yaw / 2), 0.0, 0.0, np.sin(cube_yaw / 2)]
        self.data.qvel[self._cube_dof:self._cube_dof + 6] = 0.0
        mujoco.mj_forward(self.model, self.data)

    # ------------------------------------------------------------------ joint-level access
    def joint_positions(self) -> np.ndarray:
        """Arm joint positions (n,) in radians, ordered as `joint_names`."""
        return self.data.qpos[self._q_adr].copy()

    def joint_velocities(self) -> np.ndarray:
        return self.data.qvel[self.kin.dof_adr].copy()

    def gripper_opening(self) -> float:
        """Gripper opening in [0, 1] (0 closed, 1 fully open)."""
        return float(np.clip(self.data.qpos[self._finger_adr].mean() / self._finger_open, 0.0, 1.0))

    def ee_pose(self) -> tuple[np.ndarray, float]:
        """End-effector position (3,) in the base frame and yaw (rad)."""
        return self.data.site_xpos[self._site].copy(), kin.yaw_of(self.data.site_xmat[self._site].reshape(3, 3))

    def step_joint_targets(self, q, gripper: float):
        """Command joint position targets directly (ROS stand-in, joint-level command formats).

        q: (n,) radians, clipped to the joint limits; gripper in [-1, 1] (> 0 close), as in the
        action. Runs one control period; returns the same 5-tuple as `step`.
        """
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (len(self.joint_names),):
            raise ActionError(f"joint targets must have shape ({len(self.joint_names)},) for {self.joint_names}, got {q.shape}")
        if not np.all(np.isfinite(q)) or not np.isfinite(gripper):
            raise ActionError(f"joint targets contain NaN or infinite values: q={q.tolist()}, gripper={gripper}")
        out = self._apply(np.clip(q, self.kin.lower, self.kin.upper), float(gripper))
        self._target_pos, self._target_yaw = self.ee_pose()
        self._target_yaw = float(np.clip(self._target_yaw, -YAW_LIMIT, YAW_LIMIT))
        return out

    # ------------------------------------------------------------------ internals
    def _check_action(self, action) -> np.ndarray:
        a = np.asarray(action)
        if a.shape != (ACTION_DIM,):
            raise ActionError(f"action must have shape ({ACTION_DIM},) (dx, dy, dz, dyaw, gripper), got {a.shape}")
        if not np.issubdtype(a.dtype, np.number):
            raise ActionError(f"action must be numeric, got dtype {a.dtype}")
        if not np.all(np.isfinite(a)):
            bad = np.flatnonzero(~np.isfinite(a)).tolist()
            raise ActionError(f"action has NaN or infinite values at index {bad}: {a.tolist()}")
        return np.clip(a.astype(np.float32), -1.0, 1.0)

    def _apply(self, q: np.ndarray, gripper: float):
        g = float(np.clip(gripper, -1.0, 1.0))
        self._q_cmd = q
        self.data.ctrl[self._arm_act] = q
        self.data.ctrl[self._finger_act] = (1.0 - g) / 2.0 * self._finger_open
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        mujoco.mj_kinematics(self.model, self.data)  # positions after the last substep
        self._elapsed += 1
        success = self.success()
        terminated = success
        limit = self.max_episode_steps
        truncated = (not terminated) and limit is not None and self._elapsed >= limit
        info = self._info(success)
        return self._obs(), float(success), terminated, truncated, info

    def home_arm(self, settle_steps: int = 5) -> None:
        """Open the fingers and put the arm at home (2 cm of noise); the cube and the bowl stay.

        The stand-in's version of a real arm's homing move between reset-free tries (the episode
        controller's `home` setting). A cube that was held falls where it was let go: physics then
        runs `settle_steps` control periods with the arm still, so it lands before the next try.
        """
        self._put_arm_home()
        self.data.qvel[self.kin.dof_adr] = 0.0
        self.data.qvel[self._finger_dof] = 0.0
        mujoco.mj_forward(self.model, self.data)
        if settle_steps > 0:
            mujoco.mj_step(self.model, self.data, nstep=self.n_substeps * int(settle_steps))
            mujoco.mj_kinematics(self.model, self.data)
        self._target_pos, self._target_yaw = self.ee_pose()

    def _put_arm_home(self) -> None:
        d = self.data
        home = HOME_EE + self.np_random.uniform(-0.02, 0.02, size=3)
        q = self.kin.ik(home, 0.0, self._home_q, iters=30)
        d.qpos[self._q_adr] = q
        d.qpos[self._finger_adr] = self._finger_open
        d.ctrl[self._arm_act] = q
        d.ctrl[self._finger_act] = self._finger_open
        self._q_cmd = q

    def _full_reset(self) -> None:
        mujoco.mj_resetData(self.model, self.data)
        cube, bowl, yaw = sample_placement(self.task, self.np_random)
        self._put_arm_home()
        self.set_scene(cube, bowl, yaw)
        if self.task.start == "in_bowl" and self.dropped_start > 0 and self.np_random.uniform() < self.dropped_start:
            if not self._drop_cube_into_bowl(bowl):
                self.set_scene(cube, bowl, yaw)  # no drop stayed in: the flat placement
        elif self.task.start != "in_bowl" and self.rolled_start > 0 and self.np_random.uniform() < self.rolled_start:
            self._turn_cube_onto_a_random_face(yaw)
        self._target_pos, self._target_yaw = self.ee_pose()
        self._needs_full_reset = False

    def _turn_cube_onto_a_random_face(self, yaw: float) -> None:
        """Lay the cube (where it is, heading `yaw`) on one of its six faces, at random, as a cube
        put down by a backward success can lie. The scene looks like the flat placement, but the
        cube's quaternion (in the state) is one a flat placement never gives (docs/ros.md)."""
        r = np.sqrt(0.5)
        faces = ([1, 0, 0, 0], [r, r, 0, 0], [r, -r, 0, 0], [r, 0, r, 0], [r, 0, -r, 0], [0, 1, 0, 0])  # wxyz
        face = np.array(faces[int(self.np_random.integers(len(faces)))])
        heading = np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])
        q = np.empty(4)
        mujoco.mju_mulQuat(q, heading, face)  # the face turn first, then the heading about world z
        a = self._cube_adr
        self.data.qpos[a + 3:a + 7] = q
        mujoco.mj_forward(self.model, self.data)

    def _drop_cube_into_bowl(self, bowl: np.ndarray, tries: int = 10) -> bool:
        """Let the cube fall into the bowl from 3-7 cm with a random orientation and settle, as a
        released cube lands: most drops leave it tipped or leaning on the wall, as a learned
        forward policy's release can, which the flat placement never does (docs/sim.md). Returns
        whether a drop stayed in the bowl."""
        for _ in range(tries):
            off = self.np_random.uniform(-0.02, 0.02, size=2)
            pos = [bowl[0] + off[0], bowl[1] + off[1], BOWL_FLOOR_TOP + CUBE_HALF + self.np_random.uniform(0.03, 0.07)]
            q = self.np_random.normal(size=4)
            a = self._cube_adr
            self.data.qpos[a:a + 3] = pos
            self.data.qpos[a + 3:a + 7] = q / np.linalg.norm(q)
            self.data.qvel[self._cube_dof:self._cube_dof + 6] = 0.0
            mujoco.mj_step(self.model, self.data, nstep=self.n_substeps * 10)  # 1 s: it lands and stops
            if cube_in_bowl(self.scene()):
                return True
        return False

    def _make_renderer(self, size: int) -> mujoco.Renderer:  # the GL backend: robot_calql/sim/__init__.py
        r = mujoco.Renderer(self.model, size, size)
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                     mujoco.mjtRndFlag.mjRND_SKYBOX, mujoco.mjtRndFlag.mjRND_FOG, mujoco.mjtRndFlag.mjRND_HAZE):
            r.scene.flags[flag] = 0
        return r

    def _image(self, camera: str | None = None) -> np.ndarray:
        """The image_size px frame of an MJCF camera (default: the main one)."""
        if self._renderer is None:
            self._renderer = self._make_renderer(self.image_size)
        self._renderer.update_scene(self.data, camera=camera or self.arm.cameras[0])
        return self._renderer.render().copy()

    def _proprio(self) -> np.ndarray:
        ee, yaw = self.ee_pose()
        return np.concatenate([self.joint_positions(), [self.gripper_opening()], ee, [yaw]]).astype(np.float32)

    def _obs(self) -> dict[str, Any]:
        p = self._proprio()
        cube = self.cube_pos()
        state = np.concatenate([p, cube, self.cube_quat(), self.bowl_pos(), cube - p[self.layout.ee]]).astype(np.float32)
        obs: dict[str, Any] = {"proprio": p, "state": state, "instruction": self.task.instruction}
        if self.image_size:
            for camera, key in self.camera_keys.items():
                obs[key] = self._image(camera)
        return obs

    def _info(self, success: bool | None = None) -> dict[str, Any]:
        return {
            "success": self.success() if success is None else success,
            "task": self.task.name,
            "instruction": self.task.instruction,
            "elapsed_steps": self._elapsed,
            "needs_reset": self.needs_reset(),
        }


def make_env(
    task: str = "cube_in_bowl",
    image_size: int = 64,
    seed: int | None = None,
    max_episode_steps: int | None = DEFAULT_MAX_EPISODE_STEPS,
    render_mode: str | None = None,
    action_scale: tuple[float, float] = DEFAULT_ACTION_SCALE,
    render_size: int = 256,
    dropped_start: float = 0.0,
    rolled_start: float = 0.0,
    arm: kin.ArmSpec = kin.STANDIN_ARM,
) -> StandInEnv:
    """Build the stand-in env (unwrapped, so the joint-level methods are at hand).

    task: a task name (see robot_calql.sim.TASKS); image_size: 0 (no rendering), 64, 100 or 128;
    seed: used by the first reset; max_episode_steps: truncation limit at 10 Hz (None: none); render_mode
    "rgb_array": env.render() gives render_size px third-person frames; dropped_start: probability
    that a full reset into a cube-in-the-bowl start drops the cube in (tipped or leaning) instead of
    placing it flat; rolled_start: probability that a full reset into a cube-on-the-table start
    lays the cube on a random one of its six faces (top face up one time in six); arm: the simulated
    arm (default: the stand-in's; another robot's: robot_calql.sim.kinematics.arm_spec(robot config)).
    """
    return StandInEnv(task=task, image_size=image_size, seed=seed, max_episode_steps=max_episode_steps,
                      render_mode=render_mode, action_scale=action_scale, render_size=render_size,
                      dropped_start=dropped_start, rolled_start=rolled_start, arm=arm)


def make_registered_env(**kwargs: Any) -> StandInEnv:
    """`gymnasium.make("RobotCalQL/StandIn-v0", **kwargs)`'s constructor (kwargs as make_env).

    The time limit is gymnasium's: `gymnasium.make(..., max_episode_steps=N)` wraps the env in a
    TimeLimit of N steps (60 when not given, the registered default), so the env sets none itself.
    """
    return StandInEnv(max_episode_steps=None, **kwargs)
