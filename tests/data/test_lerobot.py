"""LeRobotDataset v3.0 import and export (robot_calql/data/lerobot.py): the layout LeRobot reads,
a round trip through it, a dataset written by hand in LeRobot's layout, and clear refusals."""

import json

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robot_calql import cli
from robot_calql.calibration.crop import centered_square, crop_and_resize
from robot_calql.data.dataset import Dataset, DatasetMeta, DatasetWriter, Episode
from robot_calql.data.lerobot import LeRobotFormatError, export_lerobot, import_lerobot

SIZE = 64
# mean absolute error (grey levels, 0..255) of 64 px images through AV1 at LeRobot's defaults (crf 30,
# preset 12) and back: measured 2.7-3.6 per episode on these pictures (SVT-AV1 4.1)
MAX_CODEC_MAE = 6.0


def scene(t: int, h: int = SIZE, w: int = SIZE, seed: int = 0) -> np.ndarray:
    """A smooth picture like a camera's: a gradient table and a disc that moves with t."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([80 + 100 * xx / w, 60 + 120 * yy / h, np.full_like(xx, 90 + 20 * seed)], -1)
    cx, cy = w * (0.3 + 0.02 * t), h * (0.4 + 0.01 * t * (seed + 1))
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 < (0.15 * min(h, w)) ** 2
    img[disc] = (220, 40, 40)
    return img.clip(0, 255).astype(np.uint8)


def our_episode(T: int, seed: int, success: bool, instruction: str) -> Episode:
    r = np.random.default_rng(seed)
    term = np.zeros(T, bool)
    term[-1] = success
    rew = term.astype(np.float32)
    rew[: T // 2] = r.uniform(-0.5, 0.0, T // 2)  # dense part: a reward on every step is kept
    return Episode(
        image=np.stack([scene(t, seed=seed) for t in range(T + 1)]),
        proprio=r.normal(size=(T + 1, 4)).astype(np.float32),
        state=r.normal(size=(T + 1, 6)).astype(np.float32),
        action=r.uniform(-1, 1, (T, 5)).astype(np.float32),
        reward=rew, terminal=term, instruction=instruction, task="cube_in_bowl" if seed % 2 == 0 else "cube_out",
        success=success, source="demo" if success else "failure", extra={"seed": seed},
    )


def our_dataset(root, lengths=(5, 8, 12)):
    meta = DatasetMeta(control_hz=10.0, action_dim=5, proprio_dim=4, state_dim=6, image_shape=(SIZE, SIZE, 3),
                       robot="sim_standin", camera="front", extra={"proprio": "4 numbers"})
    w = DatasetWriter(root, meta)
    instr = ["put the cube in the bowl", "take the cube out of the bowl"]
    eps = [our_episode(T, seed=i, success=i % 2 == 0, instruction=instr[i % 2]) for i, T in enumerate(lengths)]
    for ep in eps:
        w.write_episode(ep)
    return meta, eps


def decoded_frames(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(c.streams.video[0]))


@pytest.mark.parametrize("small_files", [False, True])
def test_export_writes_lerobot_layout_and_import_gives_the_dataset_back(tmp_path, small_files):
    meta, eps = our_dataset(tmp_path / "ours")
    sizes = {"chunks_size": 2, "data_file_mb": 1e-6, "video_file_mb": 1e-6} if small_files else {}
    rep = export_lerobot(tmp_path / "ours", tmp_path / "lr", **sizes)
    lr = tmp_path / "lr"
    frames = [len(e) + 1 for e in eps]
    assert rep["episodes"] == 3 and rep["frames"] == sum(frames)

    info = json.loads((lr / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10 and info["robot_type"] == "sim_standin"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, sum(frames), 2)
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    f = info["features"]
    cam = f["observation.images.front"]
    assert cam["dtype"] == "video" and cam["shape"] == [SIZE, SIZE, 3]
    assert cam["info"]["video.codec"] == "av1" and cam["info"]["video.pix_fmt"] == "yuv420p"
    assert f["observation.state"] == {"dtype": "float32", "shape": [4], "names": [f"state_{i}" for i in range(4)]}
    assert f["action"]["names"] == ["dx", "dy", "dz", "dyaw", "gripper"]
    assert f["observation.environment_state"]["shape"] == [6]
    assert f["next.reward"]["dtype"] == "float32" and f["next.done"]["dtype"] == "bool"
    for k in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert f[k]["shape"] == [1]

    data_files = sorted(lr.glob("data/chunk-*/file-*.parquet"))
    video_files = sorted(lr.glob("videos/observation.images.front/chunk-*/file-*.mp4"))
    if small_files:  # one episode per file, two files per chunk folder
        assert [p.relative_to(lr).as_posix() for p in data_files] == [
            "data/chunk-000/file-000.parquet", "data/chunk-000/file-001.parquet", "data/chunk-001/file-000.parquet"]
        assert len(video_files) == 3
    else:
        assert len(data_files) == 1 and len(video_files) == 1
    schema = pq.read_schema(data_files[0])
    assert schema.field("observation.state").type == pa.list_(pa.float32(), 4)
    assert schema.field("action").type == pa.list_(pa.float32(), 5)
    assert schema.field("next.reward").type == pa.float32() and schema.field("next.done").type == pa.bool_()
    assert schema.field("index").type == pa.int64() and schema.field("timestamp").type == pa.float32()
    data = pa.concat_tables([pq.read_table(p) for p in data_files])
    assert data.column("index").to_pylist() == list(range(sum(frames)))
    ep_rows = pq.read_table(lr / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [r["length"] for r in ep_rows] == frames
    assert [r["dataset_from_index"] for r in ep_rows] == [0, frames[0], frames[0] + frames[1]]
    assert ep_rows[1]["tasks"] == ["take the cube out of the bowl"]
    assert sum(decoded_frames(p) for p in video_files) == sum(frames)
    for r in ep_rows:  # each episode's video span holds its frames
        assert r["videos/observation.images.front/to_timestamp"] - r["videos/observation.images.front/from_timestamp"] \
            == pytest.approx(r["length"] / 10)
    tasks = pq.read_table(lr / "meta/tasks.parquet")
    assert dict(zip(tasks.column("task").to_pylist(), tasks.column("task_index").to_pylist(), strict=True)) == {
        "put the cube in the bowl": 0, "take the cube out of the bowl": 1}
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]  # pandas reads task as the index
    stats = json.loads((lr / "meta/stats.json").read_text())
    assert np.array(stats["observation.images.front"]["mean"]).shape == (3, 1, 1)
    assert stats["action"]["count"] == [sum(frames)] and len(stats["action"]["min"]) == 5

    report = import_lerobot(lr, tmp_path / "back", robot="sim_standin", image_size=SIZE, control_hz=10.0)
    assert report.action_scaling["mode"] == "identity" and report.ends_moved == 0
    back = Dataset(tmp_path / "back")
    back.verify()
    assert (back.meta.control_hz, back.meta.action_dim, back.meta.proprio_dim, back.meta.state_dim,
            back.meta.image_shape, back.meta.action_space) == (10.0, 5, 4, 6, (SIZE, SIZE, 3), "delta_ee")
    assert back.meta.extra["proprio"] == "4 numbers"
    maes = []
    for a, b in zip(eps, back, strict=True):
        for k in ("proprio", "state", "action", "reward", "terminal"):
            np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
        for k in ("instruction", "task", "success", "source", "extra"):
            assert getattr(a, k) == getattr(b, k), k
        assert b.image.shape == a.image.shape
        maes.append(np.abs(a.image.astype(int) - b.image.astype(int)).mean())
    assert max(maes) < MAX_CODEC_MAE, maes


def write_lerobot_by_hand(root, fps=10):
    """A LeRobot v3.0 dataset written directly (not by our exporter): 3 episodes, in two data files and
    two videos in two chunk folders (chunks_size 1), two episode-metadata files, 96x128 frames,
    actions in degrees, variable-length list columns, next.done only on each episode's last frame
    (LeRobot's gym recorder: the last action's result is not recorded)."""
    lengths = [6, 4, 7]
    files = [0, 0, 1]  # episode -> (chunk) index of its data and video file
    rng = np.random.default_rng(3)
    frames_by_file: dict[int, list[np.ndarray]] = {0: [], 1: []}
    rows: dict[int, list[dict]] = {0: [], 1: []}
    episodes, originals, index = [], [], 0
    for e, n in enumerate(lengths):
        f = files[e]
        imgs = [scene(t, 96, 128, seed=e) for t in range(n)]
        start = len(frames_by_file[f])
        frames_by_file[f] += imgs
        state = rng.normal(size=(n, 3)).astype(np.float32)
        action = rng.uniform(-90, 90, (n, 2)).astype(np.float32)
        action[0] = (-90, 90)  # the extremes occur
        action[1] = (90, -90)
        reward = np.zeros(n, np.float32)
        done = np.zeros(n, bool)
        if e != 1:  # episodes 0 and 2 succeed on their last frame's action
            reward[-1], done[-1] = 1.0, True
        originals.append({"images": imgs, "state": state, "action": action})
        for t in range(n):
            rows[f].append({"observation.state": state[t].tolist(), "action": action[t].tolist(),
                            "next.reward": float(reward[t]), "next.done": bool(done[t]),
                            "timestamp": t / fps, "frame_index": t, "episode_index": e, "index": index + t,
                            "task_index": e % 2})
        episodes.append({"episode_index": e, "tasks": [["pick the cube", "stack the cube"][e % 2]], "length": n,
                         "data/chunk_index": f, "data/file_index": 0, "dataset_from_index": index,
                         "dataset_to_index": index + n,
                         "videos/observation.images.top/chunk_index": f, "videos/observation.images.top/file_index": 0,
                         "videos/observation.images.top/from_timestamp": start / fps,
                         "videos/observation.images.top/to_timestamp": (start + n) / fps,
                         "meta/episodes/chunk_index": 0, "meta/episodes/file_index": min(e, 1)})
        index += n
    schema = pa.schema([("observation.state", pa.list_(pa.float32())), ("action", pa.list_(pa.float32())),
                        ("next.reward", pa.float32()), ("next.done", pa.bool_()), ("timestamp", pa.float32()),
                        ("frame_index", pa.int64()), ("episode_index", pa.int64()), ("index", pa.int64()),
                        ("task_index", pa.int64())])
    for f, rs in rows.items():
        p = root / f"data/chunk-{f:03d}/file-000.parquet"
        p.parent.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rs, schema=schema), p)
        p = root / f"videos/observation.images.top/chunk-{f:03d}/file-000.mp4"
        p.parent.mkdir(parents=True)
        with av.open(str(p), "w") as c:
            s = c.add_stream("libx264", rate=fps, options={"crf": "18", "g": "2"})
            s.width, s.height, s.pix_fmt = 128, 96, "yuv420p"
            for k, img in enumerate(frames_by_file[f]):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = k
                for pkt in s.encode(frame):
                    c.mux(pkt)
            for pkt in s.encode():
                c.mux(pkt)
    for i, eps in enumerate([episodes[:1], episodes[1:]]):
        p = root / f"meta/episodes/chunk-000/file-{i:03d}.parquet"
        p.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(eps), p)
    pq.write_table(pa.table({"task": ["pick the cube", "stack the cube"], "task_index": [0, 1]}), root / "meta/tasks.parquet")
    info = {"codebase_version": "v3.0", "robot_type": "so100", "fps": fps, "total_episodes": 3,
            "total_frames": sum(lengths), "total_tasks": 2, "chunks_size": 1,
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": {
                "observation.images.top": {"dtype": "video", "shape": [96, 128, 3], "names": ["height", "width", "channels"]},
                "observation.state": {"dtype": "float32", "shape": [3], "names": ["a", "b", "c"]},
                "action": {"dtype": "float32", "shape": [2], "names": ["shoulder.pos", "gripper.pos"]},
                "next.reward": {"dtype": "float32", "shape": [1], "names": None},
                "next.done": {"dtype": "bool", "shape": [1], "names": None},
                **{k: {"dtype": "int64", "shape": [1], "names": None}
                   for k in ("frame_index", "episode_index", "index", "task_index")},
                "timestamp": {"dtype": "float32", "shape": [1], "names": None}}}
    (root / "meta/info.json").write_text(json.dumps(info))
    return lengths, originals


def test_import_a_dataset_written_in_lerobots_layout(tmp_path):
    lengths, originals = write_lerobot_by_hand(tmp_path / "lr")
    report = import_lerobot(tmp_path / "lr", tmp_path / "ours", robot="so100_cell", image_size=SIZE, crop="center",
                            control_hz=10)
    ds = Dataset(tmp_path / "ours")
    ds.verify()
    assert [len(ep) for ep in ds] == [n - 1 for n in lengths]
    assert (ds.meta.robot, ds.meta.camera, ds.meta.action_space) == ("so100_cell", "observation.images.top", "lerobot")
    assert ds.meta.extra["lerobot"]["action_names"] == ["shoulder.pos", "gripper.pos"]
    # degrees scaled from the data's min/max (-90..90 on both axes) to -1..1, and said so
    assert report.action_scaling == {"mode": "data min/max", "low": [-90.0, -90.0], "high": [90.0, 90.0],
                                     "constant_axes": []}
    assert report.ends_moved == 2 and report.successes == 2
    for ep, src, e in zip(ds, originals, range(3), strict=True):
        np.testing.assert_array_equal(ep.proprio, src["state"])
        np.testing.assert_allclose(ep.action, src["action"][:-1] / 90.0, atol=1e-6)
        # the done of the last frame's action became the end of the last step, with its reward
        assert ep.terminal[-1] == (e != 1) and not ep.terminal[:-1].any() and ep.success == (e != 1)
        assert ep.reward.sum() == (1.0 if e != 1 else 0.0)
        assert ep.instruction == ["pick the cube", "stack the cube"][e % 2]
        assert ep.extra == {"lerobot_episode_index": e, "lerobot_tasks": [ep.instruction]}
        want = np.stack([crop_and_resize(img, centered_square(128, 96), SIZE) for img in src["images"]])
        assert ep.image.shape == (len(ep) + 1, SIZE, SIZE, 3)
        assert np.abs(want.astype(int) - ep.image.astype(int)).mean() < MAX_CODEC_MAE
    saved = json.loads((tmp_path / "ours/import_report.json").read_text())
    assert saved["episodes"] == 3 and saved["action_scaling"]["mode"] == "data min/max"


def test_import_refuses_actions_outside_the_given_range_and_writes_nothing(tmp_path):
    write_lerobot_by_hand(tmp_path / "lr")
    with pytest.raises(LeRobotFormatError, match=r"episode 0: action -90 at frame 0, axis 0 is outside \[-45, 90\].*refusing to clip"):
        import_lerobot(tmp_path / "lr", tmp_path / "ours", action_low=[-45, -90], action_high=[90, 90])
    with pytest.raises(LeRobotFormatError, match="outside \\[-1, 1\\] with action_range=identity"):
        import_lerobot(tmp_path / "lr", tmp_path / "ours", action_range="identity")
    with pytest.raises(LeRobotFormatError, match="fps 10 but the robot's control_hz is 5"):
        import_lerobot(tmp_path / "lr", tmp_path / "ours", control_hz=5)
    assert not (tmp_path / "ours").exists() and [p.name for p in tmp_path.iterdir()] == ["lr"]


def test_import_names_a_v2_dataset_and_a_video_that_does_not_match(tmp_path):
    write_lerobot_by_hand(tmp_path / "lr")
    info_path = tmp_path / "lr/meta/info.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    with pytest.raises(LeRobotFormatError, match="codebase_version 'v2.1'.*convert_dataset_v21_to_v30"):
        import_lerobot(tmp_path / "lr", tmp_path / "ours")
    info_path.write_text(json.dumps(info))
    p = tmp_path / "lr/meta/episodes/chunk-000/file-001.parquet"
    rows = pq.read_table(p).to_pylist()
    rows[1]["videos/observation.images.top/from_timestamp"] += 0.05  # half a frame off
    pq.write_table(pa.Table.from_pylist(rows), p)
    with pytest.raises(LeRobotFormatError, match=r"chunk-001/file-000.mp4: no frame within 0.0001s of 0.0500s"):
        import_lerobot(tmp_path / "lr", tmp_path / "ours", crop="center")
    assert not (tmp_path / "ours").exists()


def test_cli_export_and_import_commands(tmp_path, capsys):
    our_dataset(tmp_path / "ours", lengths=(3, 4))
    assert cli.main(["export-lerobot", f"dataset={tmp_path / 'ours'}", f"out={tmp_path / 'lr'}", "vcodec=libx264"]) == 0
    assert "exported 2 episodes (9 frames, 2 tasks, 10 fps)" in capsys.readouterr().out
    info = json.loads((tmp_path / "lr/meta/info.json").read_text())
    assert info["features"]["observation.images.front"]["info"]["video.codec"] == "h264"
    assert cli.main(["import-lerobot", f"path={tmp_path / 'lr'}", "robot=sim_standin", f"out={tmp_path / 'back'}"]) == 0
    out = capsys.readouterr().out
    assert "imported 2 episodes (7 steps, 1 successes)" in out and '"mode": "identity"' in out
    assert len(Dataset(tmp_path / "back")) == 2
    # out exists: refused unless overwrite=true
    assert cli.main(["import-lerobot", f"path={tmp_path / 'lr'}", f"out={tmp_path / 'back'}"]) == 1
    assert "exists; pass overwrite=true" in capsys.readouterr().err


def test_import_png_image_frames_with_a_success_column_and_no_rewards(tmp_path):
    """LeRobot's image features (PNG bytes in the parquet, no video); success from next.success."""
    import cv2

    root = tmp_path / "lr"
    (root / "data/chunk-000").mkdir(parents=True)
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    rows, images = [], []
    for e, n in enumerate((3, 4)):
        for t in range(n):
            img = scene(t, 48, 48, seed=e)
            images.append(img)
            png = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes()
            rows.append({"observation.image": {"bytes": png, "path": None}, "observation.state": [float(t)],
                         "action": [0.5, -0.5], "next.success": e == 0 and t == n - 1, "timestamp": t / 10,
                         "frame_index": t, "episode_index": e, "index": len(rows), "task_index": 0})
    pq.write_table(pa.Table.from_pylist(rows), root / "data/chunk-000/file-000.parquet")
    pq.write_table(pa.Table.from_pylist([
        {"episode_index": e, "tasks": ["wave"], "length": n, "data/chunk_index": 0, "data/file_index": 0}
        for e, n in enumerate((3, 4))]), root / "meta/episodes/chunk-000/file-000.parquet")
    pq.write_table(pa.table({"task_index": [0], "__index_level_0__": ["wave"]}), root / "meta/tasks.parquet")
    feats = {"observation.image": {"dtype": "image", "shape": [48, 48, 3], "names": None},
             "observation.state": {"dtype": "float32", "shape": [1], "names": None},
             "action": {"dtype": "float32", "shape": [2], "names": None},
             "next.success": {"dtype": "bool", "shape": [1], "names": None}}
    (root / "meta/info.json").write_text(json.dumps({
        "codebase_version": "v3.0", "fps": 10, "features": feats,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"}))
    report = import_lerobot(root, tmp_path / "ours", image_size=48)
    assert (report.reward_from, report.terminal_from, report.action_scaling["mode"]) == ("next.success", "next.success", "identity")
    ds = Dataset(tmp_path / "ours")
    a, b = ds[0], ds[1]
    assert a.success and a.reward.tolist() == [0.0, 1.0] and a.terminal.tolist() == [False, True]
    assert not b.success and b.reward.tolist() == [0.0] * 3 and b.truncated
    assert a.proprio.tolist() == [[0.0], [1.0], [2.0]] and a.instruction == "wave"
    np.testing.assert_array_equal(np.concatenate([a.image, b.image]), np.stack(images))  # PNG is lossless


def test_overwrite_replaces_only_a_dataset_of_the_kind_written(tmp_path, capsys):
    our_dataset(tmp_path / "ours", lengths=(3,))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes/keep.txt").write_text("mine")
    assert cli.main(["export-lerobot", f"dataset={tmp_path / 'ours'}", f"out={tmp_path / 'notes'}", "overwrite=true"]) == 1
    assert "has no meta/info.json; refusing to replace it" in capsys.readouterr().err
    assert (tmp_path / "notes/keep.txt").read_text() == "mine"
    export_lerobot(tmp_path / "ours", tmp_path / "lr", vcodec="libx264")
    export_lerobot(tmp_path / "ours", tmp_path / "lr", vcodec="libx264", overwrite=True)  # an export: replaced
    with pytest.raises(FileExistsError, match="has no dataset.json"):
        import_lerobot(tmp_path / "lr", tmp_path / "notes", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr", "notes", "ours"]  # no hidden leftovers
