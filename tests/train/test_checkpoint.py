"""Checkpoints: round trip, atomic writes, keep/LATEST, shape mismatches named."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from robot_calql.agent import CalQL, CalQLConfig
from robot_calql.agent import CheckpointError as AgentCheckpointError
from robot_calql.train import checkpoint as ckpt


def _agent(state_dim=7, hidden=(16, 16)):
    cfg = CalQLConfig(actor_hidden=hidden, critic_hidden=hidden)
    return CalQL({"state": (state_dim,)}, 3, cfg, num_instructions=2)


def _batch(B=8, S=7, A=3):
    g = torch.Generator().manual_seed(0)
    obs = {"state": torch.randn(B, S, generator=g), "instruction": torch.zeros(B, dtype=torch.int64)}
    nxt = {"state": torch.randn(B, S, generator=g), "instruction": torch.zeros(B, dtype=torch.int64)}
    return {"obs": obs, "next_obs": nxt, "action": torch.rand(B, A, generator=g) * 2 - 1,
            "reward": torch.randint(0, 2, (B,), generator=g).float(), "done": torch.zeros(B),
            "mc_return": torch.rand(B, generator=g)}


def test_round_trip_restores_weights_optimiser_and_buffer(tmp_path):
    torch.manual_seed(0)
    agent = _agent()
    for _ in range(3):
        agent.update(_batch())
    buf = {"frames_state": np.arange(12, dtype=np.float32).reshape(4, 3), "steps_written": np.asarray(3)}
    path = ckpt.save_checkpoint(tmp_path, 3, agent.state_dict(), {"optimizer": agent.optimizer_state_dict(), "x": 1},
                                {"phase": "test"}, buffer=buf)
    assert (path / ckpt.WEIGHTS).is_file() and (path / ckpt.TRAINER).is_file()
    loaded = ckpt.load_checkpoint(tmp_path)
    assert loaded["meta"]["step"] == 3 and loaded["meta"]["phase"] == "test"
    assert loaded["trainer"]["x"] == 1
    np.testing.assert_array_equal(loaded["buffer"]["frames_state"], buf["frames_state"])

    other = _agent()
    other.load_state_dict(loaded["agent_state"])
    other.load_optimizer_state_dict(loaded["trainer"]["optimizer"])
    for k, v in agent.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k
    # identical next update from both (same RNG): optimiser moments were restored too
    torch.manual_seed(1)
    m1 = agent.update(_batch())
    torch.manual_seed(1)
    m2 = other.update(_batch())
    assert m1 == m2


def test_weights_are_safetensors_readable_without_torch_pickle(tmp_path):
    from safetensors.torch import load_file

    agent = _agent()
    path = ckpt.save_checkpoint(tmp_path, 0, agent.state_dict(), {}, {})
    weights = load_file(str(path / ckpt.WEIGHTS))
    assert set(weights) == set(agent.state_dict())


def test_latest_and_keep(tmp_path):
    agent = _agent()
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, step, agent.state_dict(), {}, {}, keep=2)
    dirs = sorted(p.name for p in (tmp_path / ckpt.CKPT_DIR).glob("step_*"))
    assert dirs == ["step_000000002", "step_000000003"]
    assert ckpt.find_checkpoint(tmp_path).name == "step_000000003"
    assert ckpt.load_meta(tmp_path)["step"] == 3


def test_failed_write_leaves_previous_checkpoint_and_no_partial_folder(tmp_path, monkeypatch):
    agent = _agent()
    ckpt.save_checkpoint(tmp_path, 1, agent.state_dict(), {}, {})

    def boom(*a, **k):
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing the buffer

    monkeypatch.setattr(ckpt.np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, 2, agent.state_dict(), {}, {}, buffer={"a": np.zeros(3)})
    root = tmp_path / ckpt.CKPT_DIR
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []
    assert ckpt.find_checkpoint(tmp_path).name == "step_000000001"
    assert ckpt.load_checkpoint(tmp_path)["meta"]["step"] == 1


def test_shape_mismatch_names_the_tensor(tmp_path):
    ckpt.save_checkpoint(tmp_path, 0, _agent(state_dim=7).state_dict(), {}, {})
    loaded = ckpt.load_checkpoint(tmp_path)
    with pytest.raises(AgentCheckpointError, match=r"encoder|actor|critic") as e:
        _agent(state_dim=9).load_state_dict(loaded["agent_state"])
    assert "shape" in str(e.value)
    with pytest.raises(ckpt.CheckpointError, match=r"tensor '.*' has shape"):
        ckpt.check_shapes(_agent(state_dim=9).state_dict(), loaded["agent_state"], "test")


def test_missing_or_corrupt_checkpoint_errors(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint found"):
        ckpt.load_checkpoint(tmp_path / "empty")
    path = ckpt.save_checkpoint(tmp_path / "run", 0, _agent().state_dict(), {}, {"a": 1})
    (path / ckpt.WEIGHTS).write_bytes(b"not a safetensors file")
    with pytest.raises(ckpt.CheckpointError, match="model.safetensors"):
        ckpt.load_checkpoint(tmp_path / "run")
    assert json.loads((path / ckpt.META).read_text())["a"] == 1


_KILLED_WRITER = """
import sys, time
import torch
from robot_calql.agent import CalQL, CalQLConfig
from robot_calql.train import checkpoint as ckpt

