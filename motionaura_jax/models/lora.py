"""LoRA as a pure transform of a Linen params tree: the base model is untouched, the adapters are a second
tree, and training differentiates only that second tree.

    cfg = denoiser_lora_config(model_config)                 # rank from the width, alpha = rank (scale 1)
    lora = init_lora(rng, base_params, cfg)                  # boxed {"a", "b"} per target kernel
    lora = sharding.unbox(lora)                              # (or device_put with tree_shardings(lora, mesh))

    def loss_fn(lora, base, batch):                          # grads flow to the adapter leaves only
        logits = model.apply({"params": merge(base, lora, cfg)}, *batch)
        ...
    state = TrainState.create(lora, tx)                      # optimizer state for the adapters only
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, base, batch)

A target is a kernel whose '/'-joined path (e.g. "blocks/self_attn/query/kernel") matches `cfg.targets` in
full. Its adapter is W' = W + (alpha / rank) · A·B, with A (*lead, *in, r) and B (*lead, r, *out): `lead` is
the layer axis of an `nn.scan` stack, `in` the axes the layer contracts (the first one for a DenseGeneral to
(heads, head_dim); all but the last for Dense, Conv and a DenseGeneral from (heads, head_dim)), `out` the
rest. A starts uniform(±1/sqrt(fan_in)) and B at zero (PEFT's choice), so merged == base at init.

Two ways to run the base model with adapters, equal to float rounding (tests/test_lora.py):
- `merge(base, lora, cfg)`: one new params tree (targets W + s·A·B), used inside the jitted loss. The base
  tree is an argument of the step, never updated, so it stays bit-identical.
- `inject(base, lora)` + `with adapters_active(cfg):` — the adapter forward: every intercepted Dense /
  DenseGeneral / Conv that finds "lora_a"/"lora_b" beside its kernel adds s·B(A(x)) to its output without
  forming A·B (scanned stacks slice the injected leaves per layer like the kernels).

Adapters carry logical axis names (`nn.Partitioned`): A takes its kernel's input names, B the output names,
the rank axis None (replicated), the layer axis "layers"; so `sharding.tree_shardings(lora, mesh)` shards
them like their kernels. `save_adapters` / `load_adapters` write the adapter tree alone as safetensors with
the config, the logical names and the base run (workdir + step) in the file's metadata.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import string
import struct
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding

from motionaura_jax.parallel.sharding import DEFAULT_RULES, Rules, logical_to_spec

# Self- and cross-attention q, k, v, out and both FFN linears of every denoiser block, scanned or unrolled
# (models/denoiser.py, models/attention.py).
DEFAULT_TARGETS = (
    r"(blocks|block_\d+)/(self_attn|cross_attn)/(query|key|value|out)/kernel"
    r"|(blocks|block_\d+)/ffn/(fc_in|fc_out)/kernel"
)
# Kernels that contract only their first axis: DenseGeneral projections to (heads, head_dim).
DEFAULT_SINGLE_INPUT_AXIS = r"(.*/)?(query|key|value|q|k|v)/kernel"
# Paths whose leaves carry a leading layer axis, used only for plain (unboxed) base params; boxed params say
# so themselves (first logical name "layers").
DEFAULT_STACKED = r"(.*/)?blocks/.*"
# Paper notes §5.2 recommend r = 32 for the full-size denoiser (width 1024+); smaller widths scale it down.
PAPER_RANK = 32
FORMAT = "motionaura-lora-v1"


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    rank: int
    alpha: float | None = None  # None: alpha = rank, i.e. scale 1
    targets: str = DEFAULT_TARGETS
    single_input_axis: str = DEFAULT_SINGLE_INPUT_AXIS
    stacked: str = DEFAULT_STACKED

    def __post_init__(self):
        if int(self.rank) < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        for field in ("targets", "single_input_axis", "stacked"):
            try:
                re.compile(getattr(self, field))
            except re.error as err:
                raise ValueError(f"LoraConfig.{field} is not a valid regex: {err}") from err

    @property
    def scale(self) -> float:
        return (float(self.alpha) if self.alpha is not None else float(self.rank)) / float(self.rank)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LoraConfig:
        return cls(**json.loads(text))


def default_rank(width: int) -> int:
    """width // 32 clipped to [1, 32]: the paper notes' r = 32 from width 1024 up, and adapters that stay a
    few percent of the denoiser at the small widths (tiny: 1, quickstart 128: 4)."""
    return int(min(PAPER_RANK, max(1, width // 32)))


def denoiser_lora_config(
    model_config: ml_collections.ConfigDict | None = None, **overrides: Any
) -> LoraConfig:
    """The default adapters of a SpectralDenoiser config: rank `default_rank(width)`, alpha = rank."""
    fields: dict[str, Any] = {}
    if model_config is not None:
        fields["rank"] = default_rank(int(model_config.width))
    fields.update(overrides)
    if "rank" not in fields:
        raise ValueError("denoiser_lora_config: pass the denoiser config or rank=")
    return LoraConfig(**fields)


# ------------------------------------------------------------------------------------------------------------
# Targets


@dataclasses.dataclass(frozen=True)
class Target:
    path: tuple[str, ...]
    shape: tuple[int, ...]  # the kernel's
    lead: int  # leading layer axes (nn.scan)
    n_in: int  # contracted axes after the lead
    names: tuple[str | None, ...]  # the kernel's logical names (all None for a plain leaf)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.shape[self.lead : self.lead + self.n_in]

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.shape[self.lead + self.n_in :]

    def a_shape(self, rank: int) -> tuple[int, ...]:
        return (*self.shape[: self.lead], *self.in_shape, rank)

    def b_shape(self, rank: int) -> tuple[int, ...]:
        return (*self.shape[: self.lead], rank, *self.out_shape)

    def a_names(self) -> tuple[str | None, ...]:
        return (*self.names[: self.lead + self.n_in], None)

    def b_names(self) -> tuple[str | None, ...]:
        return (*self.names[: self.lead], None, *self.names[self.lead + self.n_in :])


def _is_box(x: Any) -> bool:
    return isinstance(x, nn.meta.AxisMetadata)


def _unbox_leaf(x: Any) -> Any:
    return x.value if _is_box(x) else x


def _flat(tree: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
    return traverse_util.flatten_dict(dict(tree), is_leaf=lambda _, x: _is_box(x))


def _key(path: tuple[str, ...]) -> str:
    return "/".join(path)


def find_targets(base_params: Mapping[str, Any], cfg: LoraConfig) -> dict[tuple[str, ...], Target]:
    """Every kernel of `base_params` (boxed or plain; abstract is fine) that `cfg.targets` matches."""
    targets: dict[tuple[str, ...], Target] = {}
    flat = _flat(base_params)
    for path, leaf in flat.items():
        key = _key(path)
        if not re.fullmatch(cfg.targets, key):
            continue
        shape = tuple(_unbox_leaf(leaf).shape)
        if _is_box(leaf):
            names = tuple(leaf.names)
            lead = 1 if names and names[0] == "layers" else 0
        else:
            names = (None,) * len(shape)
            lead = 1 if re.fullmatch(cfg.stacked, key) else 0
        rest = len(shape) - lead
        if rest < 2:
            raise ValueError(
                f"LoRA target {key!r} has shape {shape}: not a kernel (needs an input and an output axis); "
                "narrow LoraConfig.targets"
            )
        n_in = 1 if re.fullmatch(cfg.single_input_axis, key) else rest - 1
        targets[path] = Target(path, shape, lead, n_in, names)
    if not targets:
        sample = sorted(_key(p) for p in flat)[:8]
        raise ValueError(
            f"LoRA targets regex {cfg.targets!r} matched no parameter; paths look like {sample}; "
            "set LoraConfig.targets"
        )
    return targets


# ------------------------------------------------------------------------------------------------------------
# Init, merge, unmerge


def init_lora(rng: jax.Array, base_params: Mapping[str, Any], cfg: LoraConfig) -> dict[str, Any]:
    """Adapters for every target: {..path.., "kernel": {"a": Partitioned, "b": Partitioned}}, float32.

    Works under `jax.eval_shape` (abstract base in, abstract adapters out) for shardings without memory."""
    flat = {}
    targets = find_targets(base_params, cfg)
    keys = jax.random.split(rng, len(targets))
    for key, (path, target) in zip(keys, sorted(targets.items()), strict=True):
        bound = 1.0 / math.sqrt(math.prod(target.in_shape))
        a = jax.random.uniform(key, target.a_shape(cfg.rank), jnp.float32, -bound, bound)
        b = jnp.zeros(target.b_shape(cfg.rank), jnp.float32)
        flat[path + ("a",)] = nn.Partitioned(a, target.a_names())
        flat[path + ("b",)] = nn.Partitioned(b, target.b_names())
    return traverse_util.unflatten_dict(flat)


def _adapter_pairs(lora: Mapping[str, Any]) -> dict[tuple[str, ...], tuple[Any, Any]]:
    flat = _flat(lora)
    pairs: dict[tuple[str, ...], tuple[Any, Any]] = {}
    for path in flat:
        if path[-1] not in ("a", "b"):
            raise ValueError(f"adapter tree leaf {_key(path)!r} is neither 'a' nor 'b'; not a LoRA tree")
        kernel = path[:-1]
        if kernel in pairs:
            continue
        if kernel + ("a",) not in flat or kernel + ("b",) not in flat:
            raise ValueError(f"adapter {_key(kernel)!r} lacks its 'a' or 'b' factor")
        pairs[kernel] = (_unbox_leaf(flat[kernel + ("a",)]), _unbox_leaf(flat[kernel + ("b",)]))
    return pairs


_LETTERS = [c for c in string.ascii_lowercase if c != "r"]


def low_rank_delta(a: jax.Array, b: jax.Array, kernel_ndim: int) -> jax.Array:
    """A·B contracted over the rank axis, in the kernel's layout: (*lead, *in, r)·(*lead, r, *out)."""
    lead = a.ndim + b.ndim - 2 - kernel_ndim
    n_in, n_out = a.ndim - lead - 1, b.ndim - lead - 1
    if lead < 0 or n_in < 1 or n_out < 1 or a.shape[:lead] != b.shape[:lead] or a.shape[-1] != b.shape[lead]:
        raise ValueError(f"LoRA factors {a.shape} and {b.shape} do not form a kernel of rank {kernel_ndim}")
    letters = iter(_LETTERS)
    ls = "".join(next(letters) for _ in range(lead))
    ins = "".join(next(letters) for _ in range(n_in))
    outs = "".join(next(letters) for _ in range(n_out))
    return jnp.einsum(
        f"{ls}{ins}r,{ls}r{outs}->{ls}{ins}{outs}",
        a.astype(jnp.float32),
        b.astype(jnp.float32),
        precision=jax.lax.Precision.HIGHEST,
    )


