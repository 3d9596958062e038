"""benchmarks/bench_ooo.py --merge: one seed's OOO run per process combines into one report
(rows by seed, the means and the gain over all of them); unlike runs are refused."""

import json
from pathlib import Path

import pytest

from .bench_module import load_benchmark


def _bench():
    return load_benchmark("bench_ooo")


def _run(path: Path, seed: int, online: float, exploit: float, exploit_steps: int = 20000) -> Path:
    def res(x):
        return {"success": x, "interval95": [x - 0.05, x + 0.05]}

    cfg = {"learning": f"runs/bl/s{seed}", "merge": None, "method": "calql", "exploit_steps": exploit_steps,
           "mixing_ratio": 0.5, "fresh_episodes": 100, "cql": False, "seed": 0, "threads": 1, "out": str(path),
           "img": None}
    learning = {"task": "cube_in_bowl", "online_steps": 20000, "rnd_scale": 1.0, "seeds": 1, "first_seed": seed,
                "out": f"runs/bl/s{seed}"}
    row = {"seed": seed, "run": "x", "online_steps": 19990, "exploit": res(exploit), "online_policy": res(online),
           "gain": exploit - online}
    path.mkdir(parents=True)
    (path / "bench_ooo.json").write_text(json.dumps({"config": cfg, "learning_config": learning,
                                                     "learning_code": "abc1234", "rows": [row], "minutes": 30.0}))
    return path


def test_merge_combines_seeds_and_refuses_other_settings(tmp_path, capsys):
    bench = _bench()
    runs = [_run(tmp_path / f"s{s}", s, on, ex) for s, on, ex in ((2, 0.7, 0.8), (0, 0.9, 0.8), (1, 0.8, 0.9))]
    assert bench.merge([str(r) for r in runs], tmp_path / "out", str(tmp_path / "img" / "ooo.png")) == 0
    out = json.loads((tmp_path / "out" / "bench_ooo.json").read_text())
    assert [r["seed"] for r in out["rows"]] == [0, 1, 2]
    assert out["mean_online"] == pytest.approx(0.8) and out["mean_exploit"] == pytest.approx(0.8333, abs=1e-3)
    assert out["mean_gain"] == pytest.approx(0.0333, abs=1e-3) and out["target_gain_ge_5pts"] is False
    assert out["minutes"] == pytest.approx(90.0) and len(out["merged_from"]) == 3
    assert (tmp_path / "img" / "ooo.png").stat().st_size > 0
    assert "mean" in capsys.readouterr().out
    other = _run(tmp_path / "s3", 3, 0.5, 0.5, exploit_steps=8000)
    with pytest.raises(SystemExit, match="exploit_steps"):
        bench.merge([str(runs[0]), str(other)], tmp_path / "out2", None)
    with pytest.raises(SystemExit, match="appears twice"):
        bench.merge([str(runs[0]), str(runs[0])], tmp_path / "out3", None)
