"""One source of truth for shardings: logical axis names -> mesh axes -> `NamedSharding`.

Parameters carry logical names (`nn.with_logical_partitioning`), activations are constrained with
`constrain(x, ("act_batch", ...))`. Both resolve through the same rules table. A dimension that its mesh axes do
not divide is replicated instead (tiny test models on 8 devices), so the rules never make a shape illegal.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MeshAxes = str | tuple[str, ...] | None
Rules = Sequence[tuple[str, MeshAxes]]

# Parameters: `embed` is the FSDP dimension, `mlp`/`heads`/`vocab`/`conv_out` the tensor-parallel one.
# Activations (`act_*`) shard the batch over data+fsdp and frames/tokens over `sequence`; FFT axes are never sharded
# (XLA would replicate a sharded FFT), so spectral blocks keep `act_frames` etc. local via shard_map.
DEFAULT_RULES: tuple[tuple[str, MeshAxes], ...] = (
    ("batch", ("data", "fsdp")),
    ("act_batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("conv_in", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("conv_out", "tensor"),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_len", "sequence"),
    ("act_frames", "sequence"),
    ("kv", None),
    ("codebook", None),
    ("norm", None),
    ("layers", None),
    ("act_embed", None),
    ("act_height", None),
    ("act_width", None),
)


class ShardingRuleError(ValueError):
    """Rules that contradict each other, or a name no rule covers."""


def validate_rules(rules: Rules) -> dict[str, tuple[str, ...]]:
    """Rules as a dict; the same logical name mapped to two different mesh axes raises."""
    table: dict[str, tuple[str, ...]] = {}
    for name, axes in rules:
        axes_tuple = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        if name in table and table[name] != axes_tuple:
            raise ShardingRuleError(
                f"conflicting sharding rules for logical axis {name!r}: {table[name] or None} and "
                f"{axes_tuple or None}; keep one"
            )
        table[name] = axes_tuple
    return table


def merge_rules(base: Rules, overrides: Rules | None) -> tuple[tuple[str, MeshAxes], ...]:
    """Config rules replace the defaults name by name (a config may not list the same name twice)."""
    if not overrides:
        return tuple(base)
    validate_rules(overrides)
    names = {name for name, _ in overrides}
    return tuple((n, a) for n, a in base if n not in names) + tuple(overrides)


def logical_to_spec(
    logical_axes: Sequence[str | None], shape: Sequence[int] | None, mesh: Mesh, rules: Rules = DEFAULT_RULES
) -> PartitionSpec:
    """Logical names of one array's dimensions -> its PartitionSpec on `mesh`.

    A mesh axis is used at most once per array (a later dimension asking for it is replicated) and a dimension
    whose size its mesh axes do not divide is replicated.
    """
    table = validate_rules(rules)
    used: set[str] = set()
    spec = []
    for dim, name in enumerate(logical_axes):
        if name is None:
            spec.append(None)
            continue
        if name not in table:
            raise ShardingRuleError(f"no sharding rule for logical axis {name!r}; known: {sorted(table)}")
        axes = [a for a in table[name] if a in mesh.shape and a not in used]
        if shape is not None:
            # Drop trailing mesh axes until the product divides the dimension.
            while axes and shape[dim] % math.prod(mesh.shape[a] for a in axes):
                axes.pop()
        axes = [a for a in axes if mesh.shape[a] > 1]
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    while spec and spec[-1] is None:
        spec.pop()
    return PartitionSpec(*spec)


class LogicallyPartitioned(nn.LogicallyPartitioned):
    """`nn.LogicallyPartitioned` (same Linen behaviour) that also converts cleanly to an NNX Variable.

    `flax.nnx.bridge.ToNNX` turns a box into a Variable with `out_sharding=names`, and Flax NNX places such a
    Variable at creation ("eager sharding"), which needs a mesh and rules that map our logical names: without
    them `lazy_init` fails ("An auto mesh context or metadata is required ..."). This box instead hands NNX:
    - outside `use_mesh`: the names as metadata only (eager_sharding=False), so the model runs without a mesh;
    - inside `use_mesh(mesh, rules)`: the names, the mesh and the rules resolved for this shape (a dimension its
      mesh axes do not divide is replicated, as in `logical_to_spec`), so NNX places it as our trainer would.
    """

    def to_nnx_metadata(self) -> dict[str, Any]:
        # Flax's own `to_nnx_metadata` renames fields in `vars(self)` itself, emptying the box: work on a copy.
        metadata = dict(vars(self))
        metadata["out_sharding"] = metadata.pop("names")
        metadata["sharding_rules"] = metadata.pop("rules")
        active = _ACTIVE.get()
        if active is None:
            metadata["eager_sharding"] = False
            return metadata
        mesh, rules = active
        names = tuple(self.names)
        spec = tuple(logical_to_spec(names, self.value.shape, mesh, rules))
        spec += (None,) * (len(names) - len(spec))
        named = [n for n in names if n is not None]
        if len(set(named)) == len(named):
            metadata["sharding_rules"] = tuple(
                (n, a) for n, a in zip(names, spec, strict=True) if n is not None
            )
        else:  # a name used twice cannot map per name: hand over the resolved mesh axes
            metadata["out_sharding"] = PartitionSpec(*spec)
            metadata["sharding_rules"] = None
        metadata["mesh"] = mesh
        metadata["eager_sharding"] = True
        return metadata


def with_logical_partitioning(fn: Any, names: Sequence[str | None]) -> Any:
    """`nn.with_logical_partitioning` with our box (see `LogicallyPartitioned`): `fn`'s result carries `names`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return LogicallyPartitioned(fn(*args, **kwargs), tuple(names))

    return wrapper


