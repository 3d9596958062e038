"""Learning benchmark in the stand-in: Cal-QL vs CQL vs no pre-training (one task; state mode and
simulator rewards, or --obs pixels --reward-source classifier).

For every seed: collect scripted demos (+ failures) of one forward task, then
- Cal-QL: pre-train offline, fine-tune online,
- CQL: the same code with enable_calql=false,
- scratch: no pre-training (the same online algorithm and offline data mix from random weights),
- pa_rl (only when named in --methods): Cal-QL whose acting policy is a diffusion policy, BC on the
  demos offline, then sample-rerank-optimize-distill online (agent.policy=diffusion, docs/training.md).
With --rnd-scale every method explores with OOO's RND bonus on its online rewards (finetune rnd.scale);
benchmarks/bench_ooo.py then trains the exploitation agents on those runs.
Fine-tuning uses full resets of the forward task (the standard benchmark setting), UTD 1 (--utd) and a
50/50 offline/online batch; the deterministic policy is evaluated every --eval-every steps.
With --reset-free it runs RoboFuME's setting instead (what `make demo` and the ROS graph do): demos
and failures of both directions of the task's pair, and online practice that alternates the
forward and the backward task without resets (a full reset every --full-reset-every episodes);
success is still measured on the forward task, from full resets.
With --obs pixels the data records camera frames (--image-size) and every method learns from them and
the proprio with configs/demo.yaml's keypoint-encoder agent (PIXEL_AGENT_KEYS); with --reward-source
classifier a success classifier trained on each seed's demos (robot_calql.demo.train_classifier) gives
the fine-tuning rewards, the simulator's success still scores the evaluations, and the JSON records the
classifier's online counts per method and seed (what `make demo` runs: both flags).

Figures per method (mean over seeds):
- offline success (eval at online step 0),
- online steps to 90% success (first evaluation >= 0.9; null if never),
- initial dip: offline success minus the mean of the first 5 online evaluations (targets: <= 0.10),
- cumulative regret: mean over online evaluations of (1 - success) (CORL's definition),
- final success,
- the offline and the final policy's success on --fresh-episodes (100) placements that none of
  the training's evaluations used, with a 95% interval (every evaluation of every seed and
  method sees the same 20 placements, so their luck is shared: an easy set lifts every curve),
- the critic against the returns it got: Q(s, pi(s)) minus the discounted return along the
  evaluation's successful episodes, at the first and the last evaluation (Cal-QL's claim is that
  its Q stays at the scale of the returns where CQL's sinks below them).
Targets (issue 3): Cal-QL reaches 90% within 20k online steps; no dip > 10 points; Cal-QL's
regret <= CQL's.

    .venv/bin/python benchmarks/bench_learning.py                      # full size (hours on 2 CPU cores)
    .venv/bin/python benchmarks/bench_learning.py --offline-steps 2000 --online-steps 3000 --seeds 1
    # seeds in parallel processes, then one report
    .venv/bin/python benchmarks/bench_learning.py --seeds 1 --first-seed 1 --out runs/bl/s1   # (and s0, s2)
    .venv/bin/python benchmarks/bench_learning.py --merge runs/bl/s0 runs/bl/s1 runs/bl/s2 --out runs/bl
    # RoboFuME's reset-free setting
    .venv/bin/python benchmarks/bench_learning.py --reset-free --episodes 40 --failures 5 --batch 128 \
        --offline-steps 15000 --online-steps 10000 --eval-every 500 --methods calql --out runs/bl_rf
    # fine-tuning variants on that run's data and pre-training (e.g. the one-action backup)
    .venv/bin/python benchmarks/bench_learning.py --reset-free --episodes 40 --failures 5 --batch 128 \
        --offline-steps 15000 --online-steps 10000 --eval-every 500 --methods calql --pretrained runs/bl_rf \
        --finetune-agent max_target_backup=false --out runs/bl_rf_onebackup
    # the working recipe (configs/recipe/bench_reset_free.yaml: reset-free, one-action backup and
    # 5-step targets while fine-tuning, bf16 matmuls, 20000 online steps, Cal-QL and CQL); a flag
    # given beside --recipe overrides the recipe's value
    .venv/bin/python benchmarks/bench_learning.py --recipe bench_reset_free --out runs/bl_rf_bf16
    # on what a real robot has (what `make demo` runs): camera frames + proprio with the demo's keypoint
    # encoder (configs/demo.yaml agent:), rewards from a success classifier trained on each seed's demos
    # (the simulator's success only scores the evaluations); the recipe: bench_reset_free in this mode
    .venv/bin/python benchmarks/bench_learning.py --obs pixels --reward-source classifier --seeds 1 \
        --offline-steps 2000 --online-steps 3000 --out runs/bl_pixels
    .venv/bin/python benchmarks/bench_learning.py --recipe bench_pixels --out runs/bl_pixels_rf
    # more online steps for a finished run: the same command, a larger --online-steps, --extend
    .venv/bin/python benchmarks/bench_learning.py ... --online-steps 20000 --extend --out runs/bl_rf_onebackup

    # human in the loop (issue 28): Cal-QL with the stand-in's simulated human beside plain Cal-QL; the
    # calql_human run fine-tunes the same pre-training (method calql_human, finetune simulated_human.*)
    .venv/bin/python benchmarks/bench_learning.py --methods calql --interventions --human-budget 1000

Writes <out>/bench_learning.json and <out>/bench_learning.png and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from robot_calql.config import CONFIG_DIR, compose  # noqa: E402
from robot_calql.train import finetune, pretrain  # noqa: E402

METHODS = ("calql", "cql", "scratch")
# what runs made before a flag existed did, for --merge (not the flag's current default); a removed
# flag (gripper_flip, gripper_hold) stays here as what every newer run does
BEFORE_FLAG = {"bc_success_only": False, "bc_z_clip": float("inf"), "agent": [], "reset_free": False,
               "full_reset_every": 10, "gripper_flip": 0.0, "gripper_hold": 3, "pretrained": None, "finetune_agent": [],
               "fresh_episodes": 0, "utd": 1, "rnd_scale": 0.0, "interventions": False, "human_budget": None,
               "human_patience": 10, "human_takeover": 25, "human_stuck_m": None, "human_watch": 0, "human_watch_move": True, "human_progress": 0, "obs": "state", "reward_source": "sim", "image_size": 64,
               "classifier_steps": 1500, "home": "never", "classifier_gripper_open_min": None, "dropped_start": 0.0,
               "robot": "sim_standin"}
# the keys of configs/demo.yaml's `agent:` block that make its pixel agent (the keypoint encoder,
# pre-trained on the demos, then frozen; bf16 where the CPU has it): what --obs pixels adds
PIXEL_AGENT_KEYS = ("encoder", "conv_strides", "encoder_frozen", "encoder_pretrain_future", "precision")
# --reward-source classifier: the classifier's online counts in finetune's summary.json (rewards of
# success it gave, those of them the simulator calls false, real successes it never rewarded)
CLF_COUNTS = ("clf_successes", "clf_false_positives", "clf_missed_successes")


def code_version() -> str:
    """The commit the benchmark runs (`git describe --always --dirty`), or "unknown" outside a clone."""
    try:
        r = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(__file__).resolve().parent,
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "unknown"


def demo_agent() -> dict:
    """The agent settings of configs/demo.yaml (the benchmark shares its reward shaping)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose("demo", []).agent)


