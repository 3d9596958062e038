"""benchmarks/bench_learning.py --recipe: a named recipe file sets the flags, flags beside it win."""

import pytest

from .bench_module import load_benchmark


def _bench():
    return load_benchmark("bench_learning")


def test_the_reset_free_recipe_sets_the_documented_flags():
    a = _bench().parse_args(["--recipe", "bench_reset_free"])
    got = {k: getattr(a, k) for k in ("reset_free", "episodes", "failures", "batch", "offline_steps", "online_steps",
                                      "eval_every", "methods", "agent", "finetune_agent")}
    assert got == {"reset_free": True, "episodes": 40, "failures": 5, "batch": 128, "offline_steps": 15000,
                   "online_steps": 20000, "eval_every": 500, "methods": "calql,cql", "agent": ["precision=bf16"],
                   "finetune_agent": ["max_target_backup=false", "n_step=5"]}
    assert a.recipe == "bench_reset_free"
    assert a.hidden == 256 and a.explore_temperature == 0.2  # not in the recipe: the flag's default


def test_a_flag_beside_the_recipe_overrides_it():
    a = _bench().parse_args(["--recipe", "bench_reset_free", "--online-steps", "3000", "--finetune-agent", "n_step=3"])
    assert (a.online_steps, a.finetune_agent, a.offline_steps) == (3000, ["n_step=3"], 15000)


def test_a_bad_recipe_is_named(tmp_path):
    bench = _bench()
    with pytest.raises(SystemExit, match="no .*nope.yaml .*recipes: .*bench_reset_free"):
        bench.parse_args(["--recipe", "nope"])
    bad = tmp_path / "r.yaml"
    bad.write_text("online_stpes: 5\n")
    with pytest.raises(SystemExit, match="unknown key 'online_stpes'"):
        bench.parse_args(["--recipe", str(bad)])
    bad.write_text("online_steps: many\n")
    with pytest.raises(SystemExit, match="online_steps: 'many'"):
        bench.parse_args(["--recipe", str(bad)])
    bad.write_text("reset_free: 3\n")
    with pytest.raises(SystemExit, match="reset_free: 3: expects true or false"):
        bench.parse_args(["--recipe", str(bad)])
    bad.write_text("explore_temperature: [0.2, 0.2, 0.2, 0.2, 1]\n")
    assert bench.parse_args(["--recipe", str(bad)]).explore_temperature == [0.2, 0.2, 0.2, 0.2, 1.0]


def test_settings_shared_with_the_demo_default_to_the_demos_recipe():
    from robot_calql.agent import CalQLConfig
    from robot_calql.config import compose

    a, demo = _bench().parse_args([]), compose("demo")
    assert (a.explore_temperature, a.bc_weight, a.policy_lr, a.online_policy_lr, a.noise, a.max_episode_steps,
            a.full_reset_every, a.home, a.hidden, a.cql_alpha) == (
        demo.explore_temperature, demo.agent.bc_weight, demo.agent.policy_lr, demo.finetune_policy_lr, demo.noise,
        demo.max_episode_steps, demo.full_reset_every, demo.home, demo.agent.actor_hidden[0], CalQLConfig().cql_alpha)
    assert (a.explore_temperature, a.bc_weight, a.policy_lr, a.online_policy_lr, a.home) == (
        0.2, 20.0, 1e-3, 1e-4, "never")
