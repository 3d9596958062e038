"""`robot-calql collect` and the Python collection API: round trip, determinism, errors."""

import numpy as np

from robot_calql.cli import main as cli_main
from robot_calql.data import Dataset
from robot_calql.sim import TASKS
from robot_calql.sim.collect import collect_episodes, iter_episodes


def _same(a, b):
    for k in ("image", "proprio", "state", "action", "reward", "terminal"):
        x, y = getattr(a, k), getattr(b, k)
        assert (x is None) == (y is None), k
        if x is not None:
            assert x.dtype == y.dtype, k
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=k)
    assert (a.instruction, a.task, a.success, a.source) == (b.instruction, b.task, b.success, b.source)


def test_collected_episodes_load_back_identical(tmp_path):
    eps = collect_episodes("cube_in_bowl", 5, image_size=64, seed=0, out=tmp_path / "d")
    ds = Dataset(tmp_path / "d")
    assert len(ds) == 5 and ds.meta.image_shape == (64, 64, 3) and ds.meta.control_hz == 10
    for i, ep in enumerate(eps):
        _same(ep, ds[i])
    ds.verify()
    again = list(iter_episodes("cube_in_bowl", 5, image_size=64, seed=0))
    for a, b in zip(eps, again, strict=True):
        _same(a, b)  # same seed, same data


def test_cli_collect_pair_with_failures_and_prior(tmp_path, capsys):
    out = tmp_path / "d"
    rc = cli_main(["collect", "task=cube_bowl", "episodes=3", "failures=1", "prior_tasks=[cube_left]",
                   "image_size=0", f"out={out}"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "demonstrator success rate" in text and "cube_out_of_bowl" in text
    ds = Dataset(out)
    s = ds.summary()
    assert s["episodes"] == 3 + 3 + 1 + 1 + 3
    assert s["by_source"] == {"demo": 6, "failure": 2, "prior": 3}
    assert set(s["instructions"]) == {TASKS[t].instruction for t in ("cube_in_bowl", "cube_out_of_bowl", "cube_left")}
    assert ds.meta.image_shape is None and ds.meta.state_dim is not None
    # the CLI records exactly what the Python API gives for the same seed (sim-to-bag relies on it)
    direct = list(iter_episodes("cube_out_of_bowl", 3, image_size=0, seed=0))
    for i, ep in enumerate(direct):
        _same(ep, ds[3 + i])


def test_cli_collect_unknown_task(tmp_path, capsys):
    rc = cli_main(["collect", "task=stack_blocks", "episodes=1", f"out={tmp_path / 'x'}"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "unknown task 'stack_blocks'" in err and "cube_in_bowl" in err and "cube_left_right" in err
    assert not (tmp_path / "x").exists()  # nothing written


def test_backward_demos_from_dropped_cubes_succeed():
    eps = collect_episodes("cube_out_of_bowl", 6, image_size=0, seed=0, noise=0.1, dropped_start=1.0)
    tipped = [float(np.hypot(*ep.state[0][14:16])) > 0.05 for ep in eps]  # quaternion x, y of the cube
    assert sum(tipped) >= 3, "most episodes start with the cube tipped or leaning"
    assert all(ep.success for ep in eps), "the scripted demonstrator takes a tipped cube out too"


def test_forward_demos_from_cubes_on_any_face_succeed():
    eps = collect_episodes("cube_in_bowl", 6, image_size=0, seed=0, noise=0.1, rolled_start=1.0)
    on_side = [float(np.hypot(*ep.state[0][14:16])) > 0.5 for ep in eps]  # quaternion x, y of the cube
    assert sum(on_side) >= 3, "most episodes start with the cube on another face"
    assert all(ep.success for ep in eps), "the scripted demonstrator puts a cube lying on any face in the bowl"


def _collect(out, *extra):
    return cli_main(["collect", "task=cube_in_bowl", "episodes=2", "image_size=0", "max_episode_steps=15",
                     f"out={out}", *extra])


def test_cli_collect_again_into_a_dataset_is_refused_unless_append_or_overwrite(tmp_path, capsys):
    out = tmp_path / "d"
    assert _collect(out) == 0
    first = [Dataset(out)[i] for i in range(2)]
    capsys.readouterr()
    # rerunning the same command must not add the same two episodes again
    assert _collect(out) == 1
    err = capsys.readouterr().err
    assert f"{out} already holds 2 episodes" in err and "append=true" in err and "overwrite=true" in err
    assert len(Dataset(out)) == 2

    # append: continued episode ids, a seed none of the episodes used, no duplicates
    assert _collect(out, "append=true") == 0
    assert "seed 0 was already used" in capsys.readouterr().out
    assert _collect(out, "append=true") == 0
    ds = Dataset(out)
    assert [p.name for p in ds.episode_dirs] == [f"ep_{i:06d}" for i in range(6)]
    assert [info["extra"]["seed"] for info in ds.infos] == [0, 0, 1, 1, 2, 2]
    starts = {ds[i].state[0].tobytes() for i in range(6)}
    assert len(starts) == 6, "every episode starts from its own placement"
    for i in range(2):
        _same(ds[i], first[i])  # what was there is untouched

    # overwrite: the same command from scratch gives the first run's episodes
    assert _collect(out, "overwrite=true") == 0
    ds = Dataset(out)
    assert len(ds) == 2
    for i in range(2):
        _same(ds[i], first[i])
    assert _collect(out, "append=true", "overwrite=true") == 1
    assert "pass one of them" in capsys.readouterr().err


def test_cli_collect_overwrite_that_fails_keeps_the_old_dataset(tmp_path, monkeypatch):
    from robot_calql.data.dataset import DatasetWriter

    out = tmp_path / "d"
    assert _collect(out) == 0
    write = DatasetWriter.write_episode
    calls = []

    def write_then_fail(self, ep):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return write(self, ep)

    monkeypatch.setattr(DatasetWriter, "write_episode", write_then_fail)
    try:
        _collect(out, "overwrite=true", "seed=5")
    except RuntimeError:
        pass
    assert len(calls) == 2
    ds = Dataset(out)
    assert len(ds) == 2 and [info["extra"]["seed"] for info in ds.infos] == [0, 0]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no half-built dataset beside it


def test_cli_collect_refuses_a_folder_that_is_not_a_dataset(tmp_path, capsys):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("keep me")
    assert _collect(out, "overwrite=true") == 1
    assert "is not a robot_calql dataset" in capsys.readouterr().err
    assert (out / "todo.txt").read_text() == "keep me"
