"""`robot-calql finetune env=sim checkpoint=<run> steps=<N>`: online Cal-QL in the stand-in.

`env=<gymnasium id>` (InvertedPendulum-v5, ...) runs robot_calql.train.gym_finetune instead: the
plain online loop on that env, without the stand-in's reset-free machinery.

The loop, one environment step at a time (UTD `utd`, default 1):

    act (stochastic policy) -> env.step -> reward (ground truth, or the classifier) ->
    online buffer -> `utd` updates on a batch that is exactly `mixing_ratio` offline data and the
    rest online data (all offline until the first online episode has ended)

Reset-free by default, as RoboFuME runs on the real robot: when the forward task succeeds the
instruction switches to the backward task (`env.set_task`) and a new episode starts where the
scene is; on the time limit a new episode starts without touching the scene (`home=after_failure`
first sends the arm home, objects kept, and `always` also after successes, as the ROS episode
controller's `controller.home`; the default `never` leaves the arm where the try ended). `reset_free=false`
makes every episode start from a full reset of the forward task (the standard fine-tuning setup,
used by the learning benchmark). `full_reset_every=N` adds a full reset every N episodes;
`help_after_failures=N` stands for the ROS episode controller's call for help: after N failed
tries in a row (any direction) a person resets the scene fully (counted, `help_calls`).

Every `eval_every` steps (and at step 0: the offline policy) the deterministic policy runs
`eval_episodes` full-reset episodes of the forward task in a separate env instance.

`simulated_human.enabled=true` adds the stand-in's simulated operator
(robot_calql/sim/simulated_human.py): when the policy is stuck or heading out of the workspace for
`patience_steps` steps, or (`watch_steps` > 0) mostly went another way than the scripted
demonstrator would have, or (`progress_steps` > 0) got no closer to the task's goal, it acts with
that demonstrator for at most `takeover_steps` steps, within `budget_steps` human steps in all;
those steps go to the online buffer with `intervention=True` (also drawn on the offline side), one
`human/*` row per episode and one `takeover` row per takeover (which task, cube in the hand or not,
which rule) are logged, and success.png gets a panel with the share of human steps per episode.

`reward_source=classifier` trains from a robot_calql.reward classifier (debounced) instead of
the simulator's success; ground truth is then only logged, together with the classifier's
online false-positive rate.

Checkpoints (agent, optimisers, RNGs, the online buffer, the environment's physics state and
the loop's counters) are written every `save_every` steps, at the end and on Ctrl-C (exit 130);
`resume=true` continues exactly where the run stopped. The first update with a NaN or infinite
loss stops the run with a NonFiniteTrainingError naming the step, the losses and the last good
checkpoint, which stays the newest on disk (exit 1).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from robot_calql.config import ConfigError, resolve_path
from robot_calql.control.episode_controller import HOME_MODES, homes_after
from robot_calql.train import checkpoint as ckpt
from robot_calql.train.common import (
    GracefulStop,
    NonFiniteTrainingError,
    agent_obs,
    check_finite_state,
    check_losses,
    finish_early,
    online_calibration,
    set_seed,
    set_threads,
    temperature_setting,
)
from robot_calql.train.logger import Logger, UpdateMeans
from robot_calql.train.session import open_session

log = logging.getLogger("robot_calql.train.finetune")

SIM_CHECKPOINT = "runs/pretrain"  # env=sim with checkpoint=null: pretrain's default run folder
SIM_MAX_EPISODE_STEPS = 60  # env=sim with max_episode_steps=null: 6 s at 10 Hz
# settings that were tried, lost and were deleted: a config that still sets one is refused with this note
REMOVED_KEYS = {k: "gripper flips, no gain: docs/experiments/2026-11-22-hover-backups-and-20k-steps.md"
                for k in ("explore_gripper_flip", "explore_gripper_hold")}


# ----------------------------------------------------------------------------- classifier reward
class ClassifierReward:
    """Success from a robot_calql.reward classifier, debounced; counts its mistakes against the
    simulator's ground truth (false positives: declared success while the task was not done).

    With the classifier's release gate (`gripper_open_min`, set at reward-train), a debounced
    success also needs the frame's gripper opening (obs["proprio"]) at least that open; a firing the
    gate holds back leaves the debouncer as it is, so the first frame with the gripper open and p
    still above the threshold succeeds (`clf_held_by_gate` counts the frames held back)."""

    def __init__(self, cfg: DictConfig, device: str):
        from robot_calql.reward import Debouncer, load_classifier  # lazy: only this mode needs it

        path = resolve_path(cfg.path)
        if path is None:
            raise ConfigError("reward_source=classifier needs classifier.path=<folder from reward-train>")
        self.clf = load_classifier(path, device=device)
        thr = self.clf.threshold if cfg.threshold is None else float(cfg.threshold)
        self.deb = Debouncer(k=int(cfg.debounce), threshold=thr)
        self.image_size = int(self.clf.image_shape[0])
        self.positives = self.false_positives = self.negatives_gt = 0
        self.held_by_gate = 0  # frames the debouncer said success but the gripper was not open enough
        # episodes in which the simulator said success at some point, and those of them the
        # classifier never ended (a missed success: the try ran on to its time limit)
        self.episodes_gt = self.missed = 0
        self._ep_gt = self._ep_fired = False

    def __call__(self, obs: dict[str, Any], gt_success: bool) -> bool:
        p = float(self.clf.predict_proba(obs["image"], obs["instruction"])[0])
        fired = self.deb.update(p)
        # the debouncer is not reset when the gate holds: success comes on the first open frame
        success = fired and self.clf.released(None if self.clf.gripper_open_min is None else _gripper_opening(obs))
        self.held_by_gate += fired and not success
        if not gt_success:
            self.negatives_gt += 1
        self._ep_gt = self._ep_gt or gt_success
        self._ep_fired = self._ep_fired or success
        if success:
            self.positives += 1
            if not gt_success:
                self.false_positives += 1
        return success

    def reset(self) -> None:
        """At every episode's end: count a missed success, start the debouncer afresh."""
        self.episodes_gt += self._ep_gt
        self.missed += self._ep_gt and not self._ep_fired
        self._ep_gt = self._ep_fired = False
        self.deb.reset()

    def stats(self) -> dict[str, float]:
        return {
            "clf_false_positive_rate": self.false_positives / max(1, self.negatives_gt),
            "clf_precision": (self.positives - self.false_positives) / max(1, self.positives),
            "clf_successes": float(self.positives),
            "clf_false_positives": float(self.false_positives),
            "clf_missed_successes": float(self.missed),
            "clf_miss_rate": self.missed / max(1, self.episodes_gt),
            "clf_held_by_gate": float(self.held_by_gate),
        }

    def state(self) -> dict[str, int]:
        return {"count": self.deb.count, "positives": self.positives, "fp": self.false_positives,
                "neg": self.negatives_gt, "ep_gt": self.episodes_gt, "missed": self.missed,
                "ep": [self._ep_gt, self._ep_fired], "held": self.held_by_gate}

    def load(self, s: dict[str, int]) -> None:
        self.deb.count, self.positives = int(s["count"]), int(s["positives"])
        self.false_positives, self.negatives_gt = int(s["fp"]), int(s["neg"])
        self.episodes_gt, self.missed = int(s.get("ep_gt", 0)), int(s.get("missed", 0))
        self._ep_gt, self._ep_fired = (bool(x) for x in s.get("ep", (False, False)))
        self.held_by_gate = int(s.get("held", 0))


