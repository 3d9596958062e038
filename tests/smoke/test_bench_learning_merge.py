"""benchmarks/bench_learning.py --merge: like runs combine into one report, unlike runs are refused."""

import json
from pathlib import Path

import pytest

from .bench_module import load_benchmark


def _bench():
    return load_benchmark("bench_learning")


def _run(path: Path, seed: int, calql: list[float], code: str | None = None, gaps=None, **settings) -> Path:
    cfg = {**vars(_bench().parser().parse_args(["--no-bc-success-only", "--bc-z-clip", "inf"])), "seeds": 1,
           "first_seed": seed, **settings}
    cfg.pop("agent")  # a run made before --agent existed: the merge takes it as [] (BEFORE_FLAG)
    evals = [[500 * i, s] for i, s in enumerate(calql)]
    run = {"seed": seed, "evals": evals, **_bench().figures(evals)}  # per-seed figures, as main() writes them
    if gaps is not None:
        run["q_gap_success"] = gaps
    path.mkdir(parents=True)
    rec = {"config": cfg, "runs": {"calql": [run], "cql": [run]}, **({"code": code} if code else {})}
    (path / "bench_learning.json").write_text(json.dumps(rec))
    return path


def test_merge_combines_seeds_and_refuses_other_settings(tmp_path, capsys):
    bench = _bench()
    a = _run(tmp_path / "s0", 0, [0.5, 0.6, 0.9, 1.0])
    b = _run(tmp_path / "s1", 1, [0.3, 0.2, 0.4, 0.5])
    assert bench.merge([str(a), str(b)], tmp_path / "out") == 0
    out = json.loads((tmp_path / "out" / "bench_learning.json").read_text())
    s = out["summary"]["calql"]
    assert s["offline_success"] == pytest.approx(0.4)
    assert s["steps_to_90"] == [1000.0, None] and s["seeds_reaching_90"] == 1
    assert out["summary"]["targets"]["calql_90pct_within_20k"] is False  # one seed never got there
    assert (tmp_path / "out" / "bench_learning.png").stat().st_size > 0
    c = _run(tmp_path / "s2", 2, [0.5, 0.5], bc_success_only=True)
    with pytest.raises(SystemExit, match="bc_success_only"):
        bench.merge([str(a), str(c)], tmp_path / "out2")


def test_agent_settings_reach_the_agent_config_whether_pretrain_yaml_lists_them_or_not():
    from robot_calql.config import compose
    from robot_calql.train.common import agent_config

    bench = _bench()
    a = bench.parser().parse_args(["--agent", "discount=0.98", "tau=0.02"])  # listed / not listed in pretrain.yaml
    for method, calql in (("calql", True), ("cql", False)):
        acfg = agent_config(compose("pretrain", bench.agent_overrides(method, a)))
        assert (acfg.discount, acfg.tau, acfg.enable_calql) == (0.98, 0.02, calql)
        assert acfg.bc_success_only is True and acfg.bc_z_clip == 3.0


def test_merge_refuses_runs_of_different_code_and_warns_when_it_cannot_tell(tmp_path, capsys):
    bench = _bench()
    assert bench.code_version() not in ("", None)  # this checkout's commit (or "unknown" outside git)
    a = _run(tmp_path / "a", 0, [0.5, 0.6], code="1111111")
    b = _run(tmp_path / "b", 1, [0.5, 0.7], code="2222222")
    with pytest.raises(SystemExit, match="different code"):
        bench.merge([str(a), str(b)], tmp_path / "out")
    old = _run(tmp_path / "old", 2, [0.4, 0.4])  # made before runs recorded their code
    assert bench.merge([str(a), str(old)], tmp_path / "out") == 0
    assert "cannot tell" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "bench_learning.json").read_text())["code"] == "1111111"
    # once the difference is checked, runs of two commits merge and both commits are recorded
    assert bench.merge([str(a), str(b)], tmp_path / "out2", across_commits=True) == 0
    assert "merging runs of different commits" in capsys.readouterr().err
    assert json.loads((tmp_path / "out2" / "bench_learning.json").read_text())["code"] == "1111111, 2222222"


def test_sustained_90_needs_three_evaluations_in_a_row_on_average():
    f = _bench().figures
    lucky = [[0, 0.7], [500, 0.8], [1000, 0.9], [1500, 0.75], [2000, 0.8], [2500, 0.8]]  # one 18/20 among 80s
    r = f(lucky)
    assert r["steps_to_90"] == 1000.0 and r["steps_to_90_sustained"] is None
    assert r["final_success"] == 0.8 and r["final_success_mean"] == pytest.approx(0.7833, abs=1e-3)
    held = [[0, 0.7], [500, 0.8], [1000, 0.9], [1500, 0.95], [2000, 0.85], [2500, 0.95]]
    assert f(held)["steps_to_90_sustained"] == 1000.0  # mean of 0.9, 0.95, 0.85 is exactly 0.9