def agent_overrides(method: str, a: argparse.Namespace) -> list[str]:
    """The pretrain `agent.` overrides of one method (fine-tuning inherits them from the checkpoint)."""
    demo = demo_agent()
    return [f"agent.actor_hidden=[{a.hidden},{a.hidden}]", f"agent.critic_hidden=[{a.hidden},{a.hidden}]",
             f"agent.enable_calql={'false' if method == 'cql' else 'true'}", f"agent.cql_alpha={a.cql_alpha}",
             *(["agent.policy=diffusion"] if method == "pa_rl" else []),
             # the demo's reward shaping (configs/demo.yaml) plus success-filtered, z-clipped BC,
             # the same for every method
             f"agent.bc_weight={a.bc_weight}", f"agent.policy_lr={a.policy_lr}",
             *(f"agent.{k}={demo[k]}" for k in ("reward_scale", "reward_bias", "failure_reward")),
             # --obs pixels: the demo's keypoint-encoder settings
             *(f"++agent.{k}={demo[k]}" for k in (PIXEL_AGENT_KEYS if a.obs == "pixels" else ())),
             f"++agent.bc_success_only={str(a.bc_success_only).lower()}", f"++agent.bc_z_clip={a.bc_z_clip}",
             # ++: add the key, or override it where configs/pretrain.yaml lists it (discount, tau, ...)
             *(f"++agent.{kv}" for kv in a.agent)]


def run_method(method: str, data: Path, root: Path, a: argparse.Namespace, seed: int,
               pre_dir: Path | None = None, classifier: Path | None = None) -> dict:
    """Pre-train (unless `pre_dir` holds an earlier run's pre-training of this method and seed, or
    --extend), then fine-tune (with --extend: continue the fine-tuning run already there), on the
    rewards of the success classifier in `classifier` where given (else the simulator's success)."""
    ft_dir = root / f"{method}_ft"
    common = [f"seed={seed}", f"batch_size={a.batch}", f"threads={a.threads}", "progress=false", "overwrite=true",
              "tensorboard=false"]
    if a.extend and not (ft_dir / "checkpoints").is_dir():
        raise SystemExit(f"--extend: {ft_dir} holds no fine-tuning checkpoint to continue")
    shared = root / f"{pretraining_of(method)}_pre"
    if pre_dir is None and shared.name != f"{method}_pre" and (shared / "checkpoints").is_dir():
        pre_dir = shared  # the same pre-training as plain Cal-QL: only the fine-tuning differs
    if pre_dir is None:
        pre_dir = root / f"{method}_pre"
        if not a.extend:  # (extending: the run's pre-training is there already)
            steps = 0 if method == "scratch" else a.offline_steps
            rc = pretrain.main(compose("pretrain", [f"dataset={data}", f"out={pre_dir}", f"steps={steps}",
                                                    f"obs={a.obs}", "log_every=500", *agent_overrides(method, a),
                                                    *common]))
            assert rc == 0, f"{method}: pretrain failed"
    rc = finetune.main(compose("finetune", [
        f"checkpoint={pre_dir}", f"out={ft_dir}", f"forward_task={a.task}", f"steps={a.online_steps}",
        f"reset_free={str(a.reset_free).lower()}", f"backward={str(a.reset_free).lower()}",
        f"full_reset_every={a.full_reset_every}", f"home={a.home}", f"eval_every={a.eval_every}", f"eval_episodes={a.eval_episodes}",
        f"max_episode_steps={a.max_episode_steps}", "log_every=500", f"+agent.policy_lr={a.online_policy_lr}",
        f"explore_temperature={a.explore_temperature}",  # a list prints as hydra's [a, b, ...]
        f"utd={a.utd}", f"rnd.scale={a.rnd_scale}", *human_overrides(method, a),
        *(f"++agent.{kv}" for kv in a.finetune_agent), f"resume={str(a.extend).lower()}",
        *(["reward_source=classifier", f"classifier.path={classifier}"] if classifier else []), *common]))
    assert rc == 0, f"{method}: finetune failed"
    summary = json.loads((ft_dir / "summary.json").read_text())
    summary["q_gap_success"] = critic_gaps(ft_dir)
    if a.fresh_episodes:
        summary["fresh"] = {"offline": fresh_eval(pre_dir, root / f"{method}_fresh_offline", a),
                            "final": fresh_eval(ft_dir, root / f"{method}_fresh_final", a)}
    return summary