def _gripper_opening(obs: dict[str, Any]) -> float:
    """The normalized gripper opening (0 closed .. 1 open) in obs["proprio"] of an arm with any number
    of joints (robot_calql.sim.env.StateLayout: joints, gripper opening, ee xyz, ee yaw)."""
    from robot_calql.sim.env import STANDIN_LAYOUT, StateLayout

    proprio = np.asarray(obs["proprio"])
    n_joints = len(proprio) - (STANDIN_LAYOUT.proprio_dim - STANDIN_LAYOUT.n_joints)
    return float(proprio[StateLayout(n_joints).grip])


# ----------------------------------------------------------------------------- main loop
def main(cfg: DictConfig) -> int:
    from tqdm import tqdm

    from robot_calql.agent import CalQLConfig
    from robot_calql.agent.cpu import configure_cpu_process
    from robot_calql.data.replay import InstructionVocab, OnlineReplay
    from robot_calql.sim import PAIRS, get_task, make_env
    from robot_calql.sim.kinematics import sim_arm
    from robot_calql.sim.simulated_human import goal_distance
    from robot_calql.train.evaluation import FAILURES, calibration_points, evaluate
    from robot_calql.train.plots import plot_calibration, plot_success

    if str(cfg.env) != "sim":  # a gymnasium env id: the plain online loop of train/gym_finetune.py
        from robot_calql.train.gym_finetune import finetune_gym

        return finetune_gym(cfg)
    if str(cfg.reward_source) not in ("sim", "classifier"):
        raise ConfigError(f"reward_source={cfg.reward_source}: must be sim or classifier")
    if str(cfg.home) not in HOME_MODES:
        raise ConfigError(f"home={cfg.home}: must be one of {', '.join(HOME_MODES)}")
    set_threads(int(cfg.threads))
    configure_cpu_process()  # process-wide: subnormal flush, glibc heap (agent/cpu.py)
    steps = int(cfg.steps)
    if steps < 0:
        raise ConfigError(f"steps must be >= 0, got {steps}")
    temperature_setting(cfg, "explore_temperature", None)  # the values now, their number once A is known
    for k in REMOVED_KEYS:
        if k in cfg:
            raise ConfigError(f"{k} was removed ({REMOVED_KEYS[k]}): delete it from the config")
    src = resolve_path(SIM_CHECKPOINT if cfg.checkpoint is None else cfg.checkpoint)
    if src is None:
        raise ConfigError("finetune needs checkpoint=<pre-trained run or checkpoint folder>")
    src_ckpt = ckpt.find_checkpoint(src)
    out = resolve_path(cfg.out) or (src_ckpt.parent.parent / "finetune")
    resuming = bool(cfg.resume) and (out / ckpt.CKPT_DIR).is_dir()
    if not resuming and (out / ckpt.CKPT_DIR).is_dir() and not cfg.overwrite:
        raise ConfigError(f"{out} already holds checkpoints: pass resume=true to continue or overwrite=true")
    if not resuming and src_ckpt.is_relative_to(out):
        raise ConfigError(f"out={out} holds the pre-trained checkpoint {src_ckpt}; write the fine-tuning run elsewhere")
    state = ckpt.load_checkpoint(out if resuming else src_ckpt)
    meta = state["meta"]
    if resuming and meta.get("phase") != "finetune":
        raise ConfigError(f"{out}: latest checkpoint is not a fine-tuning checkpoint")
    mode = str(meta["obs"])
    spec = {k: tuple(v) for k, v in meta["obs_spec"].items()}
    vocab = InstructionVocab(meta["instructions"])

    forward = cfg.forward_task or (meta.get("forward_task") or (meta.get("tasks") or [None])[0])
    if forward is None:
        raise ConfigError("forward_task=<stand-in task> is needed (the checkpoint's dataset names no task)")
    forward = str(forward)
    backward = get_task(forward).reverse
    tasks_used = [forward] + ([backward] if cfg.reset_free and cfg.backward else [])
    for t in tasks_used:  # the policy must know every instruction it will get
        if get_task(t).instruction not in vocab.names:
            pair = next((name for name, pt in PAIRS.items() if t in pt), "<task pair>")
            raise ConfigError(f"the checkpoint never saw task {t} ('{get_task(t).instruction}'; it knows {vocab.names}): "
                              f"pre-train on both directions (robot-calql collect task={pair}) or set backward=false")
    if not resuming:  # only once the settings are known to work: overwrite=true must not lose a run for nothing
        ckpt.clear_run(out)

    data_dir = resolve_path(cfg.dataset) or resolve_path(meta.get("dataset"))
    if data_dir is None:
        raise ConfigError("dataset=<offline data to mix in> is needed (the checkpoint names none)")
    capacity = int(cfg.online_capacity) if cfg.online_capacity else steps + 1
    if resuming and capacity != (saved := int(state["trainer"]["loop"]["capacity"])):
        # a ring that has wrapped holds indices modulo its capacity; one that has not can grow, so a
        # run resumed with more steps equals one started with them (or shrink, if what it holds fits)
        snap = state["buffer"]
        held = 0 if snap is None else int(snap["steps_written"])
        if snap is not None and (OnlineReplay.snapshot_wrapped(snap) or held > capacity):
            if cfg.online_capacity:
                raise ConfigError(f"resume: online_capacity={cfg.online_capacity}, but the run's online buffer "
                                  f"(capacity {saved}, {held} steps written) has wrapped or does not fit: "
                                  f"continue it with online_capacity={saved} or leave it unset")
            capacity = saved
        else:
            log.info("resume: online buffer capacity %d -> %d steps (it holds %d, none overwritten)", saved, capacity, held)
    set_seed(int(cfg.seed))
    session = open_session(meta, state, agent_overrides=OmegaConf.to_container(cfg.agent, resolve=True),
                           online_capacity=capacity, dataset=data_dir, mixing_ratio=float(cfg.mixing_ratio),
                           online_warmup=int(cfg.online_warmup), device=str(cfg.device),
                           offline_seed=int(cfg.seed) + 1, online_seed=int(cfg.seed) + 2,
                           progress=bool(cfg.progress), verify_dataset=True)
    agent, acfg, dataset = session.agent, session.agent.cfg, session.dataset
    offline, online, replay = session.offline, session.online, session.replay
    rnd = exploration_bonus(cfg, spec, agent)  # rnd.scale > 0: OOO's optimistic exploration (agent/rnd.py)

    clf = ClassifierReward(cfg.classifier, str(cfg.device)) if cfg.reward_source == "classifier" else None
    image_size = int(cfg.image_size if cfg.image_size is not None else meta.get("image_size", 0))
    if mode == "state":
        image_size = clf.image_size if clf else 0
    elif clf and clf.image_size != image_size:
        raise ConfigError(f"the classifier expects {clf.image_size} px frames, the policy {image_size} px")
    T = int(SIM_MAX_EPISODE_STEPS if cfg.max_episode_steps is None else cfg.max_episode_steps)
    arm = sim_arm(meta.get("robot"))  # the simulated arm of the pre-training data's robot
    env = make_env(forward, image_size=image_size, seed=int(cfg.seed), max_episode_steps=T, arm=arm)
    eval_env = make_env(forward, image_size=0 if mode == "state" else image_size, max_episode_steps=T, arm=arm)

    human, demo, human_stats = _simulated_human(cfg, env)
    watching = human is not None and human.cfg.watch_steps > 0  # the wrong-way rule needs the operator's action

    # loop state (all of it goes into the checkpoint)
    loop = {"step": 0, "episodes": 0, "task": forward, "ep_return": 0.0, "ep_len": 0, "capacity": capacity,
            "successes": {forward: 0, backward: 0}, "episodes_by_task": {forward: 0, backward: 0},
            "homes": 0, "person_resets": 0, "evals": []}
    obs, _ = env.reset(seed=int(cfg.seed))
    if resuming:
        loop = state["trainer"]["loop"]
        session.resume(state["buffer"])  # RNG states and the online buffer
        env.set_state(state["trainer"]["env"])
        obs = state["trainer"]["obs"]
        if rnd is not None and "rnd" in state["trainer"]:
            rnd.load_state_dict(state["trainer"]["rnd"])
        loop["capacity"] = capacity
        if clf is not None and "classifier" in state["trainer"]:
            clf.load(state["trainer"]["classifier"])
        if human is not None and "human" in loop:
            human.load(loop["human"]["sim"])
            human_stats.load(loop["human"]["stats"])
        log.info("resuming %s at online step %d", out, loop["step"])
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "config.yaml")
    # the actor rate of the offline training the run started from, for an agent trained from scratch
    # on its data (robot-calql exploit; fine-tuning lowers it): a fine-tuning checkpoint carries it
    # on (one from before the key: unknown), any other checkpoint's own rate is it
    offline_lr = meta.get("offline_policy_lr")
    if offline_lr is None and meta.get("phase") != "finetune":
        offline_lr = (meta.get("agent") or {}).get("policy_lr", CalQLConfig.policy_lr)
    run_meta = {**{k: v for k, v in meta.items() if k != "step"}, "phase": "finetune", "forward_task": forward,
                "dataset": str(data_dir), "pretrained": str(src_ckpt), "offline_policy_lr": offline_lr,
                "agent": {**(meta.get("agent") or {}), **OmegaConf.to_container(cfg.agent, resolve=True)}}
    if resuming:
        run_meta["pretrained"] = meta.get("pretrained", str(src_ckpt))

    last_good: Path | None = Path(state["dir"]) if resuming else None  # this run's newest checkpoint

    def save() -> Path:
        nonlocal last_good
        weights = agent.state_dict()
        check_finite_state(weights, f"online step {loop['step']}", last_good)
        trainer = {"optimizer": agent.optimizer_state_dict(), "rng": ckpt.rng_state(), "loop": loop,
                   "env": env.get_state(), "obs": obs, "offline_rng": offline.rng.bit_generator.state}
        if clf is not None:
            trainer["classifier"] = clf.state()
        if rnd is not None:
            trainer["rnd"] = rnd.state_dict()
        last_good = ckpt.save_checkpoint(out, loop["step"], weights, trainer, run_meta,
                                         buffer=online.state_dict(), keep=int(cfg.keep_checkpoints))
        return last_good

    last_eval: dict[str, float] = {}

    def run_eval() -> float:
        res = evaluate(agent, eval_env, forward, int(cfg.eval_episodes), spec, vocab)
        last_eval.update(res)
        loop["evals"].append([loop["step"], res["success_rate"]])
        logger.log(loop["step"], "eval", res)
        return res["success_rate"]

    logger = Logger(out, tensorboard=bool(cfg.tensorboard), resume_step=loop["step"] if resuming else None)
    log_every, save_every, eval_every = max(1, int(cfg.log_every)), int(cfg.save_every), int(cfg.eval_every)
    utd, bs, starts = int(cfg.utd), int(cfg.batch_size), int(cfg.learning_starts)
    explore_t = temperature_setting(cfg, "explore_temperature", int(meta["action_dim"]))
    means = UpdateMeans()
    bar = tqdm(total=steps, initial=loop["step"], desc="finetune", unit="step", disable=not cfg.progress,
               dynamic_ncols=True)
    stop = GracefulStop()
    try:
        with stop:
            if not loop["evals"] and eval_every > 0:
                run_eval()
            while loop["step"] < steps:
                instr = obs["instruction"]
                was_driving = human is not None and human.driving
                intervene = human is not None and human.step(
                    obs["proprio"][env.layout.ee],  # ee position
                    goal_distance(obs["state"], env.task.name, env.layout) if human.cfg.progress_steps else None)
                if intervene and not was_driving:
                    logger.log(loop["step"], "takeover", _takeover_row(env, obs, forward, human.rule))
                    if not watching:
                        demo.reset()  # starts from its first phase (it finds a cube already in the hand)
                # what the operator would do here: every step when they watch for wrong ways (their
                # demonstrator then follows the whole try) and may still take over, else only while they drive
                judging = watching and human.budget_left > 0
                expert = demo.act(obs) if intervene or judging else None
                if intervene:  # the simulated operator drives with the scripted demonstrator
                    action = expert
                else:
                    action = agent.act(agent_obs(obs, spec, vocab), deterministic=False, temperature=explore_t)
                    if judging:
                        human.watch(action, expert)
                next_obs, reward, terminated, truncated, info = env.step(action)
                gt = bool(info["success"])
                if clf is not None:  # the classifier decides; the simulator's success is only logged
                    terminated = clf(next_obs, gt)
                    reward = float(terminated)
                    # the stand-in never truncates a step it counts as a success, so the time limit is
                    # checked here: a success the classifier misses must not hold the try open for good
                    truncated = not terminated and (truncated or _time_is_up(env, info))
                if not terminated and _out_of_reach(env, cfg):
                    truncated = True  # a try whose cube left the arm's reach is over; a person puts it back
                online.add(obs, action, float(reward), next_obs, bool(terminated), bool(truncated), instr,
                           intervention=intervene)
                if human is not None and (row := human_stats.add(intervene, terminated or truncated)) is not None:
                    logger.log(loop["step"] + 1, "human", row)
                    loop["human"] = {"sim": human.state(), "stats": human_stats.state(),
                                     "curve": loop.get("human", {}).get("curve", []) +
                                     [[loop["step"] + 1, row["intervention_rate"]]]}
                    human.reset()
                    if watching:
                        demo.reset()  # a new try: the operator's demonstrator starts it from its first phase
                loop["step"] += 1
                loop["ep_return"] += float(reward)
                loop["ep_len"] += 1
                obs = next_obs
                if terminated or truncated:
                    obs = _next_episode(env, loop, bool(terminated), forward, backward, cfg, clf)
                if loop["step"] > starts:
                    for _ in range(utd):
                        batch = replay.sample(bs)
                        bonus = rnd.apply(batch) if rnd is not None else {}  # online rows' rewards only
                        metrics = {**agent.update(batch), **bonus}
                        check_losses(metrics, f"online step {loop['step']} (update {agent.num_updates})", last_good)
                        means.add(metrics)
                bar.update(1)
                step = loop["step"]
                if step % log_every == 0 or step == steps:
                    logger.log(step, "finetune", means.pop())
                    online_stats = {"episodes": loop["episodes"], "buffer_steps": len(online)}
                    for t in (forward, backward):
                        online_stats[f"successes_{t}"] = loop["successes"][t]
                        online_stats[f"episodes_{t}"] = loop["episodes_by_task"][t]
                    if clf is not None:
                        online_stats.update(clf.stats())
                    logger.log(step, "online", online_stats)
                if eval_every > 0 and step % eval_every == 0:
                    sr = run_eval()
                    bar.set_postfix(success=f"{sr:.2f}")
                if save_every > 0 and step % save_every == 0 and step < steps:
                    save()
                if stop.requested:
                    raise KeyboardInterrupt
    except (KeyboardInterrupt, NonFiniteTrainingError) as e:
        return finish_early(e, bar, logger, save, f"online step {loop['step']}", "(resume with resume=true)")
    bar.close()
    if eval_every > 0 and (not loop["evals"] or loop["evals"][-1][0] != loop["step"]):
        run_eval()
    path = save()
    logger.close()
    evals = np.asarray(loop["evals"], dtype=np.float64).reshape(-1, 2)
    curve = np.asarray(loop.get("human", {}).get("curve", []), dtype=np.float64).reshape(-1, 2)
    plot = plot_success(evals[:, 0], evals[:, 1], out / "plots" / "success.png",
                        title=f"{'Cal-QL' if acfg.enable_calql else 'CQL'} fine-tuning, {forward}",
                        interventions={"simulated human": (curve[:, 0], curve[:, 1])} if human is not None else None)
    # calibration after fine-tuning: the episodes pre-training held out (when it is the same data)
    # and the policy's own most recent online episodes, where an over-estimating critic shows first
    holdout = meta.get("holdout_episodes") or []
    q, mc = np.zeros(0), np.zeros(0)
    if holdout and str(data_dir) == str(meta.get("dataset")) and max(holdout) < len(dataset):
        q, mc = calibration_points(agent, [dataset[i] for i in holdout], spec, vocab, acfg)
    q_on, mc_on = online_calibration(agent, online)
    calib = None
    if len(q) or len(q_on):
        calib = plot_calibration(q, mc, out / "plots" / "calibration.png", title=f"after {loop['step']} online steps",
                                 label="held-out offline episodes", extra={"recent online episodes": (q_on, mc_on)})
    summary = {
        "steps": loop["step"],
        "checkpoint": str(path),
        "success_plot": str(plot),
        "calibration_plot": str(calib) if calib else None,
        # Q(s, pi(s)) against the MC return of the recent online episodes (the policy's own, explored)
        "online_calibration": {"states": len(q_on), "mean_q": float(q_on.mean()) if len(q_on) else None,
                               "mean_mc_return": float(mc_on.mean()) if len(q_on) else None},
        "success_before": float(evals[0, 1]) if len(evals) else None,
        "success_after": float(evals[-1, 1]) if len(evals) else None,
        "evals": loop["evals"],
        "last_eval": dict(last_eval),  # success and failure-kind rates of the final evaluation (this process)
        "online_episodes": loop["episodes"],
        "online_successes": loop["successes"],
        "arm_homes": loop["homes"],
        "person_resets": loop.get("person_resets", 0),
        "help_calls": loop.get("help_calls", 0),
    }
    if human is not None:
        summary["human"] = {"steps": human.used_steps, "takeovers": human.takeovers,
                            "share_of_steps": human.used_steps / max(loop["step"], 1),
                            "minutes": human.used_steps / 10.0 / 60,
                            "curve": curve.tolist(),  # [online step, share of human steps] per episode
                            "where": _takeover_counts(out)}
    if clf is not None:
        summary.update(clf.stats())
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if len(evals):
        print(f"success ({forward}): {evals[0, 1]:.0%} before fine-tuning -> {evals[-1, 1]:.0%} after {loop['step']} online steps")
    failed = {f: last_eval.get(f"{f}_rate", 0.0) for f in FAILURES}
    if any(failed.values()):
        print("failures at the last evaluation: " + ", ".join(f"{f} {r:.0%}" for f, r in failed.items() if r)
              + f" (robot-calql evaluate checkpoint={path} out=<dir> shows them)")
    if len(q_on):
        print(f"critic on the last {len(q_on)} online steps: mean Q(s, pi(s)) {q_on.mean():.1f} against mean MC "
              f"return {mc_on.mean():.1f} (calibration plot: {calib})")
    print(f"checkpoint: {path}\nplot: {plot}")
    return 0



