"""`motionaura bench spectral`: forward+backward time of one denoiser block per `spectral_mode`, against plain
attention ("none") measured in the same run.

For each token grid (T', H', W') every mode's block is compiled once (jit of the gradient of a scalar of its
output w.r.t. the parameters and the input), then timed in alternating rounds (qkv_fft2, fnet_mix, ...,
none, qkv_fft2, ...) so that machine load hits every mode alike; the table reports medians and the ratio to
"none" at the same grid.

    motionaura bench spectral
    motionaura bench spectral --grids=4x16x16,5x32x32 --width=1024 --heads=16 --dtype=bfloat16   # accelerator
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from motionaura_jax.models.spectral import SPECTRAL_MODES

# qkv_fft2 computed literally (FFT2 over tokens and head_dim, all query frequencies): same output, more work.
LITERAL = "qkv_fft2[fft2]"


def parse_grid(text: str) -> tuple[int, int, int]:
    try:
        t, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"grid {text!r} must look like 4x16x16 (frames x height x width)"
        ) from err
    return t, h, w


def build_step(mode: str, grid: tuple[int, int, int], args: argparse.Namespace):
    """A jitted fwd+bwd of one block and its arguments."""
    import jax
    import jax.numpy as jnp

    from motionaura_jax.models.denoiser import DenoiserBlock, denoiser_config
    from motionaura_jax.parallel.sharding import unbox

    impl = "fft2" if mode == LITERAL else "rfft"
    cfg = denoiser_config(
        "tiny",
        spectral_mode="qkv_fft2" if mode == LITERAL else mode,
        qkv_fft2_impl=impl,
        width=args.width,
        heads=args.heads,
        dtype=args.dtype,
        remat=False,
        scan_layers=False,
    )
    tokens = grid[0] * grid[1] * grid[2]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(args.batch, tokens, args.width)), cfg.dtype)
    c = jnp.asarray(rng.normal(size=(args.batch, args.width)), jnp.float32)
    text = jnp.asarray(rng.normal(size=(args.batch, args.text_len, args.width)), cfg.dtype)
    mask = jnp.asarray(np.arange(args.text_len)[None, :] < args.text_len - 3).repeat(args.batch, 0)
    block = DenoiserBlock(cfg, grid)
    params = unbox(jax.jit(block.init)(jax.random.key(0), x, c, text, mask)["params"])
    # Move the zero-init gates off zero so every branch carries a real gradient.
    params = jax.tree.map(lambda p: p + 0.01, params)

    def loss(p, x):
        out, _ = block.apply({"params": p}, x, c, text, mask)
        return jnp.mean(jnp.square(out.astype(jnp.float32)))

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    return step, (params, x)


def measure(grid: tuple[int, int, int], modes: list[str], args: argparse.Namespace) -> list[dict]:
    import jax

    steps, compile_s = {}, {}
    for mode in modes:
        start = time.perf_counter()
        step, step_args = build_step(mode, grid, args)
        for _ in range(max(args.warmup, 1)):
            jax.block_until_ready(step(*step_args))
        compile_s[mode] = time.perf_counter() - start
        steps[mode] = (step, step_args)
    times = {mode: [] for mode in modes}
    for _ in range(args.rounds):
        for mode in modes:
            step, step_args = steps[mode]
            start = time.perf_counter()
            jax.block_until_ready(step(*step_args))
            times[mode].append(time.perf_counter() - start)
    base = statistics.median(times["none"]) if "none" in times else None
    rows = []
    for mode in modes:
        median = statistics.median(times[mode])
        rows.append(
            {
                "grid": "x".join(map(str, grid)),
                "tokens": grid[0] * grid[1] * grid[2],
                "mode": mode,
                "median_ms": 1e3 * median,
                "min_ms": 1e3 * min(times[mode]),
                "ratio": median / base if base else float("nan"),
                "compile_s": compile_s[mode],
            }
        )
    return rows


def format_table(rows: list[dict], args: argparse.Namespace) -> str:
    import jax

    device = jax.devices()[0]
    load = " ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    lines = [
        f"one denoiser block, fwd+bwd: width={args.width} heads={args.heads} batch={args.batch} "
        f"text_len={args.text_len} dtype={args.dtype} rounds={args.rounds}",
        f"device: {device.platform} {device.device_kind} (x{jax.device_count()}), load average {load}",
        "",
        "| grid | tokens | spectral_mode | median ms | min ms | vs none | compile+warmup s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['grid']} | {r['tokens']} | {r['mode']} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | "
            f"{r['ratio']:.2f}x | {r['compile_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="motionaura bench spectral",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--grids", default="4x8x8,4x16x16,8x16x16", help="comma-separated latent grids TxHxW (tokens = T*H*W)"
    )
    parser.add_argument(
        "--modes",
        default=",".join((SPECTRAL_MODES[0], LITERAL) + SPECTRAL_MODES[1:]),
        help=f"comma-separated spectral modes; {LITERAL} is qkv_fft2 computed literally",
    )
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--text-len", type=int, default=32)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        grids = [parse_grid(g) for g in args.grids.split(",") if g]
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in SPECTRAL_MODES + (LITERAL,)]
    if unknown:
        parser.error(f"unknown modes {unknown}; use {', '.join(SPECTRAL_MODES + (LITERAL,))}")
    if "none" not in modes:
        modes.append("none")  # the peer every ratio is taken against
    if args.width % args.heads or (args.width // args.heads) < 6:
        parser.error(f"--width {args.width} must be a multiple of --heads {args.heads} with head_dim >= 6")

    from tqdm import tqdm

    rows = []
    for grid in tqdm(grids, desc="grids", disable=len(grids) < 2):
        rows.extend(measure(grid, modes, args))
    print(format_table(rows, args))
    return 0