def human_overrides(method: str, a: argparse.Namespace) -> list[str]:
    """finetune's simulated_human settings of method calql_human (--interventions); none otherwise."""
    if method != "calql_human":
        return []
    budget = a.human_budget if a.human_budget is not None else a.online_steps // 10
    return ["simulated_human.enabled=true", f"simulated_human.budget_steps={budget}",
            f"simulated_human.patience_steps={a.human_patience}", f"simulated_human.takeover_steps={a.human_takeover}",
            f"simulated_human.demo_noise={a.noise}",
            *([f"simulated_human.stuck_m={a.human_stuck_m}"] if a.human_stuck_m is not None else []),
            *([f"simulated_human.watch_steps={a.human_watch}"] if a.human_watch else []),
            *(["simulated_human.watch_move=false"] if not a.human_watch_move else []),
            *([f"simulated_human.progress_steps={a.human_progress}"] if a.human_progress else [])]


FRESH_SEED = 20_000  # training's evaluations use seeds 10000.. (configs/evaluate.yaml); the demos' are hashed


def fresh_eval(run: Path, out: Path, a: argparse.Namespace) -> dict:
    """Success of a run's last checkpoint on --fresh-episodes placements that no evaluation during
    training saw (seeds FRESH_SEED..), with the 95% interval and the failure kinds; `robot-calql
    evaluate` writes its evaluation.json and failures.png to `out`."""
    from robot_calql.train import evaluate

    rc = evaluate.main(compose("evaluate", [f"checkpoint={run}", f"eval_task={a.task}", f"episodes={a.fresh_episodes}",
                                            f"seed={FRESH_SEED}", f"max_episode_steps={a.max_episode_steps}",
                                            "progress=false", f"out={out}"]))
    assert rc == 0, f"evaluate {run} failed"
    r = json.loads((out / "evaluation.json").read_text())
    return {"success": r["success_rate"], "interval95": r["interval95"], "outcomes": r["outcomes"],
            "episodes": r["episodes"]}


# the settings that shape a seed's data and pre-training (what --pretrained must match)
PRETRAIN_SETTINGS = ("task", "episodes", "failures", "offline_steps", "max_episode_steps", "hidden", "batch",
                     "cql_alpha", "bc_weight", "bc_success_only", "bc_z_clip", "agent", "policy_lr", "noise",
                     "reset_free", "obs", "image_size", "dropped_start", "robot")


def pretrained_runs(paths: list[str], a: argparse.Namespace) -> tuple[list[Path], list[str]]:
    """The folders of earlier benchmark runs whose pre-training --pretrained reuses, and their code
    versions. Each must have been made with this run's data and pre-training settings; SystemExit
    names the first setting that differs."""
    runs, codes = [], []
    for p in paths:
        run = Path(p).resolve()
        f = run / "bench_learning.json"
        if not f.is_file():
            raise SystemExit(f"--pretrained {p}: no bench_learning.json there")
        part = json.loads(f.read_text())
        theirs = {**BEFORE_FLAG, **part["config"]}
        ours = vars(a)
        diff = [k for k in PRETRAIN_SETTINGS if theirs.get(k) != ours.get(k)]
        if diff:
            raise SystemExit(f"--pretrained {p}: its data or pre-training differ from this run's in "
                             + ", ".join(f"{k} ({theirs.get(k)!r} vs {ours.get(k)!r})" for k in diff))
        runs.append(run)
        codes.append(part.get("code", "unknown"))
    return runs, codes


def pretraining_of(method: str) -> str:
    """The method whose pre-training `method` fine-tunes: calql_human fine-tunes plain Cal-QL's."""
    return "calql" if method == "calql_human" else method


def find_pretrained(runs: list[Path], seed: int, method: str) -> Path:
    """seed<seed>/<pretraining_of(method)>_pre in the first of `runs` that has it (SystemExit if none has)."""
    method = pretraining_of(method)
    for run in runs:
        d = run / f"seed{seed}" / f"{method}_pre"
        if (d / "checkpoints").is_dir():
            return d
    raise SystemExit(f"--pretrained: no seed{seed}/{method}_pre in {', '.join(map(str, runs))}")


def critic_gaps(run: Path) -> list[list[float]]:
    """[[online step, Q(s, pi(s)) minus the real return along the evaluation's successes], ...]
    from a fine-tuning run's evaluations (robot_calql.train.evaluate; steps with no success left out)."""
    from robot_calql.train.logger import read_metrics

    return [[r["step"], r["q_gap_success"]] for r in read_metrics(run, "eval") if "q_gap_success" in r]


