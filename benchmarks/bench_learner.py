"""Learner speed: robot_calql's Cal-QL against a straightforward per-critic PyTorch Cal-QL.

    .venv/bin/python benchmarks/bench_learner.py                 # state and pixel mode
    .venv/bin/python benchmarks/bench_learner.py --mode state --rounds 5

Both run IN ONE PROCESS on the same synthetic batch and configuration (issue 3): state mode
obs 39, action 7, batch 256, two critics of 3x256, 10 CQL actions per set; pixel mode 64x64 RGB
+ proprio 10, batch 256, the RoboFuME encoder. Runs are interleaved in rounds and the best and
median round are printed, because this machine is shared and timings are noisy; the CPU
seconds per update (all threads) are less sensitive to other processes than wall time. The reference
pixel run is limited to `--ref-pixel-updates` updates since it re-encodes every image per
sampled action. With CUDA available, the GPU figures for robot_calql are printed too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference_calql import ReferenceCalQL  # noqa: E402

from robot_calql.agent import CalQL, CalQLConfig  # noqa: E402

STATE_SPEC = {"state": (39,)}
PIXEL_SPEC = {"image": (64, 64, 3), "proprio": (10,)}


def make_batch(spec: dict, action_dim: int, batch_size: int, device: str) -> dict:
    g = torch.Generator().manual_seed(0)

    def obs():
        o = {}
        for k, shape in spec.items():
            if k == "image":
                o[k] = torch.randint(0, 256, (batch_size, *shape), dtype=torch.uint8, generator=g)
            else:
                o[k] = torch.randn(batch_size, *shape, generator=g)
        return {k: v.to(device) for k, v in o.items()}

    return {
        "obs": obs(), "next_obs": obs(),
        "action": (torch.rand(batch_size, action_dim, generator=g) * 2 - 1).to(device),
        "reward": torch.randn(batch_size, generator=g).to(device),
        "done": (torch.rand(batch_size, generator=g) < 0.05).float().to(device),
        "mc_return": torch.randn(batch_size, generator=g).to(device),
    }


def timed(update, batch, n: int, device: str) -> tuple[float, float]:
    """(updates/s wall clock, CPU seconds per update summed over threads) over n updates."""
    if device == "cuda":
        torch.cuda.synchronize()
    t, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        update(batch)
    if device == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t), (time.process_time() - c) / n


def _load() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "?"


def compare(mode: str, args) -> None:
    spec = STATE_SPEC if mode == "state" else PIXEL_SPEC
    A, B = 7, args.batch
    batch = make_batch(spec, A, B, "cpu")
    bmm16 = CalQL(spec, A, CalQLConfig(precision="bf16"))
    for critic in (bmm16.critic, bmm16.critic_target):
        critic.fused_cpu = False  # the batched-bmm critic, for comparison with the fused default
    agents = {
        "robot_calql fp32": CalQL(spec, A, CalQLConfig(precision="fp32")).update,
        "robot_calql bf16": CalQL(spec, A, CalQLConfig(precision="bf16")).update,
        "robot_calql bf16, bmm": bmm16.update,
    }
    ref = ReferenceCalQL(spec, A).update
    n_ours = args.state_updates if mode == "state" else args.pixel_updates
    n_ref = args.state_updates if mode == "state" else args.ref_pixel_updates
    for upd in agents.values():
        upd(batch)  # warm-up (allocations, first-call overheads)
    if mode == "state":
        ref(batch)
    rates: dict[str, list[float]] = {k: [] for k in [*agents, "reference (per-critic)"]}
    cpu: dict[str, list[float]] = {k: [] for k in rates}
    rounds = args.rounds if mode == "state" else 1
    for _ in range(rounds):
        for name, upd in [*agents.items(), ("reference (per-critic)", ref)]:
            r, c = timed(upd, batch, n_ref if upd is ref else n_ours, "cpu")
            rates[name].append(r)
            cpu[name].append(c)
    ref_best = max(rates["reference (per-critic)"])
    ref_cpu = min(cpu["reference (per-critic)"])
    print(f"\n{mode} mode, CPU ({torch.get_num_threads()} threads), batch {B}, {rounds} round(s), load {_load()}:")
    print(f"  {'':26s} {'best upd/s':>10s} {'median':>8s} {'x ref':>6s} {'CPU s/upd':>10s} {'x ref CPU':>9s}")
    for name, r in rates.items():
        c = min(cpu[name])
        print(f"  {name:26s} {max(r):10.3f} {statistics.median(r):8.3f} {max(r) / ref_best:6.2f} "
              f"{c:10.3f} {ref_cpu / c:9.2f}")


def ceiling(args) -> None:
    """How fast the state-mode update could possibly run here: its matmul arithmetic (counted)
    divided by this machine's batched-matmul rate at the update's own layer shape (measured now).
    No implementation of the same update (same network, same 31 critic evaluations per state)
    can beat this ceiling on this CPU; the issue's 3x target is compared against it."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = CalQLConfig()
    batch = make_batch(STATE_SPEC, 7, args.batch, "cpu")
    agent = CalQL(STATE_SPEC, 7, cfg)
    agent.update(batch)
    with FlopCounterMode(display=False) as fc:
        agent.update(batch)
    gflop = fc.get_total_flops() / 1e9
    E, H, rows = cfg.num_critics, cfg.critic_hidden[0], args.batch * (1 + 3 * cfg.cql_n_actions)

    def bmm_rate(dtype: torch.dtype, n: int = 30) -> float:
        x, w = torch.randn(E, rows, H).to(dtype), torch.randn(E, H, H).to(dtype)
        for _ in range(3):
            torch.bmm(x, w)
        t = time.perf_counter()
        for _ in range(n):
            torch.bmm(x, w)
        return 2 * E * rows * H * H * n / (time.perf_counter() - t) / 1e9

    print(f"\nceiling (state mode, {torch.get_num_threads()} threads, load {_load()}): {gflop:.2f} GFLOP of matmuls "
          f"per update; batched matmul ({E} x {rows}x{H} @ {H}x{H}) runs here at")
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        rate = max(bmm_rate(dtype) for _ in range(3))
        print(f"  {name}: {rate:7.1f} GFLOP/s -> at most {rate / gflop:5.1f} updates/s "
              f"(a rate of {args.target:.0f}/s would need {100 * args.target * gflop / rate:.0f}% of it)")


def gpu(args) -> None:
    if not torch.cuda.is_available():
        print("\nGPU: CUDA not available, no GPU figure")
        return
    print(f"\nGPU ({torch.cuda.get_device_name()}), batch {args.batch}:")
    for mode, spec in (("state", STATE_SPEC), ("pixel", PIXEL_SPEC)):
        batch = make_batch(spec, 7, args.batch, "cuda")
        for prec in ("fp32", "bf16"):
            agent = CalQL(spec, 7, CalQLConfig(precision=prec), device="cuda")
            timed(agent.update, batch, 20, "cuda")
            r, _ = timed(agent.update, batch, 200, "cuda")
            print(f"  {mode:5s} robot_calql {prec}: {r:8.1f} updates/s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["state", "pixel", "all"], default="all")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--state-updates", type=int, default=20)
    p.add_argument("--pixel-updates", type=int, default=3)
    p.add_argument("--ref-pixel-updates", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--target", type=float, default=27.0, help="state-mode updates/s target (issue 3: 3x ~9/s)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.mode in ("state", "all"):
        compare("state", args)
        ceiling(args)
    if args.mode in ("pixel", "all"):
        compare("pixel", args)
    gpu(args)


if __name__ == "__main__":
    main()