def _apply_delta(base: Mapping[str, Any], lora: Mapping[str, Any], scale: float) -> dict[str, Any]:
    flat = {path: _unbox_leaf(leaf) for path, leaf in _flat(base).items()}
    for path, (a, b) in _adapter_pairs(lora).items():
        if path not in flat:
            raise ValueError(
                f"adapter {_key(path)!r} has no kernel in the base params; were the adapters made for "
                "another model?"
            )
        kernel = flat[path]
        delta = low_rank_delta(a, b, kernel.ndim)
        if delta.shape != kernel.shape:
            raise ValueError(
                f"adapter {_key(path)!r} gives a {delta.shape} update for a {kernel.shape} kernel; "
                "were the adapters made for another model size?"
            )
        flat[path] = (kernel.astype(jnp.float32) + scale * delta).astype(kernel.dtype)
    return traverse_util.unflatten_dict(flat)


def merge(base: Mapping[str, Any], lora: Mapping[str, Any], cfg: LoraConfig) -> dict[str, Any]:
    """Plain params with every target kernel W + (alpha/rank)·A·B; other leaves are the base's own arrays.
    Boxed inputs are unboxed. Differentiable in `lora` (and in `base`, which a LoRA step never asks for)."""
    return _apply_delta(base, lora, cfg.scale)