def figures(evals: list[list[float]], window: int = 3) -> dict:
    """The figures of one run from its [[online step, success], ...] evaluations (the first at step 0).

    steps_to_90 is the issue's criterion: the first online evaluation at 90% or more. With 20
    episodes an 80% policy scores 18/20 one time in five, so over 20 evaluations it "reaches" 90%
    almost surely; steps_to_90_sustained asks the mean of `window` consecutive evaluations from
    that step on to be at least 90%, and final_success_mean is the mean of the last `window`
    evaluations. Every evaluation sees the same placements (seeds 10000..), so these means smooth
    the policy's changes, not the luck of 20 placements: the fresh-placement figure does that.
    """
    e = np.asarray(evals, dtype=np.float64)
    steps, succ = e[:, 0], e[:, 1]
    offline, online, online_steps = succ[0], succ[1:], steps[1:]
    reach = online_steps[online >= 0.9]
    runs = np.convolve(online, np.ones(window) / window, mode="valid") if len(online) >= window else np.zeros(0)
    held = online_steps[: len(runs)][runs >= 0.9 - 1e-9]
    return {
        "offline_success": float(offline),
        "final_success": float(succ[-1]),
        "final_success_mean": float(succ[-window:].mean()),
        "steps_to_90": float(reach[0]) if len(reach) else None,
        "steps_to_90_sustained": float(held[0]) if len(held) else None,
        "initial_dip": float(offline - online[:5].mean()) if len(online) else 0.0,
        "regret": float((1.0 - online).mean()) if len(online) else float(1.0 - offline),
    }


