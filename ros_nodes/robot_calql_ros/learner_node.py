"""learner: Cal-QL fine-tuning on the offline data plus the transitions the policy sends.

Can run on another machine (a GPU server, `learner.device: cuda`): it only talks ROS 2.

- Transitions arrive on `topics.transitions` (std_msgs/UInt8MultiArray, reliable, transient
  local with a deep history, robot_calql.control.transport payloads). Each one is appended to
  `<run_dir>/transitions.log` (crash-safe) *before* it is used, then added to the online replay.
  Duplicates (a restarted learner receives the policy's history again) are dropped by
  (actor id, sequence number); a gap in a sequence is logged with the number of transitions lost.
  A payload that cannot be decoded, or that lacks an observation this learner trains on (a policy
  streaming other observations), is rejected with a warning naming what is missing, counted, and
  never stored.
- A training thread runs `utd` Cal-QL updates per received transition on batches mixing
  offline and online data (`mixing_ratio`, when the checkpoint's dataset is on this machine;
  the online share grows with the buffer until `online_warmup` online steps are in),
  publishes the policy weights every `publish_every` updates on `topics.weights` (transient
  local: a policy that starts late gets the newest), and checkpoints every `checkpoint_every`
  updates and on exit into `<run_dir>/checkpoints` (robot_calql.train.checkpoint).
- On start it resumes from `<run_dir>`'s newest checkpoint if there is one (else the pre-trained
  `checkpoint`, else a fresh agent) and replays `transitions.log` into the online buffer, so a
  crash loses nothing and training continues where it stopped. A log record cut short by the
  crash is dropped (and counted); the policy's history sends that transition again.
- Stopping (SIGINT/SIGTERM, robot_calql_ros.run): the update thread finishes its update and is
  joined, then the checkpoint and the calibration plot are written; further signals are ignored.
- The update thread runs at `learner.nice` (a lower CPU priority, Linux, per thread), so on
  a shared computer the learner never delays the robot's control path.
- Status (`topics.learner_status`, std_msgs/String JSON, 1 Hz): stored (transitions in the log),
  and for this process: received, duplicates (dropped by sequence number), lost (sequence
  numbers skipped: never received), rejected, torn_records (unreadable log tail cut at start,
  0 or 1); updates, online (buffer steps), weights_published, resumed_from.
- Metrics as `robot-calql finetune` writes them: `<run_dir>/metrics.jsonl` and TensorBoard
  (`<run_dir>/tb`), tag `learner/*` (means of every update metric over `log_every` updates) and
  `online/*` (episodes, successes, buffer size), and per finished episode `human/*` (intervention
  rate, human steps, human minutes: robot_calql.train.logger.InterventionStats; human steps are
  also drawn on the offline side of the batches); on exit `<run_dir>/plots/calibration.png`
  (learned Q against the MC returns of the recent online episodes).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from rclpy.node import Node
from std_msgs.msg import String, UInt8MultiArray

from robot_calql.config import ConfigError
from robot_calql.control.transport import (
    TransitionLog,
    TransportError,
    transition_step,
    unpack_transition,
)
from robot_calql.train.common import (
    NonFiniteTrainingError,
    check_finite_state,
    check_losses,
    updates_owed,
)
from robot_calql_ros.common import (
    COMMAND_QOS,
    LATCHED_QOS,
    agent_params,
    node_params,
    topic_names,
    transitions_qos,
)

# the learner's parameters (learner.<key>); `checkpoint` and `agent` may be absent
LEARNER_SETTINGS = ("device", "batch_size", "utd", "min_online", "publish_every", "checkpoint_every", "log_every",
                    "tensorboard", "mixing_ratio", "online_warmup", "online_capacity", "threads", "nice", "policy_lr",
                    "run_dir", "transition_history", "seed", "instructions")


class LearnerNode(Node):
    def __init__(self, name: str = "learner", **kwargs):
        # what destroy_node uses, before anything that can fail (rclpy destroys a half-built node too)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None   # set once the node is fully up
        self.log: TransitionLog | None = None
        self.logger = None
        super().__init__(name, automatically_declare_parameters_from_overrides=True, **kwargs)
        import torch

        from robot_calql.train import checkpoint as ckpt
        from robot_calql.train.session import open_session

        p = node_params(self)
        self.topics = t = topic_names(p["robot"]["topics"])
        c = self.cfg = p["learner"]
        # every setting comes from configs/launch_finetune.yaml's learner block (the node set's parameters)
        missing = sorted(set(LEARNER_SETTINGS) - set(c))
        if missing:
            raise ConfigError(f"learner parameters missing: {', '.join('learner.' + k for k in missing)} (the node set "
                              "writes them from configs/launch_finetune.yaml)")
        if int(c["threads"]) > 0:
            torch.set_num_threads(int(c["threads"]))
        self.device = str(c["device"])
        self.run_dir = Path(c["run_dir"])
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt = ckpt
        self.updates = 0
        self.resumed_from = ""
        self.last_checkpoint = None   # this run's newest checkpoint on disk

        # a run folder whose first checkpoint was cut short by a crash holds only a hidden
        # partial folder: that is no checkpoint, start as a new run
        own = any((p / ckpt.WEIGHTS).is_file() for p in (self.run_dir / ckpt.CKPT_DIR).glob("step_*"))
        if own:
            state = ckpt.load_checkpoint(self.run_dir)
            self.resumed_from = str(state["dir"])
            self.last_checkpoint = state["dir"]
        elif c.get("checkpoint"):
            state = ckpt.load_checkpoint(c["checkpoint"])
            self.resumed_from = f"pre-trained {state['dir']}"
        else:
            state = None
        if state is not None:
            meta = {**state["meta"], "phase": "finetune_ros"}
        else:
            from robot_calql.control.cameras import camera_specs, image_keys

            # a fresh agent for the robot's observations: every camera's image, proprio = joints,
            # gripper opening, EE xyz and yaw (as the policy node builds them)
            s, r = int(p["robot"]["image_size"]), p["robot"]
            images = {k: [s, s, 3] for k in (image_keys(camera_specs(r)) or ["image"])}
            meta = {"obs": "pixels", "obs_spec": {**images, "proprio": [len(r["joints"]) + 5]}, "action_dim": 5,
                    "instructions": list(c["instructions"]), "agent": agent_params(p.get("agent"), "agent"),
                    "dataset": "", "phase": "finetune_ros"}
        overrides = {}
        if float(c["policy_lr"] or 0) > 0:  # online actor lr (the pre-training one is often too high)
            overrides["policy_lr"] = float(c["policy_lr"])
        # learner.agent: other settings for fine-tuning, e.g. n_step (unknown keys: a ConfigError naming them)
        overrides.update(agent_params(c.get("agent"), "learner.agent"))
        dataset = meta.get("dataset") or ""
        mixed = bool(dataset) and Path(dataset).is_dir() and float(c["mixing_ratio"]) > 0
        # Adam's moments continue from pre-training too, as in `robot-calql finetune`: fresh moments
        # make the first few hundred steps lr-sized in every direction, and in the stand-in that took
        # the policy from 80% to 60% within 750 updates (docs/ros.md). The configured learning rates
        # are kept. The offline replay prints no progress bar into a node log.
        session = open_session(meta, state, agent_overrides=overrides, online_capacity=int(c["online_capacity"]),
                               dataset=dataset if mixed else None, mixing_ratio=float(c["mixing_ratio"]),
                               online_warmup=int(c["online_warmup"]), device=self.device,
                               online_seed=int(c["seed"]), offline_seed=int(c["seed"]))
        self.meta, self.agent, self.spec = session.meta, session.agent, session.spec
        self.online, self.replay = session.online, session.replay
        if own:  # this run's own checkpoint: continue its update count
            self.updates = int(session.trainer["updates"])
        if state is None and self.agent.frame_encoder() is not None:
            raise ConfigError("learner: agent.encoder_frozen needs a pre-trained checkpoint (its image encoder is "
                              "pre-trained on the demos, then frozen): pass checkpoint=<pretrain run>")
        if mixed:
            self.get_logger().info(f"offline data {dataset} mixed in at {c['mixing_ratio']}; the online share "
                                   f"grows to full over the first {c['online_warmup']} online steps")

        from robot_calql.train.logger import Logger, UpdateMeans

        # metrics.jsonl + TensorBoard in run_dir, as `robot-calql finetune` writes them: `learner/*`
        # (update means, every log_every updates) and `online/*` (episodes, successes, buffer)
        self.logger = Logger(self.run_dir, tensorboard=bool(c["tensorboard"]),
                             resume_step=self.updates if own else None)  # own: this run, restarted
        self.means = UpdateMeans()
        self.episodes = {"episodes": 0, "successes": 0}
        # human takeovers per episode (`human/*`: intervention rate, human steps and minutes)
        from robot_calql.train.logger import InterventionStats

        self.human = InterventionStats(float(p["robot"]["control_hz"]))
        self.lock = threading.Lock()
        self.last_seq: dict[str, int] = {}
        self.log = TransitionLog(self.run_dir / "transitions.log")
        if self.log.torn_records:
            kept = f"; the bytes are kept in {self.log.damaged_path}" if self.log.damaged_path else ""
            self.get_logger().warning(
                f"{self.log.path}: cut an unreadable last record ({self.log.torn_bytes} bytes, a crash while "
                f"writing it{kept}); the policy's history sends its transition again if the learner was down "
                f"for fewer than transition_history ({c['transition_history']}) transitions")
        self.counts = {"received": 0, "stored": 0, "duplicates": 0, "lost": 0, "rejected": 0,
                       "torn_records": self.log.torn_records, "weights_published": 0}
        replayed = 0
        for payload in self.log.read():
            self._add(payload, store=False)
            replayed += 1
        self.counts["stored"] = replayed
        # updates owed per transition: continue the schedule where it stopped
        self.transitions_total = replayed

        self.pub_w = self.create_publisher(UInt8MultiArray, t["weights"], LATCHED_QOS)
        self.pub_status = self.create_publisher(String, t["learner_status"], COMMAND_QOS)
        self.create_subscription(UInt8MultiArray, t["transitions"], self._on_transition,
                                 transitions_qos(int(c["transition_history"])))
        self.create_timer(1.0, self._publish_status)
        self.training_error = ""   # set when an update fails: updates stop, transitions are still stored
        self._publish_weights()  # a policy without a checkpoint can act from the start
        self._thread = threading.Thread(target=self._train_loop, name="learner_updates", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"learner: {'resumed from ' + self.resumed_from if self.resumed_from else 'fresh agent'}, "
            f"{replayed} stored transitions replayed, update {self.updates}, run dir {self.run_dir}")

    # ------------------------------------------------------------------ transitions
    def _add(self, payload, store: bool) -> bool:
        """Use one transition payload: `store` (a received one) drops duplicates, counts and logs
        gaps and appends it to the log first; without (replaying the log) the counters are left
        alone, since the process that received them counted its duplicates and gaps."""
        try:
            meta, arrays = unpack_transition(payload)
        except TransportError as e:
            return self._reject(str(e))
        try:
            actor, seq = str(meta["actor"]), int(meta["seq"])
        except (KeyError, TypeError, ValueError):
            return self._reject(f"no actor id and sequence number in {meta}")
        last = self.last_seq.get(actor, -1)
        if seq <= last:
            self.counts["duplicates"] += int(store)
            return False
        if store and seq > last + 1:
            lost = seq - last - 1
            self.counts["lost"] += lost
            self.get_logger().warning(f"{lost} transitions from actor {actor} never arrived "
                                      f"(seq {last + 1}..{seq - 1}; learner down longer than the history?)")
        self.last_seq[actor] = seq  # received, so never counted lost, even if rejected below
        try:
            step = transition_step(meta, arrays, self.spec)
        except TransportError as e:  # e.g. a policy streaming other observations than this learner trains on
            return self._reject(str(e))
        if store:
            self.log.append(bytes(payload))  # on disk before it is used
            self.counts["stored"] += 1
        with self.lock:
            try:
                self.online.add(**step)
                if step["terminal"] or step["truncated"]:
                    self.episodes["episodes"] += 1
                    self.episodes["successes"] += int(step["terminal"])
                row = self.human.add(step["intervention"], step["terminal"] or step["truncated"])
                if row is not None and store:
                    self.logger.log(self.updates, "human", row)
            except ValueError as e:
                self.counts["rejected"] += 1
                self.get_logger().warning(f"transition not used for training: {e}")
            if store:  # under the lock, so a logged row's counts agree with each other
                self.transitions_total += 1
        return True

    def _reject(self, why: str) -> bool:
        self.counts["rejected"] += 1
        self.get_logger().warning(f"rejected a transition: {why}")
        return False

    def _on_transition(self, msg: UInt8MultiArray) -> None:
        self.counts["received"] += 1
        self._add(msg.data, store=True)

    # ------------------------------------------------------------------ training
    def _train_loop(self) -> None:
        c = self.cfg
        if int(c["nice"]) > 0:
            import os

            # Linux nice values are per thread: only this update thread yields the CPU to the
            # control path (policy, safety, camera) when they compete for cores.
            os.nice(int(c["nice"]))
        B = int(c["batch_size"])
        while not self._stop.is_set():
            if updates_owed(self.transitions_total, self.updates, len(self.online), float(c["utd"]),
                            int(c["min_online"])) < 1:
                self._stop.wait(0.05)
                continue
            with self.lock:
                batch = self.replay.sample(B)
            try:
                metrics = self.agent.update(batch)
                check_losses(metrics, f"learner update {self.updates + 1}", self.last_checkpoint)
            except Exception as e:  # noqa: BLE001 - reported, never a silent dead thread
                self._training_failed(e)
                return
            self.means.add(metrics)
            self.updates += 1
            if self.updates % int(c["log_every"]) == 0:
                self.logger.log(self.updates, "learner", self.means.pop())
                with self.lock:
                    online = {**self.episodes, "buffer_steps": len(self.online), "transitions": self.transitions_total,
                              "online_share": self._online_share(B)}
                self.logger.log(self.updates, "online", online)
            if self.updates % int(c["publish_every"]) == 0:
                self._publish_weights()
            if self.updates % int(c["checkpoint_every"]) == 0:
                try:
                    self.save()
                except NonFiniteTrainingError as e:
                    self._training_failed(e)
                    return

    def _training_failed(self, e: Exception) -> None:
        """Stop updating for good: the weights are no longer published or saved; transitions
        are still received and logged, so a restart from the last good checkpoint loses nothing."""
        self.training_error = f"{type(e).__name__}: {e}"
        self.get_logger().error(f"training stopped: {self.training_error}. Transitions are still stored; "
                                "fix the cause and restart the learner (it resumes from the last good checkpoint)")

    def _online_share(self, batch_size: int) -> float:
        """Fraction of the next batch drawn from the online buffer (mixing_ratio, online_warmup)."""
        split = getattr(self.replay, "split", None)
        return split(batch_size)[1] / batch_size if split else 1.0

    def _publish_weights(self) -> None:
        from robot_calql_ros.agent_io import weights_payload

        self.pub_w.publish(UInt8MultiArray(data=weights_payload(self.agent, self.meta, self.updates)))
        self.counts["weights_published"] += 1

    def save(self):
        """Write a checkpoint of the current weights; NonFiniteTrainingError (nothing written) if any
        weight is NaN or infinite."""
        state = self.agent.state_dict()
        check_finite_state(state, f"learner update {self.updates}", self.last_checkpoint)
        trainer = {"optimizer": self.agent.optimizer_state_dict(), "updates": self.updates}
        path = self.ckpt.save_checkpoint(self.run_dir, self.updates, state, trainer,
                                         {k: v for k, v in self.meta.items() if k != "step"})
        self.last_checkpoint = path
        return path

    def status(self) -> dict:
        return {**self.counts, "updates": self.updates, "online": len(self.online),
                "resumed_from": self.resumed_from, "training_error": self.training_error, "time": time.time()}

    def _publish_status(self) -> None:
        self.pub_status.publish(String(data=json.dumps(self.status())))

    def destroy_node(self):
        """Stop and join the update thread (never left running into interpreter exit, where a
        thread inside torch aborts the process), then write the checkpoint and the plot. A node
        that never finished starting only closes what it opened."""
        if self._thread is None:
            for f in (self.log, self.logger):
                if f is not None:
                    f.close()
            return super().destroy_node()
        t0 = time.monotonic()
        self._stop.set()
        while self._thread.is_alive():
            self._thread.join(timeout=10.0)
            if self._thread.is_alive():
                self._say(f"stopping: waiting {time.monotonic() - t0:.0f} s so far for the update in progress")
        try:
            if self.training_error:
                self._say(f"no checkpoint written at the stop (training had stopped: {self.training_error}); "
                          f"the last good one is {self.last_checkpoint}")
            else:
                path = self.save()
                self._say(f"checkpoint at update {self.updates}: {path}")
                self._calibration()
        finally:
            self.log.close()
            self.logger.close()
        self._say(f"stopped cleanly in {time.monotonic() - t0:.1f} s")
        return super().destroy_node()

    def _calibration(self) -> None:
        """<run_dir>/plots/calibration.png: Q(s, pi(s)) against the MC returns of the last online
        episodes, the picture `robot-calql finetune` draws (docs/training.md). A failure here is
        logged, never raised: the checkpoint is already saved."""
        from robot_calql.train.common import online_calibration
        from robot_calql.train.plots import plot_calibration

        try:
            with self.lock:
                q, mc = online_calibration(self.agent, self.online)
            if len(q):
                png = plot_calibration(q, mc, self.run_dir / "plots" / "calibration.png", label="recent online episodes",
                                       title=f"learner, after {self.updates} updates")
                self._say(f"critic on the last {len(q)} online steps: mean Q {q.mean():.1f} against "
                          f"mean MC return {mc.mean():.1f} ({png})")
        except Exception as e:  # noqa: BLE001 - a plot must not stop a clean shutdown
            self._say(f"calibration plot skipped: {e}")

    def _say(self, msg: str) -> None:
        """Log through ROS while the context is up; print once it is shut down (a context shut
        down from outside before destroy_node runs, where a log call complains that rosout is gone)."""
        if self.context.ok():
            self.get_logger().info(msg)
        else:
            print(f"[{self.get_name()}] {msg}", file=sys.stderr, flush=True)


def main(args=None):
    from robot_calql.agent.cpu import configure_cpu_process
    from robot_calql_ros.run import run_single

    configure_cpu_process()  # process-wide CPU settings for the agent this node runs (agent/cpu.py)
    run_single(LearnerNode, "learner", args)


if __name__ == "__main__":
    main()
