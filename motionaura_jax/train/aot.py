"""Ahead-of-time compile for TPU topologies on this CPU: does a stage's train step fit, and how fast would it be?

    report = compile_train(config, "v5p-64")        # the step `motionaura train` runs, compiled through libtpu
    check_fits(report)                               # DoesNotFit: the numbers and the levers that would help

The train step is the loop's own (`loop.build` + `loop.jit_train_step`: same shardings, same donated state, same
remat and dtype) on abstract inputs (ShapeDtypeStructs carrying shardings on the topology's devices; the batch
from the task's `batch_spec` on its `batch_axes`), lowered and compiled by libtpu's PJRT plugin
(`jax.experimental.topologies`, no TPU needed). Per device it reports XLA's memory analysis (arguments, outputs,
temporaries; total = arguments + outputs - aliased + temporaries + code) against the chip's HBM, XLA's FLOPs,
the step time those FLOPs take at a stated MFU, and the compile time.

XLA's cost analysis counts the body of a loop once (a `scan` over 40 layers reads as one layer). For a config
with `model.scan_layers` the FLOPs therefore come from two extra compiles of the same step with the layers
unrolled at depth 1 and 2: FLOPs(depth) = F1 + (depth - 1) * (F2 - F1), exact for a stack of equal layers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from motionaura_jax.models import spectral
from motionaura_jax.parallel import mesh as mesh_lib
from motionaura_jax.parallel import sharding as sharding_lib
from motionaura_jax.train import loop

GB = 1e9


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU generation: what a slice name counts (`cores_per_chip` 2: v4-64 = 32 chips), the torus rank,
    HBM per chip and peak dense bf16 FLOP/s per chip (vendor figures, decimal GB)."""

    name: str
    device_kind: str
    hbm_bytes: float
    peak_bf16_flops: float
    cores_per_chip: int
    torus_dims: int


CHIPS = {
    "v4": Chip("v4", "TPU v4", 32 * GB, 275e12, 2, 3),
    "v5e": Chip("v5e", "TPU v5 lite", 16 * GB, 197e12, 1, 2),
    "v5p": Chip("v5p", "TPU v5", 95 * GB, 459e12, 2, 3),
    "v6e": Chip("v6e", "TPU v6 lite", 32 * GB, 918e12, 1, 2),
}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6lite": "v6e"}
# Slice shapes by chip count (Cloud TPU's standard ones).
_SHAPES_3D = {
    1: "1x1x1", 2: "1x1x2", 4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
    256: "4x8x8", 512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16",
}  # fmt: skip
_SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}


class TopologyError(ValueError):
    """A topology name that names no TPU slice."""


class DoesNotFit(RuntimeError):
    """The compiled step needs more HBM per chip than allowed; `.report` holds the numbers."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


def parse_topology(name: str) -> tuple[Chip, str]:
    """ "v5p-64" (Cloud TPU slice name: v4/v5p count TensorCores, v5e/v6e chips) or "v5p:2x4x4" (chips per
    torus axis) -> (chip, the libtpu topology string)."""
    text = name.strip().lower()
    sep = ":" if ":" in text else "-"
    kind, _, size = text.partition(sep)
    chip = CHIPS.get(_ALIASES.get(kind, kind))
    if chip is None or not size:
        raise TopologyError(
            f"topology {name!r}: use KIND-N (a Cloud TPU slice, e.g. v5p-64, v5e-256) or KIND:AxBxC, with KIND "
            f"one of {', '.join(CHIPS)}"
        )
    if sep == ":":
        dims = size.split("x")
        if len(dims) != chip.torus_dims or not all(d.isdigit() and int(d) > 0 for d in dims):
            raise TopologyError(f"topology {name!r}: {chip.name} needs {chip.torus_dims} sizes like 2x2x1")
        return chip, f"{chip.name}:{size}"
    if not size.isdigit() or int(size) % chip.cores_per_chip:
        raise TopologyError(f"topology {name!r}: the size must be a multiple of {chip.cores_per_chip}")
    chips = int(size) // chip.cores_per_chip
    shapes = _SHAPES_3D if chip.torus_dims == 3 else _SHAPES_2D
    if chips not in shapes:
        known = ", ".join(f"{chip.name}-{c * chip.cores_per_chip}" for c in shapes)
        raise TopologyError(
            f"topology {name!r}: no standard {chip.name} slice of {chips} chips; known: {known}"
        )
    return chip, f"{chip.name}:{shapes[chips]}"


def topology_devices(name: str) -> tuple[Chip, str, list]:
    """(chip, libtpu topology string, compile-only devices) through libtpu's PJRT plugin; no TPU needed."""
    chip, desc = parse_topology(name)
    try:
        import libtpu  # noqa: F401
    except ImportError as error:
        raise RuntimeError(
            "ahead-of-time TPU compile needs libtpu: pip install -r requirements-test.txt (libtpu==0.0.42.1, the "
            "release jax[tpu]==0.10.2 pins)"
        ) from error
    # Another process holding libtpu's lock file must not stop a compile-only client, and on a machine without
    # a TPU libtpu's metadata probe only prints warnings: these are its documented switches.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_WORKER_ID", "0")
    from jax.experimental import topologies

    devices = list(topologies.get_topology_desc(desc, "tpu").devices)
    if devices[0].device_kind != chip.device_kind:
        raise TopologyError(
            f"libtpu made {devices[0].device_kind!r} devices for {desc}, not {chip.device_kind!r}"
        )
    return chip, desc, devices


