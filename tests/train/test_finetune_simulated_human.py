"""`robot-calql finetune simulated_human.enabled=true`: the simulated operator takes over in the loop,
its steps are flagged in the online buffer, logged per episode and plotted beside the success curve."""

import json

import numpy as np

from .conftest import QUIET


def test_finetune_with_the_simulated_human(tmp_path, pretrained):
    from robot_calql.cli import main
    from robot_calql.train.logger import read_metrics

    out = tmp_path / "ft"
    rc = main(["finetune", f"checkpoint={pretrained}", f"out={out}", "steps=120", "max_episode_steps=30",
               "eval_every=0", "log_every=40", "save_every=0", "simulated_human.enabled=true",
               "simulated_human.patience_steps=3", "simulated_human.stuck_m=1.0",  # anything counts as stuck
               "simulated_human.takeover_steps=5", "simulated_human.budget_steps=40",
               "+agent.takeover_penalty=7.0", *QUIET])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    # per 30-step episode: 3 policy steps, then 5 human ones, from steps 3, 11, 19 and 27 (3 steps, cut by the
    # episode's end), so 18 human steps in each of the first two episodes and the last 4 of the budget in the third
    assert summary["human"]["steps"] == 40 and summary["human"]["takeovers"] == 9
    # one `takeover` row per takeover, saying where: every try here is the forward task (no backward)
    takes = read_metrics(out, "takeover")
    assert [t["step"] for t in takes] == [3, 11, 19, 27, 33, 41, 49, 57, 63]
    assert all(t["backward"] == 0.0 and t["cube_in_hand"] in (0.0, 1.0) and 0.0 < t["ee_z"] < 0.3 for t in takes)
    where = summary["human"]["where"]
    assert sum(where.values()) == 9 and all(k.startswith("forward, cube ") for k in where)
    rows = read_metrics(out, "human")
    assert len(rows) == 4 and rows[-1]["human_steps_total"] == 40          # 120 steps = 4 episodes of 30
    np.testing.assert_allclose([r["intervention_rate"] for r in rows], [18 / 30, 18 / 30, 4 / 30, 0.0])
    from robot_calql.train import checkpoint as ckpt

    buf = ckpt.load_checkpoint(out)["buffer"]
    flags = np.asarray(buf["intervention"])
    assert flags.sum() == 40 and flags[:3].sum() == 0 and flags[3:8].all()
    # the policy's step before each of the 9 takeovers carries the penalty (RLIF's signal), no other step does
    n = len(flags)
    before = np.zeros(n, bool)
    before[:-1] = ~flags[:-1] & flags[1:]
    before[29::30] = False                                   # an episode's last step: the next step is a new try
    reward, success = np.asarray(buf["reward"])[:n], np.asarray(buf["done"])[:n]
    assert before.sum() == 9
    plain = reward[~before & ~success]
    assert np.ptp(plain) == 0 and np.allclose(reward[before & ~success], plain[0] - 7.0)
    assert (out / "plots" / "success.png").exists()


def test_the_wrong_way_rule_in_the_loop(tmp_path, pretrained):
    """watch_steps > 0: the operator's demonstrator judges every policy step; a policy that does not
    go all the way the operator would (watch_progress=1) is taken over for that reason alone (never
    stuck: stuck_m=0; patience longer than a try)."""
    from robot_calql.cli import main
    from robot_calql.train.logger import read_metrics

    out = tmp_path / "ft"
    rc = main(["finetune", f"checkpoint={pretrained}", f"out={out}", "steps=90", "max_episode_steps=30",
               "eval_every=0", "log_every=40", "save_every=0", "simulated_human.enabled=true",
               "simulated_human.patience_steps=100", "simulated_human.stuck_m=0.0",
               "simulated_human.watch_steps=3", "simulated_human.watch_share=0.34",
               "simulated_human.watch_progress=1.0", "simulated_human.takeover_steps=4",
               "simulated_human.budget_steps=30", *QUIET])
    assert rc == 0
    takes = read_metrics(out, "takeover")
    assert takes and all(t["wrong_way"] == 1.0 for t in takes)
    # the first takeover of each 30-step try comes once its window of 3 policy steps is full
    assert all(t["step"] % 30 >= 3 for t in takes)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["human"]["takeovers"] == len(takes) and 0 < summary["human"]["steps"] <= 30
    assert all(k.endswith(", wrong way") for k in summary["human"]["where"])


def test_the_no_progress_rule_in_the_loop(tmp_path, pretrained):
    """progress_steps > 0: the loop passes the try's goal distance; nothing comes 1 m closer in
    3 steps (progress_m=1), so every takeover is this rule's, once its window is full."""
    from robot_calql.cli import main
    from robot_calql.train.logger import read_metrics

    out = tmp_path / "ft"
    rc = main(["finetune", f"checkpoint={pretrained}", f"out={out}", "steps=60", "max_episode_steps=30",
               "eval_every=0", "log_every=40", "save_every=0", "simulated_human.enabled=true",
               "simulated_human.patience_steps=100", "simulated_human.stuck_m=0.0",
               "simulated_human.progress_steps=3", "simulated_human.progress_m=1.0",
               "simulated_human.takeover_steps=4", "simulated_human.budget_steps=100", *QUIET])
    assert rc == 0
    takes = read_metrics(out, "takeover")
    # per 30-step try: 3 steps fill the window (4 distances), then 4 human steps, again and again
    assert [t["step"] for t in takes] == [3, 10, 17, 24, 33, 40, 47, 54]
    assert all(t["no_progress"] == 1.0 and t["wrong_way"] == 0.0 for t in takes)
    assert all(k.endswith(", no progress") for k in json.loads((out / "summary.json").read_text())["human"]["where"])
