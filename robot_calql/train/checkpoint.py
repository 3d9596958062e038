"""Crash-safe checkpoints of a training run.

Layout of a run folder:

    <run>/checkpoints/step_000500/      one complete checkpoint
        model.safetensors               every tensor of agent.state_dict() outside its optimisers
        trainer.pt                      torch.save of the rest: optimiser states, RNG states,
                                        step counters, non-tensor agent entries
        buffer.npz                      the online replay buffer (fine-tuning only)
        meta.json                       step, phase, obs spec, instruction vocabulary, config
    <run>/checkpoints/LATEST            name of the newest complete checkpoint folder

A checkpoint is written into a hidden temporary folder and renamed into place; only then is
LATEST replaced (write + os.replace), so a crash or Ctrl-C at any moment leaves the previous
checkpoint usable and never a half-written one. Older checkpoints beyond `keep` are renamed to a
hidden folder, then deleted.

Hidden folders being written or deleted are named `.<name>.pid<pid>@<host>.<random>.partial`.
A process killed with SIGKILL (or a power cut) leaves one behind; the next save or load in the
folder removes those whose process is gone (same host, pid not running). Loading never reads them.

The policy node only needs `model.safetensors` + `meta.json` (`load_policy_weights`).

Format version: meta.json carries `format_version` (FORMAT_VERSION when written; a checkpoint
without it is version 0). `load_checkpoint` and `load_meta` bring an older checkpoint to the
current version through `upgrade_checkpoint`, one step per version (`_UPGRADES`), and refuse a
newer one with a CheckpointError. A change to what a checkpoint holds adds a step there, so no
other code needs to know how older checkpoints looked.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import secrets
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robot_calql.agent.calql import CheckpointError

CKPT_DIR = "checkpoints"
LATEST = "LATEST"
WEIGHTS = "model.safetensors"
TRAINER = "trainer.pt"
BUFFER = "buffer.npz"
META = "meta.json"
SEP = "/"
PARTIAL = re.compile(r"^\.(?P<name>.+)\.pid(?P<pid>\d+)@(?P<host>.+)\.[^.]+\.partial$")
FORMAT_VERSION = 1  # what save_checkpoint writes as meta.json "format_version" (0: no such field)

log = logging.getLogger("robot_calql.train.checkpoint")


# ----------------------------------------------------------------------------- format versions
def _upgrade_0_to_1(state: dict[str, Any]) -> None:
    """Version 0 (no format_version) -> 1: the agent settings deleted in version 1 leave the stored
    agent config (a setting that was on is named in a warning: training continues without it);
    fine-tuning's gripper-flip state goes; defaults for what early version-0 runs lacked: the
    fine-tuning loop's arm-home count, the ROS learner's update count, the buffer's success flags."""
    meta, trainer, buffer = state["meta"], state.get("trainer"), state.get("buffer")
    agent = meta.get("agent")
    if isinstance(agent, dict):
        for key, off in (("num_min_critics", None), ("td_target_max", math.inf), ("bc_offline_only", False),
                         ("extra", {})):
            if key in agent and agent.pop(key) != off:
                log.warning("checkpoint: agent setting %s was removed; this checkpoint used it, training goes on "
                            "without it", key)
    if trainer:
        trainer.pop("gripper_flips", None)
        if meta.get("phase") == "finetune" and isinstance(trainer.get("loop"), dict):
            trainer["loop"].setdefault("homes", 0)
        if meta.get("phase") == "finetune_ros":
            trainer.setdefault("updates", int(meta.get("step", 0)))
    if buffer is not None and "obs_idx" in buffer and "success" not in buffer:
        buffer["success"] = np.zeros(len(buffer["obs_idx"]), dtype=np.bool_)


# _UPGRADES[v] brings a version-v checkpoint to version v + 1 (in place).
_UPGRADES = (_upgrade_0_to_1,)
assert len(_UPGRADES) == FORMAT_VERSION


def upgrade_checkpoint(state: dict[str, Any], where: str = "checkpoint") -> dict[str, Any]:
    """Bring a loaded checkpoint ({"meta", and optionally "agent_state", "trainer", "buffer"}) from
    its format version to FORMAT_VERSION, one step at a time, in place; returns it. A version newer
    than this code knows is a CheckpointError naming both."""
    meta = state["meta"]
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or version < 0:
        raise CheckpointError(f"{where}: format_version {version!r} is not a version number")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{where}: format version {version} was written by a newer robot_calql; this one reads "
                              f"versions up to {FORMAT_VERSION}: update robot_calql to load it")
    for step in _UPGRADES[version:]:
        step(state)
    meta["format_version"] = FORMAT_VERSION
    return state