def report(results: dict, out: Path, task: str) -> None:
    """Mean figures over the seeds in results["runs"], the targets, a JSON and a plot; prints a table."""
    from robot_calql.train.plots import plot_success

    summary, curves, checks, shares = {}, {}, {}, {}
    methods = [m for m, runs in results["runs"].items() if runs]
    seeds = sorted({r["seed"] for m in methods for r in results["runs"][m]})
    for m in methods:
        runs = results["runs"][m]
        for r in runs:  # recomputed from the evaluations, so runs saved before a figure existed have it
            r.update(figures(r["evals"]))
        f = {k: [r[k] for r in runs] for k in ("offline_success", "final_success", "final_success_mean",
                                               "initial_dip", "regret")}
        summary[m] = {k: float(np.mean(v)) for k, v in f.items()}
        for k in ("steps_to_90", "steps_to_90_sustained"):
            summary[m][k] = [r[k] for r in runs]
        summary[m]["seeds_reaching_90"] = sum(r is not None for r in summary[m]["steps_to_90"])
        gaps = [r["q_gap_success"] for r in runs if r.get("q_gap_success")]  # runs made before it: none
        if gaps:  # the critic against the returns it got, at the first and the last evaluation
            summary[m]["q_gap_success_start"] = float(np.mean([g[0][1] for g in gaps]))
            summary[m]["q_gap_success_end"] = float(np.mean([g[-1][1] for g in gaps]))
        summary[m]["seeds_holding_90"] = sum(r is not None for r in summary[m]["steps_to_90_sustained"])
        fresh = [r["fresh"] for r in runs if "fresh" in r]  # runs made before it: none
        if fresh:  # the start and the end on placements the training's evaluations never saw
            for k in ("offline", "final"):
                summary[m][f"fresh_{k}"] = float(np.mean([f[k]["success"] for f in fresh]))
                summary[m][f"fresh_{k}_per_seed"] = [f[k]["success"] for f in fresh]
            summary[m]["fresh_episodes"] = fresh[0]["final"]["episodes"]
        humans = [r["human"] for r in runs if "human" in r]
        if humans:  # --interventions: the simulated human's steps, and their share of all online steps
            summary[m]["human_steps"] = [h["steps"] for h in humans]
            summary[m]["human_share"] = float(np.mean([h["share_of_steps"] for h in humans]))
            summary[m]["human_minutes"] = float(np.mean([h["minutes"] for h in humans]))
            where = Counter()  # takeovers by task and cube in the hand or not, all seeds (newer runs)
            for h in humans:
                where.update(h.get("where", {}))
            if where:
                summary[m]["human_takeovers_where"] = dict(where)
            for r in runs:  # one curve per seed
                if "human" in r:
                    c = np.asarray(r["human"]["curve"], dtype=np.float64).reshape(-1, 2)
                    shares[f"{m}, seed {r['seed']}"] = (c[:, 0], c[:, 1])
        if all(k in r for r in runs for k in CLF_COUNTS):  # --reward-source classifier: per seed
            summary[m].update({k: [r[k] for r in runs] for k in CLF_COUNTS})
        e = np.mean([np.asarray(r["evals"])[:, 1] for r in runs], axis=0)
        curves[m] = (np.asarray(runs[0]["evals"])[:, 0], e)
        if fresh:  # (each method's squares a little to the side, so that they do not hide each other)
            x = curves[m][0][[0, -1]] + 0.015 * curves[m][0][-1] * (methods.index(m) - (len(methods) - 1) / 2)
            checks[m] = (x, [[f["offline"]["success"], f["final"]["success"]] for f in fresh])
    if "calql" in summary:
        c = summary["calql"]
        summary["targets"] = {
            "calql_90pct_within_20k": all(r is not None and r <= 20000 for r in c["steps_to_90"]),
            "calql_90pct_sustained_within_20k": all(r is not None and r <= 20000 for r in c["steps_to_90_sustained"]),
            "calql_no_dip_over_10pts": c["initial_dip"] <= 0.10,
            "calql_regret_le_cql": (c["regret"] <= summary["cql"]["regret"]) if "cql" in summary else None,
            "calql_final_90pct_on_fresh_placements": c["fresh_final"] >= 0.9 if "fresh_final" in c else None,
        }
        if "pa_rl" in summary and "fresh_final" in summary["pa_rl"] and "fresh_final" in c:
            summary["targets"]["pa_rl_final_ge_calql_on_fresh_placements"] = summary["pa_rl"]["fresh_final"] >= c["fresh_final"]
    results["summary"] = summary
    cfg = {**BEFORE_FLAG, **results["config"]}  # (a run made before --obs: state, simulator rewards)
    results["mode"] = {"obs": cfg["obs"], "reward_source": cfg["reward_source"]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_learning.json").write_text(json.dumps(results, indent=2) + "\n")
    fresh_n = next((summary[m]["fresh_episodes"] for m in methods if "fresh_episodes" in summary[m]), 0)
    plot_success([], [], out / "bench_learning.png", title=f"{task}: mean success over {len(seeds)} seed(s)",
                 curves=curves, checks=checks, checks_label=f"{fresh_n} fresh placements (seed range)",
                 interventions=shares or None)
    print(f"\nlearning benchmark ({task}, seeds {seeds}, {cfg['offline_steps']} offline + {cfg['online_steps']} "
          f"online steps, {results.get('minutes', 0.0):.1f} min, code {results.get('code', 'unknown')})")
    print(f"mode: obs={cfg['obs']}, reward_source={cfg['reward_source']} (rewards from "
          f"{'the success classifier' if cfg['reward_source'] == 'classifier' else 'the simulator'}; "
          "the simulator's success scores every evaluation)")
    print(f"{'method':<8} {'offline':>8} {'final':>7} {'last 3':>7} {'dip':>7} {'regret':>7}  steps to 90%: "
          "first evaluation / mean of 3 evaluations")
    for m in methods:
        s = summary[m]
        print(f"{m:<8} {s['offline_success']:>8.2f} {s['final_success']:>7.2f} {s['final_success_mean']:>7.2f} "
              f"{s['initial_dip']:>7.2f} {s['regret']:>7.2f}  {s['steps_to_90']} / {s['steps_to_90_sustained']}")
    for m in methods:
        if "q_gap_success_start" in summary[m]:
            print(f"{m}: Q(s, pi(s)) minus the real return along evaluation successes: "
                  f"{summary[m]['q_gap_success_start']:+.1f} offline -> {summary[m]['q_gap_success_end']:+.1f} at the end")
    for m in methods:
        if "fresh_final" in summary[m]:
            per = " / ".join(f"{x:.0%}" for x in summary[m]["fresh_final_per_seed"])
            print(f"{m}: on {summary[m]['fresh_episodes']} fresh placements per seed: {summary[m]['fresh_offline']:.0%} "
                  f"offline -> {summary[m]['fresh_final']:.0%} at the end ({per})")
    for m in methods:
        if "human_steps" in summary[m]:
            print(f"{m}: simulated human {summary[m]['human_steps']} steps per seed ({summary[m]['human_share']:.1%} of "
                  f"the online steps, {summary[m]['human_minutes']:.1f} min at 10 Hz)")
            if where := summary[m].get("human_takeovers_where"):
                total = sum(where.values())
                print(f"{m}: where the human took over ({total} takeovers): "
                      + "; ".join(f"{k} {n / total:.0%}" for k, n in sorted(where.items(), key=lambda kv: -kv[1])))
    for m in methods:
        if "clf_successes" in summary[m]:
            n = {k: [int(x) for x in summary[m][k]] for k in CLF_COUNTS}
            print(f"{m}: classifier rewards online per seed: {n['clf_successes']} successes given, "
                  f"{n['clf_false_positives']} of them false, {n['clf_missed_successes']} real successes missed")
    if "targets" in summary:
        print("targets:", summary["targets"])
    print(f"JSON: {out / 'bench_learning.json'}\nplot: {out / 'bench_learning.png'}")


def settings(cfg: dict, skip: set[str]) -> dict:
    """A run's benchmark settings less `skip`; a setting added after the run was made reads as what
    that run did (BEFORE_FLAG)."""
    return {k: v for k, v in {**BEFORE_FLAG, **cfg}.items() if k not in skip}


def extended_run(out: Path, a: argparse.Namespace) -> dict:
    """The bench_learning.json in `out` that --extend continues. SystemExit unless it was made with
    this command's settings (--online-steps aside, which must not be smaller)."""
    f = out / "bench_learning.json"
    if not f.is_file():
        raise SystemExit(f"--extend: no bench_learning.json in {out} (--out names the run to continue)")
    prev = json.loads(f.read_text())
    skip = {"online_steps", "out", "merge", "threads", "extend", "fresh_episodes", "recipe"}  # (evaluation only)
    theirs, ours = settings(prev["config"], skip), settings(vars(a), skip)
    diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if diff:
        raise SystemExit(f"--extend: {f} was made with other settings: "
                         + ", ".join(f"{k} ({theirs.get(k)!r} vs {ours.get(k)!r})" for k in diff))
    if a.online_steps < prev["config"]["online_steps"]:
        raise SystemExit(f"--extend: --online-steps {a.online_steps} is fewer than the run's {prev['config']['online_steps']}")
    return prev


def merge(paths: list[str], out: Path, across_commits: bool = False) -> int:
    """Combine bench_learning.json files of runs made separately (e.g. one seed per process,
    --first-seed) into one report. Their settings must match, and so must the code that ran where
    the runs recorded it (a run made before the record existed, or outside a git clone, counts as
    "unknown" and is merged with a warning; a "-dirty" version cannot vouch for its working tree)."""
    parts = [json.loads((Path(p) / "bench_learning.json" if Path(p).is_dir() else Path(p)).read_text())
             for p in paths]
    skip = {"seeds", "first_seed", "out", "merge", "threads", "methods", "pretrained", "extend",  # like runs of
            "recipe"}  # other methods merge too; a recipe's values are in the config itself
    base = settings(parts[0]["config"], skip)
    for p, part in zip(paths, parts, strict=True):
        other = settings(part["config"], skip)
        if other != base:
            diff = sorted(k for k in set(base) | set(other) if base.get(k) != other.get(k))
            raise SystemExit(f"{p}: settings differ from {paths[0]} in {diff}; only like runs merge")
    codes = [part.get("code", "unknown") for part in parts]
    known = sorted({c for c in codes if c != "unknown"})
    if len(known) > 1:
        which = ", ".join(f"{p}: {c}" for p, c in zip(paths, codes, strict=True))
        if not across_commits:
            raise SystemExit(f"the runs were made by different code ({which}); only runs of one version merge "
                             "(--merge-across-commits merges them anyway, once you have checked the difference)")
        print(f"warning: merging runs of different commits ({which})", file=sys.stderr)
    if "unknown" in codes or any(c.endswith("-dirty") for c in codes):
        print(f"warning: cannot tell that the merged runs ran the same code ({sorted(set(codes))})", file=sys.stderr)
    runs: dict = {}
    for part in parts:
        for m, rs in part["runs"].items():
            runs.setdefault(m, []).extend(rs)
    merged = {"config": parts[0]["config"], "code": ", ".join(known) if known else "unknown", "runs": runs,
              "merged_from": [str(p) for p in paths],
              "minutes": sum(part.get("minutes", 0.0) for part in parts)}
    report(merged, out, base["task"])
    return 0


def temperatures(text: str) -> float | list[float]:
    """--explore-temperature: one number, or comma-separated numbers (one per action axis)."""
    try:
        v = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or a comma-separated list of numbers: {text!r}") from None
    return v[0] if len(v) == 1 else v


def opening_or_none(text: str) -> float | None:
    """--classifier-gripper-open-min: a number, or none (no release gate)."""
    if text.lower() in ("none", "null"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or none: {text!r}") from None


def parser() -> argparse.ArgumentParser:
    """The flags; a setting the benchmark shares with the demo defaults to configs/demo.yaml's value,
    cql_alpha to CalQLConfig's."""
    from omegaconf import OmegaConf

    from robot_calql.config import agent_defaults
    from robot_calql.sim.env import IMAGE_SIZES

    demo = OmegaConf.to_container(compose("demo", []), resolve=True)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=None, metavar="NAME",
                   help="take the flags' values from configs/recipe/<NAME>.yaml (or a YAML file's path; keys: the "
                        "flags' names with _, e.g. offline_steps); flags given beside it override it")
    p.add_argument("--task", default="cube_in_bowl")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    p.add_argument("--episodes", type=int, default=50, help="scripted demos per seed")
    p.add_argument("--failures", type=int, default=10)
    p.add_argument("--offline-steps", type=int, default=20000)
    p.add_argument("--online-steps", type=int, default=20000)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--max-episode-steps", type=int, default=demo["max_episode_steps"])
    p.add_argument("--hidden", type=int, default=demo["agent"]["actor_hidden"][0], help="width of both 2-layer MLPs")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--cql-alpha", type=float, default=agent_defaults()["cql_alpha"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bc-weight", type=float, default=demo["agent"]["bc_weight"])
    p.add_argument("--bc-success-only", action=argparse.BooleanOptionalAction, default=True,
                   help="BC only on rows of successful episodes (demos and the policy's own successes)")
    p.add_argument("--bc-z-clip", type=float, default=3.0,
                   help="Huber-clip BC z-scores beyond this many std (inf: plain -log pi)")
    p.add_argument("--agent", nargs="*", default=[], metavar="KEY=VALUE",
                   help="further CalQLConfig settings for every method, e.g. --agent tau=0.02 discount=0.98")
    p.add_argument("--finetune-agent", nargs="*", default=[], metavar="KEY=VALUE",
                   help="agent settings changed for fine-tuning only, e.g. max_target_backup=false")
    p.add_argument("--utd", type=int, default=1, help="updates per online step while fine-tuning")
    p.add_argument("--rnd-scale", type=float, default=0.0,
                   help="OOO's optimistic exploration: RND bonus scale on the online rewards (finetune rnd.scale; 0: off)")
    p.add_argument("--policy-lr", type=float, default=demo["agent"]["policy_lr"], help="actor lr offline")
    p.add_argument("--online-policy-lr", type=float, default=demo["finetune_policy_lr"], help="actor lr online")
    p.add_argument("--explore-temperature", type=temperatures, default=demo["explore_temperature"],
                   help="online actions tanh(mean + T*std*eps); 1 = sample the policy (docs/training.md); "
                        "or one per action axis, e.g. 0.2,0.2,0.2,0.2,1 (dx,dy,dz,dyaw,gripper)")
    p.add_argument("--noise", type=float, default=demo["noise"], help="demonstrator noise")
    p.add_argument("--dropped-start", type=float, default=0.0,
                   help="share of the demos starting with the cube in the bowl (--reset-free: the backward task's) "
                        "that find it dropped in, tipped or leaning, as a forward success can leave it (collect "
                        "dropped_start; the demo uses 0.25)")
    p.add_argument("--obs", choices=("state", "pixels"), default="state",
                   help="state: the stand-in's privileged state; pixels: camera frames (--image-size) + proprio, "
                        "with the demo's keypoint encoder (configs/demo.yaml agent: encoder ..., precision)")
    p.add_argument("--reward-source", choices=("sim", "classifier"), default="sim",
                   help="fine-tuning rewards: the simulator's success, or a success classifier trained on each "
                        "seed's demos (the simulator's success still scores the evaluations)")
    p.add_argument("--image-size", type=int, default=demo["image_size"], choices=[s for s in IMAGE_SIZES if s],
                   help="camera frames' size with --obs pixels or --reward-source classifier")
    p.add_argument("--robot", default="sim_standin", choices=("sim_standin", "sim_standin_wrist"),
                   help="the stand-in's robot config: sim_standin_wrist adds a wrist camera, which a pixel policy "
                        "sees beside the front one (the classifier sees the front)")
    p.add_argument("--classifier-steps", type=int, default=demo["classifier_steps"],
                   help="--reward-source classifier: the classifier's training steps")
    p.add_argument("--classifier-gripper-open-min", type=opening_or_none, default=demo["classifier_gripper_open_min"],
                   help="--reward-source classifier: its release gate, a success also needs the gripper this open "
                        "(0 closed .. 1 open; none: the image alone decides; recorded as none with --reward-source sim)")
    p.add_argument("--reset-free", action="store_true",
                   help="RoboFuME's setting: demos of both directions of the task's pair, online practice "
                        "alternating forward and backward without resets (evaluations: forward, full resets)")
    p.add_argument("--full-reset-every", type=int, default=demo["full_reset_every"],
                   help="with --reset-free: a full reset every N online episodes (the demo's setting)")
    p.add_argument("--home", choices=("never", "after_failure", "always"), default=demo["home"],
                   help="with --reset-free: send the arm home (objects kept) before the next try (finetune home; "
                        "the demo's setting)")
    p.add_argument("--pretrained", nargs="+", default=None, metavar="RUN",
                   help="reuse the data and pre-training of earlier runs of this benchmark (their --out folders; "
                        "their data and pre-training settings must match) and only fine-tune")
    p.add_argument("--fresh-episodes", type=int, default=100,
                   help="after fine-tuning, evaluate the offline and the final policy on this many placements "
                        "the training's evaluations never saw (0: skip)")
    p.add_argument("--extend", action="store_true",
                   help="continue the fine-tuning of the run in --out (made by this same command with fewer "
                        "--online-steps) from its last checkpoints to --online-steps; resume is exact and the "
                        "online buffer grows, so the result is the run --online-steps would have made")
    p.add_argument("--interventions", action="store_true",
                   help="also run calql_human: Cal-QL fine-tuned with the stand-in's simulated human (finetune "
                        "simulated_human.*), from the same pre-training as calql")
    p.add_argument("--human-budget", type=int, default=None,
                   help="--interventions: human steps per run (default: a tenth of --online-steps)")
    p.add_argument("--human-patience", type=int, default=10, help="--interventions: steps stuck before it takes over")
    p.add_argument("--human-takeover", type=int, default=25, help="--interventions: at most this many steps per takeover")
    p.add_argument("--human-stuck-m", type=float, default=None,
                   help="--interventions: stuck = stayed within this many metres for the patience steps "
                        "(default: configs/finetune.yaml's simulated_human.stuck_m)")
    p.add_argument("--human-watch", type=int, default=0, metavar="N",
                   help="--interventions: also take over when the policy went another way than the demonstrator "
                        "would at most of its last N steps (finetune simulated_human.watch_steps; 0: off)")
    p.add_argument("--human-watch-gripper-only", dest="human_watch_move", action="store_false",
                   help="--human-watch: judge the gripper only (finetune simulated_human.watch_move=false)")
    p.add_argument("--human-progress", type=int, default=0, metavar="N",
                   help="--interventions: also take over when the try got no closer to its goal in N steps "
                        "(finetune simulated_human.progress_steps; 0: off)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--out", default="runs/bench_learning")
    p.add_argument("--merge", nargs="+", default=None, metavar="RUN",
                   help="only combine earlier runs' bench_learning.json (folders or files) into --out")
    p.add_argument("--merge-across-commits", action="store_true",
                   help="--merge runs made by different commits (all of them are recorded in the merged 'code')")
    return p


