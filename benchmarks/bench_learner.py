"""Learner speed: robot_calql's Cal-QL against a straightforward per-critic PyTorch Cal-QL, and
the pixel modes against the state mode.

    .venv/bin/python benchmarks/bench_learner.py                 # state and pixel modes
    .venv/bin/python benchmarks/bench_learner.py --mode state --rounds 5
    .venv/bin/python benchmarks/bench_learner.py --mode pixel --threads 2

Everything runs IN ONE PROCESS on the same synthetic batch and configuration (issue 3): state
mode obs 39, action 7, batch 256, two critics of 3x256, 10 CQL actions per set; pixel modes
64x64 RGB + proprio 10, batch 256, the RoboFuME encoder. Runs are interleaved in rounds and the
best and median round are printed, because this machine is shared and timings are noisy; the
CPU seconds per update (all threads) are less sensitive to other processes than wall time.

`--mode pixel` prints one table (issue 25): state fp32 / bf16; pixels end to end (the CNN
trained by the critic, random shift) in fp32 with channels-last weights (the default), fp32
with NCHW weights, and bf16; pixels with the frozen encoder re-encoding the images every update;
pixels with the frozen encoder and cached latents (what the replay feeds it, `encoder_frozen`),
fp32 and bf16; then the ratio frozen/cached : state at each precision. The reference pixel run
(`--ref-pixel-updates N`, off by default: about a minute per update on a 2-core CPU) re-encodes
every image per sampled action. With CUDA available, the GPU figures are printed too.
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

from robot_calql.agent import CalQL, CalQLConfig, configure_cpu_process  # noqa: E402
from robot_calql.data import IMAGE_LATENT  # noqa: E402

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


def cached_batch(agent: CalQL, batch: dict) -> dict:
    """`batch` with each image replaced by the frozen agent's latent of it, as the replay's cache
    serves it (robot_calql.data.replay)."""
    enc = agent.frame_encoder()
    out = dict(batch)
    for o in ("obs", "next_obs"):
        obs = {k: v for k, v in batch[o].items() if k != "image"}
        obs[IMAGE_LATENT] = torch.from_numpy(enc(batch[o]["image"].cpu())).to(batch[o]["image"].device)
        out[o] = obs
    return out


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
    """robot_calql against the per-critic reference (state mode; pixel mode with --ref-pixel-updates)."""
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


def pixel_modes(args) -> None:
    """State and every pixel mode on the same batch size and networks, interleaved in rounds."""
    A, B = 7, args.batch
    state_batch = make_batch(STATE_SPEC, A, B, "cpu")
    pixel_batch = make_batch(PIXEL_SPEC, A, B, "cpu")
    nchw = CalQL(PIXEL_SPEC, A, CalQLConfig(precision="fp32"))
    for enc in (nchw.encoder, nchw.encoder_target):
        enc.cnn.to(memory_format=torch.contiguous_format)  # the CNN's weights in NCHW layout, for comparison
    frozen = {p: CalQL(PIXEL_SPEC, A, CalQLConfig(precision=p, encoder_frozen=True)) for p in ("fp32", "bf16")}
    fast, slow = args.state_updates, args.pixel_updates
    cases = {  # name -> (update, batch, updates per round)
        "state fp32": (CalQL(STATE_SPEC, A, CalQLConfig(precision="fp32")).update, state_batch, fast),
        "state bf16": (CalQL(STATE_SPEC, A, CalQLConfig(precision="bf16")).update, state_batch, fast),
        "pixels e2e fp32 (channels-last)": (CalQL(PIXEL_SPEC, A, CalQLConfig(precision="fp32")).update,
                                            pixel_batch, slow),
        "pixels e2e fp32 (NCHW weights)": (nchw.update, pixel_batch, slow),
        "pixels e2e bf16 (channels-last)": (CalQL(PIXEL_SPEC, A, CalQLConfig(precision="bf16")).update,
                                            pixel_batch, slow),
        "pixels frozen fp32, re-encoded": (frozen["fp32"].update, pixel_batch, slow),
        "pixels frozen/cached fp32": (frozen["fp32"].update, cached_batch(frozen["fp32"], pixel_batch), fast),
        "pixels frozen/cached bf16": (frozen["bf16"].update, cached_batch(frozen["bf16"], pixel_batch), fast),
    }
    for upd, batch, _ in cases.values():
        upd(batch)  # warm-up
    rates: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):
        for name, (upd, batch, n) in cases.items():
            r, c = timed(upd, batch, n, "cpu")
            rates[name].append(r)
            cpu[name].append(c)
    print(f"\npixel modes, CPU ({torch.get_num_threads()} threads), batch {B}, {args.rounds} round(s) "
          f"({fast} updates per round, {slow} for the image-encoding rows), load {_load()}:")
    print(f"  {'':34s} {'best upd/s':>10s} {'median':>8s} {'CPU s/upd':>10s}")
    for name in cases:
        print(f"  {name:34s} {max(rates[name]):10.3f} {statistics.median(rates[name]):8.3f} {min(cpu[name]):10.3f}")
    for p in ("fp32", "bf16"):
        f, s = f"pixels frozen/cached {p}", f"state {p}"
        print(f"  ratio frozen/cached : state, {p}: best {max(rates[f]) / max(rates[s]):.2f}, "
              f"median {statistics.median(rates[f]) / statistics.median(rates[s]):.2f}, "
              f"CPU time {min(cpu[s]) / min(cpu[f]):.2f} (target >= 0.7)")


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
    for mode, spec in (("state", STATE_SPEC), ("pixel", PIXEL_SPEC), ("pixel frozen/cached", PIXEL_SPEC)):
        batch = make_batch(spec, 7, args.batch, "cuda")
        for prec in ("fp32", "bf16"):
            frozen = mode == "pixel frozen/cached"
            agent = CalQL(spec, 7, CalQLConfig(precision=prec, encoder_frozen=frozen), device="cuda")
            if frozen:
                batch = cached_batch(agent, batch)
            timed(agent.update, batch, 20, "cuda")
            r, _ = timed(agent.update, batch, 200, "cuda")
            print(f"  {mode:5s} robot_calql {prec}: {r:8.1f} updates/s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["state", "pixel", "all"], default="all")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--state-updates", type=int, default=20)
    p.add_argument("--pixel-updates", type=int, default=2, help="updates per round of the image-encoding rows")
    p.add_argument("--ref-pixel-updates", type=int, default=0,
                   help="updates of the reference in pixel mode (0: skip it; ~1 min per update on 2 cores)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--target", type=float, default=27.0, help="state-mode updates/s target (issue 3: 3x ~9/s)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    configure_cpu_process()  # what pretrain, finetune and the learner node set: subnormal flush, glibc heap
    torch.manual_seed(0)
    if args.mode in ("state", "all"):
        compare("state", args)
        ceiling(args)
    if args.mode in ("pixel", "all"):
        pixel_modes(args)
        if args.ref_pixel_updates > 0:
            compare("pixel", args)
    gpu(args)


if __name__ == "__main__":
    main()
