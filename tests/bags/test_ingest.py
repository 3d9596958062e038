"""Ingest synthetic rosbag2 recordings whose right answer is known (robot_calql/bags/synthetic.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from robot_calql.bags import synthetic as S
from robot_calql.bags.ingest import BagError, find_bags, ingest, settings_from
from robot_calql.bags.messages import BagRecorder
from robot_calql.config import compose
from robot_calql.data.dataset import Dataset

# synthetic recordings are not from the stand-in camera: no calibration crop unless a test sets one
NO_EE = ["robot.bag_topics.ee_pose=null", "robot.calibration=null"]


def settings(*overrides: str):
    return settings_from(compose("ingest", ["bags=unused", "out=unused", *NO_EE, *overrides]))


def bag(tmp_path: Path, name: str = "bag", storage: str = "sqlite3", distro: str = "kilted", **spec) -> Path:
    path = tmp_path / "bags" / name
    path.parent.mkdir(exist_ok=True)
    S.write_synthetic_bag(path, S.SyntheticSpec(**spec), storage=storage, distro=distro)
    return path


def leftovers(out: Path) -> list[str]:
    """Anything ingest left beside `out` (hidden temp folders)."""
    return [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def expected_episode(spec: S.SyntheticSpec, e: int):
    """Actions, proprio, image values and terminal of synthetic episode e (10 Hz grid)."""
    dt = 1.0 / spec.control_hz
    t0 = spec.start_s + e * (spec.steps * dt + spec.pause_s)
    ks = np.arange(spec.steps)
    lin = np.stack([S.command(k)[0] for k in ks]) * dt / 0.02
    yaw = np.full((spec.steps, 1), 0.3 * dt / 0.15)
    grip = np.where(ks >= spec.steps // 2, 1.0, -1.0)[:, None]
    action = np.concatenate([lin, yaw, grip], axis=1)
    times = t0 + np.arange(spec.steps + 1) * dt
    proprio = np.stack([S.joint_values(t - spec.start_s) for t in times])
    frames = np.round((times - spec.start_s) * spec.camera_hz).astype(int)
    return action, proprio, np.array([S.frame_value(f) for f in frames])


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_round_trip_exact(tmp_path, storage):
    spec = S.SyntheticSpec(episodes=3, steps=12, success=[True, False])
    S.write_synthetic_bag(tmp_path / "b", spec, storage=storage)
    reports = ingest([tmp_path / "b"], settings(), tmp_path / "ds", progress=False)
    ds = Dataset(tmp_path / "ds")
    ds.verify()
    assert len(ds) == 3 and reports[0].episodes == 3
    assert ds.meta.image_shape == (64, 64, 3) and ds.meta.action_dim == 5 and ds.meta.proprio_dim == 6
    for e in range(3):
        ep = ds[e]
        action, proprio, values = expected_episode(spec, e)
        assert len(ep) == spec.steps
        np.testing.assert_allclose(ep.action, action, atol=1e-5)
        np.testing.assert_allclose(ep.proprio, proprio, atol=1e-5)
        np.testing.assert_array_equal(ep.image.reshape(len(values), -1).min(axis=1), values)
        np.testing.assert_array_equal(ep.image.reshape(len(values), -1).max(axis=1), values)
        success = e % 2 == 0
        assert ep.success == success and bool(ep.terminal[-1]) == success
        assert ep.reward.sum() == float(success) and ep.reward[-1] == float(success)
        assert ep.instruction == spec.instruction and ep.source == "bag"
    report = json.loads((tmp_path / "ds" / "ingest_report.json").read_text())
    assert report[0]["messages"]["/camera/image_raw"] == 3 * (12 * 3 + 1)
    assert leftovers(tmp_path / "ds") == []


@pytest.mark.parametrize("encoding,tol", [("rgb8", 0), ("bgr8", 0), ("mono8", 1), ("png", 0), ("jpeg", 3)])
def test_image_encodings(tmp_path, encoding, tol):
    spec = S.SyntheticSpec(episodes=1, steps=6, encoding=encoding, image_hw=(60, 80))
    S.write_synthetic_bag(tmp_path / "b", spec)
    ingest([tmp_path / "b"], settings("image_size=32"), tmp_path / "ds", progress=False)
    ep = Dataset(tmp_path / "ds")[0]
    assert ep.image.shape == (7, 32, 32, 3)
    _, _, values = expected_episode(spec, 0)
    np.testing.assert_allclose(ep.image.reshape(7, -1).mean(axis=1), values, atol=tol)


def test_colour_channels_survive(tmp_path):
    """A red frame stays red through bgr8 and jpeg (channel order is not swapped)."""
    for enc in ("bgr8", "jpeg", "rgb8"):
        path = tmp_path / enc
        with BagRecorder(path) as rec:
            f = rec.msgs
            rec.write("/robot_calql/instruction", f.string("go"), 1)
            rec.write("/robot_calql/episode_event", f.string("start"), 10)
            red = np.zeros((40, 40, 3), np.uint8)
            red[..., 0] = 200
            for k in range(4):
                t = 1_000_000_000 + k * 100_000_000
                img = f.compressed_image(t, red, "jpeg") if enc == "jpeg" else f.image(t, red, enc)
                rec.write("/camera/image_raw", img, t)
                rec.write("/joint_states", f.joint_state(t, [*S.JOINTS, S.GRIPPER], np.zeros(6)), t)
                rec.write("/robot_calql/sent_command", f.twist(t, np.zeros(3), np.zeros(3)), t)
        ingest([path], settings(), tmp_path / f"ds_{enc}",
               progress=False)
        px = Dataset(tmp_path / f"ds_{enc}")[0].image[0, 10, 10]
        assert px[0] > 180 and px[1] < 20 and px[2] < 20, (enc, px)


def test_unsupported_encoding_is_a_clear_error_and_nothing_is_written(tmp_path):
    b = bag(tmp_path, encoding="16UC1", episodes=1, steps=4)
    with pytest.raises(BagError, match=r"/camera/image_raw at t=100\.000s: unsupported image encoding '16UC1'") as e:
        ingest([b], settings(), tmp_path / "ds", progress=False)
    assert str(b) in str(e.value)
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path / "ds") == []


def test_missing_topic_names_bag_and_topic(tmp_path):
    b = bag(tmp_path, episodes=1, steps=4)
    with pytest.raises(BagError, match=r"required topic /robot_calql/ee_pose \(ee_pose\) is not in the bag"):
        ingest([b], settings_from(compose("ingest", ["bags=x", "out=y"])), tmp_path / "ds", progress=False)
    with pytest.raises(BagError, match=r"/camera/image_raw"):
        ingest([b], settings("robot.bag_topics.image=/camera/other"), tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds").exists()


def test_wrong_message_type_on_a_topic(tmp_path):
    b = bag(tmp_path, episodes=1, steps=4)
    with pytest.raises(BagError, match=r"/joint_states \(image\) has type sensor_msgs/msg/JointState"):
        ingest([b], settings("robot.bag_topics.image=/joint_states"), tmp_path / "ds", progress=False)


def cut(bag_dir: Path, fraction: float | None = None, keep_bytes: int | None = None) -> Path:
    """Truncate a bag's storage file in place (as a killed recorder or an interrupted copy leaves it)."""
    data = next(p for p in bag_dir.iterdir() if p.suffix in (".db3", ".mcap"))
    raw = data.read_bytes()
    data.write_bytes(raw[: keep_bytes if keep_bytes is not None else int(len(raw) * fraction)])
    return data


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_unreadable_bag_fails_cleanly_and_skip_keeps_good_bags(tmp_path, storage):
    good = bag(tmp_path, "good", storage=storage, episodes=1, steps=5)
    bad = bag(tmp_path, "bad", storage=storage, episodes=2, steps=5)
    cut(bad, keep_bytes=1000)  # not even the topic list survives
    out = tmp_path / "ds"
    with pytest.raises(BagError, match=rf"{bad}: cannot open as a rosbag2 .*salvage: .*no readable topic"):
        ingest([good, bad], settings(), out, progress=False)
    assert not out.exists() and leftovers(out) == []
    # on_error=skip: the good bag goes through, the bad one is reported
    reports = ingest([good, bad], settings(), out, on_error="skip", progress=False)
    assert reports[1].error and str(bad) in reports[1].error
    assert len(Dataset(out)) == 1 and reports[0].episodes == 1


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag_salvages_the_episodes_completed_before_the_cut(tmp_path, storage, caplog, capsys):
    """A bag cut at 60% of its file: the episodes whose end event was recorded before the cut are
    ingested exactly as from the whole bag; the report says what was read and what was lost."""
    spec = S.SyntheticSpec(episodes=5, steps=10, image_hw=(120, 160), success=[True, False])
    whole = bag(tmp_path, "whole", storage=storage, **spec.__dict__)
    shutil.copytree(whole, tmp_path / "bags" / "cut")
    damaged = tmp_path / "bags" / "cut"
    data = cut(damaged, fraction=0.6)
    ingest([whole], settings(), tmp_path / "ref", progress=False)
    capsys.readouterr()
    reports = ingest([damaged], settings(), tmp_path / "ds", progress=False)  # on_error=fail: not an error
    r = reports[0]
    d = r.damaged
    assert d is not None and r.error is None
    # which episodes ended (end event received) before the last message read
    dt = 1.0 / spec.control_hz
    ends = [spec.start_s + e * (spec.steps * dt + spec.pause_s) + spec.steps * dt + 0.001 for e in range(5)]
    complete = sum(t <= d["last_receive_s"] for t in ends)
    assert 2 <= complete < 5, complete
    ds, ref = Dataset(tmp_path / "ds"), Dataset(tmp_path / "ref")
    assert len(ds) == r.episodes == complete and r.successes == (complete + 1) // 2
    for e in range(complete):
        for key in ("image", "proprio", "action", "reward", "terminal"):
            np.testing.assert_array_equal(getattr(ds[e], key), getattr(ref[e], key), err_msg=f"{e} {key}")
        assert ds[e].success == ref[e].success
    # what was read, where it stopped, what was lost
    assert d["messages_read"] == sum(r.messages.values()) > 0
    assert d["last_topic"] in spec.topics.values()
    assert abs(d["episode_in_progress_from_s"] - (ends[complete] - spec.steps * dt - 0.001)) < 0.01
    if storage == "mcap":
        assert d["bytes_total"] == data.stat().st_size and 0 < d["bytes_readable"] < d["bytes_total"]
        assert "runs past the end of the file" in d["reason"]
    else:
        assert "SQLite cannot read further" in d["reason"]
    line = f"read {d['messages_read']} messages"
    warning = next(w for w in r.warnings if "damaged storage" in w)
    assert str(damaged) in warning and line in warning and d["last_topic"] in warning
    assert f"kept the {complete} episodes" in warning and "lost the episode in progress" in warning
    assert any("damaged storage" in rec.message and rec.levelname == "WARNING" for rec in caplog.records)
    assert "DAMAGED: " + line in capsys.readouterr().out
    saved = json.loads((tmp_path / "ds" / "ingest_report.json").read_text())[0]["damaged"]
    assert saved == d