# ---------------------------------------------------------------------------------------------------------------
# Reports


def _cost(compiled) -> dict:
    cost = compiled.cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost) or {}


def _memory(compiled) -> dict[str, int]:
    m = compiled.memory_analysis()
    out = {
        "argument": int(m.argument_size_in_bytes),
        "output": int(m.output_size_in_bytes),
        "alias": int(m.alias_size_in_bytes),
        "temp": int(m.temp_size_in_bytes),
        "code": int(m.generated_code_size_in_bytes),
    }
    out["total"] = out["argument"] + out["output"] - out["alias"] + out["temp"] + out["code"]
    return out


def _mesh_dict(mesh: Mesh) -> dict[str, int]:
    return {name: int(size) for name, size in mesh.shape.items()}


def tokens_per_example(config: ml_collections.ConfigDict) -> int:
    """Tokens one example is: the t2v token grid, the tokenizer's latent grid, the tiny task's length."""
    if config.task == "t2v":
        return math.prod(int(g) for g in config.tokens.grid)
    if config.task == "vae":
        m, d = config.model, config.data
        frames = 1 + (int(d.frames) - 1) // 2 ** sum(bool(x) for x in m.down_time)
        side = int(d.size) // (int(m.stem_patch) * 2 ** sum(bool(x) for x in m.down_space))
        return frames * side * side
    return int(config.data.length)


def _replicated_params(setup: loop.Setup, num_devices: int) -> list[dict]:
    """The largest parameters that no mesh axis shards (each device holds all of them)."""
    params = setup.task.params_of(setup.abstract_state)
    out = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if num_devices > 1 and all(s is None for s in leaf.sharding.spec):
            out.append(
                {
                    "name": jax.tree_util.keystr(path),
                    "shape": list(leaf.shape),
                    "bytes": leaf.size * leaf.dtype.itemsize,
                }
            )
    return sorted(out, key=lambda r: -r["bytes"])


def _scanned_depth(config: ml_collections.ConfigDict) -> int:
    """The number of layers a `scan` stacks (0 for models without scanned layers)."""
    model = config.model
    if "scan_layers" in model and "depth" in model and model.scan_layers:
        return int(model.depth)
    return 0


def _step_flops(config: ml_collections.ConfigDict, mesh: Mesh, compiled_flops: float) -> tuple[float, str]:
    """Per-device FLOPs of one step; for scanned layers, extrapolated from unrolled compiles (module docstring)."""
    depth = _scanned_depth(config)
    if depth <= 2:
        return compiled_flops, "xla cost analysis"
    flops = []
    for d in (1, 2):
        variant = ml_collections.ConfigDict(config.to_dict())
        variant.model.depth, variant.model.scan_layers = d, False
        compiled, _ = _compile_step(variant, mesh)
        flops.append(float(_cost(compiled).get("flops", 0.0)))
    total = flops[0] + (depth - 1) * (flops[1] - flops[0])
    return total, f"xla cost analysis, unrolled depth 1 and 2, extrapolated to {depth}"


class _OutOfMemory(RuntimeError):
    """XLA refused to compile: the temporaries alone exceed the chip's HBM."""

    def __init__(self, message: str, setup: loop.Setup):
        super().__init__(message)
        self.setup = setup
        # e.g. "the total memory required for HLO temporaries (396.50G) exceeds available HBM (95.74G)"
        sizes = re.findall(r"\(([0-9.]+)([KMGT])\)", message)
        units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
        self.temp_bytes = int(float(sizes[0][0]) * units[sizes[0][1]]) if sizes else 0