def unmerge(merged: Mapping[str, Any], lora: Mapping[str, Any], cfg: LoraConfig) -> dict[str, Any]:
    """The inverse of `merge` (equal to float rounding, not bit for bit: use the kept base when you have it)."""
    return _apply_delta(merged, lora, -cfg.scale)


def with_names(adapters: Mapping[str, Any], boxed_like: Mapping[str, Any]) -> dict[str, Any]:
    """Plain adapters (e.g. a train state's) boxed again with the logical names of `boxed_like` (the output
    of `init_lora`, or its `jax.eval_shape`), so `save_adapters` records how they shard."""
    return jax.tree.map(lambda box, x: box.replace_boxed(x), boxed_like, adapters, is_leaf=_is_box)


def param_count(tree: Any) -> int:
    return sum(math.prod(_unbox_leaf(x).shape) for x in jax.tree.leaves(tree, is_leaf=_is_box))


def tree_bytes(tree: Any) -> int:
    """Bytes of every array leaf (abstract leaves count too): optimizer-state sizes, adapter file sizes."""
    leaves = jax.tree.leaves(tree, is_leaf=_is_box)
    return sum(
        math.prod(_unbox_leaf(x).shape) * np.dtype(_unbox_leaf(x).dtype).itemsize
        for x in leaves
        if hasattr(_unbox_leaf(x), "shape")
    )


