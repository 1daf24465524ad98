"""`motionaura bench denoiser`: forward + backward of our whole denoiser, every `spectral_mode`, against diffusers'
`CogVideoXTransformer3DModel` (the denoiser of the paper's released code) at matched size, from 256 to 16k
video tokens; medians of alternating rounds, ratios, the exponent of time against tokens, achieved FLOP/s
against the measured matmul peak, and each step's peak host memory.

Matched: width, depth, heads, MLP 4x, text length and text width. The peer is CogVideoX 1.0 with 3D RoPE (as
its 5B model), patch 2: a token grid T x H x W is fed as latents (B, T, 16, 2H, 2W), so it sees exactly
T*H*W video tokens (plus the text tokens its joint attention concatenates); its output layer maps D -> 2*2*16
= 64, so ours predicts K = 64 codes (D -> 64) and embeds K + 1 ids where it projects a 64-d patch. Ours: the
step `motionaura train` runs (value and grad of the mean cross-entropy w.r.t. the parameters); theirs: MSE
against a random target, `backward()`, gradients zeroed between steps; both float32, batch 1.

Isolation and fairness: every configuration (one model at one grid) lives in its own worker process, with an
address-space limit (`mem_limit_gb`), so a configuration that does not fit fails alone (reported "OOM") and
its peak RSS (`getrusage`) is its own. Each worker compiles and warms up, then the parent asks them for one round
in turn (alternating rounds, so machine load hits all alike) and takes medians; a round is the mean of as many
steps as fill `min_round_s` (one step at 16k tokens, about ten at 256). A "peak" worker times a
2048^3 float32 matmul in the same rounds: the machine's measured dense-matmul rate, against which our
XLA-counted FLOPs per step give the achieved fraction. PyTorch gets as many threads as the CPUs this process
may run on, which is what XLA's CPU client uses, and every worker starts under the same host allocator policy
(`host_memory`; the table's header names it).

    motionaura bench denoiser
    motionaura bench denoiser --grids=4x8x8,4x16x16 --modes=qkv_fft2,filter3d --rounds=5
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from motionaura_jax import host_memory
from motionaura_jax.models.spectral import SPECTRAL_MODES

PEER = "cogvideox"
PEAK = "matmul_peak"
PEAK_N = 2048
LATENT_CHANNELS, PATCH = 16, 2  # the peer's latent and patch: D -> PATCH*PATCH*LATENT_CHANNELS outputs
DEFAULT_GRIDS: tuple[tuple[int, int, int], ...] = ((4, 8, 8), (4, 16, 16), (4, 32, 32), (16, 32, 32))
DEFAULT_MODES: tuple[str, ...] = SPECTRAL_MODES  # qkv_fft2 (the default) first
OOM_MARKS = (
    "MemoryError",
    "RESOURCE_EXHAUSTED",
    "std::bad_alloc",
    "out of memory",
    "Out of memory",
    "can't allocate memory",
    "Cannot allocate memory",
)


@dataclasses.dataclass(frozen=True)
class DenoiserBench:
    """The matched size (width, depth, heads, text) and how it is timed; `mem_limit_gb` caps each worker."""

    width: int = 256
    depth: int = 2
    heads: int = 4
    text_len: int = 16
    batch: int = 1
    rounds: int = 3
    warmup: int = 1
    # A round times as many steps as fill this many seconds (at least one) and keeps their mean: a 50 ms step
    # timed once is at the mercy of a millisecond's noise, a 25 s step is not.
    min_round_s: float = 0.5
    mem_limit_gb: float = 12.0
    attention_chunk: int = 0  # ours: self-attention query rows per chunk (model.attention_chunk; 0: whole)
    # ours: blocks as one lax.scan (model.scan_layers). Off by default, as in the quickstart: on CPU the unrolled
    # stack steps faster. A scanned step's FLOPs are counted on its unrolled twin (see `_ours`).
    scan_layers: bool = False

    def __post_init__(self) -> None:
        if self.heads < 1 or self.width % self.heads or (self.width // self.heads) % 2:
            raise ValueError(f"width {self.width} must be a multiple of heads {self.heads}, head_dim even")
        if (self.width // self.heads) % 16:  # the peer's 3D RoPE splits head_dim 1/4 : 3/8 : 3/8, each even
            raise ValueError(f"head_dim {self.width // self.heads} must be a multiple of 16")
        if self.rounds < 1 or self.depth < 1:
            raise ValueError("rounds and depth must be >= 1")
        if self.min_round_s < 0:
            raise ValueError(f"min_round_s must be >= 0, got {self.min_round_s}")


def check_modes(modes: Sequence[str]) -> list[str]:
    unknown = [m for m in modes if m not in SPECTRAL_MODES]
    if unknown:
        raise ValueError(f"unknown modes {unknown}; use {', '.join(SPECTRAL_MODES)}")
    return list(modes)


def threads() -> int:
    """The CPUs this process may run on (XLA's CPU client sizes its thread pool the same way)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# ------------------------------------------------------------------------------------------------------------
# The steps, built inside a worker. Each returns (one_step, flops per step or None).


def _ours(mode: str, grid: tuple[int, int, int], bench: DenoiserBench) -> tuple[Callable[[], None], float]:
    import jax
    import jax.numpy as jnp

    from motionaura_jax.configs.t2v import denoiser_config
    from motionaura_jax.models import spectral
    from motionaura_jax.models.denoiser import SpectralDenoiser
    from motionaura_jax.parallel.sharding import unbox

    cfg = denoiser_config(
        "tiny",
        spectral_mode=mode,
        width=bench.width,
        depth=bench.depth,
        heads=bench.heads,
        mlp_ratio=4.0,
        vocab_size=PATCH * PATCH * LATENT_CHANNELS,
        text_dim=bench.width,
        remat=False,
        dtype="float32",
        attention_chunk=bench.attention_chunk,
        scan_layers=bench.scan_layers,
    )
    rng = np.random.default_rng(0)
    b = bench.batch
    ids = jnp.asarray(rng.integers(0, cfg.vocab_size + 1, (b, *grid)), jnp.int32)
    targets = jnp.asarray(rng.integers(0, cfg.vocab_size, (b, *grid)), jnp.int32)
    inputs = (
        ids,
        jnp.full((b,), 50, jnp.int32),
        jnp.full((b,), 8.0, jnp.float32),
        jnp.asarray(rng.normal(size=(b, bench.text_len, bench.width)), jnp.float32),
        jnp.ones((b, bench.text_len), bool),
    )

    def step_of(model_cfg):
        model = SpectralDenoiser(model_cfg)

        def loss(p):
            logits = model.apply({"params": p}, *inputs)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1))

        return model, jax.jit(jax.value_and_grad(loss))

    def flops_of(compiled) -> float:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return float(cost.get("flops", float("nan"))) if cost else float("nan")

    model, step = step_of(cfg)
    params = unbox(jax.jit(model.init)(jax.random.key(0), *inputs)["params"])
    params = jax.tree.map(lambda p: p + 0.01, params)  # zero-init gates carry a real gradient
    compiled = step.lower(params).compile()
    flops = flops_of(compiled)
    if bench.scan_layers or bench.attention_chunk or " while(" in compiled.as_text():
        # XLA counts a while loop's body once (the block scan, the attention's chunk loop, the qkv_fft2 core's
        # row blocks on a CPU): the FLOPs are those of the same step unrolled, unchunked, its maps whole
        # (compiled, not run; the chunks' recomputation not counted).
        unrolled = cfg.copy_and_resolve_references()
        unrolled.scan_layers = False
        unrolled.attention_chunk = 0
        twin, twin_step = step_of(unrolled)
        shapes = unbox(jax.eval_shape(twin.init, jax.random.key(0), *inputs)["params"])
        with spectral.whole_maps():
            flops = flops_of(twin_step.lower(shapes).compile())
    return lambda: jax.block_until_ready(compiled(params)), flops


