"""Our Linen modules inside Flax NNX code: `flax.nnx.bridge.ToNNX` works on them directly, these helpers make the
two common cases one call.

    from flax import nnx
    from flax.nnx import bridge
    tokenizer = bridge.ToNNX(VQVAE(config.model), rngs=nnx.Rngs(0))   # plain bridge: works without any mesh
    bridge.lazy_init(tokenizer, video_bthwc)

    tokenizer = to_nnx(VQVAE(config.model), video_bthwc)                 # same, with a jitted init (faster)
    tokenizer = to_nnx(run.model, video_bthwc, variables=run.variables)  # a trained run's weights, in NNX
    tokenizer = to_nnx(VQVAE(config.model), video_bthwc, mesh=mesh)      # placed by our logical-axis rules
    out = tokenizer(video_bthwc, train=False)                            # == VQVAE.apply(linen_variables(...))

Why the bridge works without a mesh: our parameters carry logical names through `sharding.LogicallyPartitioned`,
whose NNX form keeps the names as metadata and places nothing unless `sharding.use_mesh(mesh, rules)` is active;
under it NNX places every parameter the way our trainer does (`sharding.tree_shardings`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
from flax import nnx
from flax.nnx import bridge
from flax.nnx.bridge import variables as bridge_variables
from jax.sharding import Mesh

from motionaura_jax.parallel import sharding as sharding_lib


def _attach(model: bridge.ToNNX, boxed: Mapping[str, Any]) -> None:
    # What `bridge.lazy_init` does with the variables `init` returns, for variables we already hold.
    for name, value in bridge_variables.linen_vars_to_nnx_attrs(dict(boxed)).items():
        setattr(model, name, nnx.data(value))


def to_nnx(
    module: nn.Module,
    *example_inputs: Any,
    variables: Mapping[str, Any] | None = None,
    rngs: int | jax.Array = 0,
    mesh: Mesh | None = None,
    rules: sharding_lib.Rules | None = None,
    method: str | None = None,
    **kwargs: Any,
) -> bridge.ToNNX:
    """`module` as an initialised NNX module (`flax.nnx.bridge.ToNNX`).

    variables: Linen variables to use ({"params": ..., "vq": ...}, e.g. a run's `run.variables`); None
      initialises from `rngs` (a seed or a key). Inputs and kwargs (e.g. train=False) are what `module.init` takes.
    mesh: place every variable on this mesh by our logical-axis `rules` (default `sharding.DEFAULT_RULES`); None
      leaves them where they are (no mesh needed).

        model = to_nnx(VQVAE(vae_model_config()), video_bthwc, train=False)
        out = model(video_bthwc, train=False)              # what VQVAE.apply(linen_variables(model), ...) returns
    """
    key = jax.random.PRNGKey(rngs) if isinstance(rngs, int) else rngs
    # No RNG streams in the module: a forward takes no randomness unless a call passes `rngs=`, so the state
    # split off it (nnx.split(model, nnx.Param, ...)) goes through jax.value_and_grad / jax.jit as plain arrays.
    model = bridge.ToNNX(module, rngs=None)
    init_kwargs = {"method": method} if method else {}

    def init(key: jax.Array) -> Any:
        return module.init({"params": key}, *example_inputs, **init_kwargs, **kwargs)

    if mesh is None:
        _attach(model, _boxed(init, key, variables))
        return model
    with sharding_lib.use_mesh(mesh, rules or sharding_lib.DEFAULT_RULES):
        _attach(model, _boxed(init, key, variables))
    return model


def _boxed(init: Any, key: jax.Array, variables: Mapping[str, Any] | None) -> Any:
    """The boxed (logically named) variables: a jitted init, or `variables` in the boxes of an abstract one."""
    if variables is None:
        return jax.jit(init)(key)
    abstract = jax.eval_shape(init, key)
    missing = sorted(set(abstract) - set(variables))
    if missing:
        raise ValueError(f"to_nnx: variables lack the collections {missing} that the module creates")

    def rebox(box: Any, value: Any) -> Any:
        if getattr(value, "shape", None) != getattr(sharding_lib.unbox(box), "shape", None):
            raise ValueError(
                f"to_nnx: a variable of shape {getattr(value, 'shape', None)} where the module creates "
                f"{sharding_lib.unbox(box).shape}; are these the variables of this config?"
            )
        return box.replace_boxed(value) if isinstance(box, nn.meta.AxisMetadata) else value

    boxes = {c: abstract[c] for c in abstract}
    given = {c: sharding_lib.unbox(variables[c]) for c in abstract}
    return jax.tree.map(rebox, boxes, given, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))


def linen_variables(model: bridge.ToNNX) -> dict[str, Any]:
    """The Linen variables ({collection: tree of arrays}) a `ToNNX` model holds: what `module.apply` takes.

    For example:

        variables = linen_variables(nnx_model)
        out = VQVAE(config).apply(variables, video_bthwc, train=False)   # == nnx_model(video_bthwc, train=False)
    """
    attrs = {
        k: v for k, v in vars(model).items() if not k.startswith("to_nnx__") and not k.startswith("_pytree__")
    }
    return sharding_lib.unbox(bridge_variables.nnx_attrs_to_linen_vars(attrs))
