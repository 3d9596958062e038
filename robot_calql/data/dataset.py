"""The robot_calql dataset format (schema version 1). See docs/dataset_format.md.

A dataset is a folder:

    <root>/dataset.json                 metadata (schema version, control rate, robot, camera, shapes)
    <root>/episodes/ep_000000/          one folder per complete episode
        episode.json                    length, instruction, task, success, source, extra
        image.npy    uint8   [T+1, H, W, 3]   (absent when the dataset has no images)
        image_<name>.npy uint8 [T+1, H, W, 3] one per other camera (meta `extra_cameras`, e.g. wrist)
        proprio.npy  float32 [T+1, P]
        state.npy    float32 [T+1, S]         (absent for real-robot data)
        action.npy   float32 [T, A]
        reward.npy   float32 [T]
        terminal.npy bool    [T]              true only where the episode really ended (success)
        intervention.npy bool [T]             optional: true where a human's command was executed
                                              (a takeover); absent: no human step

Observations have T+1 entries (obs_t and next_obs_t share frames: image[t+1] is the next
observation of step t), so every frame is stored once. An episode whose last terminal is false
was truncated (time limit, or the recording stopped).

Each episode is written into a hidden temporary folder and renamed into place when complete, so
a crash never leaves a half-written episode visible; readers ignore the hidden folders. Arrays
are plain .npy files opened with mmap, so a dataset larger than memory can be read.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
EPISODE_DIR = "episodes"
META_FILE = "dataset.json"
EPISODE_META = "episode.json"
OBS_KEYS = ("image", "proprio", "state")  # length T+1; plus image_<name> per extra camera (obs_keys)
STEP_KEYS = ("action", "reward", "terminal")  # length T
DTYPES = {
    "image": np.uint8,
    "proprio": np.float32,
    "state": np.float32,
    "action": np.float32,
    "reward": np.float32,
    "terminal": np.bool_,
}
SOURCES = ("demo", "failure", "prior", "online", "bag", "eval")
# every action space is normalised: each action value lies in [-ACTION_BOUND, ACTION_BOUND]
ACTION_BOUND = 1.0
ACTION_BOUND_TOL = 1e-4  # float rounding of a clipped or tanh-squashed action


class DatasetError(ValueError):
    """A dataset or episode that is missing, corrupt or inconsistent. The message names the file."""


@dataclass
class DatasetMeta:
    """What a dataset holds. Shapes are checked against every episode written or read."""

    control_hz: float
    action_dim: int
    proprio_dim: int
    state_dim: int | None = None  # None: no privileged state (real robots)
    image_shape: tuple[int, int, int] | None = None  # (H, W, 3); None: no images
    robot: str = "unknown"
    camera: str = "unknown"
    action_space: str = "delta_ee"  # e.g. delta_ee: normalised (dx, dy, dz, dyaw, gripper) in [-1, 1]
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    # the other cameras besides the main one (`image`), in order: camera `wrist` is stored as
    # image_wrist.npy with image_shape; [] (and absent from dataset.json): one camera
    extra_cameras: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.extra_cameras = [str(n) for n in self.extra_cameras]
        bad = [n for n in self.extra_cameras if not n.isidentifier() or n in RESERVED_CAMERA_NAMES]
        if bad or len(set(self.extra_cameras)) != len(self.extra_cameras):
            raise DatasetError(f"extra_cameras {self.extra_cameras}: names must be distinct identifiers, "
                               f"not {', '.join(RESERVED_CAMERA_NAMES)}")
        if self.extra_cameras and self.image_shape is None:
            raise DatasetError(f"extra_cameras {self.extra_cameras} without image_shape (a dataset without images)")

    @property
    def image_keys(self) -> list[str]:
        """The image arrays of every episode: image, then image_<name> per extra camera."""
        if self.image_shape is None:
            return []
        return ["image", *(f"image_{n}" for n in self.extra_cameras)]

    def obs_keys(self) -> tuple[str, ...]:
        """OBS_KEYS plus the extra cameras' image keys (arrays of length T+1)."""
        return (*OBS_KEYS, *self.image_keys[1:])

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["image_shape"] = list(self.image_shape) if self.image_shape is not None else None
        if not self.extra_cameras:
            del d["extra_cameras"]  # a one-camera dataset's metadata stays as it always was
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str = "") -> DatasetMeta:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise DatasetError(f"{where}: unknown metadata keys {sorted(unknown)}")
        missing = {"control_hz", "action_dim", "proprio_dim"} - set(d)
        if missing:
            raise DatasetError(f"{where}: metadata lacks {sorted(missing)}")
        d = dict(d)
        if d.get("image_shape") is not None:
            d["image_shape"] = tuple(int(x) for x in d["image_shape"])
        meta = cls(**d)
        if meta.schema_version != SCHEMA_VERSION:
            raise DatasetError(
                f"{where}: schema version {meta.schema_version}, this robot_calql reads {SCHEMA_VERSION}"
            )
        return meta

    def expected_shape(self, key: str, length: int) -> tuple[int, ...] | None:
        """Shape that array `key` must have in an episode of `length` steps (None: absent)."""
        if key.startswith("image"):  # image, or an extra camera's image_<name>; None: the dataset has none
            return None if key not in ("image", *self.image_keys) or self.image_shape is None \
                else (length + 1, *self.image_shape)
        if key == "proprio":
            return (length + 1, self.proprio_dim)
        if key == "state":
            return None if self.state_dim is None else (length + 1, self.state_dim)
        if key == "action":
            return (length, self.action_dim)
        return (length,)  # reward, terminal