def count_cpu_attention_flops() -> None:
    """Teach PyTorch's `FlopCounterMode` the CPU flash-attention ops, which it does not count.

    `scaled_dot_product_attention` dispatches on CPU to `_scaled_dot_product_flash_attention_for_cpu` (and its
    backward); the counter has formulas for the CUDA kernels only, so without these it counts none of the peer's
    attention and its GFLOP/s read low. The CUDA flash kernels' formulas apply unchanged (the backward counts
    the recomputed scores, as the kernel does)."""
    import torch
    from torch.utils import flop_counter

    aten = torch.ops.aten
    forward, backward = (
        aten._scaled_dot_product_flash_attention_for_cpu,
        aten._scaled_dot_product_flash_attention_for_cpu_backward,
    )
    if forward in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(forward)
    def _forward_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query, key, value)

    @flop_counter.register_flop_formula(backward)
    def _backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


def _peer(grid: tuple[int, int, int], bench: DenoiserBench) -> tuple[Callable[[], None], float]:
    import torch
    from diffusers import CogVideoXTransformer3DModel
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from torch.utils.flop_counter import FlopCounterMode

    count_cpu_attention_flops()
    torch.set_num_threads(threads())
    torch.manual_seed(0)
    t, h, w = grid
    head_dim = bench.width // bench.heads
    model = CogVideoXTransformer3DModel(
        num_attention_heads=bench.heads,
        attention_head_dim=head_dim,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        time_embed_dim=bench.width,
        text_embed_dim=bench.width,
        num_layers=bench.depth,
        sample_frames=4 * (t - 1) + 1,  # only sizes its (unused) sin-cos table; RoPE below is the grid's
        sample_height=PATCH * h,
        sample_width=PATCH * w,
        patch_size=PATCH,
        max_text_seq_length=bench.text_len,
        use_rotary_positional_embeddings=True,
    ).train()
    rope = get_3d_rotary_pos_embed(
        embed_dim=head_dim, crops_coords=((0, 0), (h, w)), grid_size=(h, w), temporal_size=t
    )
    latents = torch.randn(bench.batch, t, LATENT_CHANNELS, PATCH * h, PATCH * w)
    text = torch.randn(bench.batch, bench.text_len, bench.width)
    timestep = torch.full((bench.batch,), 50, dtype=torch.long)
    target = torch.randn_like(latents)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        out = model(latents, text, timestep, image_rotary_emb=rope).sample
        torch.nn.functional.mse_loss(out, target).backward()

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return step, float(counter.get_total_flops())