RECIPE_DIR = CONFIG_DIR / "recipe"


def recipe_values(p: argparse.ArgumentParser, name: str) -> dict:
    """The flag values of recipe `name` (configs/recipe/<name>.yaml or a path), converted with each
    flag's type. SystemExit names a missing file, an unknown key or a value its flag does not take."""
    from omegaconf import OmegaConf

    path = Path(name) if name.endswith((".yaml", ".yml")) else RECIPE_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(f.stem for f in RECIPE_DIR.glob("*.yaml")))
        raise SystemExit(f"--recipe {name}: no {path} (recipes: {known})")
    raw = OmegaConf.to_container(OmegaConf.load(path)) or {}
    actions = {a.dest: a for a in p._actions if a.dest not in ("help", "recipe")}
    values = {}
    for key, v in raw.items():
        act = actions.get(key)
        if act is None:
            raise SystemExit(f"--recipe {path}: unknown key '{key}' (known: {', '.join(sorted(actions))})")
        try:
            if act.nargs in ("*", "+"):
                values[key] = [str(x) for x in (v if isinstance(v, list) else [v])]
            elif act.type is None and isinstance(act.const, bool) or isinstance(act, argparse.BooleanOptionalAction):
                if not isinstance(v, bool):
                    raise ValueError("expects true or false")
                values[key] = v
            elif act.type is not None:
                values[key] = act.type(",".join(map(str, v)) if isinstance(v, list) else str(v))
            else:
                values[key] = str(v)
            if act.choices is not None and values[key] not in act.choices:
                raise ValueError(f"expects one of {', '.join(map(str, act.choices))}")
        except (ValueError, argparse.ArgumentTypeError) as e:
            raise SystemExit(f"--recipe {path}: {key}: {v!r}: {e}") from None
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, on top of --recipe's values where one is named."""
    p = parser()
    first, _ = p.parse_known_args(argv)
    if first.recipe:
        p.set_defaults(**recipe_values(p, first.recipe))
    a = p.parse_args(argv)
    if a.reward_source != "classifier":
        a.classifier_gripper_open_min = None  # the gate is the classifier's; simulator rewards have none
    return a


