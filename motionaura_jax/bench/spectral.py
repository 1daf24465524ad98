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

import dataclasses
import os
import statistics
import time
from collections.abc import Sequence

import numpy as np

from motionaura_jax.models.spectral import SPECTRAL_MODES

# qkv_fft2 computed literally (FFT2 over tokens and head_dim, all query frequencies): same output, more work.
LITERAL = "qkv_fft2[fft2]"
KNOWN_MODES = SPECTRAL_MODES + (LITERAL,)
DEFAULT_GRIDS: tuple[tuple[int, int, int], ...] = ((4, 8, 8), (4, 16, 16), (8, 16, 16))
DEFAULT_MODES: tuple[str, ...] = (SPECTRAL_MODES[0], LITERAL) + SPECTRAL_MODES[1:]
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class BlockBench:
    """The block measured (its width, heads, inputs and dtype) and how it is timed (rounds, warm-up calls)."""

    width: int = 256
    heads: int = 4
    batch: int = 2
    text_len: int = 32
    dtype: str = "float32"
    rounds: int = 5
    warmup: int = 1

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        # The block's 3D RoPE needs head_dim >= 6: one rotation pair per axis (models/attention.py).
        if self.heads < 1 or self.width % self.heads or (self.width // self.heads) < 6:
            raise ValueError(
                f"width {self.width} must be a multiple of heads {self.heads} with head_dim >= 6"
            )


def parse_grid(text: str) -> tuple[int, int, int]:
    """`"4x16x16"` -> (4, 16, 16); a ValueError that names the text otherwise."""
    try:
        t, h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise ValueError(f"grid {text!r} must look like 4x16x16 (frames x height x width)") from err
    return t, h, w


def check_modes(modes: Sequence[str]) -> list[str]:
    """The modes to time, with "none" (plain attention, the peer every ratio is taken against) added last
    when missing; a ValueError naming the unknown ones and the known ones otherwise."""
    unknown = [m for m in modes if m not in KNOWN_MODES]
    if unknown:
        raise ValueError(f"unknown modes {unknown}; use {', '.join(KNOWN_MODES)}")
    return list(modes) if "none" in modes else [*modes, "none"]


def build_step(mode: str, grid: tuple[int, int, int], bench: BlockBench):
    """A jitted fwd+bwd of one block and its arguments."""
    import jax
    import jax.numpy as jnp

    from motionaura_jax.configs.t2v import denoiser_config
    from motionaura_jax.models.denoiser import DenoiserBlock
    from motionaura_jax.parallel.sharding import unbox

    literal = {"qkv_fft2_impl": "fft2"} if mode == LITERAL else {}
    cfg = denoiser_config(
        "tiny",
        spectral_mode="qkv_fft2" if mode == LITERAL else mode,
        **literal,
        width=bench.width,
        heads=bench.heads,
        dtype=bench.dtype,
        remat=False,
        scan_layers=False,
    )
    tokens = grid[0] * grid[1] * grid[2]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(bench.batch, tokens, bench.width)), cfg.dtype)
    c = jnp.asarray(rng.normal(size=(bench.batch, bench.width)), jnp.float32)
    text = jnp.asarray(rng.normal(size=(bench.batch, bench.text_len, bench.width)), cfg.dtype)
    mask = jnp.asarray(np.arange(bench.text_len)[None, :] < bench.text_len - 3).repeat(bench.batch, 0)
    block = DenoiserBlock(cfg, grid)
    params = unbox(jax.jit(block.init)(jax.random.key(0), x, c, text, mask)["params"])
    # Move the zero-init gates off zero so every branch carries a real gradient.
    params = jax.tree.map(lambda p: p + 0.01, params)

    def loss(p, x):
        out, _ = block.apply({"params": p}, x, c, text, mask)
        return jnp.mean(jnp.square(out.astype(jnp.float32)))

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    return step, (params, x)


def measure(grid: tuple[int, int, int], modes: list[str], bench: BlockBench) -> list[dict]:
    """Every mode compiled at one grid, then timed in alternating rounds; one row per mode."""
    import jax

    steps, compile_s = {}, {}
    for mode in modes:
        start = time.perf_counter()
        step, step_args = build_step(mode, grid, bench)
        for _ in range(max(bench.warmup, 1)):
            jax.block_until_ready(step(*step_args))
        compile_s[mode] = time.perf_counter() - start
        steps[mode] = (step, step_args)
    times = {mode: [] for mode in modes}
    for _ in range(bench.rounds):
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


def format_table(rows: list[dict], bench: BlockBench) -> str:
    """The rows of `run` as a markdown table under a header naming the block and the device."""
    import jax

    device = jax.devices()[0]
    load = " ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    lines = [
        f"one denoiser block, fwd+bwd: width={bench.width} heads={bench.heads} batch={bench.batch} "
        f"text_len={bench.text_len} dtype={bench.dtype} rounds={bench.rounds}",
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


def run(
    *,
    grids: Sequence[tuple[int, int, int]] = DEFAULT_GRIDS,
    modes: Sequence[str] = DEFAULT_MODES,
    bench: BlockBench | None = None,
) -> list[dict]:
    """One row per (grid, mode): median and min ms of a fwd+bwd, its ratio to "none" and compile time."""
    from tqdm import tqdm

    bench = bench or BlockBench()
    modes = check_modes(modes)
    rows = []
    for grid in tqdm(grids, desc="grids", disable=len(grids) < 2):
        rows.extend(measure(grid, modes, bench))
    return rows
