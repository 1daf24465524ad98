"""Attention pieces of the denoiser: RoPE (relative positions only), attention vs numpy, masks, embeddings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from motionaura_jax.models import attention as attn
from motionaura_jax.models import layers


def scores(rope, q_d, k_d):
    """q·k after rotating the same q and k vectors to every position: (L, L)."""
    n = rope[0].shape[0]
    q = attn.apply_rope(jnp.broadcast_to(q_d, (1, n, 1, q_d.shape[0])), rope)[0, :, 0]
    k = attn.apply_rope(jnp.broadcast_to(k_d, (1, n, 1, k_d.shape[0])), rope)[0, :, 0]
    return np.asarray(q @ k.T, np.float64)


def test_rope_1d_scores_depend_only_on_relative_position():
    rng = np.random.default_rng(0)
    q_d, k_d = (jnp.asarray(rng.normal(size=8), jnp.float32) for _ in range(2))
    s = scores(attn.rope_1d(jnp.arange(12), 8), q_d, k_d)
    for offset in range(-5, 6):
        diag = np.diagonal(s, offset)
        np.testing.assert_allclose(diag, diag[0], atol=1e-4)
    assert abs(s[0, 0] - s[3, 0]) > 1e-3  # and the relative position does matter


def test_rope_3d_scores_depend_only_on_relative_position():
    rng = np.random.default_rng(1)
    head_dim = 16
    q_d, k_d = (jnp.asarray(rng.normal(size=head_dim), jnp.float32) for _ in range(2))
    positions = np.asarray(attn.grid_positions((3, 4, 5)))
    s = scores(attn.rope_3d(jnp.asarray(positions), head_dim), q_d, k_d)
    by_offset: dict[tuple, float] = {}
    for i in range(len(positions)):
        for j in range(len(positions)):
            key = tuple(positions[i] - positions[j])
            if key in by_offset:
                assert abs(s[i, j] - by_offset[key]) < 1e-4, key
            by_offset[key] = s[i, j]
    # Each axis moves the score on its own: shifting only t, only h or only w changes it.
    base = by_offset[(0, 0, 0)]
    for key in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
        assert abs(by_offset[key] - base) > 1e-4, key
    assert attn.rope_3d_split(64) == (8, 12, 12)
    with pytest.raises(ValueError, match="head_dim"):
        attn.rope_3d_split(4)


def test_rope_preserves_norm_and_is_identity_at_position_zero():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 6, 2, 8)), jnp.float32)
    rope = attn.video_rope("3d", (1, 2, 3), 8)
    y = attn.apply_rope(x, rope)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(y[:, 0], x[:, 0], atol=1e-6)


def np_attention(x, ctx, p, heads, mask):
    def proj(name, a):
        return np.einsum("bld,dhk->blhk", a, p[name]["kernel"]) + p[name]["bias"]

    q, k, v = proj("query", x), proj("key", ctx), proj("value", ctx)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(mask[:, None, None, :], logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", probs, v)
    return np.einsum("blhk,hkd->bld", out, p["out"]["kernel"]) + p["out"]["bias"]


def test_plain_cross_attention_matches_numpy_and_ignores_padding():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 5, 16)).astype(np.float32)
    ctx = rng.normal(size=(2, 4, 16)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
    module = attn.MultiHeadAttention(num_heads=4, head_dim=4, qk_norm=False)
    params = jax.tree.map(np.asarray, attn_params(module, x, ctx, mask))
    params = jax.tree.map(lambda a: a + rng.normal(size=a.shape).astype(np.float32) * 0.1, params)
    got = module.apply({"params": params}, x, ctx, key_mask_bs=mask)
    np.testing.assert_allclose(np.asarray(got), np_attention(x, ctx, params, 4, mask), atol=1e-5, rtol=1e-5)
    ctx2 = ctx.copy()
    ctx2[0, 2:] = 100.0
    np.testing.assert_allclose(
        np.asarray(module.apply({"params": params}, x, ctx2, key_mask_bs=mask)), np.asarray(got), atol=1e-6
    )
    # No key at all (unconditional): the attention output is zero, the result is the output bias alone.
    empty = module.apply({"params": params}, x, ctx, key_mask_bs=np.zeros_like(mask))
    np.testing.assert_allclose(
        np.asarray(empty), np.broadcast_to(params["out"]["bias"], empty.shape), atol=1e-6
    )


def attn_params(module, x, ctx, mask):
    from motionaura_jax.parallel.sharding import unbox

    return unbox(module.init(jax.random.key(0), x, ctx, key_mask_bs=mask))["params"]


def test_spectral_core_differs_from_plain_and_logical_names_are_set():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1, 6, 16)).astype(np.float32)
    plain = attn.MultiHeadAttention(num_heads=2, head_dim=8)
    spectral = attn.MultiHeadAttention(num_heads=2, head_dim=8, spectral=True)
    boxed = plain.init(jax.random.key(0), x)["params"]
    assert boxed["query"]["kernel"].names == ("embed", "heads", "kv")
    assert boxed["out"]["kernel"].names == ("heads", "kv", "embed")
    assert boxed["query_norm"]["scale"].names == ("norm",)
    a = plain.apply({"params": boxed}, x)
    b = spectral.apply({"params": boxed}, x)
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3


def test_sinusoidal_embedding_formula_and_condition_embedding():
    t = jnp.asarray([0, 3, 50], jnp.int32)
    emb = np.asarray(attn.sinusoidal_embedding(t, 8))
    freqs = 10_000.0 ** (-np.arange(4) / 4)
    ref = np.concatenate([np.cos(np.outer([0, 3, 50], freqs)), np.sin(np.outer([0, 3, 50], freqs))], -1)
    np.testing.assert_allclose(emb, ref, atol=1e-5)
    cond = attn.ConditionEmbedding(16, freq_dim=32)
    fps = jnp.asarray([8.0, 8.0, 24.0])
    params = cond.init(jax.random.key(0), t, fps)
    c = np.asarray(cond.apply(params, t, fps))
    c_fps = np.asarray(cond.apply(params, t, jnp.asarray([12.0, 8.0, 24.0])))
    assert c.shape == (3, 16)
    assert np.abs(c[0] - c_fps[0]).max() > 1e-4 and np.allclose(c[1:], c_fps[1:])


def test_adaln_zero_starts_at_zero_and_bad_dtype_is_clear():
    chunks = attn.AdaLNZero(3).init_with_output(jax.random.key(0), jnp.ones((2, 8)))[0]
    assert len(chunks) == 3 and all(c.shape == (2, 1, 8) and not np.any(np.asarray(c)) for c in chunks)
    with pytest.raises(ValueError, match="dtype"):
        layers.dtype_from_name("int8")


def _autodiff_attention(q, k, v, scale, mask):
    logits = jnp.einsum("...qhd,...khd->...hqk", q, k) * scale
    logits = jnp.where(mask[..., None, None, :], logits, jnp.finfo(jnp.float32).min)
    return jnp.einsum("...hqk,...khd->...qhd", jax.nn.softmax(logits, axis=-1), v)


@pytest.mark.parametrize("batch", [(), (2,)])
@pytest.mark.parametrize("head_dim", [4, 8])  # 5 keys: the written-out backward pass (4), autodiff (8)
def test_softmax_attention_values_and_gradients_match_autodiff(batch, head_dim):
    kq, kk, kv, kg = jax.random.split(jax.random.PRNGKey(3), 4)
    q = jax.random.normal(kq, (*batch, 7, 2, head_dim))
    k = jax.random.normal(kk, (*batch, 5, 2, head_dim))
    v = jax.random.normal(kv, (*batch, 5, 2, head_dim))
    g = jax.random.normal(kg, (*batch, 7, 2, head_dim))
    mask = jnp.broadcast_to(jnp.array([True, True, False, True, False]), (*batch, 5))
    for key_mask in (None, mask):
        reference_mask = jnp.ones(k.shape[:-2], bool) if key_mask is None else key_mask

        def fused(q, k, v, key_mask=key_mask):
            return jnp.sum(layers.softmax_attention(q, k, v, 0.3, key_mask) * g)

        def reference(q, k, v, mask=reference_mask):
            return jnp.sum(_autodiff_attention(q, k, v, 0.3, mask) * g)

        value, grads = jax.value_and_grad(fused, argnums=(0, 1, 2))(q, k, v)
        ref_value, ref_grads = jax.value_and_grad(reference, argnums=(0, 1, 2))(q, k, v)
        np.testing.assert_allclose(value, ref_value, rtol=1e-5)
        for got, want in zip(grads, ref_grads, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # A masked-out key gets no gradient and changes nothing.
    grads = jax.grad(lambda k: jnp.sum(layers.softmax_attention(q, k, v, 0.3, mask) * g))(k)
    assert float(jnp.max(jnp.abs(grads[..., 2, :, :]))) == 0.0


def test_softmax_attention_keeps_bfloat16_values_in_their_dtype():
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (6, 2, 4)).astype(jnp.bfloat16) for i in range(3))
    out = layers.softmax_attention(q, k, v, 0.35)
    ref = _autodiff_attention(*(x.astype(jnp.float32) for x in (q, k, v)), 0.35, jnp.ones(6, bool))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref, atol=3e-2)
    grads = jax.grad(lambda q, k, v: jnp.sum(layers.softmax_attention(q, k, v, 0.35)), argnums=(0, 1, 2))(
        q, k, v
    )
    assert [x.dtype for x in grads] == [jnp.bfloat16] * 3


@pytest.mark.parametrize("spectral", [False, True])
def test_output_fold_equals_the_projected_output(spectral, monkeypatch):
    """Cross-attention to a short text takes its output projection on the values (`fold_output`): the values
    and gradients of projecting the output, the numpy formula, and the bias alone for an empty text."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 32, 64)).astype(np.float32)
    ctx = rng.normal(size=(2, 3, 64)).astype(np.float32)
    mask = np.array([[1, 1, 0], [1, 1, 1]], bool)
    assert attn.output_fold_pays(32, 3, 2, 32, 64)
    assert not attn.output_fold_pays(5120, 226, 40, 64, 2560)  # paper scale: the output is projected
    module = attn.MultiHeadAttention(num_heads=2, head_dim=32, spectral=spectral)
    params = jax.tree.map(np.asarray, attn_params(module, x, ctx, mask))
    params = jax.tree.map(lambda a: a + rng.normal(size=a.shape).astype(np.float32) * 0.1, params)
    folds = []

    def counted(v, out_proj):
        folds.append(v.shape)
        return fold_output(v, out_proj)

    fold_output = attn.fold_output
    monkeypatch.setattr(attn, "fold_output", counted)

    def run(params, x, ctx, mask):
        def loss(params, x, ctx):
            out = module.apply({"params": params}, x, ctx, key_mask_bs=mask)
            return jnp.sum(jnp.sin(out)), out

        (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(params, x, ctx)
        return out, grads

    folded = run(params, x, ctx, mask)
    assert folds == [(2, 3, 2, 32)]
    monkeypatch.setattr(attn, "output_fold_pays", lambda *args: False)
    projected = run(params, x, ctx, mask)
    assert len(folds) == 1
    for got, want in zip(jax.tree.leaves(folded), jax.tree.leaves(projected), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4, rtol=1e-4)
    if not spectral:
        normed = attn.MultiHeadAttention(num_heads=2, head_dim=32, qk_norm=False)
        plain = {k: v for k, v in params.items() if not k.endswith("_norm")}
        monkeypatch.undo()
        got = normed.apply({"params": plain}, x, ctx, key_mask_bs=mask)
        want = np_attention(x, ctx, plain, 2, mask)
        np.testing.assert_allclose(np.asarray(got), want, atol=2e-5, rtol=2e-5)
    monkeypatch.undo()
    empty = module.apply({"params": params}, x, ctx, key_mask_bs=np.zeros_like(mask))
    np.testing.assert_allclose(
        np.asarray(empty), np.broadcast_to(params["out"]["bias"], empty.shape), atol=1e-6
    )
