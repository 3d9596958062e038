"""The dataset format (robot_calql/data/dataset.py): round trip, atomic writes, validation errors."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from dataset_factory import episode, meta

from robot_calql.data.dataset import (
    SCHEMA_VERSION,
    Dataset,
    DatasetError,
    DatasetWriter,
)

HERE = Path(__file__).resolve().parent


def assert_same(a, b):
    for k in ("image", "proprio", "state", "action", "reward", "terminal"):
        x, y = getattr(a, k), getattr(b, k)
        assert (x is None) == (y is None), k
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape, k
            np.testing.assert_array_equal(x, y, err_msg=k)
    for k in ("instruction", "task", "success", "source", "extra"):
        assert getattr(a, k) == getattr(b, k), k


@pytest.mark.parametrize("image,state", [(True, True), (False, True), (True, False)])
def test_round_trip(tmp_path, image, state):
    w = DatasetWriter(tmp_path / "d", meta(image, state))
    eps = [episode(T=3 + i, seed=i, image=image, state=state, success=i % 2 == 0) for i in range(4)]
    paths = [w.write_episode(e) for e in eps]
    assert [p.name for p in paths] == ["ep_000000", "ep_000001", "ep_000002", "ep_000003"]
    ds = Dataset(tmp_path / "d")
    assert ds.meta == meta(image, state)
    assert len(ds) == 4 and ds.num_steps == 3 + 4 + 5 + 6
    for a, b in zip(eps, ds, strict=True):
        assert_same(a, b)
        assert isinstance(b.proprio, np.memmap)  # memory-mapped, not loaded
    assert ds[1].truncated and not ds[0].truncated
    ds.verify()
    assert ds.summary()["success_rate"] == 0.5


def test_append_to_existing_and_meta_mismatch(tmp_path):
    DatasetWriter(tmp_path / "d", meta()).write_episode(episode(seed=1))
    w = DatasetWriter(tmp_path / "d", meta())
    assert w.write_episode(episode(seed=2)).name == "ep_000001"
    other = meta()
    other.action_dim = 7
    with pytest.raises(DatasetError, match="action_dim"):
        DatasetWriter(tmp_path / "d", other)
    assert len(Dataset(tmp_path / "d")) == 2
    DatasetWriter(tmp_path / "d", meta(), overwrite=True)
    assert len(Dataset(tmp_path / "d")) == 0


def test_writer_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(DatasetError, match="not empty"):
        DatasetWriter(tmp_path / "mine", meta())
    with pytest.raises(DatasetError, match="refusing to delete"):
        DatasetWriter(tmp_path / "mine", meta(), overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda e: e.action.__setitem__((2, 1), np.nan), r"'action' has a NaN or infinite value at index \[2, 1\]"),
        (lambda e: e.proprio.__setitem__((0, 0), np.inf), "'proprio' has a NaN or infinite"),
        (lambda e: e.action.__setitem__((3, 2), 1e30),
         r"'action' \(action.npy\) value 1e\+30 at step 3, axis 2 is outside the action bounds \[-1, 1\]"),
        (lambda e: e.action.__setitem__((0, 4), -1.01), "value -1.01 at step 0, axis 4 is outside the action bounds"),
        (lambda e: setattr(e, "action", e.action[:, :4]), "'action' has shape"),
        (lambda e: setattr(e, "image", e.image.astype(np.float32)), "'image' has dtype float32"),
        (lambda e: setattr(e, "state", None), "missing 'state'"),
        (lambda e: setattr(e, "instruction", ""), "missing instruction"),
        (lambda e: setattr(e, "source", "youtube"), "source 'youtube'"),
        (lambda e: e.terminal.__setitem__(1, True), "terminal=True at step 1"),
        (lambda e: setattr(e, "extra", {"q": np.zeros(2)}), "extra is not JSON-serialisable"),
    ],
)
def test_invalid_episodes_are_rejected_and_nothing_is_written(tmp_path, change, match):
    w = DatasetWriter(tmp_path / "d", meta())
    ep = episode()
    change(ep)
    with pytest.raises(DatasetError, match=match) as e:
        w.write_episode(ep)
    assert "ep_000000" in str(e.value)  # names the episode it would have been
    assert list((tmp_path / "d" / "episodes").iterdir()) == []
    assert len(Dataset(tmp_path / "d")) == 0


def test_failure_while_writing_leaves_nothing_behind(tmp_path, monkeypatch):
    import robot_calql.data.dataset as dsmod

    w = DatasetWriter(tmp_path / "d", meta())
    w.write_episode(episode(seed=0))
    calls = {"n": 0}
    real = dsmod._write_npy

    def flaky(path, arr):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        real(path, arr)

    monkeypatch.setattr(dsmod, "_write_npy", flaky)
    with pytest.raises(OSError, match="disk full"):
        w.write_episode(episode(seed=1))
    monkeypatch.setattr(dsmod, "_write_npy", real)
    assert sorted(p.name for p in (tmp_path / "d" / "episodes").iterdir()) == ["ep_000000"]
    assert w.write_episode(episode(seed=2)).name == "ep_000001"
    assert len(Dataset(tmp_path / "d")) == 2


def test_process_killed_mid_write_leaves_no_visible_episode(tmp_path):
    """A hard crash (os._exit, no cleanup) in the middle of an episode: readers never see it."""
    root = tmp_path / "d"
    DatasetWriter(root, meta()).write_episode(episode(seed=0))
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(HERE)!r})
        import robot_calql.data.dataset as d
        from dataset_factory import meta, episode
        real = d._write_npy
        n = [0]
        def dying(path, arr):
            n[0] += 1
            if n[0] == 3:
                os._exit(17)   # power cut after two of the arrays
            real(path, arr)
        d._write_npy = dying
        d.DatasetWriter({str(root)!r}, meta()).write_episode(episode(seed=1))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 17, proc.stderr
    leftovers = [p.name for p in (root / "episodes").iterdir()]
    assert any(n.startswith(".ep_000001") for n in leftovers)  # the hidden partial folder
    ds = Dataset(root)
    assert len(ds) == 1
    ds.verify()
    assert DatasetWriter(root, meta()).write_episode(episode(seed=2)).name == "ep_000001"
    assert len(Dataset(root)) == 2


def test_missing_dataset_and_metadata(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        Dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no dataset.json"):
        Dataset(tmp_path / "empty")


def _dataset(tmp_path):
    root = tmp_path / "d"
    w = DatasetWriter(root, meta())
    w.write_episode(episode(seed=0))
    w.write_episode(episode(seed=1))
    return root


def test_corrupt_metadata_names_the_file(tmp_path):
    root = _dataset(tmp_path)
    (root / "dataset.json").write_text('{"control_hz": 10, "action_dim": ')
    with pytest.raises(DatasetError, match=r"dataset\.json: corrupt JSON"):
        Dataset(root)
    m = meta().to_json()
    m["schema_version"] = SCHEMA_VERSION + 1
    (root / "dataset.json").write_text(json.dumps(m))
    with pytest.raises(DatasetError, match="schema version"):
        Dataset(root)
    m = meta().to_json()
    m["colour"] = "red"
    (root / "dataset.json").write_text(json.dumps(m))
    with pytest.raises(DatasetError, match="unknown metadata keys"):
        Dataset(root)


def test_corrupt_or_missing_episode_files_name_the_file(tmp_path):
    root = _dataset(tmp_path)
    ep1 = root / "episodes" / "ep_000001"
    (ep1 / "state.npy").unlink()
    with pytest.raises(DatasetError, match=r"ep_000001/state\.npy: missing"):
        Dataset(root)

    root = _dataset(tmp_path / "b")
    ep1 = root / "episodes" / "ep_000001"
    (ep1 / "episode.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"ep_000001/episode\.json: corrupt JSON"):
        Dataset(root)
    (ep1 / "episode.json").unlink()
    with pytest.raises(DatasetError, match="ep_000001: missing episode.json"):
        Dataset(root)

    root = _dataset(tmp_path / "c")
    f = root / "episodes" / "ep_000000" / "action.npy"
    f.write_bytes(f.read_bytes()[:100])  # truncated
    ds = Dataset(root)
    with pytest.raises(DatasetError, match=r"ep_000000/action\.npy: unreadable or truncated"):
        ds[0]
    assert_same(ds[1], episode(seed=1))  # the other episode still loads

    root = _dataset(tmp_path / "e")
    np.save(root / "episodes" / "ep_000000" / "proprio.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(DatasetError, match=r"ep_000000/proprio\.npy: shape \(3, 4\)"):
        Dataset(root)[0]


def test_verify_finds_nan_written_behind_the_writers_back(tmp_path):
    root = _dataset(tmp_path)
    f = root / "episodes" / "ep_000001" / "reward.npy"
    r = np.load(f)
    r[0] = np.nan
    np.save(f, r)
    ds = Dataset(root)
    with pytest.raises(DatasetError, match=r"ep_000001: 'reward' has a NaN"):
        ds.verify()


def test_an_action_outside_the_bounds_is_refused_at_load_naming_file_step_and_value(tmp_path):
    """One action of 1e30 (finite, so the NaN check let it through) used to pass verify() and the
    replay's load; pretraining on it gave NaN losses from update 50 on."""
    from robot_calql.data.replay import OfflineReplay

    root = _dataset(tmp_path)
    f = root / "episodes" / "ep_000001" / "action.npy"
    a = np.load(f)
    a[4, 0] = 1e30
    a[:, 1] = np.clip(a[:, 1] * 1.00005, -1.0, 1.0) + 5e-5  # float rounding at the bound passes
    np.save(f, a)
    ds = Dataset(root)
    msg = r"ep_000001: 'action' \(action.npy\) value 1e\+30 at step 4, axis 0 is outside the action bounds \[-1, 1\]"
    with pytest.raises(DatasetError, match=msg):
        ds.verify()
    with pytest.raises(DatasetError, match=msg):
        OfflineReplay(ds, {"state": (6,)}, progress=False)
    a[4, 0] = 0.5
    np.save(f, a)
    Dataset(root).verify()


def test_episode_folders_get_normal_permissions(tmp_path):
    """Other users (a learner container, a colleague) must be able to read a dataset."""
    import os

    old = os.umask(0o022)
    try:
        path = DatasetWriter(tmp_path / "d", meta()).write_episode(episode())
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o755