def exploration_bonus(cfg: DictConfig, spec: dict[str, tuple[int, ...]], agent: Any) -> Any:
    """The RND bonus of cfg.rnd (robot_calql.agent.rnd), or None with rnd.scale 0; a ConfigError
    names a bad value."""
    from robot_calql.agent.rnd import RNDBonus, RNDConfig, rnd_obs_dim

    try:
        rc = RNDConfig(**OmegaConf.to_container(cfg.rnd, resolve=True))  # type: ignore[arg-type]
        rc.validate()
    except (TypeError, ValueError) as e:
        raise ConfigError(f"rnd: {e}") from None
    if rc.scale == 0:
        return None
    latent = agent.encoder.cached_latent_dim if agent.frozen else None
    return RNDBonus(rnd_obs_dim(spec, rc.image_pool, latent), rc, device=str(cfg.device), seed=int(cfg.seed) + 4)


def _simulated_human(cfg: DictConfig, env: Any) -> tuple[Any, Any, Any]:
    """(SimulatedHuman, its demonstrator, InterventionStats) for `simulated_human.enabled=true`,
    else (None, None, None); a bad setting is a ConfigError naming it."""
    sh = OmegaConf.to_container(cfg.get("simulated_human") or {}, resolve=True)
    if not sh.get("enabled", False):
        return None, None, None
    from robot_calql.sim.demonstrators import make_demonstrator
    from robot_calql.sim.simulated_human import SimulatedHuman, SimulatedHumanConfig
    from robot_calql.train.logger import InterventionStats

    noise = float(sh.pop("demo_noise", 0.0))
    try:
        human = SimulatedHuman(SimulatedHumanConfig.from_dict(sh))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"simulated_human: {e}") from None
    return human, make_demonstrator(env, noise=noise, seed=int(cfg.seed) + 5), InterventionStats(10.0)