def test_benchmark_shares_the_demo_reward_shaping():
    from robot_calql.config import compose
    from robot_calql.train.common import agent_config

    bench = _bench()
    acfg = agent_config(compose("pretrain", bench.agent_overrides("calql", bench.parser().parse_args([]))))
    demo = compose("demo", []).agent
    assert (acfg.reward_scale, acfg.reward_bias, acfg.failure_reward) == (
        demo.reward_scale, demo.reward_bias, demo.failure_reward) != (1.0, 0.0, 0.0)


def test_critic_gap_is_averaged_over_the_seeds_that_recorded_it(tmp_path, capsys):
    bench = _bench()
    a = _run(tmp_path / "a", 0, [0.5, 0.6], gaps=[[0, -10.0], [500, 20.0]])
    b = _run(tmp_path / "b", 1, [0.5, 0.7], gaps=[[0, -30.0], [500, 40.0]])
    old = _run(tmp_path / "c", 2, [0.5, 0.7])  # made before the gap was recorded
    assert bench.merge([str(a), str(b), str(old)], tmp_path / "out") == 0
    s = json.loads((tmp_path / "out" / "bench_learning.json").read_text())["summary"]["calql"]
    assert (s["q_gap_success_start"], s["q_gap_success_end"]) == (-20.0, 30.0)
    assert "-20.0 offline -> +30.0 at the end" in capsys.readouterr().out