def _compile(lowered: Any, setup: loop.Setup) -> Any:
    try:
        return lowered.compile()
    except jax.errors.JaxRuntimeError as error:
        if "RESOURCE_EXHAUSTED" in str(error):
            raise _OutOfMemory(str(error).splitlines()[0], setup) from error
        raise


def _compile_step(config: ml_collections.ConfigDict, mesh: Mesh) -> tuple[Any, loop.Setup]:
    """The loop's train step on abstract inputs, compiled for `mesh`'s devices."""
    setup = loop.build(config, mesh)
    loop.check_batch_size(config, mesh)
    if setup.task.batch_spec is None:
        raise ValueError(
            f"task {config.task!r} has no batch_spec (train/task.py): it cannot be compiled without data"
        )
    batch = {
        key: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=loop.batch_field_sharding(setup, key, s.shape))
        for key, s in setup.task.batch_spec(int(config.train.batch_size)).items()
    }
    step = jax.ShapeDtypeStruct((), jnp.int32, sharding=NamedSharding(mesh, PartitionSpec()))
    jitted = loop.jit_train_step(setup, {k: v.sharding for k, v in batch.items()})
    with (
        sharding_lib.use_mesh(mesh, setup.rules),
        spectral.whole_maps(),
    ):  # the target's maps, not this host's
        compiled = _compile(jitted.lower(setup.abstract_state, batch, step), setup)
    return compiled, setup


def _base_report(kind: str, config, topology: str, chip: Chip, desc: str, mesh: Mesh) -> dict:
    return {
        "kind": kind,
        "task": config.task,
        "topology": topology,
        "libtpu_topology": desc,
        "chip": chip.name,
        "num_chips": int(mesh.size),
        "hbm_bytes_per_chip": chip.hbm_bytes,
        "peak_bf16_flops_per_chip": chip.peak_bf16_flops,
        "mesh": _mesh_dict(mesh),
    }


def _finish(report: dict, memory: dict, flops: float, mfu: float, max_hbm_fraction: float) -> dict:
    chip_hbm, peak = report["hbm_bytes_per_chip"], report["peak_bf16_flops_per_chip"]
    report["memory_per_device"] = memory
    report["hbm_fraction"] = memory["total"] / chip_hbm
    report["max_hbm_fraction"] = max_hbm_fraction
    report["fits"] = report["hbm_fraction"] <= max_hbm_fraction
    report["flops_per_device"] = flops
    report["flops_total"] = flops * report["num_chips"]
    report["mfu"] = mfu
    report["step_time_s"] = flops / (peak * mfu) if flops else float("nan")
    return report


def compile_train(
    config: ml_collections.ConfigDict,
    topology: str,
    *,
    mfu: float = 0.4,
    max_hbm_fraction: float = 0.8,
    count_flops: bool = True,
) -> dict:
    """Compiles the train step of `config` for `topology` on a mesh of `config.mesh` (-1 fills) and reports.

    Raises mesh_lib.MeshError / ValueError (mesh or batch that do not split) before compiling; never raises for a
    step that does not fit (see `check_fits`)."""
    chip, desc, devices = topology_devices(topology)
    mesh = mesh_lib.make_mesh(config.mesh.to_dict(), devices=devices)
    start = time.perf_counter()
    compile_error = ""
    try:
        compiled, setup = _compile_step(config, mesh)
    except _OutOfMemory as error:  # reported as a step that does not fit, with XLA's own numbers
        compiled, setup, compile_error = None, error.setup, str(error)
        state = sharding_lib.bytes_per_device(setup.abstract_state)["max"]
        memory = {"argument": state, "output": state, "alias": state, "temp": error.temp_bytes, "code": 0}
        memory["total"] = state + error.temp_bytes
    compile_s = time.perf_counter() - start
    flops = float(_cost(compiled).get("flops", 0.0)) if compiled is not None else float("nan")
    flops_method = "xla cost analysis"
    if compiled is None:
        flops_method = "not counted: the compile ran out of HBM"
    elif count_flops:
        flops, flops_method = _step_flops(config, mesh, flops)
    elif _scanned_depth(config) > 1:
        flops_method = "xla cost analysis, scanned layers counted once (not counted: --no_flops)"
    params = setup.task.params_of(setup.abstract_state)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    global_batch = int(config.train.batch_size)
    tokens = tokens_per_example(config)
    report = _base_report("train", config, topology, chip, desc, mesh)
    report.update(
        {
            "params": int(n_params),
            "param_bytes": int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))),
            "state_bytes_per_device": sharding_lib.bytes_per_device(setup.abstract_state)["max"],
            "param_bytes_per_device": sharding_lib.bytes_per_device(params)["max"],
            "global_batch": global_batch,
            "batch_per_device": global_batch / (mesh.shape["data"] * mesh.shape["fsdp"]),
            "tokens_per_example": tokens,
            # Models without these keys (the tiny regressor) run float32 without remat.
            "remat": bool("remat" in config.model and config.model.remat),
            "dtype": str(config.model.dtype) if "dtype" in config.model else "float32",
            "compile_s": compile_s,
            "flops_method": flops_method,
            "replicated_params": _replicated_params(setup, mesh.size)[:5],
        }
    )
    if compile_error:
        report["compile_error"] = compile_error
    _finish(report, _memory(compiled) if compiled is not None else memory, flops, mfu, max_hbm_fraction)
    report["tokens_per_s_per_chip"] = global_batch * tokens / report["step_time_s"] / mesh.size
    report["model_flops_6nt_per_device"] = 6.0 * n_params * global_batch * tokens / mesh.size
    return report