run = sys.argv[1]
torch.manual_seed(0)
agent = CalQL({"state": (7,)}, 3, CalQLConfig(actor_hidden=(16, 16), critic_hidden=(16, 16)), num_instructions=2)
ckpt.save_checkpoint(run, 1, agent.state_dict(), {"optimizer": agent.optimizer_state_dict()}, {"phase": "test"})
write = ckpt._fsync_write

def write_then_hang(path, data):
    write(path, data)
    if path.name == ckpt.TRAINER:  # weights and trainer state on disk, meta.json not yet
        print("writing", flush=True)
        time.sleep(600)

ckpt._fsync_write = write_then_hang
ckpt.save_checkpoint(run, 2, agent.state_dict(), {"optimizer": agent.optimizer_state_dict()}, {"phase": "test"})
"""


def test_kill_9_during_a_write_leaves_no_partial_folder_after_the_next_load_or_save(tmp_path):
    """A real SIGKILL in the middle of writing checkpoint 2: loading resumes from checkpoint 1 and
    removes the dead writer's partial folder; the next save works."""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing", "the writer died before reaching the write"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    root = tmp_path / ckpt.CKPT_DIR
    partial = [p for p in root.iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1 and partial[0].name.startswith(".step_000000002.")
    assert (partial[0] / ckpt.WEIGHTS).is_file() and not (partial[0] / ckpt.META).exists()

    loaded = ckpt.load_checkpoint(tmp_path)  # resume
    assert loaded["meta"]["step"] == 1 and loaded["dir"].name == "step_000000001"
    assert sorted(p.name for p in root.iterdir()) == [ckpt.LATEST, "step_000000001"]
    agent = _agent()
    agent.load_state_dict(loaded["agent_state"])
    agent.load_optimizer_state_dict(loaded["trainer"]["optimizer"])
    ckpt.save_checkpoint(tmp_path, 2, agent.state_dict(), {}, {"phase": "test"})
    assert ckpt.load_meta(tmp_path)["step"] == 2


def test_save_removes_only_partials_of_dead_writers(tmp_path):
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(dead.stdout)
    root = tmp_path / ckpt.CKPT_DIR
    host = socket.gethostname()
    stale = [root / f".step_000000002.pid{dead_pid}@{host}.ab_12.partial", root / ".step_000000003.k2j9x.partial"]
    kept = [root / f".step_000000004.pid{os.getpid()}@{host}.cd_34.partial",  # a writer still running
            root / f".step_000000005.pid{dead_pid}@another-host.example.ef_56.partial"]  # cannot tell: left alone
    for p in stale + kept:
        p.mkdir(parents=True)
        (p / ckpt.WEIGHTS).write_bytes(b"half")
    (root / f".{ckpt.LATEST}.tmp{dead_pid}").write_text("step_000000002\n")  # pre-tag LATEST temp file
    ckpt.save_checkpoint(tmp_path, 1, _agent().state_dict(), {}, {})
    assert sorted(p.name for p in root.iterdir()) == sorted([ckpt.LATEST, "step_000000001", *(p.name for p in kept)])