# ----------------------------------------------------------------------------- state dict split
def split_state(state: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state dict into (flat tensors for safetensors, skeleton for torch.save).

    Tensors under a key whose name contains "optim" stay in the skeleton (optimiser moments are
    training state, not weights). Everything else that is a tensor is moved to the flat dict under
    its "/"-joined path and replaced by a placeholder string in the skeleton.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any, path: str, in_optim: bool) -> Any:
        if isinstance(obj, torch.Tensor) and not in_optim:
            tensors[path] = obj.detach().cpu().contiguous()
            return _Ref(path)
        if isinstance(obj, dict):
            out = type(obj)() if type(obj) is not dict else {}
            for k, v in obj.items():
                key = str(k)
                out[k] = walk(v, f"{path}{SEP}{key}" if path else key, in_optim or "optim" in key)
            return out
        return obj

    skeleton = walk(state, prefix, False)
    return tensors, skeleton


class _Ref(str):
    """Placeholder in the skeleton for a tensor stored in model.safetensors."""


def join_state(tensors: dict[str, torch.Tensor], skeleton: Any) -> Any:
    """Inverse of split_state."""

    def walk(obj: Any) -> Any:
        if isinstance(obj, _Ref):
            if str(obj) not in tensors:
                raise CheckpointError(f"tensor '{obj}' missing from {WEIGHTS}")
            return tensors[str(obj)]
        if isinstance(obj, dict):
            return {k: walk(v) for k, v in obj.items()}
        return obj

    return walk(skeleton)