def compile_sample(
    config: ml_collections.ConfigDict,
    topology: str,
    *,
    batch_size: int | None = None,
    mfu: float = 0.4,
    max_hbm_fraction: float = 0.8,
    count_flops: bool = True,
) -> dict:
    """Compiles the text-to-video sampler (`diffusion.sampler.sample_tokens` over the denoiser, as
    pipelines/t2v.T2VGenerator jits it: config.sample.num_steps, CFG at config.sample.guidance_scale) with the
    parameters sharded as in training and the prompts over data x fsdp (default: one per device)."""
    from motionaura_jax.diffusion.sampler import sample_tokens
    from motionaura_jax.diffusion.schedule import schedule_from_config

    if config.task != "t2v":
        raise ValueError(f"sampling compile is for the t2v task, not {config.task!r}")
    chip, desc, devices = topology_devices(topology)
    mesh = mesh_lib.make_mesh(config.mesh.to_dict(), devices=devices)
    setup = loop.build(config, mesh)
    batch_devices = mesh.shape["data"] * mesh.shape["fsdp"]
    batch_size = int(batch_size or batch_devices)
    grid = tuple(int(g) for g in config.tokens.grid)
    text_len, text_dim = int(config.tokens.text_len), int(config.model.text_dim)
    s = config.sample
    num_steps = int(s.num_steps)
    guidance = None if s.guidance_scale is None else float(s.guidance_scale)

    from motionaura_jax.models.denoiser import SpectralDenoiser

    model = SpectralDenoiser(config.model)
    schedule = schedule_from_config(config.diffusion, int(config.model.vocab_size))

    def run(params, rng, text, mask, fps):
        def denoise(ids, t_b, fps_b, text_bld, mask_bl):
            return model.apply({"params": params}, ids, t_b, fps_b, text_bld, mask_bl)

        return sample_tokens(
            denoise, schedule, rng, grid_thw=grid, text_bld=text, text_mask_bl=mask, fps_b=fps,
            num_steps=num_steps, guidance_scale=guidance, temperature=float(s.temperature),
        )  # fmt: skip

    def field(shape, dtype):
        sharding = sharding_lib.batch_sharding(mesh, len(shape), None, setup.rules, shape)
        return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)

    replicated = NamedSharding(mesh, PartitionSpec())
    rng = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=replicated)
    args = (
        setup.task.params_of(setup.abstract_state),
        rng,
        field((batch_size, text_len, text_dim), jnp.float32),
        field((batch_size, text_len), jnp.bool_),
        field((batch_size,), jnp.float32),
    )
    start = time.perf_counter()
    with sharding_lib.use_mesh(mesh, setup.rules), spectral.whole_maps():
        compiled = jax.jit(run).lower(*args).compile()
    compile_s = time.perf_counter() - start
    # The sampler is a fori_loop: XLA counts its body (one denoising step) once, and the FLOPs of the loop's
    # layers once per `scan` as in training; the per-step figure comes from the denoiser's own forward.
    if count_flops:
        per_step = _forward_flops(config, mesh, setup, (2 if guidance is not None else 1) * batch_size)
        flops_method = "denoiser forward (xla cost analysis, layers as in compile_train) x num_steps"
    else:
        per_step = float(_cost(compiled).get("flops", 0.0))
        flops_method = "xla cost analysis of the sampler, loop bodies counted once (not counted: --no_flops)"
    report = _base_report("sample", config, topology, chip, desc, mesh)
    report.update(
        {
            "params": int(sum(x.size for x in jax.tree.leaves(args[0]))),
            "param_bytes_per_device": sharding_lib.bytes_per_device(args[0])["max"],
            "global_batch": batch_size,
            "batch_per_device": batch_size / batch_devices,
            "tokens_per_example": math.prod(grid),
            "num_steps": num_steps,
            "guidance_scale": guidance,
            "dtype": str(config.model.dtype),
            "compile_s": compile_s,
            "flops_per_denoising_step": per_step,
            "flops_method": flops_method,
            "replicated_params": _replicated_params(setup, mesh.size)[:5],
        }
    )
    _finish(report, _memory(compiled), per_step * num_steps, mfu, max_hbm_fraction)
    report["videos_per_s_per_chip"] = batch_size / report["step_time_s"] / mesh.size
    return report