@dataclass
class Episode:
    """One trajectory. Observation arrays have length T+1, step arrays length T."""

    proprio: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    terminal: np.ndarray
    instruction: str
    image: np.ndarray | None = None
    state: np.ndarray | None = None
    task: str = ""
    success: bool = False
    source: str = "demo"
    extra: dict[str, Any] = field(default_factory=dict)
    # the extra cameras' images by key (image_<name>: uint8 [T+1, H, W, 3]); {}: one camera
    camera_images: dict[str, np.ndarray] = field(default_factory=dict)
    intervention: np.ndarray | None = None  # bool [T]: a human's step (takeover); None: none

    def __len__(self) -> int:
        return int(self.action.shape[0])

    def obs(self, key: str) -> np.ndarray | None:
        """An observation array by key: image, proprio, state or an extra camera's image_<name>."""
        return getattr(self, key) if key in OBS_KEYS else self.camera_images.get(key)

    @property
    def truncated(self) -> bool:
        """True when the episode ended without a terminal (time limit or end of recording)."""
        return len(self) == 0 or not bool(self.terminal[-1])

    def arrays(self) -> dict[str, np.ndarray]:
        out = {k: getattr(self, k) for k in (*OBS_KEYS, *STEP_KEYS)}
        out.update(self.camera_images)
        out["intervention"] = self.intervention
        return {k: v for k, v in out.items() if v is not None}

    def validate(self, meta: DatasetMeta, where: str = "episode") -> None:
        """Raise DatasetError naming the first problem: shapes, dtypes, NaN/inf, an action outside
        the action bounds, empty episode."""
        T = len(self)
        if T < 1:
            raise DatasetError(f"{where}: empty episode (no steps)")
        if not isinstance(self.instruction, str) or not self.instruction:
            raise DatasetError(f"{where}: missing instruction")
        if self.source not in SOURCES:
            raise DatasetError(f"{where}: source '{self.source}' is not one of {SOURCES}")
        try:
            json.dumps(self.extra)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{where}: extra is not JSON-serialisable ({e})") from None
        unknown = sorted(set(self.camera_images) - set(meta.image_keys[1:]))
        if unknown:
            raise DatasetError(f"{where}: has camera images {unknown} but the dataset's extra cameras are "
                               f"{meta.extra_cameras}")
        for key in (*meta.obs_keys(), *STEP_KEYS):
            arr = self.obs(key) if key not in STEP_KEYS else getattr(self, key)
            want = meta.expected_shape(key, T)
            if want is None:
                if arr is not None:
                    raise DatasetError(f"{where}: has '{key}' but the dataset declares none")
                continue
            if arr is None:
                raise DatasetError(f"{where}: missing '{key}' (expected shape {want})")
            if tuple(arr.shape) != want:
                raise DatasetError(f"{where}: '{key}' has shape {tuple(arr.shape)}, expected {want}")
            if arr.dtype != DTYPES[_dtype_key(key)]:
                raise DatasetError(f"{where}: '{key}' has dtype {arr.dtype}, expected {np.dtype(DTYPES[_dtype_key(key)])}")
            if not key.startswith("image") and key != "terminal":
                bad = ~np.isfinite(arr)
                if bad.any():
                    idx = np.argwhere(bad)[0].tolist()
                    raise DatasetError(f"{where}: '{key}' has a NaN or infinite value at index {idx}")
            if key == "action":
                out = np.abs(arr) > ACTION_BOUND + ACTION_BOUND_TOL
                if out.any():
                    t, i = np.argwhere(out)[0].tolist()
                    raise DatasetError(
                        f"{where}: 'action' (action.npy) value {float(arr[t, i]):.6g} at step {t}, axis {i} is "
                        f"outside the action bounds [-{ACTION_BOUND:g}, {ACTION_BOUND:g}] ({int(out.any(axis=1).sum())} "
                        f"of {T} steps out of bounds; actions are normalised, see docs/dataset_format.md)")
        if self.intervention is not None and (self.intervention.shape != (T,) or self.intervention.dtype != np.bool_):
            raise DatasetError(f"{where}: 'intervention' has shape {tuple(self.intervention.shape)} dtype "
                               f"{self.intervention.dtype}, expected ({T},) bool")
        if self.terminal[:-1].any():
            t = int(np.argmax(self.terminal[:-1]))
            raise DatasetError(f"{where}: terminal=True at step {t} before the last step {T - 1}")


