"""`layers.dense`'s kernel gradient, taken as (gᵀ·x)ᵀ on a CPU when the layer narrows, against autodiff's."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from motionaura_jax.models import layers


@pytest.mark.parametrize("features_in,features_out", [(32, 8), (8, 32), (16, 16)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dense_gradients_match_plain_dense(features_in, features_out, dtype):
    rng = np.random.default_rng(features_in * features_out)
    x = jnp.asarray(rng.normal(size=(2, 5, features_in)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(2, 5, features_out)), jnp.float32)
    ours = layers.dense(features_out, (None, None), "d", dtype=dtype)
    plain = nn.Dense(features_out, name="d", dtype=dtype, param_dtype=jnp.float32)
    params = nn.unbox(ours.init(jax.random.key(0), x))

    def grads(module):
        def loss(p, x):
            return jnp.sum(module.apply(p, x).astype(jnp.float32) * w)

        return jax.grad(loss, argnums=(0, 1))(params, x)

    (g_ours, gx_ours), (g_plain, gx_plain) = grads(ours), grads(plain)
    tol = 1e-5 if dtype == jnp.float32 else 0.1
    for got, want in zip(
        jax.tree.leaves((g_ours, gx_ours)), jax.tree.leaves((g_plain, gx_plain)), strict=True
    ):
        assert got.dtype == want.dtype
        np.testing.assert_allclose(
            np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=tol, atol=tol
        )
    # A narrowing layer's backward carries the swapped form (the branch a CPU takes; the values above are its).
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda p: jnp.sum(ours.apply(p, x) * w)))(params))
    assert ("optimization_barrier" in jaxpr) == (features_in > features_out)
