"""Actor/learner transport payloads and the learner's crash-safe transition log (no rclpy).

Transitions and weights travel over ROS 2 as `std_msgs/UInt8MultiArray` whose `data` is one of
the byte strings below, so they cross machines like the rest of the graph and need no custom
message package (nothing to build on the GPU server).

Transition payload (`pack_transition` / `unpack_transition`)::

    b"RCQT" | u8 version | u32 header length | header JSON (utf-8) | raw arrays, back to back

The header holds the scalars (actor id, sequence number, episode, step, reward, done,
truncated, instruction, intervention: the human's command was executed; absent = false) and, per array, name / dtype / shape. A 64 px transition (obs and next
obs images, proprio, action) is about 25 kB. Weights (`pack_weights`) are a safetensors byte
string with the learner's update step in its metadata.

`TransitionLog` is the learner's on-disk store: every received payload is appended as
`u32 length | u32 crc32 | payload` and flushed (to the OS; fsync every `fsync_every` records)
before it is used; on restart `read()` returns every complete record, and a record cut short by
a crash is dropped (`torn_records`).
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["TransportError", "pack_transition", "unpack_transition", "transition_step", "pack_weights",
           "unpack_weights", "TransitionLog"]

_MAGIC = b"RCQT"
_VERSION = 1


class TransportError(ValueError):
    """A payload that cannot be decoded (wrong magic, version, truncated, bad header)."""


def pack_transition(meta: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """Scalars (JSON-serialisable) + named arrays -> bytes."""
    specs, blobs = [], []
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        specs.append({"name": name, "dtype": a.dtype.str, "shape": list(a.shape)})
        blobs.append(a.tobytes())
    header = json.dumps({"meta": meta, "arrays": specs}, separators=(",", ":")).encode()
    return b"".join([_MAGIC, struct.pack("<BI", _VERSION, len(header)), header, *blobs])


def unpack_transition(payload) -> tuple[dict, dict[str, np.ndarray]]:
    """Inverse of pack_transition; arrays are copies (safe to keep)."""
    buf = memoryview(payload).cast("B")
    if len(buf) < 9 or bytes(buf[:4]) != _MAGIC:
        raise TransportError("not a robot_calql transition payload (bad magic)")
    version, hlen = struct.unpack("<BI", bytes(buf[4:9]))
    if version != _VERSION:
        raise TransportError(f"transition payload version {version}, this code reads {_VERSION}")
    try:
        header = json.loads(bytes(buf[9 : 9 + hlen]))
    except (ValueError, UnicodeDecodeError) as e:
        raise TransportError(f"transition header is not valid JSON: {e}") from None
    off = 9 + hlen
    arrays = {}
    for spec in header["arrays"]:
        dt = np.dtype(spec["dtype"])
        n = int(np.prod(spec["shape"], dtype=np.int64)) * dt.itemsize
        if off + n > len(buf):
            raise TransportError(f"transition payload truncated in array '{spec['name']}'")
        arrays[spec["name"]] = np.frombuffer(buf[off : off + n], dtype=dt).reshape(spec["shape"]).copy()
        off += n
    if off != len(buf):
        raise TransportError(f"transition payload has {len(buf) - off} trailing bytes")
    return header["meta"], arrays


def transition_step(meta: dict, arrays: dict[str, np.ndarray], obs_keys) -> dict:
    """An unpacked transition as `OnlineReplay.add`'s keyword arguments: `obs` and `next_obs` hold
    `obs_keys` (the arrays `k` and `next_k`). A missing array or scalar is a TransportError naming it,
    so a payload from a policy with other observations is rejected, never half-stored."""
    keys = list(obs_keys)
    missing = [n for n in [*keys, *("next_" + k for k in keys), "action"] if n not in arrays]
    missing += [f"meta.{n}" for n in ("reward", "done", "truncated", "instruction") if n not in meta]
    if missing:
        raise TransportError(f"transition lacks {', '.join(missing)} (it has arrays {sorted(arrays)}; "
                             f"the learner's observations are {keys})")
    return {"obs": {k: arrays[k] for k in keys}, "action": arrays["action"], "reward": float(meta["reward"]),
            "next_obs": {k: arrays["next_" + k] for k in keys}, "terminal": bool(meta["done"]),
            "truncated": bool(meta["truncated"]), "instruction": meta["instruction"],
            "intervention": bool(meta.get("intervention", False))}


def pack_weights(state_dict: dict, step: int, extra: dict | None = None) -> bytes:
    """A policy state dict (tensors) -> safetensors bytes with the update step in the metadata."""
    from safetensors.torch import save

    meta = {"step": str(int(step)), **{k: str(v) for k, v in (extra or {}).items()}}
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    return save(tensors, metadata=meta)


def unpack_weights(payload) -> tuple[dict, int]:
    """safetensors bytes -> (state dict of CPU tensors, update step)."""
    from safetensors.torch import load

    data = bytes(payload)
    try:
        sd = load(data)
    except Exception as e:  # safetensors raises its own error types
        raise TransportError(f"weights payload is not a safetensors blob: {e}") from None
    # the metadata is in the JSON header: read it without a temp file
    hlen = struct.unpack("<Q", data[:8])[0]
    meta = json.loads(data[8 : 8 + hlen]).get("__metadata__", {}) or {}
    return sd, int(meta.get("step", 0))


class TransitionLog:
    """Append-only, crash-safe log of transition payloads (one file).

    Opening the log checks it: complete records (length, CRC32, payload) are kept; what follows
    the last one is cut off. An incomplete last record (an append cut short by a crash) is
    dropped (`torn_records` = 1, `torn_bytes`); bytes that are not a record cut short (a complete
    length whose payload fails its CRC, e.g. a damaged disk block) are first copied to
    `<name>.damaged-<offset>` (`damaged_path`), so nothing written is thrown away."""

    _REC = struct.Struct("<II")

    def __init__(self, path: str | Path, fsync_every: int = 50):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync_every = fsync_every
        self._n_since_sync = 0
        self.records = 0  # complete records in the file
        self.torn_records = 0
        self.torn_bytes = 0
        self.damaged_path: Path | None = None
        self._repair()
        self._f = open(self.path, "ab")

    def _scan(self):
        """Yield (end offset, payload) of each complete record, stopping at the first bad one."""
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            off = 0
            while off + 8 <= size:
                n, crc = self._REC.unpack(f.read(8))
                if n == 0 or off + 8 + n > size:
                    return
                payload = f.read(n)
                if zlib.crc32(payload) != crc:
                    return
                off += 8 + n
                yield off, payload

    def _repair(self) -> None:
        if not self.path.exists():
            return
        good = 0
        for end, _ in self._scan():
            good = end
            self.records += 1
        size = self.path.stat().st_size
        if good == size:
            return
        with open(self.path, "r+b") as f:
            f.seek(good)
            tail = f.read()
            # an append cut short leaves less than its header says; anything else is damage
            if len(tail) >= 8 and 8 + self._REC.unpack_from(tail)[0] <= len(tail):
                self.damaged_path = self.path.with_name(f"{self.path.name}.damaged-{good}")
                self.damaged_path.write_bytes(tail)
            f.truncate(good)
            f.flush()
            os.fsync(f.fileno())
        self.torn_records = 1
        self.torn_bytes = len(tail)

    def append(self, payload: bytes) -> None:
        payload = bytes(payload)
        if not payload:
            raise ValueError("TransitionLog.append: empty payload")
        self._f.write(self._REC.pack(len(payload), zlib.crc32(payload)) + payload)
        self._f.flush()
        self.records += 1
        self._n_since_sync += 1
        if self._n_since_sync >= self.fsync_every:
            os.fsync(self._f.fileno())
            self._n_since_sync = 0

    def read(self):
        """Yield every complete payload in the order they were appended (one at a time)."""
        self._f.flush()
        for _, payload in self._scan():
            yield payload

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