def _takeover_row(env: Any, obs: dict, forward: str, rule: str) -> dict:
    """Where and why the simulated operator took over (a `takeover` row of metrics.jsonl): `backward`
    (1: the backward task's try, 0: the forward task's), `cube_in_hand` (1: the cube between the
    closed fingers), the end effector's height `ee_z`, and which rule started it: `wrong_way` or
    `no_progress` (1), else stuck or heading out."""
    from robot_calql.sim.demonstrators import cube_in_hand

    state = np.asarray(obs["state"])
    return {"backward": float(env.task.name != forward), "cube_in_hand": float(cube_in_hand(state, env.layout)),
            "ee_z": float(state[env.layout.ee][2]), "wrong_way": float(rule == "wrong_way"),
            "no_progress": float(rule == "no_progress")}


def _takeover_counts(out: Path) -> dict[str, int]:
    """The run's takeovers by where they happened (its `takeover` rows; one per step, so a resumed
    run that logged a step twice counts it once)."""
    from robot_calql.train.logger import read_metrics

    rows = {int(r["step"]): r for r in read_metrics(out, "takeover")}
    counts = Counter(f"{'backward' if r.get('backward') else 'forward'}, cube "
                     f"{'in' if r.get('cube_in_hand') else 'not in'} the hand"
                     f"{', wrong way' if r.get('wrong_way') else ''}{', no progress' if r.get('no_progress') else ''}"
                     for r in rows.values())
    return dict(sorted(counts.items()))