def with_merged(loss_fn: Callable[..., Any], cfg: LoraConfig) -> Callable[..., Any]:
    """loss_fn(params, *args) -> f(lora, base, *args) = loss_fn(merge(base, lora), *args): differentiate f
    in its first argument and only the adapters get gradients."""

    def f(lora, base, *args, **kwargs):
        return loss_fn(merge(base, lora, cfg), *args, **kwargs)

    return f


# ------------------------------------------------------------------------------------------------------------
# The adapter forward: low-rank branches beside the kernels, no merged weight.

LORA_A, LORA_B = "lora_a", "lora_b"


def inject(base: Mapping[str, Any], lora: Mapping[str, Any]) -> dict[str, Any]:
    """Base params with "lora_a"/"lora_b" beside each target kernel (for `adapters_active`)."""
    flat = {path: _unbox_leaf(leaf) for path, leaf in _flat(base).items()}
    for path, (a, b) in _adapter_pairs(lora).items():
        if path[-1] != "kernel" or path not in flat:
            raise ValueError(
                f"adapter {_key(path)!r}: the adapter forward needs a module's 'kernel' in the base params"
            )
        flat[path[:-1] + (LORA_A,)] = a
        flat[path[:-1] + (LORA_B,)] = b
    return traverse_util.unflatten_dict(flat)


def _down_projection(module: nn.Module, rank: int) -> nn.Module:
    """A copy of `module` with `rank` output features and no bias: applied with kernel A it computes x·A with
    the module's own contraction (Dense / DenseGeneral axes, Conv padding and strides) and dtype."""
    if isinstance(module, nn.DenseGeneral):
        if module.batch_dims:
            raise ValueError(
                f"LoRA adapter forward: DenseGeneral {module.name!r} with batch_dims is unsupported"
            )
    elif isinstance(module, nn.Conv):
        if module.feature_group_count != 1:
            raise ValueError(f"LoRA adapter forward: grouped Conv {module.name!r} is unsupported; use merge")
    elif not isinstance(module, nn.Dense):
        raise ValueError(f"LoRA adapter forward: {type(module).__name__} {module.name!r} is not Dense/Conv")
    return module.clone(parent=None, features=rank, use_bias=False, name=None)