def _forward_flops(config: ml_collections.ConfigDict, mesh: Mesh, setup: loop.Setup, batch: int) -> float:
    """Per-device FLOPs of one denoiser forward on `batch` examples (scanned layers extrapolated as in training)."""
    from motionaura_jax.models.denoiser import SpectralDenoiser, example_inputs

    def flops_of(cfg: ml_collections.ConfigDict) -> float:
        model = SpectralDenoiser(cfg.model)
        local = loop.build(cfg, mesh) if cfg is not config else setup
        params = local.task.params_of(local.abstract_state)
        inputs = [
            jax.ShapeDtypeStruct(
                x.shape,
                x.dtype,
                sharding=sharding_lib.batch_sharding(mesh, len(x.shape), None, setup.rules, x.shape),
            )
            for x in example_inputs(
                cfg.model,
                batch,
                tuple(int(g) for g in cfg.tokens.grid),
                int(cfg.tokens.text_len),
                abstract=True,
            )
        ]
        fwd = jax.jit(lambda p, *a: model.apply({"params": p}, *a))
        with sharding_lib.use_mesh(mesh, setup.rules), spectral.whole_maps():
            return float(_cost(fwd.lower(params, *inputs).compile()).get("flops", 0.0))

    depth = int(config.model.depth)
    if not (config.model.scan_layers and depth > 2):
        return flops_of(config)
    variants = []
    for d in (1, 2):
        variant = ml_collections.ConfigDict(config.to_dict())
        variant.model.depth, variant.model.scan_layers = d, False
        variants.append(flops_of(variant))
    return variants[0] + (depth - 1) * (variants[1] - variants[0])


