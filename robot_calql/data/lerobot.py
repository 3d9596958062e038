"""LeRobotDataset v3.0 (parquet + mp4) import and export. See docs/dataset_format.md.

    robot-calql import-lerobot path=<LeRobot dataset> robot=<config> out=<dir>
    robot-calql export-lerobot dataset=<dir> out=<LeRobot dataset>

A LeRobot v3.0 dataset is a folder:

    meta/info.json                                codebase_version "v3.0", fps, features, totals, path templates
    meta/tasks.parquet                            task string <-> task_index
    meta/stats.json                               min, max, mean, std, count per feature
    meta/episodes/chunk-000/file-000.parquet      one row per episode: length, tasks, which data and video
                                                  file holds it, its frame range and video timestamps
    data/chunk-000/file-000.parquet               one row per frame, several episodes per file
    videos/<camera>/chunk-000/file-000.mp4        several episodes per file, one after the other

Frames and steps: a LeRobot episode of N frames holds N observations, each with the action
taken from it and `next.reward` / `next.done` of that action. A robot_calql episode of T steps
holds T+1 observations and T actions, so N frames <-> T = N - 1 steps: step t is frame t's
action, reward and done, leading to frame t+1. The last frame's action has no recorded result;
export repeats the last action there (as LeRobot pads action chunks) with next.reward 0 and
next.done equal to the episode's terminal, and import drops it, except that when only the last
frame says next.done, the episode's end moves onto the last step (with the reward of both
frames added, so the return is kept). `next.done` is read as a true end (terminal: success).

Import writes through DatasetWriter (every check of the format applies), resizes frames with
the project's one crop-and-resize, and builds the dataset hidden beside `out`, renamed into
place when complete; export does the same. Needs the `lerobot` extra (pyarrow, av).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_calql.data.dataset import (
    ACTION_BOUND,
    ACTION_BOUND_TOL,
    META_FILE,
    Dataset,
    DatasetError,
    DatasetMeta,
    DatasetWriter,
    Episode,
    replace_folder,
)

log = logging.getLogger("robot_calql.data.lerobot")

CODEBASE_VERSION = "v3.0"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
INFO_PATH = "meta/info.json"
TASKS_PATH = "meta/tasks.parquet"
STATS_PATH = "meta/stats.json"
OURS_PATH = "meta/robot_calql.json"  # our dataset.json and export settings; LeRobot ignores it
STATE = "observation.state"
ENV_STATE = "observation.environment_state"  # our privileged `state`
ACTION = "action"
REWARD = "next.reward"
DONE = "next.done"
SUCCESS_KEYS = ("next.success", "success")
OURS = "robot_calql/"  # prefix of our per-episode columns in meta/episodes (task, source, success, extra)
INDEX_FEATURES = {
    "timestamp": "float32",
    "frame_index": "int64",
    "episode_index": "int64",
    "index": "int64",
    "task_index": "int64",
}
DELTA_EE_NAMES = ["dx", "dy", "dz", "dyaw", "gripper"]
IMAGE_STATS_FRAMES = 1000  # at most this many frames feed the camera's stats.json entry


class LeRobotFormatError(DatasetError):
    """A LeRobot dataset that cannot be imported or exported; the message names the file."""


def require_deps():
    """pyarrow, pyarrow.parquet and av, or an ImportError saying which extra to install."""
    try:
        import av
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ModuleNotFoundError(f"LeRobot import/export needs pyarrow and av: pip install 'robot-calql[lerobot]' ({e})") from None
    return pa, pq, av


def _next_file(chunk: int, file: int, chunks_size: int) -> tuple[int, int]:
    """The (chunk, file) after this one: a chunk folder holds `chunks_size` files."""
    return (chunk + 1, 0) if file >= chunks_size - 1 else (chunk, file + 1)


def _prepare_out(out: Path, overwrite: bool, what: str, marker: str) -> Path:
    """The hidden folder beside `out` to build in. An existing `out` is replaced only with `overwrite`
    and only if it holds `marker` (is a dataset of the kind written) or is empty."""
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=true to replace it")
    if out.exists() and not (out / marker).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and has no {marker}; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{what}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


# --------------------------------------------------------------------------- export


@dataclass
class _Stats:
    """Running min, max, mean and std of each feature, as meta/stats.json holds them."""

    acc: dict[str, list[np.ndarray]] = field(default_factory=dict)  # key -> [min, max, sum, sumsq, count]

    def add(self, key: str, values: np.ndarray) -> None:
        v = np.asarray(values, np.float64).reshape(len(values), -1)
        if key not in self.acc:
            self.acc[key] = [v.min(0), v.max(0), v.sum(0), (v * v).sum(0), np.array([len(v)])]
            return
        a = self.acc[key]
        a[0], a[1] = np.minimum(a[0], v.min(0)), np.maximum(a[1], v.max(0))
        a[2], a[3], a[4] = a[2] + v.sum(0), a[3] + (v * v).sum(0), a[4] + len(v)

    def to_json(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, dict[str, Any]]:
        out = {}
        for key, (lo, hi, s, ss, n) in self.acc.items():
            mean = s / n[0]
            std = np.sqrt(np.maximum(ss / n[0] - mean * mean, 0.0))
            shape = shapes.get(key, lo.shape)
            out[key] = {name: np.reshape(x, shape).tolist() for name, x in
                        (("min", lo), ("max", hi), ("mean", mean), ("std", std))}
            out[key]["count"] = [int(n[0])]
        return out


class _VideoFile:
    """One mp4 of a camera: episodes appended one after the other, frame k at time k / fps."""

    def __init__(self, path: Path, fps: int, width: int, height: int, vcodec: str, crf: int, gop: int):
        _, _, av = require_deps()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.frames, self.fps = path, 0, fps
        self.bytes, self.muxed = 0, 0  # encoded bytes and frames written so far (the encoder holds some back)
        self.raw_frame_bytes = width * height * 3
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner and warnings to stderr otherwise (1: errors)
        self.container = av.open(str(path), "w")
        options = {"g": str(gop), "crf": str(crf)}
        if vcodec == "libsvtav1":
            options["preset"] = "12"
        try:
            self.stream = self.container.add_stream(vcodec, rate=fps, options=options)
        except (ValueError, av.error.FFmpegError) as e:  # unknown codec
            self.container.close()
            raise LeRobotFormatError(f"vcodec={vcodec}: this PyAV cannot encode it ({e}); use libsvtav1 or libx264") from None
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self._av = av

    def add(self, images: np.ndarray) -> tuple[float, float]:
        """Append frames (N, H, W, 3) uint8; returns the episode's (from, to) timestamps in the file."""
        start = self.frames
        for img in images:
            frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = self.frames
            self.frames += 1
            self._mux(self.stream.encode(frame))
        return start / self.fps, self.frames / self.fps

    def _mux(self, packets) -> None:
        for p in packets:
            self.bytes += p.size
            self.muxed += 1
            self.container.mux(p)

    def size_estimate(self) -> float:
        """Bytes of the file once the frames the encoder still holds are written (their size guessed from
        those written, or the raw size before any)."""
        per_frame = self.bytes / self.muxed if self.muxed else self.raw_frame_bytes
        return self.bytes + (self.frames - self.muxed) * per_frame

    def close(self) -> None:
        self._mux(self.stream.encode())
        self.container.close()


