"""The policy side of the agent, built from a checkpoint or from a weights payload (no rclpy).

A weights payload (robot_calql.control.transport.pack_weights) carries, in its safetensors
metadata, everything needed to rebuild the actor without any file on the robot computer:
`policy_meta` = obs_spec, action_dim, instructions (the vocabulary, in id order) and the agent
config. So a policy node can start with no checkpoint and act as soon as the learner's first
weights arrive.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from robot_calql.control.transport import TransportError, pack_weights, unpack_weights


def policy_meta(meta: dict) -> dict:
    """The part of a checkpoint's meta.json the policy needs."""
    return {"obs_spec": meta["obs_spec"], "action_dim": int(meta["action_dim"]),
            "instructions": list(meta["instructions"]), "agent": meta.get("agent", {})}


def build_agent(meta: dict, device: str = "cpu"):
    from robot_calql.agent import CalQL, CalQLConfig

    spec = {k: tuple(int(x) for x in v) for k, v in meta["obs_spec"].items()}
    return CalQL(spec, int(meta["action_dim"]), CalQLConfig.from_dict(meta.get("agent") or {}),
                 device=device, num_instructions=max(1, len(meta["instructions"])))


class PolicyActor:
    """Actor + instruction vocabulary; `act(obs, temperature)` -> action (5,) or raises.

    temperature 0 (the default) acts with the policy's mean; > 0 explores, see CalQL.act."""

    def __init__(self, agent, meta: dict, step: int):
        self.agent = agent
        self.meta = meta
        self.step = int(step)
        self.vocab = {s: i for i, s in enumerate(meta["instructions"])}
        self.keys = list(meta["obs_spec"])

    @classmethod
    def from_checkpoint(cls, path, device: str = "cpu") -> PolicyActor:
        from robot_calql.train.checkpoint import load_checkpoint

        state = load_checkpoint(path)
        meta = policy_meta(state["meta"])
        agent = build_agent(meta, device)
        sd = state["agent_state"]
        agent.load_policy_state_dict({k: v for k, v in sd.items() if k.startswith(("actor.", "encoder."))})
        return cls(agent, meta, int(state["meta"].get("step", 0)))

    @classmethod
    def from_payload(cls, payload, device: str = "cpu") -> PolicyActor:
        sd, step = unpack_weights(payload)
        meta_json = _payload_metadata(payload).get("policy_meta")
        if meta_json is None:
            raise TransportError("weights payload has no policy_meta")
        meta = json.loads(meta_json)
        agent = build_agent(meta, device)
        agent.load_policy_state_dict(sd)
        return cls(agent, meta, step)

    def act(self, obs: dict[str, Any], temperature: Any = 0.0) -> np.ndarray:
        if obs["instruction"] not in self.vocab:
            raise ValueError(f"instruction '{obs['instruction']}' unknown to the policy (knows {list(self.vocab)})")
        x = {k: obs[k] for k in self.keys}
        x["instruction"] = np.int64(self.vocab[obs["instruction"]])
        return np.asarray(self.agent.act(x, deterministic=False, temperature=temperature), np.float32)  # 0: the mean


def _payload_metadata(payload) -> dict:
    import struct

    data = memoryview(payload).cast("B")
    hlen = struct.unpack("<Q", bytes(data[:8]))[0]
    return json.loads(bytes(data[8 : 8 + hlen])).get("__metadata__", {}) or {}


def weights_payload(agent, meta: dict, step: int) -> bytes:
    """The learner's weights message: policy tensors + policy_meta."""
    return pack_weights(agent.policy_state_dict(), step, extra={"policy_meta": json.dumps(policy_meta(meta))})