def collect(a: argparse.Namespace, seed: int, data: Path) -> None:
    """One seed's scripted demos and failures: of the task, or of both tasks of its pair (--reset-free);
    with camera frames of --image-size where the policy (--obs pixels) or the classifier needs them."""
    from robot_calql.sim import task_pair
    from robot_calql.sim.collect import collect_episodes
    from robot_calql.sim.kinematics import sim_arm

    size = a.image_size if a.obs == "pixels" or a.reward_source == "classifier" else 0
    common = {"image_size": size, "out": data, "max_episode_steps": a.max_episode_steps, "noise": a.noise,
              "dropped_start": a.dropped_start, "robot": a.robot, "arm": sim_arm(a.robot)}
    for i, task in enumerate(task_pair(a.task) if a.reset_free else (a.task,)):
        collect_episodes(task, a.episodes, seed=seed, overwrite=i == 0, **common)
        if a.failures:
            collect_episodes(task, a.failures, seed=seed + 1000, failure=True, source="failure", **common)


def seed_classifier(a: argparse.Namespace, seed: int, root: Path, reuse: list[Path]) -> Path | None:
    """--reward-source classifier: the seed's success classifier, trained on its demos into <root>/reward
    (robot_calql.demo.train_classifier, --classifier-steps); --extend and --pretrained reuse the one
    already there (SystemExit if there is none). None with --reward-source sim."""
    if a.reward_source != "classifier":
        return None
    if a.extend or reuse:
        for run in ([root] if a.extend else [r / f"seed{seed}" for r in reuse]):
            if (run / "reward" / "train_report.json").is_file():
                gate = json.loads((run / "reward" / "reward_model.json").read_text()).get("gripper_open_min")
                if gate != a.classifier_gripper_open_min:
                    raise SystemExit(f"{run / 'reward'}: its release gate is gripper_open_min={gate}, this run's "
                                     f"--classifier-gripper-open-min is {a.classifier_gripper_open_min}")
                return run / "reward"
        raise SystemExit(f"--reward-source classifier: no trained classifier (seed{seed}/reward) in "
                         + ", ".join(map(str, [root.parent] if a.extend else reuse)))
    from robot_calql.demo import train_classifier

    cfg = compose("demo", [f"seed={seed}", f"threads={a.threads}", f"classifier_steps={a.classifier_steps}",
                           f"image_size={a.image_size}",  # the classifier's pooling follows the frame size
                           f"classifier_gripper_open_min={a.classifier_gripper_open_min or 0}"])  # 0: no gate
    return train_classifier(cfg, root / "data", root / "reward")


