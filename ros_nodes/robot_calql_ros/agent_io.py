"""The agent side of the nodes (no rclpy).

The policy node acts with robot_calql.train.acting.ActingPolicy (encoder + actor only, from a
checkpoint or from the learner's weights message, `weights_payload`); the learner node trains the
full agent (robot_calql.train.session). A weights message carries, in its
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

__all__ = ["ActingPolicy", "UnknownInstructionError", "policy_meta", "weights_payload"]