# ---------------------------------------------------------------------------------------------------------------
# Fit check, levers, tables


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def levers(report: dict, config: ml_collections.ConfigDict) -> list[str]:
    """What would lower the per-chip memory of this step, as config overrides, largest estimated saving first.

    Estimates (first order): fsdp x2 halves the train state; half the per-chip batch, remat or 2-way sequence
    parallelism halve the temporaries (activations); sharding a replicated parameter saves its 3 copies
    (weights + AdamW moments) on all but 1/n of the chips."""
    mesh, n = report["mesh"], report["num_chips"]
    memory = report["memory_per_device"]
    state, temp = report.get("state_bytes_per_device", 0), memory["temp"]
    found: list[tuple[float, str]] = []
    for p in report.get("replicated_params", [])[:3]:
        if p["bytes"] >= 0.01 * memory["total"]:
            found.append((3 * p["bytes"] * (1 - 1 / n),
                f"{p['name']} {tuple(p['shape'])} ({_gib(p['bytes'])}) is replicated on every chip: no dimension "
                f"is divisible by its mesh axes (fsdp={mesh['fsdp']}, tensor={mesh['tensor']}); make a dimension "
                "a multiple of them, or map its logical axis to a mesh axis in config.sharding.rules"))  # fmt: skip
    if mesh["fsdp"] < n:
        fsdp = min(n, 2 * mesh["fsdp"])
        data = max(1, n // fsdp // mesh["tensor"] // mesh["sequence"])
        found.append((state / 2,
            f"more fsdp: --config.mesh.fsdp={fsdp} --config.mesh.data={data} shards parameters and optimizer "
            f"state ({_gib(state)} per chip now) over twice as many chips"))  # fmt: skip
    if "remat" in config.model and not config.model.remat:
        found.append((temp / 2,
            "remat: --config.model.remat=True recomputes each block's activations in the backward pass "
            f"(temporaries are {_gib(temp)} per chip now)"))  # fmt: skip
    if report["batch_per_device"] > 1:
        found.append((temp / 2,
            f"smaller per-device batch: --config.train.batch_size={report['global_batch'] // 2} "
            f"({report['batch_per_device']:g} -> {report['batch_per_device'] / 2:g} per chip; temporaries "
            f"{_gib(temp)} scale with it)"))  # fmt: skip
    if mesh["sequence"] == 1 and config.task == "t2v":
        found.append((temp / 3,
            "sequence parallelism: --config.mesh.sequence=2 (with data or fsdp halved) splits the "
            f"{report['tokens_per_example']} tokens of each example over 2 chips (act_len)"))  # fmt: skip
    found.sort(key=lambda saving_text: -saving_text[0])
    return [f"{text} [saves ~{_gib(saving)} per chip]" for saving, text in found]


def check_fits(report: dict, config: ml_collections.ConfigDict) -> None:
    """Raises DoesNotFit naming the numbers and the levers when the step needs more than the allowed HBM."""
    if report["fits"]:
        return
    m = report["memory_per_device"]
    lines = [
        f"{report['task']} {report['kind']} step does not fit {report['topology']} ({report['chip']}, "
        f"{report['hbm_bytes_per_chip'] / GB:.0f} GB HBM per chip): it needs {_gib(m['total'])} per chip = "
        f"{100 * report['hbm_fraction']:.0f}% of HBM, allowed {100 * report['max_hbm_fraction']:.0f}% "
        f"(arguments {_gib(m['argument'])}, outputs {_gib(m['output'])}, aliased {_gib(m['alias'])}, "
        f"temporaries {_gib(m['temp'])}; mesh {report['mesh']}, {report['batch_per_device']:g} examples per chip)."
        + (f"\nXLA: {report['compile_error']}" if report.get("compile_error") else ""),
        "levers:",
    ]
    lines += [f"  - {lever}" for lever in levers(report, config)] or ["  - a topology with more HBM per chip"]
    raise DoesNotFit("\n".join(lines), report)


def _fmt_flops(f: float) -> str:
    return f"{f / 1e12:.1f} T" if f >= 1e11 else f"{f / 1e9:.2f} G"


def to_markdown(reports: list[dict]) -> str:
    """One row per report: memory per chip against HBM, FLOPs, projected step time."""
    head = (
        "| config | step | topology | mesh (data,fsdp,tensor,seq) | batch/chip | params | args | temp | total / chip "
        "| HBM | FLOPs/step/chip | step @ MFU | tokens/s/chip | compile |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for r in reports:
        m, mesh = r["memory_per_device"], r["mesh"]
        tps = r.get("tokens_per_s_per_chip")
        if tps is None and r["kind"] == "sample":
            tps = r["global_batch"] * r["tokens_per_example"] / r["step_time_s"] / r["num_chips"]
        rows.append(
            f"| {r.get('config', r['task'])} | {r['kind']} | {r['topology']} ({r['libtpu_topology']}) "
            f"| {mesh['data']},{mesh['fsdp']},{mesh['tensor']},{mesh['sequence']} | {r['batch_per_device']:g} "
            f"| {r['params'] / 1e9:.3g} B | {_gib(m['argument'])} | {_gib(m['temp'])} | {_gib(m['total'])} "
            f"| {100 * r['hbm_fraction']:.0f}% of {r['hbm_bytes_per_chip'] / GB:.0f} GB "
            + (
                "| not counted | - | - "
                if "not counted" in r.get("flops_method", "")
                else f"| {_fmt_flops(r['flops_per_device'])} | {r['step_time_s']:.2f} s @ {100 * r['mfu']:.0f}% "
                f"| {tps:,.0f} "
            )
            + f"| {r['compile_s']:.0f} s |"
        )
    return head + "\n".join(rows) + "\n"


def to_json(reports: list[dict]) -> str:
    return json.dumps(reports, indent=1, default=lambda x: x.item() if isinstance(x, np.generic) else str(x))