def test_reset_free_setting_collects_both_directions_and_practises_both(tmp_path, monkeypatch):
    """--reset-free (RoboFuME's setting): demos of both tasks of the pair; online tries of both."""
    from robot_calql.data.dataset import Dataset

    bench = _bench()
    out = tmp_path / "rf"
    monkeypatch.setattr("sys.argv", ["bench_learning.py", "--reset-free", "--seeds", "1", "--episodes", "2",
                                     "--failures", "1", "--offline-steps", "5", "--online-steps", "120",
                                     "--eval-every", "120", "--eval-episodes", "1", "--batch", "16",
                                     "--max-episode-steps", "30", "--methods", "calql", "--fresh-episodes", "3",
                                     "--out", str(out)])
    assert bench.main() == 0
    tasks = {ep.task for ep in Dataset(out / "seed0" / "data")}
    assert tasks == {"cube_in_bowl", "cube_out_of_bowl"}
    ft = json.loads((out / "seed0" / "calql_ft" / "summary.json").read_text())
    assert set(ft["online_successes"]) == {"cube_in_bowl", "cube_out_of_bowl"}
    assert ft["online_episodes"] >= 4  # 120 steps of 30-step tries, forward and backward in turn
    rec = json.loads((out / "bench_learning.json").read_text())
    assert rec["config"]["reset_free"] is True
    # the offline and the final policy, evaluated on placements training's evaluations never used
    fresh = rec["runs"]["calql"][0]["fresh"]
    for k in ("offline", "final"):
        ev = json.loads((out / "seed0" / f"calql_fresh_{k}" / "evaluation.json").read_text())
        assert ev["episodes"] == fresh[k]["episodes"] == 3 and fresh[k]["success"] == ev["success_rate"]
        assert [e["seed"] for e in ev["per_episode"]] == [20000, 20001, 20002]
    assert rec["summary"]["calql"]["fresh_final"] == fresh["final"]["success"]
    full = _run(tmp_path / "full", 1, [0.5, 0.5])  # a full-reset run does not merge with it
    with pytest.raises(SystemExit, match="reset_free"):
        bench.merge([str(out), str(full)], tmp_path / "out3")

    # --pretrained: a second run fine-tunes from this run's pre-training (no new data, no pre-training)
    # with another exploration temperature, and refuses a run whose pre-training differs
    args = ["bench_learning.py", "--reset-free", "--seeds", "1", "--episodes", "2", "--failures", "1",
            "--offline-steps", "5", "--online-steps", "40", "--eval-every", "40", "--eval-episodes", "1",
            "--batch", "16", "--max-episode-steps", "30", "--methods", "calql", "--explore-temperature", "0.5",
            "--fresh-episodes", "2", "--utd", "2", "--pretrained", str(out)]
    pre_mtime = (out / "seed0" / "calql_pre" / "summary.json").stat().st_mtime_ns
    monkeypatch.setattr("sys.argv", [*args, "--out", str(tmp_path / "flip")])
    assert bench.main() == 0
    assert not (tmp_path / "flip" / "seed0" / "data").exists()
    assert not (tmp_path / "flip" / "seed0" / "calql_pre").exists()
    assert (out / "seed0" / "calql_pre" / "summary.json").stat().st_mtime_ns == pre_mtime
    assert "utd: 2" in (tmp_path / "flip" / "seed0" / "calql_ft" / "config.yaml").read_text().splitlines()
    monkeypatch.setattr("sys.argv", [*(a if a != "5" else "6" for a in args), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match=r"offline_steps \(5 vs 6\)"):
        bench.main()

    # --extend: the same command with more online steps continues the fine-tuning runs in --out
    flip = tmp_path / "flip"
    first = json.loads((flip / "bench_learning.json").read_text())["runs"]["calql"][0]["evals"]
    longer = [a if a != "40" or i != args.index("--online-steps") + 1 else "80" for i, a in enumerate(args)]
    monkeypatch.setattr("sys.argv", [*longer, "--extend", "--out", str(flip)])
    assert bench.main() == 0
    rec = json.loads((flip / "bench_learning.json").read_text())
    evals = rec["runs"]["calql"][0]["evals"]
    assert [s for s, _ in evals] == [0, 40, 80] and evals[:2] == first  # continued, not redone
    assert rec["extended_from"][-1]["online_steps"] == 40 and rec["config"]["online_steps"] == 80
    monkeypatch.setattr("sys.argv", [*(a if a != "0.5" else "0.4" for a in longer), "--extend", "--out", str(flip)])
    with pytest.raises(SystemExit, match=r"explore_temperature \(0.5 vs 0.4\)"):
        bench.main()
    monkeypatch.setattr("sys.argv", [*longer, "--extend", "--out", str(tmp_path / "none")])
    with pytest.raises(SystemExit, match="no bench_learning.json"):
        bench.main()


def test_pretrained_calql_human_alone_fine_tunes_plain_calqls_pre_training(tmp_path):
    """--pretrained RUN --methods calql_human: the simulated-human run reuses RUN's calql_pre."""
    bench = _bench()
    pre = tmp_path / "run" / "seed3" / "calql_pre"
    (pre / "checkpoints").mkdir(parents=True)
    assert bench.find_pretrained([tmp_path / "run"], 3, "calql_human") == pre
    with pytest.raises(SystemExit, match="no seed3/cql_pre"):
        bench.find_pretrained([tmp_path / "run"], 3, "cql")


def test_report_plots_the_human_share_of_every_seed(tmp_path, monkeypatch, capsys):
    """--interventions: the takeover panel gets one curve per seed (not the first seed's alone), and
    where the human took over is summed over the seeds (a run from before those counts has none)."""
    import robot_calql.train.plots as plots

    bench = _bench()
    drawn = {}
    monkeypatch.setattr(plots, "plot_success", lambda *a, **kw: drawn.update(kw))
    runs = []
    for seed, shares in ((0, [0.4, 0.2]), (1, [0.3, 0.0])):
        evals = [[0, 0.5], [500, 0.7]]
        runs.append({"seed": seed, "evals": evals, **bench.figures(evals),
                     "human": {"steps": 10, "share_of_steps": 0.1, "minutes": 0.1,
                               "curve": [[60, shares[0]], [130, shares[1]]]}})
    runs[0]["human"]["where"] = {"forward, cube not in the hand": 3, "backward, cube in the hand": 1}
    runs[1]["human"]["where"] = {"forward, cube not in the hand": 4}
    cfg = {**vars(bench.parser().parse_args([])), "seeds": 2}
    bench.report({"config": cfg, "runs": {"calql_human": runs}}, tmp_path / "out", "cube_in_bowl")
    assert ("where the human took over (8 takeovers): forward, cube not in the hand 88%; backward, cube in the "
            "hand 12%") in capsys.readouterr().out
    del runs[0]["human"]["where"], runs[1]["human"]["where"]
    bench.report({"config": cfg, "runs": {"calql_human": runs}}, tmp_path / "out2", "cube_in_bowl")
    assert "where the human took over" not in capsys.readouterr().out
    curves = drawn["interventions"]
    assert sorted(curves) == ["calql_human, seed 0", "calql_human, seed 1"]
    assert list(curves["calql_human, seed 1"][1]) == [0.3, 0.0]


def test_dropped_start_reaches_every_collection_and_must_match_for_pretrained(tmp_path, monkeypatch):
    """--dropped-start: the backward demos (and failures) start from a cube dropped into the bowl, as
    the demo's do; a pre-training made without it (or before the flag existed) is not reused."""
    import robot_calql.sim.collect as sim_collect  # where bench_learning.collect takes collect_episodes from

    bench = _bench()
    calls = []
    monkeypatch.setattr(sim_collect, "collect_episodes", lambda task, n, **kw: calls.append((task, kw["dropped_start"])))
    a = bench.parser().parse_args(["--reset-free", "--dropped-start", "0.25"])
    bench.collect(a, 0, tmp_path / "data")
    assert {t for t, _ in calls} == {"cube_in_bowl", "cube_out_of_bowl"} and len(calls) == 4
    assert all(d == 0.25 for _, d in calls)
    old = _run(tmp_path / "old", 0, [0.5, 0.6], reset_free=True)  # a run made before --dropped-start: 0.0
    (old / "seed0" / "calql_pre" / "checkpoints").mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"dropped_start \(0.0 vs 0.25\)"):
        bench.pretrained_runs([str(old)], a)
