"""A learner session: the agent a checkpoint describes, its online and offline replays, and what a
checkpoint holds to continue them. `robot-calql finetune`, the ROS learner node and
benchmarks/bench_online_warmup.py all start learning through `open_session`.

    state = checkpoint.load_checkpoint(run)                       # upgraded to the current format
    s = open_session(state["meta"], state, online_capacity=10_001, dataset=state["meta"]["dataset"])
    s.agent.update(s.replay.sample(256))

What differs between the callers stays with them: which checkpoint to start from, the seeds, the
loop (environment steps, received transitions), what else their checkpoints carry.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from robot_calql.data.dataset import Dataset
from robot_calql.data.replay import (
    InstructionVocab,
    MixedReplay,
    OfflineReplay,
    OnlineReplay,
    ReplayError,
    replay_kwargs,
)
from robot_calql.train import checkpoint as ckpt
from robot_calql.train.common import agent_from_meta


@dataclass
class LearnerSession:
    """An agent and its replays. `replay` is what batches come from: the online buffer mixed with
    the offline data (MixedReplay) when there is offline data, else the online buffer alone."""

    meta: dict[str, Any]  # the checkpoint's meta, "agent" holding the settings this agent was built with
    spec: dict[str, tuple[int, ...]]
    vocab: InstructionVocab
    agent: Any
    online: OnlineReplay
    offline: OfflineReplay | None
    replay: MixedReplay | OnlineReplay
    dataset: Dataset | None = None
    trainer: dict[str, Any] = field(default_factory=dict)  # the checkpoint's trainer state ({} when fresh)

    def resume(self, buffer: Mapping[str, Any] | None) -> None:
        """Continue exactly where a checkpoint of this session stopped: the global RNG states and
        the offline sampler's (when the trainer state holds them) and the online buffer
        (buffer.npz; None: keep it empty). A buffer that does not fit is a CheckpointError."""
        if "rng" in self.trainer:
            ckpt.set_rng_state(self.trainer["rng"])
        if self.offline is not None and "offline_rng" in self.trainer:
            self.offline.rng.bit_generator.state = self.trainer["offline_rng"]
        if buffer is not None:
            try:
                self.online.load_state_dict(buffer)
            except ReplayError as e:
                raise ckpt.CheckpointError(f"buffer.npz: {e}") from None


def open_session(
    meta: Mapping[str, Any],
    state: Mapping[str, Any] | None = None,
    *,
    agent_overrides: Mapping[str, Any] | None = None,
    online_capacity: int,
    dataset: str | os.PathLike | None = None,
    mixing_ratio: float = 0.5,
    online_warmup: int = 0,
    device: str = "cpu",
    online_seed: int | None = None,
    offline_seed: int | None = None,
    progress: bool = False,
    verify_dataset: bool = False,
) -> LearnerSession:
    """Build a session from a checkpoint's `meta`, in this order: the agent (meta["agent"] updated
    with `agent_overrides`), its weights and Adam state from `state` (load_checkpoint's dict; None:
    a fresh agent), the offline replay of `dataset` (None: no offline data; `verify_dataset` checks
    every value first) and an empty online replay of `online_capacity` steps. Both replays store a
    frozen encoder's latents when the agent has one. The checkpoint's learning rates give way to the
    configured ones (CalQL.load_optimizer_state_dict)."""
    meta = {**meta, "agent": {**(meta.get("agent") or {}), **(agent_overrides or {})}}
    spec = {k: tuple(int(x) for x in v) for k, v in meta["obs_spec"].items()}
    vocab = InstructionVocab(meta["instructions"])
    agent = agent_from_meta(meta, device)
    trainer: dict[str, Any] = {}
    if state is not None:
        agent.load_state_dict(state["agent_state"])  # names the tensor whose shape does not fit
        trainer = dict(state.get("trainer") or {})
        if trainer.get("optimizer"):
            agent.load_optimizer_state_dict(trainer["optimizer"])
    rk = replay_kwargs(agent.cfg)
    frames = agent.frame_encoder()  # a frozen image encoder: the replays store its latents (None: images)
    data = offline = None
    if dataset is not None:
        data = Dataset(dataset)
        if verify_dataset:
            data.verify()
        offline = OfflineReplay(data, spec, vocab=vocab, device=device, seed=offline_seed, progress=progress,
                                frame_encoder=frames, **rk)
    online = OnlineReplay(spec, int(meta["action_dim"]), int(online_capacity), vocab=vocab,
                          bound_online=agent.cfg.calql_bound_online, device=device, seed=online_seed,
                          frame_encoder=frames, **rk)
    replay = online if offline is None else MixedReplay(offline, online, float(mixing_ratio),
                                                        online_warmup=int(online_warmup))
    return LearnerSession(meta=meta, spec=spec, vocab=vocab, agent=agent, online=online, offline=offline,
                          replay=replay, dataset=data, trainer=trainer)
