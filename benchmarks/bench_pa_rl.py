"""PA-RL's costs: acting latency of the diffusion policy and the price of an update.

    .venv/bin/python benchmarks/bench_pa_rl.py [--n 2000] [--updates 20]

Acting: `CalQL.act` with `policy=diffusion` (robot_calql/agent/pa_rl.py; alone, and acting with
the best of 16 samples by Q, `pa_rl.act_samples=16`), one observation, one thread, deterministic (temperature 0) and exploring (temperature 1), end to end (numpy in, numpy
out) as the policy node calls it, beside the Gaussian actor: state mode (obs 39, action 7) and
pixels (64x64 RGB + proprio 10 + instruction, the RoboFuME encoder, end to end and frozen).
Targets (issue 30): p99 < 5 ms (state) and < 20 ms (pixels).
Updating: milliseconds per `CalQL.update` in state mode, batch 256, 256-wide nets, on an
offline-only batch (Cal-QL + diffusion BC) and on a mixed batch (Cal-QL + sample-rerank-optimize-
distill), against the Gaussian agent's update.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from robot_calql.agent import CalQL, CalQLConfig, configure_cpu_process


def latency(agent: CalQL, obs: dict, n: int, deterministic: bool) -> np.ndarray:
    for _ in range(50):
        agent.act(obs, deterministic=deterministic)
    out = np.empty(n)
    for i in range(n):
        t = time.perf_counter()
        agent.act(obs, deterministic=deterministic)
        out[i] = time.perf_counter() - t
    return out * 1e3


def batch(B: int, S: int, A: int, online: bool) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"obs": {"state": torch.randn(B, S, generator=g)}, "next_obs": {"state": torch.randn(B, S, generator=g)},
            "action": torch.rand(B, A, generator=g) * 2 - 1, "reward": torch.zeros(B), "done": torch.zeros(B),
            "mc_return": torch.zeros(B), "online": torch.arange(B) >= (B // 2 if online else B)}


def update_ms(agent: CalQL, b: dict, n: int) -> float:
    for _ in range(3):
        agent.update(b)
    t = time.perf_counter()
    for _ in range(n):
        agent.update(b)
    return (time.perf_counter() - t) / n * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="act calls per case")
    p.add_argument("--updates", type=int, default=20, help="updates per update case (0: skip)")
    args = p.parse_args()
    torch.set_num_threads(1)
    configure_cpu_process()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    diff = {"policy": "diffusion", "pa_rl": {"act_samples": 1}}  # the base policy's sample alone
    pix_spec = {"image": (64, 64, 3), "proprio": (10,)}
    pix_obs = {"image": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
               "proprio": rng.normal(size=10).astype(np.float32), "instruction": 2}
    state_obs = {"state": rng.normal(size=39).astype(np.float32)}
    cases = {
        "state, Gaussian actor": (CalQL({"state": (39,)}, 7, CalQLConfig()), state_obs),
        "state, diffusion alone (5 steps)": (CalQL({"state": (39,)}, 7, CalQLConfig(**diff)), state_obs),
        "state, diffusion, best of 16 by Q": (
            CalQL({"state": (39,)}, 7, CalQLConfig(policy="diffusion", pa_rl={"act_samples": 16})), state_obs),
        "pixels e2e, diffusion alone": (CalQL(pix_spec, 7, CalQLConfig(**diff), num_instructions=4), pix_obs),
        "pixels frozen encoder, diffusion alone": (
            CalQL(pix_spec, 7, CalQLConfig(encoder_frozen=True, **diff), num_instructions=4), pix_obs),
        "pixels e2e, diffusion, best of 16 by Q": (
            CalQL(pix_spec, 7, CalQLConfig(policy="diffusion", pa_rl={"act_samples": 16}), num_instructions=4), pix_obs),
    }
    print(f"policy latency, 1 thread, {args.n} calls each (torch {torch.__version__}):")
    for name, (agent, obs) in cases.items():
        for det in (True, False):
            ms = latency(agent, obs, args.n, det)
            print(f"  {name:40s} {'mean ' if det else 'explore'}  p50 {np.percentile(ms, 50):6.3f} ms   "
                  f"p99 {np.percentile(ms, 99):6.3f} ms   max {ms.max():6.2f} ms")
    if args.updates:
        print(f"update cost, state 39 / action 7, batch 256, 1 thread, {args.updates} updates each:")
        gauss = CalQL({"state": (39,)}, 7, CalQLConfig())
        parl = CalQL({"state": (39,)}, 7, CalQLConfig(policy="diffusion"))
        print(f"  Gaussian Cal-QL                         {update_ms(gauss, batch(256, 39, 7, True), args.updates):7.1f} ms")
        print(f"  PA-RL, offline batch (BC)               {update_ms(parl, batch(256, 39, 7, False), args.updates):7.1f} ms")
        print(f"  PA-RL, mixed batch (rerank + distill)   {update_ms(parl, batch(256, 39, 7, True), args.updates):7.1f} ms")


if __name__ == "__main__":
    main()
