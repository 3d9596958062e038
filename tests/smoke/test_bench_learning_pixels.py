"""benchmarks/bench_learning.py --obs pixels --reward-source classifier: the benchmark on camera frames
+ proprio with the demo's keypoint-encoder agent, fine-tuned on a success classifier's rewards."""

import json
from pathlib import Path

import pytest

from .bench_module import load_benchmark

TINY = ["--seeds", "1", "--episodes", "2", "--failures", "1", "--offline-steps", "3", "--eval-episodes", "1",
        "--batch", "16", "--max-episode-steps", "60", "--hidden", "16", "--classifier-steps", "3",
        "--agent", "encoder_pretrain_steps=5"]  # 60 steps: the demos succeed, so the classifier has positives


def _bench():
    return load_benchmark("bench_learning")


def _meta(run: Path) -> dict:
    latest = run / "checkpoints" / "LATEST"
    return json.loads((latest.parent / latest.read_text().strip() / "meta.json").read_text())


def test_pixels_with_classifier_rewards(tmp_path, monkeypatch):
    from robot_calql.config import compose

    bench = _bench()
    out = tmp_path / "px"
    monkeypatch.setattr("sys.argv", ["bench_learning.py", "--obs", "pixels", "--reward-source", "classifier", *TINY,
                                     "--online-steps", "20", "--eval-every", "20", "--methods", "calql,cql",
                                     "--fresh-episodes", "1", "--out", str(out)])
    assert bench.main() == 0
    seed = out / "seed0"
    assert (seed / "reward" / "train_report.json").is_file()  # one classifier for the seed, on its demos
    demo = compose("demo").agent
    for m in ("calql", "cql"):
        assert "obs: pixels" in (seed / f"{m}_pre" / "config.yaml").read_text().splitlines()
        meta = _meta(seed / f"{m}_pre")  # a pixel agent with the demo's keypoint encoder
        assert meta["obs"] == "pixels" and "image" in meta["obs_spec"] and "state" not in meta["obs_spec"]
        assert {k: meta["agent"][k] for k in ("encoder", "encoder_frozen", "precision")} == {
            "encoder": demo.encoder, "encoder_frozen": True, "precision": demo.precision}
        assert list(meta["agent"]["conv_strides"]) == list(demo.conv_strides)
        ft = (seed / f"{m}_ft" / "config.yaml").read_text().splitlines()
        assert "reward_source: classifier" in ft and f"  path: {seed / 'reward'}" in ft
    rec = json.loads((out / "bench_learning.json").read_text())
    assert (rec["config"]["obs"], rec["config"]["reward_source"]) == ("pixels", "classifier")
    assert rec["mode"] == {"obs": "pixels", "reward_source": "classifier"}
    for m in ("calql", "cql"):
        ft = json.loads((seed / f"{m}_ft" / "summary.json").read_text())
        run, summary = rec["runs"][m][0], rec["summary"][m]
        for k in ("clf_successes", "clf_false_positives", "clf_missed_successes"):
            assert run[k] == ft[k] and summary[k] == [ft[k]]
        # ground truth still scores the evaluations
        assert run["evals"] == ft["evals"]

    # --pretrained fine-tunes on the earlier run's classifier (none trained anew)
    monkeypatch.setattr("sys.argv", ["bench_learning.py", "--obs", "pixels", "--reward-source", "classifier", *TINY,
                                     "--online-steps", "10", "--eval-every", "10", "--methods", "calql",
                                     "--fresh-episodes", "0", "--pretrained", str(out), "--out", str(tmp_path / "re")])
    assert bench.main() == 0
    assert not (tmp_path / "re" / "seed0" / "reward").exists()
    assert f"  path: {seed / 'reward'}" in (tmp_path / "re" / "seed0" / "calql_ft" / "config.yaml").read_text()

    # a state run with the simulator's rewards (the default) does not merge with it
    state = tmp_path / "state"
    state.mkdir()
    cfg = {**rec["config"], "obs": "state", "reward_source": "sim", "first_seed": 1}
    (state / "bench_learning.json").write_text(json.dumps({**rec, "config": cfg}))
    with pytest.raises(SystemExit, match=r"'obs', 'reward_source'\]"):
        bench.merge([str(out), str(state)], tmp_path / "merged")
    # a run made before --obs existed counts as state / simulator rewards
    for k in ("obs", "reward_source", "image_size", "classifier_steps"):
        cfg.pop(k)
    (state / "bench_learning.json").write_text(json.dumps({**rec, "config": cfg}))
    with pytest.raises(SystemExit, match=r"'obs', 'reward_source'\]"):
        bench.merge([str(out), str(state)], tmp_path / "merged")


def test_old_runs_merge_as_state_with_simulator_rewards(tmp_path):
    bench = _bench()
    cfg = vars(bench.parse_args(["--seeds", "1"]))
    evals = [[0, 0.5], [500, 0.9]]
    runs = {"calql": [{"seed": 0, "evals": evals, **bench.figures(evals)}]}
    new, old = tmp_path / "new", tmp_path / "old"
    for d, c in ((new, cfg), (old, {k: v for k, v in cfg.items()
                                    if k not in ("obs", "reward_source", "image_size", "classifier_steps")})):
        d.mkdir()
        (d / "bench_learning.json").write_text(json.dumps({"config": c, "runs": runs}))
    assert bench.merge([str(old), str(new)], tmp_path / "out") == 0
    rec = json.loads((tmp_path / "out" / "bench_learning.json").read_text())
    assert rec["mode"] == {"obs": "state", "reward_source": "sim"}
    assert "clf_successes" not in rec["summary"]["calql"]


def test_the_pixels_recipe_is_the_reset_free_recipe_on_pixels_with_classifier_rewards():
    bench = _bench()
    px, rf = bench.parse_args(["--recipe", "bench_pixels"]), bench.parse_args(["--recipe", "bench_reset_free"])
    assert (px.obs, px.reward_source, px.image_size, px.classifier_steps) == ("pixels", "classifier", 64, 1500)
    assert (rf.obs, rf.reward_source) == ("state", "sim")
    differ = {k for k in vars(px) if getattr(px, k) != getattr(rf, k)}
    # agent: precision from the demo's pixel agent; the release gate is the classifier's (none with sim rewards)
    assert differ == {"recipe", "obs", "reward_source", "agent", "classifier_gripper_open_min"}
    assert (px.classifier_gripper_open_min, rf.classifier_gripper_open_min) == (0.5, None)
    assert px.agent == [] and px.online_steps == 20000 and px.methods == "calql,cql"


def test_a_recipe_value_outside_a_flags_choices_is_named(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("obs: rgb\n")
    with pytest.raises(SystemExit, match="obs: 'rgb': expects one of state, pixels"):
        _bench().parse_args(["--recipe", str(bad)])