# camera names an extra camera cannot take: image_latent is the replays' cached-latent key
RESERVED_CAMERA_NAMES = ("latent",)


def is_image_key(key: str) -> bool:
    """Whether an observation key holds camera images: image (the main camera) or image_<name>."""
    return key == "image" or (key.startswith("image_") and key[len("image_"):] not in RESERVED_CAMERA_NAMES)


def _dtype_key(key: str) -> str:
    """The DTYPES entry of an array key (an extra camera's image_<name> is an image)."""
    return "image" if key.startswith("image_") else key


def _write_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def replace_folder(new: Path, out: Path) -> None:
    """Move the complete folder `new` to `out`; an existing `out` is replaced only now (renamed
    aside, then deleted), so a failure before this call leaves the old `out` as it was."""
    new, out = Path(new), Path(out)
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
        os.rename(new, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(new, out)


def _atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class DatasetWriter:
    """Append complete episodes to a dataset folder; each appears atomically.

    Creating a writer on an existing dataset appends to it if the metadata matches (shapes,
    rate, action space); `overwrite=True` starts over. Episodes are numbered after the highest
    existing one.
    """

    def __init__(self, root: str | os.PathLike, meta: DatasetMeta, overwrite: bool = False):
        self.root = Path(root)
        self.meta = meta
        meta_path = self.root / META_FILE
        if self.root.exists() and overwrite:
            if meta_path.exists() or not any(self.root.iterdir()):
                shutil.rmtree(self.root)
            else:
                raise DatasetError(f"{self.root}: exists and is not a robot_calql dataset; refusing to delete it")
        if meta_path.exists():
            old = DatasetMeta.from_json(json.loads(meta_path.read_text()), where=str(meta_path))
            for k in ("control_hz", "action_dim", "proprio_dim", "state_dim", "image_shape", "action_space",
                      "extra_cameras"):
                if getattr(old, k) != getattr(meta, k):
                    raise DatasetError(
                        f"{meta_path}: existing dataset has {k}={getattr(old, k)}, new episodes have "
                        f"{getattr(meta, k)}; write to another folder or pass overwrite"
                    )
        elif self.root.exists() and any(p for p in self.root.iterdir() if not p.name.startswith(".")):
            raise DatasetError(f"{self.root}: exists, is not empty and has no {META_FILE}")
        (self.root / EPISODE_DIR).mkdir(parents=True, exist_ok=True)
        if not meta_path.exists():
            _atomic_write_json(meta_path, meta.to_json())
        self._next = self._next_index()

    def _next_index(self) -> int:
        idx = [int(p.name[3:]) for p in (self.root / EPISODE_DIR).glob("ep_*") if p.name[3:].isdigit()]
        return max(idx, default=-1) + 1

    def write_episode(self, ep: Episode) -> Path:
        """Validate and write one episode; returns its folder. Nothing is visible until complete."""
        name = f"ep_{self._next:06d}"
        ep.validate(self.meta, where=f"{self.root}/{EPISODE_DIR}/{name}")
        ep_dir = self.root / EPISODE_DIR
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=ep_dir))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; episodes get normal folder permissions
        try:
            for key, arr in ep.arrays().items():
                _write_npy(tmp / f"{key}.npy", arr)
            info = {
                "length": len(ep),
                "instruction": ep.instruction,
                "task": ep.task,
                "success": bool(ep.success),
                "source": ep.source,
                "written_at": time.time(),
                "extra": ep.extra,
            }
            _atomic_write_json(tmp / EPISODE_META, info)
            os.rename(tmp, ep_dir / name)  # atomic: the episode appears complete or not at all
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._next += 1
        return ep_dir / name