def _names(meta: DatasetMeta, key: str, dim: int) -> list[str]:
    """Feature names: those an import recorded, else the action space's, else key_i."""
    recorded = meta.extra.get("lerobot", {}).get(f"{key}_names") if isinstance(meta.extra.get("lerobot"), dict) else None
    if isinstance(recorded, list) and len(recorded) == dim:
        return [str(n) for n in recorded]
    if key == "action" and meta.action_space == "delta_ee" and dim == len(DELTA_EE_NAMES):
        return list(DELTA_EE_NAMES)
    return [f"{key}_{i}" for i in range(dim)]


def _vector_feature(dtype: str, names: list[str]) -> dict[str, Any]:
    return {"dtype": dtype, "shape": [len(names)], "names": names}


def _arrow_column(pa, values: np.ndarray, dtype) -> Any:
    """(N,) -> a scalar column; (N, d) -> fixed-size lists of d (a (N, 1) array: scalars, as LeRobot
    stores a feature of shape (1,))."""
    values = np.ascontiguousarray(values)
    if values.ndim == 1 or values.shape[1] == 1:
        return pa.array(values.reshape(len(values)), type=dtype)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), type=dtype), values.shape[1])


def export_lerobot(dataset: str | os.PathLike, out: str | os.PathLike, *, camera_key: str = "observation.images.front",
                   vcodec: str = "libsvtav1", crf: int = 30, gop: int = 2, chunks_size: int = 1000,
                   data_file_mb: float = 100, video_file_mb: float = 200, overwrite: bool = False) -> dict[str, Any]:
    """Write the robot_calql dataset `dataset` as a LeRobotDataset v3.0 folder `out`; returns a report
    (episodes, frames, files, bytes, seconds). Every episode is validated first; nothing appears at
    `out` unless the whole export succeeds."""
    pa, pq, _ = require_deps()
    t0 = time.time()
    src, out = Path(dataset), Path(out)
    ds = Dataset(src)
    meta = ds.meta
    if len(ds) == 0:
        raise LeRobotFormatError(f"{src}: no episodes to export")
    fps = int(round(meta.control_hz))
    if abs(meta.control_hz - fps) > 1e-9 or fps <= 0:
        raise LeRobotFormatError(f"{src}: control_hz={meta.control_hz}; LeRobot stores an integer fps")
    if chunks_size < 1 or data_file_mb <= 0 or video_file_mb <= 0:
        raise LeRobotFormatError("chunks_size, data_file_mb and video_file_mb must be positive")
    if meta.extra_cameras:  # never drop a camera silently
        raise LeRobotFormatError(f"{src}: extra cameras {meta.extra_cameras}: the LeRobot export writes one camera "
                                 "(image) only")
    features: dict[str, dict[str, Any]] = {}
    if meta.image_shape is not None:
        h, w, c = meta.image_shape
        if h % 2 or w % 2:
            raise LeRobotFormatError(f"{src}: image_shape {meta.image_shape}: yuv420p video needs an even height and width")
        features[camera_key] = {"dtype": "video", "shape": [h, w, c], "names": ["height", "width", "channels"]}
    features[STATE] = _vector_feature("float32", _names(meta, "state", meta.proprio_dim))
    if meta.state_dim is not None:
        features[ENV_STATE] = _vector_feature("float32", _names(meta, "environment_state", meta.state_dim))
    features[ACTION] = _vector_feature("float32", _names(meta, "action", meta.action_dim))
    features[REWARD] = {"dtype": "float32", "shape": [1], "names": None}
    features[DONE] = {"dtype": "bool", "shape": [1], "names": None}
    for k, dt in INDEX_FEATURES.items():
        features[k] = {"dtype": dt, "shape": [1], "names": None}

    tmp = _prepare_out(out, overwrite, "export", INFO_PATH)
    tasks: dict[str, int] = {}
    episodes: list[dict[str, Any]] = []
    stats = _Stats()
    image_frames = 0  # frames sampled into the camera's stats
    sample_every = max(1, (ds.num_steps + len(ds)) // IMAGE_STATS_FRAMES)
    data_loc, video_loc = (0, 0), (0, 0)
    writer, data_bytes, video = None, 0, None
    n_data_files, n_video_files, index = 0, 0, 0
    try:
        for e, ep in enumerate(ds):
            ep.validate(meta, where=str(ds.episode_dirs[e]))
            T = len(ep)
            n = T + 1
            task_index = tasks.setdefault(ep.instruction, len(tasks))
            action = np.concatenate([ep.action, ep.action[-1:]])  # last frame: the last action repeated
            reward = np.append(ep.reward, np.float32(0.0))
            done = np.append(ep.terminal, ep.terminal[-1])
            frame_index = np.arange(n, dtype=np.int64)
            cols = {STATE: (np.asarray(ep.proprio), pa.float32())}
            if ep.state is not None:
                cols[ENV_STATE] = (np.asarray(ep.state), pa.float32())
            cols.update({
                ACTION: (action, pa.float32()), REWARD: (reward, pa.float32()), DONE: (done, pa.bool_()),
                "timestamp": ((frame_index / fps).astype(np.float32), pa.float32()),
                "frame_index": (frame_index, pa.int64()),
                "episode_index": (np.full(n, e, np.int64), pa.int64()),
                "index": (index + frame_index, pa.int64()),
                "task_index": (np.full(n, task_index, np.int64), pa.int64()),
            })
            table = pa.table({k: _arrow_column(pa, v, t) for k, (v, t) in cols.items()})
            for k, (v, _) in cols.items():
                stats.add(k, v)
            if writer is None:
                path = tmp / DATA_PATH.format(chunk_index=data_loc[0], file_index=data_loc[1])
                path.parent.mkdir(parents=True, exist_ok=True)
                writer, data_bytes = pq.ParquetWriter(path, table.schema, compression="snappy"), 0
                n_data_files += 1
            writer.write_table(table)
            data_bytes += table.nbytes
            row: dict[str, Any] = {
                "episode_index": e, "tasks": [ep.instruction], "length": n,
                "data/chunk_index": data_loc[0], "data/file_index": data_loc[1],
                "dataset_from_index": index, "dataset_to_index": index + n,
            }
            if data_bytes >= data_file_mb * 2**20:  # this file is full: the next episode starts another
                writer.close()
                writer, data_loc = None, _next_file(*data_loc, chunks_size)
            if ep.image is not None:
                if video is None:
                    path = tmp / VIDEO_PATH.format(video_key=camera_key, chunk_index=video_loc[0], file_index=video_loc[1])
                    video = _VideoFile(path, fps, ep.image.shape[2], ep.image.shape[1], vcodec, crf, gop)
                    n_video_files += 1
                t_from, t_to = video.add(np.asarray(ep.image))
                for img in ep.image[::sample_every]:  # per-channel stats in [0, 1], a frame at a time
                    stats.add(camera_key, np.asarray(img).reshape(-1, 3) / 255.0)
                    image_frames += 1
                row.update({f"videos/{camera_key}/chunk_index": video_loc[0], f"videos/{camera_key}/file_index": video_loc[1],
                            f"videos/{camera_key}/from_timestamp": t_from, f"videos/{camera_key}/to_timestamp": t_to})
                if video.size_estimate() >= video_file_mb * 2**20:
                    video.close()
                    video, video_loc = None, _next_file(*video_loc, chunks_size)
            row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                        OURS + "task": ep.task, OURS + "source": ep.source, OURS + "success": bool(ep.success),
                        OURS + "extra": json.dumps(ep.extra, sort_keys=True)})
            episodes.append(row)
            index += n
        if writer is not None:
            writer.close()
        if video is not None:
            video.close()
        writer = video = None

        video_info = None
        if meta.image_shape is not None:
            video_info = _probe_video(tmp / VIDEO_PATH.format(video_key=camera_key, chunk_index=0, file_index=0))
            features[camera_key]["info"] = {**video_info, "video.is_depth_map": False, "has_audio": False}
        shapes = {k: (3, 1, 1) if f["dtype"] == "video" else tuple(f["shape"]) for k, f in features.items()}
        stats_json = stats.to_json(shapes)
        if image_frames:
            stats_json[camera_key]["count"] = [image_frames]  # LeRobot counts frames, not pixels
        _write_episodes(pa, pq, tmp / EPISODES_PATH.format(chunk_index=0, file_index=0), episodes)
        _write_tasks(pa, pq, tmp / TASKS_PATH, tasks)
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": meta.robot,
            "total_episodes": len(episodes),
            "total_frames": index,
            "total_tasks": len(tasks),
            "chunks_size": chunks_size,
            "data_files_size_in_mb": int(data_file_mb) if float(data_file_mb).is_integer() else data_file_mb,
            "video_files_size_in_mb": int(video_file_mb) if float(video_file_mb).is_integer() else video_file_mb,
            "fps": fps,
            "splits": {"train": f"0:{len(episodes)}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if meta.image_shape is not None else None,
            "features": features,
        }
        (tmp / STATS_PATH).write_text(json.dumps(stats_json, indent=2) + "\n")
        (tmp / INFO_PATH).write_text(json.dumps(info, indent=4) + "\n")
        sizes = {kind: sum(p.stat().st_size for p in (tmp / kind).rglob("*") if p.is_file())
                 for kind in ("data", "videos", "meta") if (tmp / kind).is_dir()}
        report = {
            "dataset": str(src), "out": str(out), "episodes": len(episodes), "frames": index,
            "tasks": len(tasks), "fps": fps, "data_files": n_data_files, "video_files": n_video_files,
            "camera_key": camera_key if meta.image_shape is not None else None,
            "vcodec": vcodec if meta.image_shape is not None else None, "crf": crf, "gop": gop,
            "bytes": sizes, "seconds": round(time.time() - t0, 3),
        }
        (tmp / OURS_PATH).write_text(json.dumps({"dataset": meta.to_json(), "export": report}, indent=2) + "\n")
        replace_folder(tmp, out)
    except BaseException:
        for f in (writer, video):
            if f is not None:
                try:
                    f.close()
                except Exception:  # the export failed already; the folder goes away below
                    pass
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _probe_video(path: Path) -> dict[str, Any]:
    """The `video.*` info LeRobot keeps per camera feature, read from the written file."""
    _, _, av = require_deps()
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return {"video.height": s.height, "video.width": s.width, "video.codec": s.codec_context.codec.canonical_name,
                "video.pix_fmt": s.pix_fmt, "video.fps": int(round(float(s.average_rate or s.base_rate))),
                "video.channels": 3}


