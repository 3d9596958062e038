"""Read what is readable of a damaged rosbag2 storage file: an mcap or sqlite3 file cut short.

rosbags needs an mcap file's footer and summary, and every page an sqlite3 file's header
promises; a recording cut short (recorder killed, disk full, interrupted copy) has neither.
`SalvageReader` reads such a bag's messages in recorded (file) order up to the first damage and
says where and why it stopped (`damage`). It offers the part of rosbags' AnyReader that ingest
uses: `connections`, `messages(connections)`, `deserialize(raw, msgtype)` and `close()`.

- mcap: records are parsed in file order (schemas, channels, messages; chunks decompressed with
  zstd or lz4 and checked against their CRC). A record that runs past the end of the file, an
  unknown opcode or a chunk that does not decompress is the damage; the messages of a chunk cut
  in the middle are lost with it.
- sqlite3: read through a SQLite VFS that hides the page count in the file header (SQLite then
  takes the file's real size), in insertion order, until SQLite meets a page it cannot read.

`open()` scans the whole readable part once (channels, message counts, the damage); each
`messages()` call reads it again. The bag's files are never written to.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MCAP_MAGIC = b"\x89MCAP0\r\n"
OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK, OP_DATA_END = 0x02, 0x03, 0x04, 0x05, 0x06, 0x0F
MAX_OPCODE = 0x0F
VFS_NAME = "robot_calql_salvage"


class SalvageError(ValueError):
    """Nothing could be salvaged: no storage file of a known kind, or no topic readable."""


@dataclass
class Damage:
    """Where reading a storage file stopped before its end, and why."""

    file: Path
    reason: str
    offset: int | None = None  # bytes readable from the start (mcap)
    size: int | None = None  # file size in bytes


@dataclass(frozen=True)
class SalvagedConnection:
    """One topic of a salvaged bag (the fields of a rosbags Connection that ingest reads)."""

    id: int
    topic: str
    msgtype: str
    msgdef: str = ""  # embedded ros2msg definition, "" when the bag has none
    msgcount: int = 0  # messages readable before the damage


@dataclass
class _Scan:
    """State of one pass over the storage files."""

    counts: Counter = field(default_factory=Counter)  # connection id -> messages
    damage: Damage | None = None


def storage_files(bag: Path) -> list[Path]:
    """The storage files of a bag: the file itself, or a folder's files in metadata.yaml order
    (every .mcap / .db3 file in it, sorted, when metadata.yaml is missing or unreadable)."""
    if bag.is_file():
        return [bag] if bag.suffix in (".mcap", ".db3") else []
    try:
        meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        files = [bag / Path(p).name for p in meta["relative_file_paths"]]
        if files and all(f.is_file() and f.suffix in (".mcap", ".db3") for f in files):
            return files
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        pass
    return sorted(p for p in bag.iterdir() if p.is_file() and p.suffix in (".mcap", ".db3"))


class SalvageReader:
    """Messages of a damaged bag up to the damage; see the module docstring."""

    def __init__(self, bag: Path, default_typestore: Any):
        self.bag = Path(bag)
        self.default_typestore = default_typestore
        self.files = storage_files(self.bag)
        self.connections: list[SalvagedConnection] = []
        self.damage: Damage | None = None
        self.typestore: Any = default_typestore
        # (file index, id in that file) -> connection id; filled as channels are met
        self._ids: dict[tuple[int, int], int] = {}
        self._by_key: dict[tuple[str, str], SalvagedConnection] = {}

    def open(self) -> None:
        """Scan the readable part: connections, message counts, where it is damaged."""
        if not self.files:
            raise SalvageError(f"{self.bag}: no .mcap or .db3 storage file to salvage")
        scan = _Scan()
        for _ in self._messages(None, scan):
            pass
        self.damage = scan.damage
        self.connections = [SalvagedConnection(c.id, c.topic, c.msgtype, c.msgdef, scan.counts[c.id])
                            for c in self._by_key.values()]
        if not self.connections:
            why = scan.damage.reason if scan.damage else "no topics"
            raise SalvageError(f"{self.bag}: no readable topic ({why})")
        self.typestore = self._build_typestore()

    def close(self) -> None:
        self.connections = []

    def messages(self, connections: Iterable[SalvagedConnection] = ()) -> Iterator[tuple[SalvagedConnection, int, bytes]]:
        """(connection, receive time ns, raw CDR) in file order, up to the damage."""
        want = {c.id for c in connections} or None
        by_id = {c.id: c for c in self.connections}
        for cid, t, raw in self._messages(want, _Scan()):
            yield by_id[cid], t, raw

    def deserialize(self, raw: bytes, msgtype: str) -> Any:
        return self.typestore.deserialize_cdr(raw, msgtype)

    # ---- internals
    def _connection(self, file_index: int, local_id: int, topic: str, msgtype: str, msgdef: str) -> None:
        key = (topic, msgtype)
        conn = self._by_key.get(key)
        if conn is None:
            conn = SalvagedConnection(len(self._by_key) + 1, topic, msgtype, msgdef)
            self._by_key[key] = conn
        self._ids[(file_index, local_id)] = conn.id

    def _messages(self, want: set[int] | None, scan: _Scan) -> Iterator[tuple[int, int, bytes]]:
        for i, path in enumerate(self.files):
            reader = self._mcap if path.suffix == ".mcap" else self._sqlite3
            for local_id, t, raw in reader(i, path, scan):
                cid = self._ids.get((i, local_id))
                if cid is None:
                    continue  # a message on a channel never declared: unusable
                scan.counts[cid] += 1
                if want is None or cid in want:
                    yield cid, t, raw
            if scan.damage is not None:
                return  # later files of a split bag follow the damage in time: not read

    def _build_typestore(self) -> Any:
        """The bag's embedded ros2msg definitions when every topic has one, else the distro's."""
        from rosbags.typesys import Stores, TypesysError, get_types_from_msg, get_typestore

        if not all(c.msgdef for c in self.connections):
            return self.default_typestore
        try:
            types: dict = {}
            for c in self.connections:
                types.update(get_types_from_msg(c.msgdef, c.msgtype))
            store = get_typestore(Stores.EMPTY)
            store.register(types)
        except TypesysError:
            return self.default_typestore
        return store

    # ---- mcap
    def _mcap(self, file_index: int, path: Path, scan: _Scan) -> Iterator[tuple[int, int, bytes]]:
        size = path.stat().st_size
        schemas: dict[int, tuple[str, str]] = {}  # id -> (name, ros2msg definition or "")

        def damaged(offset: int, reason: str) -> None:
            scan.damage = Damage(path, reason, offset, size)

        with open(path, "rb") as f:
            if f.read(8) != MCAP_MAGIC:
                damaged(0, "not an mcap file (bad magic)")
                return
            while True:
                offset = f.tell()
                head = f.read(9)
                if len(head) < 9:
                    damaged(offset, "the file ends without its footer")
                    return
                op, length = head[0], struct.unpack("<Q", head[1:])[0]
                if not 0 < op <= MAX_OPCODE:
                    damaged(offset, f"unknown record opcode 0x{op:02x} at byte {offset}")
                    return
                if offset + 9 + length > size:
                    damaged(offset, f"a record of {length} bytes at byte {offset} runs past the end of the file")
                    return
                if op in (OP_FOOTER, OP_DATA_END):
                    return  # the data section ended cleanly
                if op not in (OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK):
                    f.seek(length, os.SEEK_CUR)
                    continue
                body = f.read(length)
                try:
                    if op == OP_CHUNK:
                        found = self._mcap_chunk(file_index, body, schemas)
                    else:
                        found = [m for m in [self._mcap_record(file_index, op, body, schemas)] if m is not None]
                except Exception as e:  # noqa: BLE001 - struct, decode, zstd and lz4 errors: this is the damage
                    damaged(offset, f"the record at byte {offset} is unreadable ({type(e).__name__}: {e})")
                    return
                yield from found

    def _mcap_chunk(self, file_index: int, body: bytes,
                    schemas: dict[int, tuple[str, str]]) -> list[tuple[int, int, bytes]]:
        """The messages of one chunk (its schemas and channels are registered on the way)."""
        records = _chunk_records(body)
        out = []
        pos = 0
        while pos + 9 <= len(records):
            op, length = records[pos], struct.unpack_from("<Q", records, pos + 1)[0]
            msg = self._mcap_record(file_index, op, records[pos + 9 : pos + 9 + length], schemas)
            if msg is not None:
                out.append(msg)
            pos += 9 + length
        return out

    def _mcap_record(self, file_index: int, op: int, body: bytes,
                     schemas: dict[int, tuple[str, str]]) -> tuple[int, int, bytes] | None:
        if op == OP_MESSAGE:
            cid, _seq, log_time, _pub = struct.unpack_from("<HIQQ", body)  # struct.error when too short
            return cid, log_time, bytes(body[22:])
        rec = io.BytesIO(body)
        if op == OP_SCHEMA:
            (sid,) = struct.unpack("<H", rec.read(2))
            name, encoding, data = _string(rec), _string(rec), _string(rec)
            schemas[sid] = (name, data if encoding == "ros2msg" else "")
        elif op == OP_CHANNEL:
            cid, sid = struct.unpack("<HH", rec.read(4))
            topic = _string(rec)
            if sid in schemas:
                name, msgdef = schemas[sid]
                self._connection(file_index, cid, topic, name, msgdef)
        return None

    # ---- sqlite3
    def _sqlite3(self, file_index: int, path: Path, scan: _Scan) -> Iterator[tuple[int, int, bytes]]:
        import apsw

        _vfs()
        try:
            db = apsw.Connection(f"file:{path}?immutable=1", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI,
                                 vfs=VFS_NAME)
        except apsw.Error as e:
            scan.damage = Damage(path, f"{type(e).__name__}: {e}")
            return
        try:
            try:
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                defs: dict[str, str] = {}
                if "message_definitions" in tables:
                    defs = {t: d for t, enc, d in db.execute(
                        "SELECT topic_type, encoding, encoded_message_definition FROM message_definitions")
                        if enc == "ros2msg"}
                for tid, topic, msgtype in db.execute("SELECT id, name, type FROM topics"):
                    self._connection(file_index, tid, topic, msgtype, defs.get(msgtype, ""))
            except apsw.Error as e:
                scan.damage = Damage(path, f"{type(e).__name__}: {e}")
                return
            rows = db.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY id")
            while True:
                try:
                    row = next(rows)
                except StopIteration:
                    return
                except apsw.Error as e:  # a page past the end of the cut file, or a corrupt one
                    scan.damage = Damage(path, f"SQLite cannot read further: {type(e).__name__}: {e}")
                    return
                yield int(row[0]), int(row[1]), bytes(row[2])
        finally:
            db.close()


def _string(rec: io.BytesIO) -> str:
    (n,) = struct.unpack("<I", rec.read(4))
    data = rec.read(n)
    if len(data) != n:
        raise ValueError("string runs past its record")
    return data.decode()  # UnicodeDecodeError is a ValueError


def _chunk_records(body: bytes) -> bytes:
    """The decompressed records of an mcap chunk; ValueError when they do not check out."""
    _start, _end, usize, crc = struct.unpack_from("<QQQI", body)
    rec = io.BytesIO(body[28:])
    compression = _string(rec)
    (csize,) = struct.unpack("<Q", rec.read(8))
    data = rec.read(csize)
    if len(data) != csize:
        raise ValueError(f"{csize} compressed bytes declared, {len(data)} present")
    if compression == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]
        except ImportError:
            from backports import zstd  # type: ignore[import-not-found,no-redef]
        data = zstd.decompress(data)
    elif compression == "lz4":
        import lz4.frame

        data = lz4.frame.decompress(data)
    elif compression:
        raise ValueError(f"unknown compression '{compression}'")
    if len(data) != usize or (crc and zlib.crc32(data) != crc):
        raise ValueError("decompressed size or CRC does not match")
    return data


_VFS: Any = None


def _vfs() -> None:
    """Register (once) the SQLite VFS that clears the header's page count when page 1 is read."""
    global _VFS
    if _VFS is not None:
        return
    import apsw

    class File(apsw.VFSFile):
        def xRead(self, amount: int, offset: int) -> bytes:  # noqa: N802 - apsw's name
            data = super().xRead(amount, offset)
            if offset <= 28 and offset + len(data) >= 32:  # bytes 28..31: database size in pages
                patched = bytearray(data)
                patched[28 - offset : 32 - offset] = b"\0\0\0\0"
                return bytes(patched)
            return data

    class VFS(apsw.VFS):
        def __init__(self) -> None:
            super().__init__(VFS_NAME, "")

        def xOpen(self, name: Any, flags: list[int]) -> apsw.VFSFile:  # noqa: N802 - apsw's name
            return File("", name, flags)

    _VFS = VFS()