class Dataset:
    """Read a dataset folder. Validates the metadata and every episode's files on open.

    `dataset[i]` returns an Episode whose arrays are memory-mapped (nothing is read until used).
    `verify()` additionally reads every value (NaN/inf checks).
    """

    def __init__(self, root: str | os.PathLike, mmap: bool = True):
        self.root = Path(root)
        if not self.root.exists():
            raise DatasetError(f"{self.root}: dataset folder does not exist")
        meta_path = self.root / META_FILE
        if not meta_path.is_file():
            raise DatasetError(f"{self.root}: not a robot_calql dataset (no {META_FILE})")
        try:
            raw = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DatasetError(f"{meta_path}: corrupt JSON ({e})") from None
        self.meta = DatasetMeta.from_json(raw, where=str(meta_path))
        self._mmap = "r" if mmap else None
        ep_root = self.root / EPISODE_DIR
        self.episode_dirs = sorted(p for p in ep_root.glob("ep_*") if p.is_dir()) if ep_root.is_dir() else []
        self.infos = [self._read_info(p) for p in self.episode_dirs]
        self.lengths = np.array([i["length"] for i in self.infos], dtype=np.int64)

    def _read_info(self, ep_dir: Path) -> dict[str, Any]:
        path = ep_dir / EPISODE_META
        if not path.is_file():
            raise DatasetError(f"{ep_dir}: missing {EPISODE_META}")
        try:
            info = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DatasetError(f"{path}: corrupt JSON ({e})") from None
        for k in ("length", "instruction", "success", "source"):
            if k not in info:
                raise DatasetError(f"{path}: missing field '{k}'")
        for key in (*self.meta.obs_keys(), *STEP_KEYS):
            want = self.meta.expected_shape(key, int(info["length"]))
            f = ep_dir / f"{key}.npy"
            if want is not None and not f.is_file():
                raise DatasetError(f"{f}: missing (episode needs '{key}' with shape {want})")
        return info

    def __len__(self) -> int:
        return len(self.episode_dirs)

    @property
    def num_steps(self) -> int:
        return int(self.lengths.sum())

    def _load(self, f: Path) -> np.ndarray:
        try:
            return np.load(f, mmap_mode=self._mmap, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DatasetError(f"{f}: unreadable or truncated array ({e})") from None

    def __getitem__(self, i: int) -> Episode:
        ep_dir, info = self.episode_dirs[i], self.infos[i]
        T = int(info["length"])
        arrays: dict[str, np.ndarray | None] = {}
        for key in (*self.meta.obs_keys(), *STEP_KEYS):
            want = self.meta.expected_shape(key, T)
            if want is None:
                arrays[key] = None
                continue
            arr = self._load(ep_dir / f"{key}.npy")
            if tuple(arr.shape) != want or arr.dtype != DTYPES[_dtype_key(key)]:
                raise DatasetError(
                    f"{ep_dir / (key + '.npy')}: shape {tuple(arr.shape)} dtype {arr.dtype}, "
                    f"expected {want} {np.dtype(DTYPES[_dtype_key(key)])}"
                )
            arrays[key] = arr
        cams = {k: arrays.pop(k) for k in self.meta.image_keys[1:]}
        human = None
        if (ep_dir / "intervention.npy").is_file():
            human = self._load(ep_dir / "intervention.npy")
            if human.shape != (T,) or human.dtype != np.bool_:
                raise DatasetError(f"{ep_dir / 'intervention.npy'}: shape {human.shape} dtype {human.dtype}, "
                                   f"expected ({T},) bool")
        return Episode(
            camera_images=cams,  # type: ignore[arg-type]
            intervention=human,
            instruction=info["instruction"],
            task=info.get("task", ""),
            success=bool(info["success"]),
            source=info["source"],
            extra=info.get("extra", {}),
            **arrays,  # type: ignore[arg-type]
        )

    def __iter__(self) -> Iterator[Episode]:
        for i in range(len(self)):
            yield self[i]

    def verify(self) -> None:
        """Read every value of every episode; raise DatasetError naming the first problem."""
        for i, ep in enumerate(self):
            ep.validate(self.meta, where=str(self.episode_dirs[i]))

    def summary(self) -> dict[str, Any]:
        by_source: dict[str, int] = {}
        for info in self.infos:
            by_source[info["source"]] = by_source.get(info["source"], 0) + 1
        return {
            "episodes": len(self),
            "steps": self.num_steps,
            "success_rate": float(np.mean([i["success"] for i in self.infos])) if self.infos else 0.0,
            "by_source": by_source,
            "instructions": sorted({i["instruction"] for i in self.infos}),
        }
