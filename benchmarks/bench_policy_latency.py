"""Policy latency: one observation, one thread, deterministic action, p50 / p99.

    .venv/bin/python benchmarks/bench_policy_latency.py [--n 2000]

Measures `ActingPolicy.act` (robot_calql.train.acting: encoder + actor only) end to end (numpy
in, numpy out, temperature 0: the policy's mean), as the policy node calls it, in state
mode (obs 39) and in each pixel mode (64x64 RGB + proprio 10 + instruction id, the RoboFuME
encoder): end to end with the CNN's weights channels-last (the default) and NCHW, and with the
frozen, pre-trained encoder (`encoder_frozen`; the live frame goes through the CNN once, as end
to end). Target (issues 3 and 25): p99 under 5 ms at 64 px.

PA-RL cases (`agent.policy=diffusion`, issue 30): the diffusion base policy (5 denoising steps)
plus the best of `pa_rl.act_samples` K = 16 samples by the minimum over the critics' Q (the
acting policy then holds the critics), in state mode and 64 px pixels end to end; K = 1 (the base
sample alone) for comparison. Targets: p99 under 5 ms (state) and 20 ms (pixels).

The discrete gripper (`agent.discrete_gripper`): the actor's arm action plus one forward of the
critics at the two gripper commands (the acting policy then holds the critics), state and the
frozen keypoint encoder.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from robot_calql.agent import CalQL, CalQLConfig, configure_cpu_process
from robot_calql.train.acting import ActingPolicy

INSTRUCTIONS = ["a", "b", "c", "d"]


def measure(policy: ActingPolicy, obs: dict, n: int) -> np.ndarray:
    for _ in range(50):
        policy.act(obs, obs.get("instruction"), 0.0)
    out = np.empty(n)
    for i in range(n):
        t = time.perf_counter()
        policy.act(obs, obs.get("instruction"), 0.0)
        out[i] = time.perf_counter() - t
    return out * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--keypoint-strides", default="2,1,1,1",
                   help="conv strides of the keypoint encoder case (the demo's: configs/demo.yaml agent.conv_strides)")
    p.add_argument("--only", default="", help="run only the cases whose name contains this (e.g. PA-RL)")
    args = p.parse_args()
    torch.set_num_threads(1)
    configure_cpu_process()  # as the policy node does
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    S = args.image_size
    strides = tuple(int(x) for x in args.keypoint_strides.split(","))
    pix_spec = {"image": (S, S, 3), "proprio": (10,)}
    pix_obs = {"image": rng.integers(0, 256, (S, S, 3), dtype=np.uint8),
               "proprio": rng.normal(size=10).astype(np.float32), "instruction": 2}
    def policy(spec: dict, cfg: CalQLConfig, instructions: list[str]) -> ActingPolicy:
        return ActingPolicy.from_agent(CalQL(spec, 7, cfg, num_instructions=len(instructions)), instructions)

    def pa_rl(k: int) -> CalQLConfig:
        return CalQLConfig(policy="diffusion", pa_rl={"act_samples": k})

    state_obs = {"state": rng.normal(size=39).astype(np.float32)}
    nchw = policy(pix_spec, CalQLConfig(), INSTRUCTIONS)
    nchw.encoder.cnn.to(memory_format=torch.contiguous_format)
    cases = {
        "state (obs 39, action 7)": (
            policy({"state": (39,)}, CalQLConfig(), ["a"]),
            {"state": rng.normal(size=39).astype(np.float32)},
        ),
        f"pixels e2e ({S}x{S} RGB + proprio 10, action 7)": (policy(pix_spec, CalQLConfig(), INSTRUCTIONS), pix_obs),
        "pixels e2e, NCHW weights": (nchw, pix_obs),
        "pixels frozen encoder": (policy(pix_spec, CalQLConfig(encoder_frozen=True), INSTRUCTIONS), pix_obs),
        f"pixels frozen keypoint encoder, strides {args.keypoint_strides}": (policy(pix_spec, CalQLConfig(
            encoder_frozen=True, encoder="spatial", conv_strides=strides), INSTRUCTIONS), pix_obs),
        "state, discrete gripper": (policy({"state": (39,)}, CalQLConfig(discrete_gripper=True), ["a"]), state_obs),
        "pixels frozen keypoint encoder, discrete gripper": (policy(pix_spec, CalQLConfig(
            encoder_frozen=True, encoder="spatial", conv_strides=strides, discrete_gripper=True), INSTRUCTIONS),
            pix_obs),
        "PA-RL state, K=1 (base sample)": (policy({"state": (39,)}, pa_rl(1), ["a"]), state_obs),
        "PA-RL state, K=16 (best by Q)": (policy({"state": (39,)}, pa_rl(16), ["a"]), state_obs),
        f"PA-RL pixels e2e {S} px, K=1": (policy(pix_spec, pa_rl(1), INSTRUCTIONS), pix_obs),
        f"PA-RL pixels e2e {S} px, K=16": (policy(pix_spec, pa_rl(16), INSTRUCTIONS), pix_obs),
    }
    print(f"policy latency, 1 thread, {args.n} calls each (torch {torch.__version__}):")
    for name, (pol, obs) in cases.items():
        if args.only not in name:
            continue
        ms = measure(pol, obs, args.n)
        print(f"  {name:46s} p50 {np.percentile(ms, 50):6.3f} ms   p99 {np.percentile(ms, 99):6.3f} ms   "
              f"max {ms.max():6.2f} ms")


if __name__ == "__main__":
    main()
