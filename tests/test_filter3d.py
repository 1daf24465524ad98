"""The attention-free spectral mode ("filter3d"): the 3D filter against numpy, its resampling to other grids,
no N x N product anywhere in the denoiser, the sharded path, and that it learns a task that needs mixing."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding

from motionaura_jax.configs.t2v import denoiser_config
from motionaura_jax.models import denoiser as den
from motionaura_jax.models import spectral
from motionaura_jax.parallel import mesh as mesh_lib
from motionaura_jax.parallel import sharding

GRID = (2, 4, 4)


def rand(rng, *shape):
    return rng.normal(size=shape).astype(np.float32)


def test_filter3d_matches_numpy_and_all_pass_is_identity():
    rng = np.random.default_rng(0)
    y = rand(rng, 2, 3, 4, 6, 5)
    fr, fi = rand(rng, 3, 4, 4, 5), rand(rng, 3, 4, 4, 5)
    got = spectral.filter3d(jnp.asarray(y), jnp.asarray(fr), jnp.asarray(fi))
    want = np.fft.irfftn(
        np.fft.rfftn(y, axes=(1, 2, 3), norm="ortho") * (fr + 1j * fi),
        s=(3, 4, 6),
        axes=(1, 2, 3),
        norm="ortho",
    )
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5, rtol=1e-4)
    # One token changed in frame 0 changes outputs in the other frames and rows: it mixes the whole grid.
    y2 = y.copy()
    y2[:, 0, 0, 0] += 1.0
    moved = np.abs(np.asarray(spectral.filter3d(jnp.asarray(y2), fr, fi)) - np.asarray(got))
    assert moved[:, 1:].max() > 1e-2 and moved[:, :, 1:].max() > 1e-2
    ones = np.ones_like(fr)
    same = spectral.filter3d(jnp.asarray(y), jnp.asarray(ones), jnp.zeros_like(ones))
    np.testing.assert_allclose(np.asarray(same), y, atol=2e-5)


def test_filter_resamples_to_other_grids():
    rng = np.random.default_rng(1)
    f = rand(rng, 4, 8, 5, 3)
    # The stored grid: unchanged, bit for bit.
    np.testing.assert_array_equal(np.asarray(spectral.resample_filter(jnp.asarray(f), (4, 8, 5))), f)
    # A constant (all-pass) filter stays constant, so it stays the identity on any grid.
    const = spectral.resample_filter(jnp.full((4, 8, 5, 3), 2.0), (6, 16, 9))
    np.testing.assert_allclose(np.asarray(const), 2.0, atol=1e-6)
    # Upsampling by 2 keeps the stored frequencies on the even indices (periodic axes) and the rfft axis.
    up = np.asarray(spectral.resample_filter(jnp.asarray(f), (8, 16, 9)))
    np.testing.assert_allclose(up[::2, ::2, ::2], f, atol=1e-6)
    # In between: the mean of the neighbours, across the wrap for the negative frequencies.
    np.testing.assert_allclose(up[7, ::2, ::2], 0.5 * (f[3] + f[0]), atol=1e-6)
    # The mixer built on one grid runs on another.
    cfg = denoiser_config("tiny", spectral_mode="filter3d")
    model = den.SpectralDenoiser(cfg)
    params = jax.jit(model.init)(jax.random.key(0), *den.example_inputs(cfg, 1, GRID, 3))
    out = jax.jit(model.apply)(params, *den.example_inputs(cfg, 1, (3, 6, 8), 3))
    assert out.shape == (1, 3, 6, 8, cfg.vocab_size) and np.all(np.isfinite(np.asarray(out)))


def _square_products(jaxpr, tokens):
    """Shapes of every dot_general output with two axes of at least `tokens` (an attention map)."""
    found = []
    for eqn in jaxpr.eqns:
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                found += _square_products(inner, tokens)
        if eqn.primitive.name == "dot_general":
            shape = eqn.outvars[0].aval.shape
            if sum(d >= tokens for d in shape) >= 2:
                found.append(shape)
    return found


def test_no_token_by_token_product_but_text_cross_attention_stays():
    grid, text_len = (2, 8, 16), 3  # 256 tokens; every other axis < 128 (FFN 64, width 32, codes 16)
    tokens = 256
    found = {}
    for mode in ("filter3d", "qkv_fft2"):
        cfg = denoiser_config("tiny", spectral_mode=mode, mlp_ratio=2.0)
        model = den.SpectralDenoiser(cfg)
        inputs = den.example_inputs(cfg, 2, grid, text_len)
        params = jax.eval_shape(model.init, jax.random.key(0), *inputs)

        def loss(p, model=model, inputs=inputs):
            return jnp.sum(model.apply(p, *inputs))

        closed = jax.make_jaxpr(jax.grad(loss))(params)
        # Half the tokens: the rfft form of qkv_fft2 keeps N/2 + 1 query rows.
        found[mode] = _square_products(closed.jaxpr, tokens // 2)
        text = str(closed)
        assert "fft" in text
    assert found["filter3d"] == [], found["filter3d"]
    assert found["qkv_fft2"], "the check must see the attention map of an attention mode"
    # Cross-attention to the text is kept: (batch, heads, tokens, text) logits.
    cfg = denoiser_config("tiny", spectral_mode="filter3d")
    boxed = jax.eval_shape(
        den.SpectralDenoiser(cfg).init, jax.random.key(0), *den.example_inputs(cfg, 2, grid, 3)
    )
    blocks = boxed["params"]["blocks"]
    assert "cross_attn" in blocks and "self_attn" not in blocks
    assert blocks["mixer"]["filter_real"].names == ("layers", None, None, None, "mlp")
    assert blocks["mixer"]["value"]["kernel"].names == ("layers", "embed", "mlp")


def test_inpainting_is_refused_with_a_reason():
    cfg = denoiser_config("tiny", spectral_mode="filter3d")
    ids, t, fps, text, mask = den.example_inputs(cfg, 1, GRID, 3)
    with pytest.raises(ValueError, match="no self-attention"):
        den.SpectralDenoiser(cfg).init(jax.random.key(0), ids, t, fps, text, mask, context_ids_bthw=ids)


def test_sharded_forward_and_grads_equal_unsharded():
    # Batch over data, channels over tensor x sequence (tokens arrive split over sequence and are regrouped).
    mesh_shape = {"data": 2, "tensor": 2, "sequence": 2}
    cfg = denoiser_config("tiny", spectral_mode="filter3d")
    model = den.SpectralDenoiser(cfg)
    rng = np.random.default_rng(3)
    inputs = (
        rng.integers(0, cfg.vocab_size + 1, (4, *GRID)).astype(np.int32),
        np.array([3, 9, 14, 1], np.int32),
        np.full((4,), 8.0, np.float32),
        rand(rng, 4, 5, cfg.text_dim),
        np.arange(5)[None] < np.array([[2], [5], [3], [4]]),
    )
    boxed = jax.eval_shape(model.init, jax.random.key(0), *inputs)["params"]
    leaves, tree = jax.tree.flatten(sharding.unbox(boxed))
    params = tree.unflatten([0.3 * rand(rng, *x.shape) + 0.5 for x in leaves])  # every branch live

    def loss(p, *a):
        out = model.apply({"params": p}, *a)
        return jnp.mean(jnp.sin(out)), out

    fn = jax.value_and_grad(loss, has_aux=True)
    (want_loss, want), want_grads = jax.jit(fn)(params, *inputs)
    mesh = mesh_lib.make_mesh(mesh_shape)
    shardings = sharding.unbox(sharding.tree_shardings(boxed, mesh))
    batch = NamedSharding(mesh, sharding.logical_to_spec(("act_batch",), (4,), mesh))
    args = (jax.device_put(params, shardings), *jax.device_put(inputs, batch))
    with sharding.use_mesh(mesh):
        assert "shard_map" in str(jax.make_jaxpr(fn)(*args))
        (got_loss, got), got_grads = jax.jit(fn)(*args)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(float(got_loss), float(want_loss), rtol=1e-5)
    for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-4, rtol=1e-3)


def test_learns_a_task_that_needs_token_mixing():
    """Predict each token's neighbour one frame later and one column left (circularly): no per-token function
    can, so the loss can only fall below chance (log K) if the filter carries information between tokens."""
    cfg = denoiser_config("tiny", spectral_mode="filter3d", vocab_size=8, depth=1)
    model = den.SpectralDenoiser(cfg)
    _, t_b, fps_b, text, mask = den.example_inputs(cfg, 16, GRID, 2)
    params = jax.jit(model.init)(jax.random.key(0), *den.example_inputs(cfg, 16, GRID, 2))["params"]
    params = sharding.unbox(params)
    tx = optax.adam(3e-3)

    @jax.jit
    def step(p, opt, key):
        ids = jax.random.randint(key, (16, *GRID), 0, cfg.vocab_size)
        target = jnp.roll(ids, (1, -1), axis=(1, 3))

        def loss_fn(p):
            logits = model.apply({"params": p}, ids, t_b, fps_b, text, mask)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), target[..., None], -1))

        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, opt = tx.update(grads, opt, p)
        return optax.apply_updates(p, updates), opt, loss

    opt = tx.init(params)
    losses = []
    for i in range(150):
        params, opt, loss = step(params, opt, jax.random.key(i))
        losses.append(float(loss))
    chance = np.log(cfg.vocab_size)
    assert np.mean(losses[:5]) > 0.9 * chance
    assert np.mean(losses[-10:]) < 0.5 * chance, losses[::10]