def _out_of_reach(env: Any, cfg: DictConfig) -> bool:
    """Reset-free with `reset_unreachable`: the cube is out of the arm's reach or off the table
    (the stand-in's `needs_reset`), so a person would put it back (the ROS stand-in human's rule)."""
    return bool(cfg.reset_free and cfg.get("reset_unreachable", False) and hasattr(env, "needs_reset")
                and env.needs_reset())


def _time_is_up(env: Any, info: dict[str, Any]) -> bool:
    """The stand-in's try has run `max_episode_steps` (its info's `elapsed_steps`), success or not."""
    limit = getattr(env, "max_episode_steps", None)
    return limit is not None and int(info.get("elapsed_steps", 0)) >= int(limit)


def _next_episode(env: Any, loop: dict, success: bool, forward: str, backward: str, cfg: DictConfig,
                  clf: ClassifierReward | None) -> dict[str, Any]:
    """Book-keeping at the end of an episode and the start of the next one (reset-free or not)."""
    task = loop["task"]
    loop["episodes"] += 1
    loop["episodes_by_task"][task] += 1
    loop["successes"][task] += int(success)
    loop["ep_return"], loop["ep_len"] = 0.0, 0
    if clf is not None:
        clf.reset()
    every = int(cfg.full_reset_every)
    loop["failures_in_a_row"] = 0 if success else loop.get("failures_in_a_row", 0) + 1
    help_after = int(cfg.get("help_after_failures", 0) or 0)
    helped = cfg.reset_free and help_after > 0 and loop["failures_in_a_row"] >= help_after
    person = not success and (_out_of_reach(env, cfg) or helped)
    loop["person_resets"] = loop.get("person_resets", 0) + int(person)
    loop["help_calls"] = loop.get("help_calls", 0) + int(helped)
    if person:
        loop["failures_in_a_row"] = 0  # a person set the scene up again: the count starts again
    if (not cfg.reset_free or person or (every > 0 and loop["episodes"] % every == 0)
            or (success and not cfg.backward)):
        loop["task"] = forward
        env.set_task(forward)
        obs, _ = env.reset()
        return obs
    if success:  # the other direction undoes this one: practise it instead of resetting by hand
        loop["task"] = backward if task == forward else forward
        env.set_task(loop["task"])
    home = homes_after(str(cfg.home), success)
    obs, _ = env.reset(options={"full": False, "home": home})
    loop["homes"] += int(home)
    return obs