def check_shapes(expected: Any, loaded: Any, where: str) -> None:
    """Raise CheckpointError naming the first tensor whose shape differs (or is missing/extra)."""
    exp, _ = split_state(expected)
    got, _ = split_state(loaded)
    for k, v in exp.items():
        if k not in got:
            raise CheckpointError(f"{where}: checkpoint lacks tensor '{k}' (shape {tuple(v.shape)})")
        if tuple(got[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"{where}: tensor '{k}' has shape {tuple(got[k].shape)} in the checkpoint but "
                f"{tuple(v.shape)} in the agent built from this config/env; was it trained with a "
                "different observation, action or network size?"
            )
    extra = sorted(set(got) - set(exp))
    if extra:
        raise CheckpointError(f"{where}: checkpoint has tensors the agent does not: {extra[:5]}")


# ----------------------------------------------------------------------------- RNG state
def rng_state(np_rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Everything random that a resumed run must continue: torch, numpy's global and `np_rng`."""
    out: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy_global": np.random.get_state()}
    if np_rng is not None:
        out["np_rng"] = np_rng.bit_generator.state
    return out


def set_rng_state(state: dict[str, Any], np_rng: np.random.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy_global"])
    if np_rng is not None and "np_rng" in state:
        np_rng.bit_generator.state = state["np_rng"]


# ----------------------------------------------------------------------------- partial folders
def _owner_tag() -> str:
    return f"pid{os.getpid()}@{socket.gethostname()}"


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (a zombie counts as gone)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_stale(entry: Path) -> bool:
    """A hidden temporary entry left by a dead writer. Entries without the pid@host tag come
    from versions before the tag and are stale too; other hosts' entries are left alone."""
    m = PARTIAL.match(entry.name)
    if m is None:
        return entry.name.endswith(".partial") or entry.name.startswith(f".{LATEST}.tmp")
    return m["host"] == socket.gethostname() and not _pid_alive(int(m["pid"]))


def remove_stale_partials(root: str | os.PathLike) -> list[Path]:
    """Delete the hidden temporary folders/files in a checkpoints folder whose writer is dead;
    return them. Errors (e.g. a read-only folder) are ignored: loading never reads these."""
    removed = []
    try:
        entries = [p for p in Path(root).iterdir() if p.name.startswith(".")]
    except OSError:
        return removed
    for p in entries:
        if not _is_stale(p):
            continue
        try:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def _discard(folder: Path) -> None:
    """Delete a checkpoint folder: rename it to a hidden partial name first, so a kill during
    the deletion leaves nothing that looks like a checkpoint."""
    hidden = folder.with_name(f".{folder.name}.{_owner_tag()}.old{secrets.token_hex(4)}.partial")
    try:
        os.rename(folder, hidden)
    except OSError:
        hidden = folder
    shutil.rmtree(hidden, ignore_errors=True)


# ----------------------------------------------------------------------------- save / load
def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    agent_state: dict[str, Any],
    trainer_state: dict[str, Any],
    meta: dict[str, Any],
    buffer: dict[str, np.ndarray] | None = None,
    keep: int = 2,
) -> Path:
    """Write checkpoint `step` atomically; return its folder. See the module docstring."""
    from safetensors.torch import save as st_save

    root = Path(run_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(root)
    name = f"step_{int(step):09d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.{_owner_tag()}.", suffix=".partial", dir=root))
    try:
        tensors, skeleton = split_state(agent_state)
        _fsync_write(tmp / WEIGHTS, st_save(tensors, metadata={"step": str(int(step))}))
        buf = io.BytesIO()
        torch.save({"agent_rest": _plain(skeleton), "trainer": trainer_state}, buf)
        _fsync_write(tmp / TRAINER, buf.getvalue())
        if buffer is not None:
            with open(tmp / BUFFER, "wb") as f:
                np.savez(f, **buffer)
                f.flush()
                os.fsync(f.fileno())
        meta = {**meta, "step": int(step), "format_version": FORMAT_VERSION}
        _fsync_write(tmp / META, (json.dumps(meta, indent=2, default=str) + "\n").encode())
        final = root / name
        if final.exists():  # same step saved twice (e.g. periodic save then exit at that step)
            _discard(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    latest_tmp = root / f".{LATEST}.{_owner_tag()}.tmp.partial"
    _fsync_write(latest_tmp, (name + "\n").encode())
    os.replace(latest_tmp, root / LATEST)
    old = sorted(p for p in root.glob("step_*") if p.is_dir() and p.name != name)
    for p in old[: max(0, len(old) - (keep - 1))]:
        _discard(p)
    return final


def _plain(obj: Any) -> Any:
    """Turn _Ref placeholders into a tagged tuple so torch.load(weights_only=True) can read them."""
    if isinstance(obj, _Ref):
        return ("__tensor__", str(obj))
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def _unplain(obj: Any) -> Any:
    if isinstance(obj, tuple) and len(obj) == 2 and obj[0] == "__tensor__":
        return _Ref(obj[1])
    if isinstance(obj, dict):
        return {k: _unplain(v) for k, v in obj.items()}
    return obj


def clear_run(run_dir: str | os.PathLike) -> None:
    """Delete what a previous run wrote in `run_dir` (checkpoints, TensorBoard events, metrics,
    plots, summary) before a fresh run; nothing else in the folder is touched."""
    run = Path(run_dir)
    for name in (CKPT_DIR, "tb", "plots"):
        if (run / name).is_dir():
            shutil.rmtree(run / name)
    for name in ("metrics.jsonl", "summary.json"):
        if (run / name).is_file():
            (run / name).unlink()


def find_checkpoint(path: str | os.PathLike) -> Path:
    """Resolve a run folder, its checkpoints folder or a checkpoint folder to a checkpoint folder
    (the newest complete one); stale partial folders left by a dead writer are removed on the way."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint or run folder does not exist")
    if (p / WEIGHTS).is_file():
        return p
    root = p / CKPT_DIR if (p / CKPT_DIR).is_dir() else p
    if root.name == CKPT_DIR:
        remove_stale_partials(root)
    latest = root / LATEST
    if latest.is_file():
        cand = root / latest.read_text().strip()
        if (cand / WEIGHTS).is_file():
            return cand
    steps = sorted(q for q in root.glob("step_*") if (q / WEIGHTS).is_file())
    if not steps:
        raise CheckpointError(f"{p}: no checkpoint found (expected {CKPT_DIR}/step_*/{WEIGHTS})")
    return steps[-1]


def load_meta(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's meta.json, upgraded to FORMAT_VERSION (upgrade_checkpoint)."""
    ckpt = find_checkpoint(path)
    return upgrade_checkpoint({"meta": _read_meta(ckpt)}, str(ckpt))["meta"]


def _read_meta(ckpt: Path) -> dict[str, Any]:
    """meta.json of checkpoint folder `ckpt` as stored."""
    try:
        meta = json.loads((ckpt / META).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{ckpt / META}: unreadable ({e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{ckpt / META}: not a JSON object")
    return meta


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint, upgraded to FORMAT_VERSION: {"dir", "meta", "agent_state", "trainer",
    "buffer" (or None)}."""
    from safetensors.torch import load_file

    ckpt = find_checkpoint(path)
    meta = _read_meta(ckpt)
    try:
        tensors = load_file(str(ckpt / WEIGHTS))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{ckpt / WEIGHTS}: unreadable ({e})") from None
    trainer_file = ckpt / TRAINER
    if trainer_file.is_file():
        try:
            rest = torch.load(trainer_file, map_location="cpu", weights_only=False)
        except Exception as e:
            raise CheckpointError(f"{trainer_file}: unreadable ({e})") from None
        agent_state = join_state(tensors, _unplain(rest["agent_rest"]))
        trainer = rest["trainer"]
    else:  # weights only (a policy export)
        agent_state = _unflatten(tensors)
        trainer = {}
    buffer = None
    if (ckpt / BUFFER).is_file():
        with np.load(ckpt / BUFFER, allow_pickle=False) as z:
            buffer = {k: z[k] for k in z.files}
    state = {"dir": ckpt, "meta": meta, "agent_state": agent_state, "trainer": trainer, "buffer": buffer}
    return upgrade_checkpoint(state, str(ckpt))


def _unflatten(flat: dict[str, torch.Tensor]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in flat.items():
        d = out
        parts = k.split(SEP)
        for part in parts[:-1]:
            d = d.setdefault(part, {})
        d[parts[-1]] = v
    return out