def main() -> int:
    a = parse_args()
    if a.merge:
        return merge(a.merge, Path(a.out).resolve(), a.merge_across_commits)
    out = Path(a.out).resolve()
    methods = [m for m in a.methods.split(",") if m]
    if a.interventions and "calql_human" not in methods:
        methods.append("calql_human")
    if unknown := [m for m in methods if m not in (*METHODS, "pa_rl", "calql_human")]:
        raise SystemExit(f"--methods: unknown {unknown} (known: {', '.join((*METHODS, 'pa_rl', 'calql_human'))})")
    results: dict = {"config": vars(a), "code": code_version(), "runs": {m: [] for m in methods}}
    reuse: list[Path] = []
    if a.pretrained:
        reuse, codes = pretrained_runs(a.pretrained, a)
        results["pretrained_code"] = codes
    before = 0.0
    if a.extend:  # the earlier parts' code, steps and time stay on record, oldest first
        prev = extended_run(out, a)
        earlier = prev.get("extended_from", [])
        results["extended_from"] = [*([earlier] if isinstance(earlier, dict) else earlier),  # (dict: one part)
                                    {"code": prev.get("code"), "online_steps": prev["config"]["online_steps"],
                                     "minutes": prev.get("minutes", 0.0)}]
        before = prev.get("minutes", 0.0)
    t0 = time.time()
    for seed in range(a.first_seed, a.first_seed + a.seeds):
        root = out / f"seed{seed}"
        data = root / "data"
        if not (reuse or a.extend):  # (reused pre-training fine-tunes on the data it was trained on)
            collect(a, seed, data)
        clf = seed_classifier(a, seed, root, reuse)
        for m in methods:
            s = run_method(m, data, root, a, seed, find_pretrained(reuse, seed, m) if reuse else None, clf)
            results["runs"][m].append({"seed": seed, "evals": s["evals"], "q_gap_success": s["q_gap_success"],
                                       **figures(s["evals"]), **({"fresh": s["fresh"]} if "fresh" in s else {}),
                                       **({"human": s["human"]} if "human" in s else {}),
                                       **{k: s[k] for k in CLF_COUNTS if k in s}})
            print(f"[seed {seed}] {m}: {figures(s['evals'])}  ({(time.time() - t0) / 60:.1f} min)", flush=True)
            (out / "bench_learning.json").write_text(json.dumps(results, indent=2) + "\n")

    results["minutes"] = before + (time.time() - t0) / 60
    report(results, out, a.task)
    return 0


if __name__ == "__main__":
    sys.exit(main())
