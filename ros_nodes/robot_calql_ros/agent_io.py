"""The agent side of the nodes (no rclpy).

The policy node acts with robot_calql.train.acting.ActingPolicy (encoder + actor only, from a
checkpoint or from the learner's weights message, `weights_payload`); the learner node trains the
full agent that `build_agent` makes from a checkpoint's meta. A weights message carries, in its
safetensors metadata, everything needed to rebuild the acting policy without any file on the
robot computer (`policy_meta`: obs_spec, action_dim, instructions in id order, agent config), so
a policy node can start with no checkpoint and act as soon as the learner's first weights arrive.
"""

from __future__ import annotations

from robot_calql.train.acting import (
    ActingPolicy,
    UnknownInstructionError,
    policy_meta,
    weights_payload,
)

__all__ = ["ActingPolicy", "UnknownInstructionError", "build_agent", "policy_meta", "weights_payload"]


def build_agent(meta: dict, device: str = "cpu"):
    """The full Cal-QL agent (actor, critics, targets, optimisers) of a checkpoint's meta: the learner's."""
    from robot_calql.agent import CalQL, CalQLConfig

    spec = {k: tuple(int(x) for x in v) for k, v in meta["obs_spec"].items()}
    return CalQL(spec, int(meta["action_dim"]), CalQLConfig.from_dict(meta.get("agent") or {}),
                 device=device, num_instructions=max(1, len(meta["instructions"])))