def _write_episodes(pa, pq, path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    types = {"tasks": pa.list_(pa.string())}
    cols = {}
    for k in keys:
        vals = [r.get(k) for r in rows]
        if k in types:
            cols[k] = pa.array(vals, type=types[k])
        elif k.endswith("_timestamp"):
            cols[k] = pa.array(vals, type=pa.float64())
        elif all(isinstance(v, bool) for v in vals):
            cols[k] = pa.array(vals, type=pa.bool_())
        elif all(isinstance(v, int) for v in vals):
            cols[k] = pa.array(vals, type=pa.int64())
        else:
            cols[k] = pa.array(vals)
    pq.write_table(pa.table(cols), path)


def _write_tasks(pa, pq, path: Path, tasks: dict[str, int]) -> None:
    """meta/tasks.parquet as pandas writes a frame indexed by `task` with a `task_index` column
    (LeRobot reads it with pandas and looks tasks up by that index)."""
    names = sorted(tasks, key=tasks.get)
    table = pa.table({"task_index": pa.array([tasks[n] for n in names], pa.int64()), "task": pa.array(names, pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


# --------------------------------------------------------------------------- import


@dataclass
class ImportReport:
    """What an import read, converted and dropped; saved as <out>/import_report.json."""

    source: str
    episodes: int = 0
    frames: int = 0
    steps: int = 0
    successes: int = 0
    camera: str | None = None
    image_size: int | None = None
    crop: str = "none"
    action_scaling: dict[str, Any] = field(default_factory=dict)
    reward_from: str = ""
    terminal_from: str = ""
    ends_moved: int = 0  # episodes whose next.done was only on the last frame (moved onto the last step)
    final_rewards_dropped: int = 0  # last frames with a nonzero next.reward and no done (no recorded result)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        log.warning(text)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise LeRobotFormatError(f"{path}: missing (not a LeRobot v3.0 dataset?)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LeRobotFormatError(f"{path}: corrupt JSON ({e})") from None


def read_info(root: Path) -> dict[str, Any]:
    """meta/info.json, checked: codebase_version v3.x, fps, features and the path templates."""
    path = root / INFO_PATH
    info = _read_json(path)
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3."):
        raise LeRobotFormatError(
            f"{path}: codebase_version '{version}'; this importer reads v3.0 (convert a v2.1 dataset with "
            "LeRobot's `python -m lerobot.datasets.v30.convert_dataset_v21_to_v30`)")
    for k in ("fps", "features", "data_path"):
        if k not in info:
            raise LeRobotFormatError(f"{path}: lacks '{k}'")
    if not isinstance(info["features"], dict):
        raise LeRobotFormatError(f"{path}: 'features' must be a mapping of feature name to dtype/shape")
    for name, ft in info["features"].items():
        if not isinstance(ft, dict) or "dtype" not in ft or "shape" not in ft:
            raise LeRobotFormatError(f"{path}: feature '{name}' lacks dtype or shape")
    return info


def _read_parquet(pq, path: Path, columns: list[str] | None = None):
    if not path.is_file():
        raise LeRobotFormatError(f"{path}: missing")
    try:
        return pq.read_table(path, columns=columns)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, KeyError (missing column), ...
        raise LeRobotFormatError(f"{path}: unreadable parquet ({type(e).__name__}: {e})") from None


def read_episodes(root: Path) -> list[dict[str, Any]]:
    """Rows of meta/episodes/*/*.parquet sorted by episode_index (0, 1, 2, ... checked)."""
    pa, pq, _ = require_deps()
    files = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
    if not files:
        raise LeRobotFormatError(f"{root / 'meta' / 'episodes'}: no chunk-XXX/file-XXX.parquet")
    rows: list[dict[str, Any]] = []
    for f in files:
        rows += _read_parquet(pq, f).to_pylist()
    for r in rows:
        for k in ("episode_index", "length", "data/chunk_index", "data/file_index"):
            if r.get(k) is None:
                raise LeRobotFormatError(f"{root / 'meta' / 'episodes'}: an episode row lacks '{k}'")
    rows.sort(key=lambda r: r["episode_index"])
    got = [r["episode_index"] for r in rows]
    if got != list(range(len(rows))):
        raise LeRobotFormatError(f"{root / 'meta' / 'episodes'}: episode_index must run 0..{len(rows) - 1}, got {got[:10]}...")
    return rows


def read_tasks(root: Path) -> dict[int, str]:
    """task_index -> task string from meta/tasks.parquet (the task is the pandas index column `task`)."""
    _, pq, _ = require_deps()
    path = root / TASKS_PATH
    table = _read_parquet(pq, path)
    names = table.column_names
    text = next((c for c in ("task", "__index_level_0__") if c in names), None)
    if "task_index" not in names or text is None:
        raise LeRobotFormatError(f"{path}: needs a task_index column and the task strings (columns: {names})")
    return {int(i): str(t) for i, t in zip(table.column("task_index").to_pylist(), table.column(text).to_pylist(), strict=True)}


def _to_numpy(pa, table, key: str, where: str) -> np.ndarray:
    """A column as (N,) (scalars) or (N, d) (lists of equal length d); nulls are an error."""
    import pyarrow.compute as pc

    col = table.column(key).combine_chunks()
    if col.null_count:
        raise LeRobotFormatError(f"{where}: '{key}' has {col.null_count} null values")
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
        lengths = np.asarray(pc.list_value_length(col).to_numpy(zero_copy_only=False))
        if len(lengths) and (lengths != lengths[0]).any():
            raise LeRobotFormatError(f"{where}: '{key}' rows have different lengths {sorted(set(lengths.tolist()))[:5]}")
        values = col.flatten().to_numpy(zero_copy_only=False)
        return values.reshape(len(col), -1)
    return col.to_numpy(zero_copy_only=False)


class _VideoReader:
    """Frames of one mp4 read forward in time; a request before the last frame read reopens it."""

    def __init__(self, path: Path, convert):
        _, _, av = require_deps()
        if not path.is_file():
            raise LeRobotFormatError(f"{path}: missing video file")
        self.path, self.convert, self._av = path, convert, av
        self._open()

    def _open(self) -> None:
        try:
            self.container = self._av.open(str(self.path))
            self._frames: Iterator = self.container.decode(self.container.streams.video[0])
        except (self._av.error.FFmpegError, IndexError) as e:
            raise LeRobotFormatError(f"{self.path}: unreadable video ({e})") from None
        self._last = -math.inf

    def close(self) -> None:
        self.container.close()

    def frames_at(self, times: np.ndarray, tol: float) -> list[np.ndarray]:
        """The frame at each time (seconds, increasing), each within `tol` of the decoded frame time."""
        if len(times) and times[0] <= self._last + tol:
            self.close()
            self._open()
        out = []
        for t in times:
            while True:
                try:
                    frame = next(self._frames)
                except StopIteration:
                    raise LeRobotFormatError(f"{self.path}: video ends at {self._last:.4f}s; a frame at {t:.4f}s is "
                                             "needed") from None
                except self._av.error.FFmpegError as e:
                    raise LeRobotFormatError(f"{self.path}: video decoding failed after {self._last:.4f}s ({e})") from None
                if frame.time is None:
                    raise LeRobotFormatError(f"{self.path}: a frame without a timestamp")
                self._last = float(frame.time)
                if self._last < t - tol:
                    continue
                if self._last > t + tol:
                    raise LeRobotFormatError(
                        f"{self.path}: no frame within {tol}s of {t:.4f}s (the next is at {self._last:.4f}s); the "
                        "episode's videos/.../from_timestamp or the frames' timestamps do not match the video")
                out.append(self.convert(frame.reformat(format="rgb24").to_ndarray()))  # 10x faster than to_ndarray(format=)
                break
        return out


def _image_from_png(data: dict[str, Any] | None, where: str) -> np.ndarray:
    import cv2

    raw = (data or {}).get("bytes")
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR) if raw else None
    if img is None:
        raise LeRobotFormatError(f"{where}: an image cell is empty or not a decodable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _action_scaling(mode: str, low, high, lo_data: np.ndarray, hi_data: np.ndarray) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]:
    """(report entry, low, high) of the map low..high -> -1..1 per axis; (.., None, None) keeps actions."""
    dim = len(lo_data)
    if low is not None or high is not None:
        if low is None or high is None:
            raise LeRobotFormatError("give both action_low and action_high (one value per action axis)")
        lo, hi = np.asarray(low, np.float64).reshape(-1), np.asarray(high, np.float64).reshape(-1)
        if lo.shape != (dim,) or hi.shape != (dim,):
            raise LeRobotFormatError(f"action_low / action_high need {dim} values each (the action feature's size), "
                                     f"got {lo.size} and {hi.size}")
        if (hi <= lo).any():
            raise LeRobotFormatError(f"action_high must exceed action_low on every axis (axis {int(np.argmax(hi <= lo))})")
        return {"mode": "given", "low": lo.tolist(), "high": hi.tolist()}, lo, hi
    bound = ACTION_BOUND + ACTION_BOUND_TOL
    inside = bool((lo_data >= -bound).all() and (hi_data <= bound).all())
    if mode == "identity" or (mode == "auto" and inside):
        return {"mode": "identity", "data_min": lo_data.tolist(), "data_max": hi_data.tolist()}, None, None
    if mode not in ("auto", "data"):
        raise LeRobotFormatError(f"action_range={mode}: auto, identity or data")
    lo, hi = lo_data.astype(np.float64).copy(), hi_data.astype(np.float64).copy()
    flat = hi <= lo  # an axis that never moves maps to 0
    lo[flat], hi[flat] = lo[flat] - 1.0, hi[flat] + 1.0
    return {"mode": "data min/max", "low": lo.tolist(), "high": hi.tolist(), "constant_axes": np.flatnonzero(flat).tolist()}, lo, hi


def _rewards(n: int, cols: dict[str, np.ndarray], report: ImportReport, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(reward[T], terminal[T]) of an episode of n frames, T = n - 1 (module docstring: frames <-> steps)."""
    T = n - 1
    success = next((cols[k] for k in SUCCESS_KEYS if k in cols), None)
    if REWARD in cols:
        r = cols[REWARD].astype(np.float32)
    else:
        r = np.zeros(n, np.float32)
        if success is not None:
            r[-1] = float(bool(success[-1]) or bool(success[-2]))
    if DONE in cols:
        d = cols[DONE].astype(bool)
    else:
        d = np.zeros(n, bool)
        if success is not None:
            d[-1] = bool(success[-1]) or bool(success[-2])
    if d[:-2].any():
        t = int(np.argmax(d[:-2]))
        raise LeRobotFormatError(f"{where}: next.done is true at frame {t} of {n}, before the episode's last two "
                                 "frames (an episode ends at its first done)")
    reward, terminal = r[:T].copy(), d[:T].copy()
    if d[-1] and not d[-2]:
        terminal[-1] = True
        reward[-1] += r[-1]
        report.ends_moved += 1
    elif r[-1] != 0:
        report.final_rewards_dropped += 1
    return reward, terminal


def import_lerobot(path: str | os.PathLike, out: str | os.PathLike, *, robot: str = "unknown", image_size: int = 64,
                   crop: Any = None, control_hz: float | None = None, camera: str = "auto", action_range: str = "auto",
                   action_low=None, action_high=None, action_space: str = "auto", instruction: str = "",
                   task: str = "", source: str = "auto", tolerance_s: float = 1e-4,
                   overwrite: bool = False) -> ImportReport:
    """Import the LeRobot v3.0 dataset folder `path` as a robot_calql dataset at `out`.

    crop: None (the whole frame), "center" or a CropRegion, applied before resizing to image_size.
    control_hz: the robot's control rate; a dataset with another fps is refused (None: no check).
    camera: the video/image feature that becomes the image ("auto": the only one; "": none).
    Nothing appears at `out` unless every episode converted; the report is returned and saved.
    """
    pa, pq, _ = require_deps()
    from robot_calql.calibration.crop import CropRegion, centered_square, crop_and_resize

    t0 = time.time()
    root, out = Path(path), Path(out)
    info = read_info(root)
    fps = float(info["fps"])
    if control_hz is not None and abs(float(control_hz) - fps) > 1e-6:
        raise LeRobotFormatError(f"{root / INFO_PATH}: fps {info['fps']} but the robot's control_hz is {control_hz}; "
                                 "import with a robot config of that rate (no resampling is done)")
    features = info["features"]
    if STATE not in features or ACTION not in features:
        raise LeRobotFormatError(f"{root / INFO_PATH}: needs '{STATE}' and '{ACTION}' features (has {sorted(features)})")
    cameras = [k for k, f in features.items() if f["dtype"] in ("video", "image")]
    if camera == "auto":
        if len(cameras) > 1:
            raise LeRobotFormatError(f"{root / INFO_PATH}: {len(cameras)} cameras {cameras}; choose one with camera=<name> "
                                     "(or camera='' for none)")
        camera = cameras[0] if cameras else ""
    elif camera and camera not in cameras:
        raise LeRobotFormatError(f"camera={camera}: not a video or image feature of {root} (cameras: {cameras})")
    ours_path = root / OURS_PATH
    ours = _read_json(ours_path).get("dataset", {}) if ours_path.is_file() else {}
    episodes = read_episodes(root)
    tasks = read_tasks(root)
    report = ImportReport(source=str(root), camera=camera or None, image_size=image_size if camera else None,
                          crop=("none" if crop is None else crop if isinstance(crop, str) else
                                f"x={crop.x} y={crop.y} width={crop.width} height={crop.height}"))

    # which columns to read, and the action range over the whole dataset (before writing anything)
    has = set(features)
    columns = ["episode_index", "frame_index", "timestamp", "task_index", STATE, ACTION]
    columns += [k for k in (ENV_STATE, REWARD, DONE, *SUCCESS_KEYS) if k in has]
    if camera and features[camera]["dtype"] == "image":
        columns.append(camera)
    report.reward_from = REWARD if REWARD in has else next((k for k in SUCCESS_KEYS if k in has), "none: rewards are 0")
    report.terminal_from = DONE if DONE in has else next((k for k in SUCCESS_KEYS if k in has), "none: every episode is truncated")
    if REWARD not in has and DONE not in has and not any(k in has for k in SUCCESS_KEYS):
        report.warn(f"{root}: no {REWARD}, {DONE} or success feature: rewards are 0 and every episode is truncated")
    data_files = sorted({(r["data/chunk_index"], r["data/file_index"]) for r in episodes})
    lo_data = hi_data = None
    for c, f in data_files:
        p = root / info["data_path"].format(chunk_index=c, file_index=f)
        a = _to_numpy(pa, _read_parquet(pq, p, [ACTION]), ACTION, str(p))
        a = a.reshape(len(a), -1)
        if not np.isfinite(a).all():
            raise LeRobotFormatError(f"{p}: 'action' has a NaN or infinite value")
        lo, hi = a.min(0), a.max(0)
        lo_data = lo if lo_data is None else np.minimum(lo_data, lo)
        hi_data = hi if hi_data is None else np.maximum(hi_data, hi)
    report.action_scaling, a_lo, a_hi = _action_scaling(action_range, action_low, action_high, lo_data, hi_data)
    if action_space == "auto":
        action_space = ours.get("action_space", "lerobot")

    def convert(img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        region = centered_square(w, h) if crop == "center" else crop if isinstance(crop, CropRegion) else None
        return crop_and_resize(img, region, image_size)

    tmp = _prepare_out(out, overwrite, "import", META_FILE)
    writer: DatasetWriter | None = None
    cached: tuple[Path | None, Any, Any] = (None, None, None)  # data file, its table, its episode_index column
    video: _VideoReader | None = None
    try:
        for row in episodes:
            e = int(row["episode_index"])
            p = root / info["data_path"].format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
            where = f"{p}: episode {e}"
            if cached[0] != p:
                table = _read_parquet(pq, p, [c for c in columns if c in _schema_names(pq, p)])
                missing = [c for c in columns if c not in table.column_names]
                if missing:
                    raise LeRobotFormatError(f"{p}: lacks the columns {missing} that meta/info.json declares")
                cached = (p, table, _to_numpy(pa, table, "episode_index", str(p)))
            _, table, ep_index = cached
            rows = np.flatnonzero(ep_index == e)
            sub = table.take(pa.array(rows))
            order = np.argsort(_to_numpy(pa, sub, "frame_index", where), kind="stable")
            sub = sub.take(pa.array(order))
            n = len(rows)
            if n != int(row["length"]):
                raise LeRobotFormatError(f"{where}: {n} frames in the data file, meta/episodes says length {row['length']}")
            frame_index = _to_numpy(pa, sub, "frame_index", where)
            if (frame_index != np.arange(n)).any():
                raise LeRobotFormatError(f"{where}: frame_index is not 0..{n - 1}")
            if n < 2:
                report.skipped.append(f"episode {e}: {n} frame (needs 2: an observation and the next)")
                continue
            cols = {k: _to_numpy(pa, sub, k, where) for k in columns if k != camera}
            proprio = cols[STATE].reshape(n, -1).astype(np.float32)
            state = cols[ENV_STATE].reshape(n, -1).astype(np.float32) if ENV_STATE in cols else None
            action = cols[ACTION].reshape(n, -1)[: n - 1].astype(np.float64)
            if a_lo is not None:
                bad = (action < a_lo - 1e-9) | (action > a_hi + 1e-9)
                if bad.any():
                    t, i = np.argwhere(bad)[0].tolist()
                    raise LeRobotFormatError(f"{where}: action {action[t, i]:.6g} at frame {t}, axis {i} is outside "
                                             f"[{a_lo[i]:.6g}, {a_hi[i]:.6g}] (action_low / action_high); refusing to clip")
                action = 2.0 * (action - a_lo) / (a_hi - a_lo) - 1.0
            elif (np.abs(action) > ACTION_BOUND + ACTION_BOUND_TOL).any():
                t, i = np.argwhere(np.abs(action) > ACTION_BOUND + ACTION_BOUND_TOL)[0].tolist()
                raise LeRobotFormatError(f"{where}: action {action[t, i]:.6g} at frame {t}, axis {i} is outside [-1, 1] "
                                         "with action_range=identity; give action_low/action_high or action_range=data")
            reward, terminal = _rewards(n, cols, report, where)
            image = None
            if camera and features[camera]["dtype"] == "image":
                image = np.stack([convert(_image_from_png(d, where)) for d in sub.column(camera).to_pylist()])
            elif camera:
                keys = [f"videos/{camera}/{k}" for k in ("chunk_index", "file_index", "from_timestamp")]
                if not info.get("video_path") or any(row.get(k) is None for k in keys):
                    raise LeRobotFormatError(f"{root}: episode {e} has no {', '.join(keys)} in meta/episodes "
                                             "(or meta/info.json no video_path)")
                vp = root / info["video_path"].format(video_key=camera, chunk_index=row[keys[0]], file_index=row[keys[1]])
                if video is None or video.path != vp:
                    if video is not None:
                        video.close()
                    video = _VideoReader(vp, convert)
                times = float(row[f"videos/{camera}/from_timestamp"]) + cols["timestamp"].astype(np.float64)
                image = np.stack(video.frames_at(times, tolerance_s))
            task_ids = np.unique(cols["task_index"])
            text = tasks.get(int(cols["task_index"][0]), "") or instruction
            if len(task_ids) > 1:
                report.warn(f"{where}: {len(task_ids)} tasks in one episode; its instruction is the first frame's")
            if not text:
                raise LeRobotFormatError(f"{where}: no task string for task_index {int(cols['task_index'][0])}; "
                                         "give instruction=<text>")
            ep = Episode(
                image=image, proprio=proprio, state=state, action=action.astype(np.float32), reward=reward,
                terminal=terminal, instruction=text,
                success=bool(row[OURS + "success"]) if row.get(OURS + "success") is not None else bool(terminal[-1]),
                task=task or row.get(OURS + "task") or "",
                source=(row.get(OURS + "source") or "demo") if source == "auto" else source,
                extra=(json.loads(row[OURS + "extra"]) if row.get(OURS + "extra") is not None
                       else {"lerobot_episode_index": e, "lerobot_tasks": [tasks.get(int(i), "") for i in task_ids]}),
            )
            if writer is None:
                writer = DatasetWriter(tmp, DatasetMeta(
                    control_hz=fps, action_dim=ep.action.shape[1], proprio_dim=proprio.shape[1],
                    state_dim=None if state is None else state.shape[1],
                    image_shape=None if image is None else tuple(image.shape[1:]),
                    robot=robot, camera=camera or "none", action_space=action_space,
                    extra={**ours.get("extra", {}), "lerobot": {
                        "source": str(root), "robot_type": info.get("robot_type"), "camera": camera or None,
                        "state_names": features[STATE].get("names"), "action_names": features[ACTION].get("names"),
                        "action_scaling": report.action_scaling}},
                ))
            try:
                writer.write_episode(ep)
            except DatasetError as err:
                raise LeRobotFormatError(f"{where}: {err}") from None
            report.episodes += 1
            report.frames += n
            report.steps += n - 1
            report.successes += int(ep.success)
        if writer is None:
            raise LeRobotFormatError(f"{root}: no episode with at least 2 frames ({'; '.join(report.skipped)})")
        report.seconds = round(time.time() - t0, 3)
        (tmp / "import_report.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if video is not None:
            video.close()
    return report


def _schema_names(pq, path: Path) -> list[str]:
    try:
        return pq.read_schema(path).names
    except Exception as e:
        raise LeRobotFormatError(f"{path}: unreadable parquet ({type(e).__name__}: {e})") from None


# --------------------------------------------------------------------------- commands


def _crop_setting(cfg) -> Any:
    """crop=auto|center|none -> a CropRegion, "center" or None (auto: the robot's calibration crop.yaml if
    present, else the whole frame, as ingest and the policy node do)."""
    from robot_calql.calibration import calibration_dir
    from robot_calql.calibration.crop import load_crop
    from robot_calql.config import ConfigError

    mode = str(cfg.crop)
    if mode in ("center", "none"):
        return None if mode == "none" else "center"
    if mode != "auto":
        raise ConfigError(f"crop={mode}: auto (calibration crop.yaml, else the whole frame), center or none")
    if cfg.robot.get("calibration"):
        f = calibration_dir(cfg.robot) / "crop.yaml"
        if f.is_file():
            return load_crop(f)
    return None


def import_main(cfg) -> int:
    """`robot-calql import-lerobot` (configs/import_lerobot.yaml)."""
    from omegaconf import ListConfig

    from robot_calql.config import ConfigError, resolve_path

    def per_axis(key: str) -> list[float] | None:
        v = cfg.get(key)
        if v is None:
            return None
        if not isinstance(v, ListConfig):
            raise ConfigError(f"{key}={v}: give one value per action axis, e.g. {key}=[-1,-1,0]")
        return [float(x) for x in v]

    r = import_lerobot(
        resolve_path(cfg.path), resolve_path(cfg.out), robot=str(cfg.robot.name), image_size=int(cfg.image_size),
        crop=_crop_setting(cfg), control_hz=float(cfg.robot.control_hz), camera=str(cfg.camera or ""),
        action_range=str(cfg.action_range), action_low=per_axis("action_low"), action_high=per_axis("action_high"),
        action_space=str(cfg.action_space), instruction=str(cfg.instruction or ""), task=str(cfg.task or ""),
        source=str(cfg.source), tolerance_s=float(cfg.tolerance_s), overwrite=bool(cfg.overwrite),
    )
    print(f"imported {r.episodes} episodes ({r.steps} steps, {r.successes} successes) from {r.source} to "
          f"{resolve_path(cfg.out)} in {r.seconds:.1f}s")
    print(f"  camera {r.camera} -> {r.image_size} px (crop {r.crop}); rewards from {r.reward_from}; "
          f"terminals from {r.terminal_from}")
    print(f"  actions: {json.dumps(r.action_scaling)}")
    if r.ends_moved or r.final_rewards_dropped or r.skipped:
        print(f"  {r.ends_moved} episode ends moved onto the last step, {r.final_rewards_dropped} last-frame rewards "
              f"dropped, {len(r.skipped)} episodes skipped")
    for w in r.warnings:
        print(f"  warning: {w}")
    return 0


def export_main(cfg) -> int:
    """`robot-calql export-lerobot` (configs/export_lerobot.yaml)."""
    from robot_calql.config import resolve_path

    r = export_lerobot(
        resolve_path(cfg.dataset), resolve_path(cfg.out), camera_key=str(cfg.camera_key), vcodec=str(cfg.vcodec),
        crf=int(cfg.crf), gop=int(cfg.gop), chunks_size=int(cfg.chunks_size), data_file_mb=float(cfg.data_file_mb),
        video_file_mb=float(cfg.video_file_mb), overwrite=bool(cfg.overwrite),
    )
    mb = {k: round(v / 2**20, 3) for k, v in r["bytes"].items()}
    print(f"exported {r['episodes']} episodes ({r['frames']} frames, {r['tasks']} tasks, {r['fps']} fps) to {r['out']} "
          f"in {r['seconds']:.1f}s: {r['data_files']} data and {r['video_files']} video files, MB {mb}")
    return 0