@contextlib.contextmanager
def adapters_active(cfg: LoraConfig) -> Iterator[None]:
    """Within this block, every Dense/DenseGeneral/Conv whose params hold "lora_a"/"lora_b" (see `inject`)
    returns y + scale·B(A(x)). Enter it inside the traced function (interceptors act at trace time)."""

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not isinstance(module, nn.Dense | nn.DenseGeneral | nn.Conv):
            return next_fun(*args, **kwargs)
        if not module.has_variable("params", LORA_A):
            return next_fun(*args, **kwargs)
        a = module.get_variable("params", LORA_A)
        b = module.get_variable("params", LORA_B)
        y = next_fun(*args, **kwargs)
        x = args[0] if args else kwargs["inputs"]
        h = _down_projection(module, a.shape[-1]).apply({"params": {"kernel": a}}, x)
        up = jnp.tensordot(h, b.astype(h.dtype), axes=1)
        return y + (cfg.scale * up).astype(y.dtype)

    with nn.intercept_methods(interceptor):
        yield


# ------------------------------------------------------------------------------------------------------------
# Save / load


@dataclasses.dataclass
class LoadedAdapters:
    params: dict[str, Any]  # boxed (nn.Partitioned) like `init_lora`'s
    config: LoraConfig
    base_workdir: str
    base_step: int

    def check_base(self, workdir: str | os.PathLike, step: int) -> None:
        """Raises when the adapters were trained on another base run than (workdir, step)."""
        if (os.fspath(workdir), int(step)) != (self.base_workdir, self.base_step):
            raise ValueError(
                f"these adapters were trained on base run {self.base_workdir!r} step {self.base_step}, not "
                f"{os.fspath(workdir)!r} step {int(step)}; load that base run or retrain the adapters"
            )


def save_adapters(
    path: str | os.PathLike,
    lora: Mapping[str, Any],
    cfg: LoraConfig,
    *,
    base_workdir: str | os.PathLike,
    base_step: int,
) -> None:
    """Writes the adapters alone (atomically) as safetensors; metadata: format, config, logical names, base.
    Plain (unboxed) leaves are recorded with no names: box them first with `with_names`."""
    from safetensors.numpy import save

    from motionaura_jax import atomic

    tensors, names = {}, {}
    for path_tuple, leaf in _flat(lora).items():
        key = _key(path_tuple)
        tensors[key] = np.asarray(jax.device_get(_unbox_leaf(leaf)))
        names[key] = list(leaf.names) if _is_box(leaf) else [None] * tensors[key].ndim
    metadata = {
        "format": FORMAT,
        "lora_config": cfg.to_json(),
        "logical_names": json.dumps(names),
        "base_workdir": os.fspath(base_workdir),
        "base_step": str(int(base_step)),
    }
    atomic.write_bytes(path, save(tensors, metadata=metadata))


def _read_metadata(data: bytes, path: str) -> dict[str, str]:
    try:
        (header_len,) = struct.unpack("<Q", data[:8])
        metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
    except (struct.error, ValueError) as err:
        raise ValueError(f"{path} is not a safetensors file") from err
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a LoRA adapter file (metadata format {metadata.get('format')!r}, expected "
            f"{FORMAT!r}); write adapters with motionaura_jax.models.lora.save_adapters"
        )
    return metadata


def load_adapters(
    path: str | os.PathLike, *, mesh: Mesh | None = None, rules: Rules = DEFAULT_RULES
) -> LoadedAdapters:
    """Adapters written by `save_adapters`; with a mesh each leaf is placed with its logical-name sharding."""
    from safetensors.numpy import load

    from motionaura_jax import paths

    data = paths.as_path(path).read_bytes()
    metadata = _read_metadata(data, os.fspath(path))
    names = json.loads(metadata["logical_names"])
    flat = {}
    for key, array in load(data).items():
        leaf_names = tuple(names[key])
        value: Any = array
        if mesh is not None:
            spec = logical_to_spec(leaf_names, array.shape, mesh, rules)
            value = jax.device_put(array, NamedSharding(mesh, spec))
        else:
            value = jnp.asarray(array)
        flat[tuple(key.split("/"))] = nn.Partitioned(value, leaf_names)
    return LoadedAdapters(
        params=traverse_util.unflatten_dict(flat),
        config=LoraConfig.from_json(metadata["lora_config"]),
        base_workdir=metadata["base_workdir"],
        base_step=int(metadata["base_step"]),
    )