def _is_box(x: Any) -> bool:
    return isinstance(x, nn.meta.AxisMetadata)


def logical_axes_tree(tree: Any) -> Any:
    """Per leaf: the logical names of a boxed (`nn.with_logical_partitioning`) leaf, None for a plain one."""
    return jax.tree.map(lambda x: tuple(x.names) if _is_box(x) else None, tree, is_leaf=_is_box)


def unbox(tree: Any) -> Any:
    """Strips logical-partitioning boxes without applying any constraint (shardings come from out_shardings)."""
    return jax.tree.map(lambda x: x.value if _is_box(x) else x, tree, is_leaf=_is_box)


def tree_shardings(abstract_tree: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """NamedShardings for every leaf of an (abstract, possibly boxed) tree; unboxed leaves are replicated."""

    def one(leaf):
        if _is_box(leaf):
            return NamedSharding(mesh, logical_to_spec(leaf.names, leaf.value.shape, mesh, rules))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(one, abstract_tree, is_leaf=_is_box)


def batch_sharding(
    mesh: Mesh,
    ndim: int,
    logical_axes: Sequence[str | None] | None = None,
    rules: Rules = DEFAULT_RULES,
    shape: Sequence[int] | None = None,
) -> NamedSharding:
    """Sharding of one batch field: by default its first dimension is the batch."""
    axes = tuple(logical_axes) if logical_axes is not None else ("act_batch",) + (None,) * (ndim - 1)
    return NamedSharding(mesh, logical_to_spec(axes, shape, mesh, rules))


# ---------------------------------------------------------------------------------------------------------------
# Activation constraints. The active (mesh, rules) is a context variable set by the trainer around tracing, so
# model code calls `constrain` unconditionally and it does nothing outside a mesh.

_ACTIVE: contextvars.ContextVar[tuple[Mesh, Rules] | None] = contextvars.ContextVar(
    "motionaura_mesh", default=None
)


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Iterator[None]:
    """Within this block, `constrain` applies sharding constraints on `mesh` with `rules`, and our modules'
    parameters created through `flax.nnx.bridge.ToNNX` are placed on `mesh` by `rules` (see
    `LogicallyPartitioned`).

        with use_mesh(mesh):                   # any jax.sharding.Mesh; rules default to DEFAULT_RULES
            model = bridge.ToNNX(VQVAE(config), rngs=nnx.Rngs(0))
            bridge.lazy_init(model, video_bthwc)
    """
    validate_rules(rules)
    explicit = [n for n, t in zip(mesh.axis_names, mesh.axis_types, strict=True) if t == AxisType.Explicit]
    if explicit:  # jax.make_mesh's default: `constrain` (with_sharding_constraint) needs Auto axes
        raise ShardingRuleError(
            f"use_mesh: the mesh axes {explicit} are Explicit; our models constrain activations by logical names, "
            "which needs Auto axes: build the mesh with jax.make_mesh(shape, names, "
            "axis_types=(jax.sharding.AxisType.Auto,) * len(names)) or motionaura_jax.make_mesh({...})"
        )
    token = _ACTIVE.set((mesh, tuple(rules)))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active_mesh() -> Mesh | None:
    active = _ACTIVE.get()
    return active[0] if active else None


def active_rules() -> tuple[tuple[str, MeshAxes], ...] | None:
    active = _ACTIVE.get()
    return tuple(active[1]) if active else None


def mesh_axes_for(logical_name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The mesh axes the active rules give one logical name (for shard_map specs that must follow the rules)."""
    rules = active_rules()
    if rules is None:
        return default
    return validate_rules(rules).get(logical_name, ())


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """`with_sharding_constraint` by logical names; a no-op when no mesh is active."""
    active = _ACTIVE.get()
    if active is None:
        return x
    mesh, rules = active
    if len(logical_axes) != x.ndim:
        raise ValueError(
            f"constrain: {len(logical_axes)} logical axes {tuple(logical_axes)} for an array of "
            f"shape {x.shape}"
        )
    spec = logical_to_spec(logical_axes, x.shape, mesh, rules)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def bytes_per_device(tree: Any) -> dict[str, int]:
    """Bytes each device holds for a tree of (abstract) sharded arrays: {"max": ..., "total": ...}."""
    per_device: dict[Any, int] = {}
    total = 0
    for leaf in jax.tree.leaves(tree):
        sharding = getattr(leaf, "sharding", None)
        nbytes = math.prod(leaf.shape) * leaf.dtype.itemsize
        total += nbytes
        if sharding is None:
            continue
        shard_shape = sharding.shard_shape(leaf.shape)
        shard_bytes = math.prod(shard_shape) * leaf.dtype.itemsize
        for device in sharding.device_set:
            per_device[device] = per_device.get(device, 0) + shard_bytes
    return {"max": max(per_device.values(), default=0), "total": total}


def rules_from_config(config: Mapping[str, Any] | None) -> tuple[tuple[str, MeshAxes], ...]:
    """`config.sharding.rules` (a list of (name, axes)) merged over the defaults."""
    overrides = None
    if config is not None and "sharding" in config and config["sharding"].get("rules"):
        overrides = [
            (str(n), a if a is None or isinstance(a, str) else tuple(a))
            for n, a in config["sharding"]["rules"]
        ]
    return merge_rules(DEFAULT_RULES, overrides)
