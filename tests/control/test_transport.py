"""Transition / weights payloads and the crash-safe transition log."""

import numpy as np
import pytest
import torch

from robot_calql.control.transport import (
    TransitionLog,
    TransportError,
    pack_transition,
    pack_weights,
    transition_step,
    unpack_transition,
    unpack_weights,
)


def _arrays():
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
            "proprio": rng.normal(size=11).astype(np.float32),
            "action": rng.normal(size=5).astype(np.float32)}


def test_transition_round_trip():
    meta = {"actor": "a1", "seq": 7, "reward": 1.0, "done": True, "instruction": "put it in"}
    a = _arrays()
    payload = pack_transition(meta, a)
    assert len(payload) < 64 * 64 * 3 + 500
    m2, a2 = unpack_transition(payload)
    assert m2 == meta
    for k in a:
        np.testing.assert_array_equal(a2[k], a[k])
        assert a2[k].dtype == a[k].dtype


def test_bad_payloads_are_named():
    p = pack_transition({"seq": 1}, _arrays())
    with pytest.raises(TransportError, match="bad magic"):
        unpack_transition(b"XXXX" + p[4:])
    with pytest.raises(TransportError, match="truncated"):
        unpack_transition(p[:-10])
    with pytest.raises(TransportError, match="trailing"):
        unpack_transition(p + b"xx")


def test_transition_step_feeds_the_online_replay_and_names_what_is_missing():
    from robot_calql.data.replay import InstructionVocab, OnlineReplay

    rng = np.random.default_rng(1)
    arrays = {"proprio": rng.normal(size=4).astype(np.float32), "next_proprio": rng.normal(size=4).astype(np.float32),
              "action": rng.normal(size=2).astype(np.float32)}
    meta = {"actor": "a", "seq": 0, "reward": 1.0, "done": True, "truncated": False, "instruction": "go"}
    step = transition_step(*unpack_transition(pack_transition(meta, arrays)), ["proprio"])
    assert step["reward"] == 1.0 and step["terminal"] is True and step["truncated"] is False
    np.testing.assert_array_equal(step["next_obs"]["proprio"], arrays["next_proprio"])
    online = OnlineReplay({"proprio": (4,)}, 2, 10, vocab=InstructionVocab(["go"]))
    online.add(**step)
    assert len(online) == 1
    with pytest.raises(TransportError, match=r"lacks image, next_image, meta\.reward"):
        transition_step({k: v for k, v in meta.items() if k != "reward"}, arrays, ["proprio", "image"])


def test_weights_round_trip():
    sd = {"w": torch.randn(3, 4), "b": torch.zeros(4)}
    got, step = unpack_weights(pack_weights(sd, step=123))
    assert step == 123
    torch.testing.assert_close(got["w"], sd["w"])
    with pytest.raises(TransportError):
        unpack_weights(b"\x00" * 20)


def test_log_survives_a_crash_mid_record(tmp_path):
    path = tmp_path / "t.log"
    log = TransitionLog(path)
    payloads = [pack_transition({"seq": i}, _arrays()) for i in range(3)]
    for p in payloads:
        log.append(p)
    log.close()
    with open(path, "ab") as f:  # a crash while writing the 4th record
        f.write(b"\x10\x00\x00\x00garbage")
    log = TransitionLog(path)
    got = list(log.read())
    assert got == payloads
    log.append(payloads[0])
    assert len(list(log.read())) == 4  # appending after repair works
    log.close()


def test_log_counts_a_torn_last_record_and_drops_only_it(tmp_path):
    path = tmp_path / "t.log"
    log = TransitionLog(path)
    payloads = [pack_transition({"seq": i}, _arrays()) for i in range(3)]
    for p in payloads:
        log.append(p)
    log.close()
    full = path.stat().st_size
    with open(path, "r+b") as f:  # a kill while the last record was being written
        f.truncate(full - len(payloads[2]) // 2)
    log = TransitionLog(path)
    assert (log.records, log.torn_records, log.torn_bytes) == (2, 1, 8 + len(payloads[2]) - len(payloads[2]) // 2)
    assert log.damaged_path is None  # a torn append is not kept
    assert list(log.read()) == payloads[:2]
    assert path.stat().st_size == full - 8 - len(payloads[2])
    log.close()
    log = TransitionLog(path)  # nothing left to cut
    assert (log.records, log.torn_records, log.torn_bytes) == (2, 0, 0)
    log.close()


def test_log_keeps_damaged_records_aside_instead_of_throwing_them_away(tmp_path):
    """A complete record whose payload fails its CRC is damage, not a crash: the log keeps what
    precedes it and copies the rest to a side file, byte for byte."""
    path = tmp_path / "t.log"
    log = TransitionLog(path)
    payloads = [pack_transition({"seq": i}, _arrays()) for i in range(3)]
    for p in payloads:
        log.append(p)
    log.close()
    data = bytearray(path.read_bytes())
    second = 8 + len(payloads[0])
    data[second + 8 + 100] ^= 0xFF  # one flipped byte inside the second payload
    path.write_bytes(bytes(data))
    log = TransitionLog(path)
    assert list(log.read()) == payloads[:1]
    assert log.torn_records == 1 and log.torn_bytes == len(data) - second
    assert log.damaged_path is not None and log.damaged_path.read_bytes() == bytes(data[second:])
    log.close()


def test_log_refuses_an_empty_record(tmp_path):
    """An empty record would read back as a valid one (length 0, crc32(b'') == 0), like the zeros
    a file system can leave at the end of a file after a power cut."""
    log = TransitionLog(tmp_path / "t.log")
    with pytest.raises(ValueError, match="empty payload"):
        log.append(b"")
    log.close()
    (tmp_path / "z.log").write_bytes(b"\x00" * 16)
    log = TransitionLog(tmp_path / "z.log")
    assert list(log.read()) == [] and log.torn_records == 1
    log.close()