def _peak(bench: DenoiserBench) -> tuple[Callable[[], None], float]:
    import jax
    import jax.numpy as jnp

    a = jnp.asarray(np.random.default_rng(0).normal(size=(PEAK_N, PEAK_N)), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    return lambda: jax.block_until_ready(matmul(a)), 2.0 * PEAK_N**3


def build(model: str, grid: tuple[int, int, int], bench: DenoiserBench) -> tuple[Callable[[], None], float]:
    """One configuration's step (already warmed up) and its FLOPs per step."""
    if model == PEER:
        step, flops = _peer(grid, bench)
    elif model == PEAK:
        step, flops = _peak(bench)
    else:
        step, flops = _ours(model, grid, bench)
    for _ in range(bench.warmup):
        step()
    return step, flops


def time_round(step: Callable[[], None], min_round_s: float) -> tuple[float, int]:
    """One round: `step` run until `min_round_s` has passed (at least once); (mean seconds per step, steps)."""
    steps, start = 0, time.perf_counter()
    while True:
        step()
        steps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_round_s:
            return elapsed / steps, steps


def _rss_mb() -> float:
    """This process's peak resident memory in MiB. VmHWM first: getrusage's ru_maxrss also counts the parent's
    pages the child held between fork and exec, so a worker started by a big process would inherit its peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(spec_json: str) -> None:
    """One configuration in its own process: build, warm up, print `ready`, then one timed round
    (`time_round`) per `step` line on stdin; on `exit`, print the peak RSS. Every reply is one JSON line."""

    def reply(**kwargs: Any) -> None:
        print(json.dumps(kwargs), flush=True)

    spec = json.loads(spec_json)
    base_mb = _rss_mb()
    start = time.perf_counter()
    bench = DenoiserBench(**spec["bench"])
    step, flops = build(spec["model"], tuple(spec["grid"]), bench)
    reply(
        ready=True,
        flops=flops,
        compile_s=time.perf_counter() - start,
        base_rss_mb=base_mb,
        host_malloc=host_memory.policy_in_force(),
    )
    for line in sys.stdin:
        if line.strip() == "step":
            seconds, steps = time_round(step, bench.min_round_s)
            reply(seconds=seconds, steps=steps)
        else:
            break
    reply(peak_rss_mb=_rss_mb())


# ------------------------------------------------------------------------------------------------------------
# The parent: workers, alternating rounds, the table.


class _Worker:
    def __init__(self, model: str, grid: tuple[int, int, int], bench: DenoiserBench):
        self.model, self.grid, self.bench = model, grid, bench
        spec = json.dumps({"model": model, "grid": grid, "bench": dataclasses.asdict(bench)})
        # Every worker, the peer's included, starts under the host allocator policy `motionaura` runs under
        # (`host_memory`: on a CPU-only host, freed blocks reused on one CPU, huge pages on several): the same
        # for both sides.
        env = host_memory.with_policy(dict(os.environ, JAX_PLATFORMS="cpu", TQDM_DISABLE="1"))
        env.pop("XLA_FLAGS", None)  # one CPU device: fake device counts would split XLA's thread pool
        # The child caps its own address space before importing anything, so a configuration that does not
        # fit fails its allocation instead of waking the kernel's OOM killer (which may pick another process).
        code = (
            "import resource, sys; limit = int(sys.argv[2]); "
            "limit > 0 and resource.setrlimit(resource.RLIMIT_AS, (limit, limit)); "
            "from motionaura_jax.bench.denoiser import worker; worker(sys.argv[1])"
        )
        self.stderr = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, spec, str(int(bench.mem_limit_gb * 2**30))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,  # a file: a chatty library cannot fill a pipe and stall the worker
            text=True,
            env=env,
        )
        self.info: dict[str, Any] = {}
        self.times: list[float] = []
        self.steps: list[int] = []
        self.error = ""

    def _read(self) -> dict[str, Any] | None:
        line = self.proc.stdout.readline()
        while line and not line.startswith("{"):  # library chatter on stdout is not ours
            line = self.proc.stdout.readline()
        return json.loads(line) if line else None

    def _fail(self) -> None:
        code = self.proc.wait()  # its stdout closed: it has exited
        self.stderr.seek(0)
        err = self.stderr.read()
        # XLA, PyTorch and Python each word a failed allocation their own way; the kernel's OOM killer is -9.
        oom = any(s in err for s in OOM_MARKS) or code == -9
        last = [ln for ln in err.strip().splitlines() if ln.strip()][-1:] or ["no message"]
        self.error = (
            f"OOM at {self.bench.mem_limit_gb:g} GB" if oom else f"failed (exit {code}): {last[0][:160]}"
        )

    def ready(self) -> bool:
        msg = self._read()
        if msg is None:
            self._fail()
            return False
        self.info.update(msg)
        return True

    def step(self) -> bool:
        if self.error:
            return False
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        msg = self._read()
        if msg is None:
            self._fail()
            return False
        self.times.append(msg["seconds"])
        self.steps.append(msg["steps"])
        return True

    def close(self) -> None:
        if not self.error:
            self.proc.stdin.write("exit\n")
            self.proc.stdin.flush()
            msg = self._read()
            if msg:
                self.info.update(msg)
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.stderr.close()


class _LocalWorker:
    """A configuration in this process (`isolate=False`): no memory limit and no peak RSS of its own."""

    def __init__(self, model: str, grid: tuple[int, int, int], bench: DenoiserBench):
        self.model, self.error, self.times, self.steps = model, "", [], []
        self.min_round_s = bench.min_round_s
        start = time.perf_counter()
        self._step, flops = build(model, grid, bench)
        self.info = {"flops": flops, "compile_s": time.perf_counter() - start}

    def ready(self) -> bool:
        return True

    def step(self) -> bool:
        seconds, steps = time_round(self._step, self.min_round_s)
        self.times.append(seconds)
        self.steps.append(steps)
        return True

    def close(self) -> None:
        self._step = None


def exponent(tokens: Sequence[float], seconds: Sequence[float]) -> float:
    """Least-squares slope of log(time) against log(tokens): time ~ tokens^exponent."""
    if len(tokens) < 2:
        return float("nan")
    return float(np.polyfit(np.log(tokens), np.log(seconds), 1)[0])


def measure(
    grid: tuple[int, int, int], models: Sequence[str], bench: DenoiserBench, isolate: bool = True
) -> list[dict]:
    """Every model at one grid, each in its own worker process (`isolate`) or all in this one, timed in
    alternating rounds; one row per model."""
    workers = []
    for model in [*models, PEAK]:  # started one at a time: compiles do not compete with each other
        w = (_Worker if isolate else _LocalWorker)(model, grid, bench)
        w.ready()
        workers.append(w)
    for _ in range(bench.rounds):
        for w in workers:
            w.step()
    for w in workers:
        w.close()
    peak = workers[-1]
    peak_flops_s = peak.info["flops"] / statistics.median(peak.times) if peak.times else float("nan")
    by_model = {w.model: w for w in workers}
    peer = by_model.get(PEER)
    peer_s = statistics.median(peer.times) if peer and peer.times else float("nan")
    rows = []
    for w in workers[:-1]:
        median = statistics.median(w.times) if w.times else float("nan")
        flops = w.info.get("flops", float("nan"))
        rows.append(
            {
                "grid": "x".join(map(str, grid)),
                "tokens": math.prod(grid),
                "model": w.model,
                "status": w.error or "ok",
                "median_s": median,
                "min_s": min(w.times) if w.times else float("nan"),
                "times_s": w.times,
                "steps_per_round": w.steps,
                "speedup_vs_peer": peer_s / median,
                "flops": flops,
                "flops_per_s": flops / median,
                "peak_flops_per_s": peak_flops_s,
                "fraction_of_peak": flops / median / peak_flops_s,
                "peak_rss_mb": w.info.get("peak_rss_mb", float("nan")),
                "base_rss_mb": w.info.get("base_rss_mb", float("nan")),
                "compile_s": w.info.get("compile_s", float("nan")),
                "host_malloc": w.info.get("host_malloc", host_memory.policy_in_force()),
            }
        )
    return rows


def exponents(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per model: the fitted exponent over every size it ran at, and between each pair of neighbouring sizes."""
    out: dict[str, dict[str, float]] = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        ok = sorted((r["tokens"], r["median_s"]) for r in rows if r["model"] == model and r["status"] == "ok")
        fits = {"all": exponent([n for n, _ in ok], [s for _, s in ok])}
        for (n0, s0), (n1, s1) in zip(ok, ok[1:], strict=False):
            fits[f"{n0}->{n1}"] = exponent([n0, n1], [s0, s1])
        out[model] = fits
    return out


def run(
    *,
    grids: Sequence[tuple[int, int, int]] = DEFAULT_GRIDS,
    modes: Sequence[str] = DEFAULT_MODES,
    peer: bool = True,
    bench: DenoiserBench | None = None,
    isolate: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Rows per (grid, model), the exponents and the settings; `log` gets a line per finished grid.

    `isolate=False` runs every configuration in this process: quicker to start, but with no per-configuration
    memory limit or peak RSS (reported as "-")."""
    bench = bench or DenoiserBench()
    models = check_modes(modes) + ([PEER] if peer else [])
    rows: list[dict] = []
    for grid in grids:
        grid_rows = measure(tuple(grid), models, bench, isolate)
        rows.extend(grid_rows)
        if log:
            log(" ".join(f"{r['grid']} {r['model']}: {r['median_s']:.3f}s {r['status']}" for r in grid_rows))
    return {
        "settings": dataclasses.asdict(bench),
        "threads": threads(),
        "isolated": isolate,
        "cpu_count": os.cpu_count(),
        "rows": rows,
        "exponents": exponents(rows),
    }


def _fmt(value: float, spec: str, unit: str = "") -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:{spec}}{unit}"


def format_table(results: dict[str, Any]) -> str:
    """The results of `run` as markdown: one row per (grid, model), then the exponents."""
    s = results["settings"]
    load = " ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    lines = [
        f"denoiser fwd+bwd, float32, batch {s['batch']}: width {s['width']}, depth {s['depth']}, heads "
        f"{s['heads']}, MLP 4x, text {s['text_len']} tokens; median of {s['rounds']} alternating rounds "
        f"(each the mean of the steps that fill {s.get('min_round_s', 0):g} s, at least one); "
        f"threads {results['threads']} (of {results['cpu_count']} CPUs), worker memory limit "
        f"{s['mem_limit_gb']:g} GB, self-attention query chunk {s['attention_chunk'] or 'none'}, blocks "
        f"{'scanned' if s.get('scan_layers') else 'unrolled'}, host malloc "
        f"{'/'.join(sorted({r.get('host_malloc', 'system') for r in results['rows']}))}, load average {load}",
        "",
        "| grid | tokens | model | median s | min s | peer / ours | GFLOP/step | GFLOP/s | of peak | "
        "peak RSS GB | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['grid']} | {r['tokens']} | {r['model']} | {_fmt(r['median_s'], '.3f')} | "
            f"{_fmt(r['min_s'], '.3f')} | {_fmt(r['speedup_vs_peer'], '.2f', 'x')} | "
            f"{_fmt(r['flops'] / 1e9, '.1f')} | {_fmt(r['flops_per_s'] / 1e9, '.1f')} | "
            f"{_fmt(100 * r['fraction_of_peak'], '.0f', '%')} | {_fmt(r['peak_rss_mb'] / 1024, '.2f')} | "
            f"{r['status']} |"
        )
    peaks = sorted({(r["grid"], r["peak_flops_per_s"]) for r in results["rows"]})
    lines += [
        "",
        "measured matmul peak (2048^3 float32, same rounds): "
        + ", ".join(f"{g}: {_fmt(p / 1e9, '.1f')} GFLOP/s" for g, p in peaks),
        "",
        "| model | exponent (all sizes) | " + " | ".join(_pair_keys(results)) + " |",
        "|---|---|" + "---|" * len(_pair_keys(results)),
    ]
    for model, fits in results["exponents"].items():
        cells = [_fmt(fits.get(k, float("nan")), ".2f") for k in _pair_keys(results)]
        lines.append(f"| {model} | {_fmt(fits['all'], '.2f')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pair_keys(results: dict[str, Any]) -> list[str]:
    tokens = sorted({r["tokens"] for r in results["rows"]})
    return [f"{a}->{b}" for a, b in zip(tokens, tokens[1:], strict=False)]
