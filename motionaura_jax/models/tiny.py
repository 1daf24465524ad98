"""A tiny sequence regressor that exercises every sharding rule the real models use (fsdp, tensor, data)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from motionaura_jax.models.layers import dense, partitioned
from motionaura_jax.parallel.sharding import constrain


class TinyModel(nn.Module):
    """x_bld -> y_blo through in-projection, one residual MLP block and a LayerNorm."""

    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, x_bld: jax.Array) -> jax.Array:
        c = self.config
        h = dense(c.embed, (None, "embed"), "in_proj", use_bias=False)(x_bld)
        h = constrain(h, ("act_batch", "act_len", "act_embed"))
        u = jax.nn.gelu(dense(c.mlp, ("embed", "mlp"), "mlp_in", use_bias=False)(h))
        u = constrain(u, ("act_batch", "act_len", "act_mlp"))
        h = h + dense(c.embed, ("mlp", "embed"), "mlp_out", use_bias=False)(u)
        h = nn.LayerNorm(
            scale_init=partitioned(nn.initializers.ones, ("norm",)),
            bias_init=partitioned(nn.initializers.zeros, ("norm",)),
            name="norm",
        )(h)
        return dense(c.out_dim, ("embed", None), "out_proj", use_bias=False)(h)


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)))