def test_garbage_file_is_not_a_bag(tmp_path):
    f = tmp_path / "junk.mcap"
    f.write_bytes(b"\x89MCAP0\r\n" + bytes(range(256)) * 10)
    with pytest.raises(BagError, match="junk.mcap"):
        ingest([f], settings(), tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds").exists()


def test_empty_bag_is_a_counted_warning_next_to_good_bags_and_an_error_alone(tmp_path):
    empty = tmp_path / "empty"
    with BagRecorder(empty) as rec:  # topics declared, no messages
        for topic, msg in [("/camera/image_raw", rec.msgs.image(0, np.zeros((4, 4, 3), np.uint8))),
                           ("/joint_states", rec.msgs.joint_state(0, ["a"], np.zeros(1))),
                           ("/robot_calql/sent_command", rec.msgs.twist(0, np.zeros(3), np.zeros(3)))]:
            rec._writer.add_connection(topic, msg.__msgtype__, typestore=rec.msgs.typestore)
    with pytest.raises(BagError, match=r"no episodes .*empty.*empty bag"):
        ingest([empty], settings(), tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds").exists()
    good = bag(tmp_path, episodes=1, steps=5)
    reports = ingest([empty, good], settings(), tmp_path / "ds", progress=False)
    assert any("empty bag" in w for w in reports[0].warnings) and reports[0].episodes == 0
    assert len(Dataset(tmp_path / "ds")) == 1


def test_stamps_jumping_backwards_are_counted_and_named(tmp_path, caplog):
    b = bag(tmp_path, episodes=1, steps=10, backwards_at=0.5)
    reports = ingest([b], settings(), tmp_path / "ds", progress=False)
    r = reports[0]
    assert r.out_of_order["/camera/image_raw"] == 1
    assert any("/camera/image_raw: header stamp jumps backwards by 1.967s at t=98.500s" in w and str(b) in w
               for w in r.warnings)
    # the frame stamped 2 s in the past is outside the episode: dropped and counted; the frame
    # before it is within tolerance of its tick, so the episode stays whole
    assert r.dropped["/camera/image_raw"]["outside an episode"] == 1
    assert r.resample.get("gap_ticks_image", 0) == 0 and [len(ep) for ep in Dataset(tmp_path / "ds")] == [10]


def test_corrupt_page_inside_an_sqlite3_bag_keeps_the_episodes_before_it(tmp_path):
    """rosbags opens the bag and fails while reading: the same salvage and report as a cut file."""
    spec = S.SyntheticSpec(episodes=5, steps=10, image_hw=(120, 160))
    b = bag(tmp_path, **spec.__dict__)
    data = next(b.glob("*.db3"))
    raw = bytearray(data.read_bytes())
    page = len(raw) // 2 // 4096 * 4096
    raw[page : page + 4096] = b"\xff" * 4096
    data.write_bytes(bytes(raw))
    r = ingest([b], settings(), tmp_path / "ds", progress=False)[0]
    d = r.damaged
    assert d is not None and "CorruptError" in d["reason"] and d["bytes_readable"] is None
    assert 1 <= r.episodes < 5 and len(Dataset(tmp_path / "ds")) == r.episodes
    assert d["messages_read"] > 0 and d["episode_in_progress_from_s"] is not None
    assert any("damaged storage" in w and f"read {d['messages_read']} messages" in w for w in r.warnings)


def _late_success_bag(path: Path, lags_s: list[float]) -> None:
    """Episodes of 7 steps whose streams stop at the last observation; the end:success event
    comes lags_s[e] later (a slow classifier or controller)."""
    with BagRecorder(path) as rec:
        f = rec.msgs
        rec.write("/robot_calql/instruction", f.string("go"), 1)
        for e, lag in enumerate(lags_s):
            t0 = (1 + 3 * e) * 1_000_000_000
            rec.write("/robot_calql/episode_event", f.string("start"), t0)
            for k in range(8):
                t = t0 + k * 100_000_000
                rec.write("/camera/image_raw", f.image(t, np.zeros((8, 8, 3), np.uint8)), t)
                rec.write("/joint_states", f.joint_state(t, [*S.JOINTS, S.GRIPPER], np.zeros(6)), t)
                if k < 7:
                    rec.write("/robot_calql/sent_command", f.twist(t, np.zeros(3), np.zeros(3)), t)
            rec.write("/robot_calql/episode_event", f.string("end:success"), t0 + 700_000_000 + int(lag * 1e9))


def test_success_event_after_the_last_frame_ends_the_episode_with_success(tmp_path):
    """end:success 0.1 s after the last frame is the success of the last step; 1 s after (beyond
    success_lag_s) it is not, and the report says so."""
    _late_success_bag(tmp_path / "b", [0.1, 1.0])
    reports = ingest([tmp_path / "b"], settings(), tmp_path / "ds", progress=False)
    ds = Dataset(tmp_path / "ds")
    assert [len(ep) for ep in ds] == [7, 7]
    assert ds[0].success and ds[0].terminal[-1] and ds[0].reward[-1] == 1.0 and ds[0].reward.sum() == 1.0
    assert not ds[1].success and not ds[1].terminal.any() and ds[1].reward.sum() == 0.0
    r = reports[0]
    assert r.successes == 1 and r.resample["successes_dropped"] == 1
    assert any("episode from t=4.000s: success event at t=5.700s but its last complete step ends at t=4.700s" in w
               and "kept as truncated, not a success" in w
               for w in r.warnings)
    reports = ingest([tmp_path / "b"], settings("success_lag_s=1.5"), tmp_path / "ds2", progress=False)
    assert reports[0].successes == 2 and "successes_dropped" not in reports[0].resample


def test_gap_splits_the_episode(tmp_path):
    b = bag(tmp_path, episodes=1, steps=20, success=[True], camera_gap=(0.75, 1.05))
    reports = ingest([b], settings(), tmp_path / "ds", progress=False)
    ds = Dataset(tmp_path / "ds")
    # ticks 8, 9, 10 (0.8 to 1.0 s) have no frame within 50 ms before them: steps 7..10 are lost
    # (a step needs both of its observations), leaving steps 0..6 and 11..19
    assert [len(ep) for ep in ds] == [7, 9]
    assert reports[0].resample["gap_ticks_image"] == 3 and reports[0].resample["gap_splits"] == 1
    assert not ds[0].success and ds[1].success and ds[1].terminal[-1]
    action, proprio, _ = expected_episode(S.SyntheticSpec(steps=20), 0)
    np.testing.assert_allclose(ds[1].action, action[11:], atol=1e-5)
    np.testing.assert_allclose(ds[1].proprio, proprio[11:], atol=1e-5)


def test_receive_clock_offset_is_removed(tmp_path):
    """Bags recorded with a receive clock 3 s ahead of the header stamps (e.g. sim time)."""
    b = bag(tmp_path, episodes=2, steps=8, clock_offset_s=3.0)
    reports = ingest([b], settings(), tmp_path / "ds", progress=False)
    assert abs(reports[0].clock_offset_s - 3.0) < 1e-6
    ds = Dataset(tmp_path / "ds")
    assert [len(ep) for ep in ds] == [8, 8] and ds[0].success and not ds[1].success


def test_without_events_episodes_come_from_gaps(tmp_path):
    b = bag(tmp_path, episodes=2, steps=8, events=False, pause_s=1.0)
    reports = ingest([b], settings(), tmp_path / "ds", progress=False)
    ds = Dataset(tmp_path / "ds")
    assert [len(ep) for ep in ds] == [8, 8] and not any(ep.success for ep in ds)
    assert any("no episode events" in w for w in reports[0].warnings)


def test_distros_and_find_bags(tmp_path):
    for distro in ("humble", "jazzy"):
        bag(tmp_path, f"b_{distro}", distro=distro, episodes=1, steps=4)
    found = find_bags(str(tmp_path / "bags"))
    assert [p.name for p in found] == ["b_humble", "b_jazzy"]
    assert find_bags(str(tmp_path / "bags" / "b_*")) == found
    reports = ingest(found, settings("ros_distro=humble"), tmp_path / "ds", progress=False)
    assert [r.episodes for r in reports] == [1, 1]


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    b = bag(tmp_path, episodes=1, steps=4)
    ingest([b], settings(), tmp_path / "ds", progress=False)
    with pytest.raises(FileExistsError):
        ingest([b], settings(), tmp_path / "ds", progress=False)
    b2 = bag(tmp_path, "b2", episodes=2, steps=4)
    ingest([b2], settings(), tmp_path / "ds", overwrite=True, progress=False)
    assert len(Dataset(tmp_path / "ds")) == 2


def _joint_bag(path: Path, kind: str, gripper_in_command: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Joint-space bag: joints move 0.05 rad per step; returns expected arm actions, ee. With
    gripper_in_command, commands carry a gripper value 0.7 as the safety node sends them, except
    every third one (a hold: arm joints only)."""
    q = lambda k: np.array([0.05 * k, 0.0, 0.1, 0.0, 0.0])  # noqa: E731
    ee = lambda k: (np.array([0.3 + 0.004 * k, 0.0, 0.2]), 0.03 * k)  # noqa: E731
    with BagRecorder(path) as rec:
        f = rec.msgs
        rec.write("/robot_calql/instruction", f.string("reach"), 0)
        rec.write("/robot_calql/episode_event", f.string("start"), 1_000_000_000)
        for k in range(7):
            t = 1_000_000_000 + k * 100_000_000
            rec.write("/camera/image_raw", f.image(t, np.zeros((8, 8, 3), np.uint8)), t)
            rec.write("/joint_states", f.joint_state(t, [*S.JOINTS, S.GRIPPER], np.r_[q(k), 0.8]), t)
            rec.write("/robot_calql/ee_pose", f.pose(t, *ee(k)), t)
            if k < 6:
                grip = gripper_in_command and k % 3 != 2
                if kind == "joint_trajectory":
                    names = list(reversed(S.JOINTS)) + ([S.GRIPPER] if grip else [])
                    rec.write("/cmd", f.joint_trajectory(t, names, np.r_[q(k + 1)[::-1], [0.7] if grip else []], 0.1), t)
                elif kind == "joint_position_array":
                    rec.write("/cmd", f.float64_array(np.r_[q(k + 1), [0.7] if grip else []]), t)
        rec.write("/robot_calql/episode_event", f.string("end:success"), 1_000_000_000 + 600_000_000)
    joint_actions = np.tile([0.5, 0, 0, 0, 0], (6, 1))  # 0.05 rad / joint_step_rad 0.1
    ee_actions = np.tile([0.2, 0, 0, 0.2], (6, 1))  # 4 mm / 20 mm, 0.03 rad / 0.15 rad
    return joint_actions, ee_actions


@pytest.mark.parametrize("kind", ["joint_trajectory", "joint_position_array", "from_ee_pose"])
def test_joint_and_pose_action_types(tmp_path, kind):
    joint_actions, ee_actions = _joint_bag(tmp_path / "b", kind)
    over = [f"robot.bag_topics.action_type={kind}", "robot.bag_topics.action=/cmd",
            "robot.bag_topics.gripper_command=null", "robot.bag_topics.gripper_open=1.0",
            "robot.bag_topics.gripper_closed=0.0"]
    s = settings_from(compose("ingest", ["bags=x", "out=y", "robot.calibration=null", *over]))  # with ee_pose: proprio has 10 values
    ingest([tmp_path / "b"], s, tmp_path / "ds", progress=False)
    ds = Dataset(tmp_path / "ds")
    ep = ds[0]
    assert len(ep) == 6 and ep.success and ds.meta.proprio_dim == 10
    want = ee_actions if kind == "from_ee_pose" else joint_actions
    np.testing.assert_allclose(ep.action[:, :-1], want, atol=1e-5)
    np.testing.assert_allclose(ep.action[:, -1], -0.6, atol=1e-5)  # gripper joint 0.8 between open 1 / closed 0
    assert ds.meta.action_space == ("delta_ee" if kind == "from_ee_pose" else "delta_joint")
    np.testing.assert_allclose(ep.proprio[3, 6:], [0.312, 0.0, 0.2, 0.09], atol=1e-5)


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    from robot_calql.cli import main

    b = bag(tmp_path, encoding="yuv422", episodes=1, steps=3)
    rc = main(["ingest", f"bags={b}", f"out={tmp_path / 'ds'}", "progress=false", *NO_EE])
    err = capsys.readouterr().err
    assert rc == 1 and "robot-calql ingest: error:" in err and "yuv422" in err
    assert main(["ingest", f"bags={tmp_path / 'nothing'}", f"out={tmp_path / 'ds'}"]) == 1
    good = bag(tmp_path, "good", episodes=1, steps=3)
    assert main(["ingest", f"bags={good}", f"out={tmp_path / 'ds'}", "progress=false", *NO_EE]) == 0
    assert "1 episodes" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "ds")


def test_instruction_published_just_after_start_names_the_episode(tmp_path):
    """Reset-free: each episode has its own instruction, published before or just after 'start'."""
    path = tmp_path / "b"
    with BagRecorder(path) as rec:
        f = rec.msgs
        for e, (text, before) in enumerate([("put the cube in the bowl", True), ("take the cube out", False)]):
            t0 = 1_000_000_000 + e * 2_000_000_000
            if before:
                rec.write("/robot_calql/instruction", f.string(text), t0 - 1000)
            rec.write("/robot_calql/episode_event", f.string("start"), t0)
            if not before:
                rec.write("/robot_calql/instruction", f.string(text), t0 + 5_000_000)
            for k in range(5):
                t = t0 + 10_000_000 + k * 100_000_000
                rec.write("/camera/image_raw", f.image(t, np.zeros((8, 8, 3), np.uint8)), t)
                rec.write("/joint_states", f.joint_state(t, [*S.JOINTS, S.GRIPPER], np.zeros(6)), t)
                rec.write("/robot_calql/sent_command", f.twist(t, np.zeros(3), np.zeros(3)), t)
            rec.write("/robot_calql/episode_event", f.string("end:timeout"), t0 + 500_000_000)
    ingest([path], settings(), tmp_path / "ds", progress=False)
    ds = Dataset(tmp_path / "ds")
    assert [ep.instruction for ep in ds] == ["put the cube in the bowl", "take the cube out"]
    assert [len(ep) for ep in ds] == [4, 4] and not any(ep.success for ep in ds)


def test_back_to_back_episodes_share_the_boundary_frame(tmp_path):
    """Reset-free: no pause, the next episode starts at the previous one's last observation."""
    spec = S.SyntheticSpec(episodes=3, steps=8, pause_s=0.0, success=[True, False, True])
    S.write_synthetic_bag(tmp_path / "b", spec)
    ingest([tmp_path / "b"], settings(), tmp_path / "ds", progress=False)
    ds = Dataset(tmp_path / "ds")
    assert [len(ep) for ep in ds] == [8, 8, 8]
    assert [ep.success for ep in ds] == [True, False, True]
    for e, ep in enumerate(ds):
        action, proprio, values = expected_episode(spec, e)
        np.testing.assert_allclose(ep.action, action, atol=1e-5)
        np.testing.assert_allclose(ep.proprio, proprio, atol=1e-5)
    np.testing.assert_array_equal(ds[0].image[-1], ds[1].image[0])


def test_undecodable_message_is_counted_with_bag_topic_and_time(tmp_path):
    path = tmp_path / "b"
    S.write_synthetic_bag(path, S.SyntheticSpec(episodes=1, steps=6))
    # append a corrupt joint state to a copy of the bag's messages
    from rosbags.rosbag2 import Reader, Writer

    bad = tmp_path / "bad"
    with Reader(path) as reader, Writer(bad, version=9) as writer:
        conns = {c.id: writer.add_connection(c.topic, c.msgtype, msgdef=c.msgdef.data, rihs01=c.digest)
                 for c in reader.connections}
        for c, t, raw in reader.messages():
            writer.write(conns[c.id], t, raw)
            if c.topic == "/joint_states" and t == 100_300_000_000:
                writer.write(conns[c.id], t + 1, b"\x00\x01\x00\x00garbage")
    reports = ingest([bad], settings(), tmp_path / "ds", progress=False)
    r = reports[0]
    assert r.dropped["/joint_states"]["undecodable message"] == 1
    assert any("/joint_states: undecodable message at receive t=100.300s" in w and str(bad) in w for w in r.warnings)
    assert [len(ep) for ep in Dataset(tmp_path / "ds")] == [6]


def test_bag_without_embedded_definitions_uses_the_distro_typestore(tmp_path):
    """Humble's recorder stores no message definitions: the ros_distro typestore decodes them."""
    import sqlite3

    path = bag(tmp_path, distro="humble", episodes=1, steps=5)
    db = sqlite3.connect(next(path.glob("*.db3")))
    db.execute("DELETE FROM message_definitions")
    db.commit()
    db.close()
    from rosbags.rosbag2 import Reader

    with Reader(path) as r:  # really no definitions left
        assert all(c.msgdef.data == "" for c in r.connections)
    reports = ingest([path], settings("ros_distro=humble"), tmp_path / "ds", progress=False)
    assert reports[0].episodes == 1 and len(Dataset(tmp_path / "ds")[0]) == 5


def test_max_episode_s_splits_long_recordings(tmp_path):
    """Without events a bag is one stream; max_episode_s bounds what is held in memory."""
    b = bag(tmp_path, episodes=1, steps=30, events=False)
    reports = ingest([b], settings("max_episode_s=1.0"), tmp_path / "ds", progress=False)
    lengths = [len(ep) for ep in Dataset(tmp_path / "ds")]
    assert len(lengths) == 3 and sum(lengths) >= 27 and max(lengths) <= 10
    assert any("max_episode_s=1.0" in w for w in reports[0].warnings)


@pytest.mark.parametrize("kind", ["joint_trajectory", "joint_position_array"])
def test_gripper_value_inside_joint_commands(tmp_path, kind):
    """The safety node sends the gripper with joint commands (and omits it in holds)."""
    joint_actions, _ = _joint_bag(tmp_path / "b", kind, gripper_in_command=True)
    over = [f"robot.bag_topics.action_type={kind}", "robot.bag_topics.action=/cmd",
            "robot.bag_topics.gripper_command=null", "robot.bag_topics.gripper_in_command=true"]
    ingest([tmp_path / "b"], settings(*over), tmp_path / "ds", progress=False)
    ep = Dataset(tmp_path / "ds")[0]
    np.testing.assert_allclose(ep.action[:, :-1], joint_actions, atol=1e-5)
    np.testing.assert_allclose(ep.action[:, -1], 0.7, atol=1e-6)  # held through the holds


def test_crop_from_calibration_file_and_default(tmp_path):
    """crop=auto: calibration/<cell>/crop.yaml when present, else the whole frame (as online)."""
    cell = tmp_path / "cell"
    cell.mkdir()
    path = tmp_path / "b"
    with BagRecorder(path) as rec:
        f = rec.msgs
        rec.write("/robot_calql/instruction", f.string("go"), 1)
        frame = np.zeros((40, 80, 3), np.uint8)
        frame[:, 50:] = 200  # the right 30 columns bright
        for k in range(4):
            t = 1_000_000_000 + k * 100_000_000
            rec.write("/camera/image_raw", f.image(t, frame), t)
            rec.write("/joint_states", f.joint_state(t, [*S.JOINTS, S.GRIPPER], np.zeros(6)), t)
            rec.write("/robot_calql/sent_command", f.twist(t, np.zeros(3), np.zeros(3)), t)

    def first_image(name: str, *over: str) -> np.ndarray:
        ingest([path], settings(f"robot.calibration={cell}", "image_size=8", *over), tmp_path / name, progress=False)
        return Dataset(tmp_path / name)[0].image[0]

    img = first_image("whole")  # 80 columns -> 8: 10 per pixel, pixels 5..7 bright
    assert img[:, :5].max() == 0 and img[:, 5:].min() == 200
    img = first_image("center", "crop=center")  # columns 20..59 -> 8: 5 per pixel, pixels 6, 7 bright
    assert img[:, :6].max() == 0 and img[:, 6:].min() == 200
    (cell / "crop.yaml").write_text("x: 50\ny: 5\nwidth: 30\nheight: 30\n")
    assert first_image("crop").min() == 200  # only the bright part
