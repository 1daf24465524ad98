"""Spectral mixing variants against direct numpy references, bf16, and the shard_map path on 8 devices."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from motionaura_jax.models import spectral
from motionaura_jax.parallel import mesh as mesh_lib
from motionaura_jax.parallel import sharding


def dft_matrix(n: int) -> np.ndarray:
    """Orthonormal DFT matrix F[k, j] = exp(-2πi jk/n)/√n, written out (no FFT library)."""
    j = np.arange(n)
    return np.exp(-2j * np.pi * np.outer(j, j) / n) / np.sqrt(n)


def np_fft2(x: np.ndarray, axis_a: int, axis_b: int) -> np.ndarray:
    """Orthonormal 2D DFT over two axes by explicit matrix products."""
    x = np.moveaxis(x, (axis_a, axis_b), (-2, -1)).astype(np.complex128)
    x = dft_matrix(x.shape[-2]) @ x @ dft_matrix(x.shape[-1]).T
    return np.moveaxis(x, (-2, -1), (axis_a, axis_b))


def np_ifft2(x: np.ndarray, axis_a: int, axis_b: int) -> np.ndarray:
    x = np.moveaxis(x, (axis_a, axis_b), (-2, -1))
    x = dft_matrix(x.shape[-2]).conj() @ x @ dft_matrix(x.shape[-1]).conj().T
    return np.moveaxis(x, (-2, -1), (axis_a, axis_b))


def np_qkv_fft2(q, k, v, mask=None):
    if mask is not None:
        k = np.where(mask[:, :, None, None], k, 0)
        v = np.where(mask[:, :, None, None], v, 0)
    qf, kf, vf = (np_fft2(a, 1, 3) for a in (q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", qf, kf.conj()).real / np.sqrt(q.shape[-1])
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np_ifft2(np.einsum("bhqk,bkhd->bqhd", probs, vf), 1, 3).real


def rand(rng, *shape):
    return rng.normal(size=shape).astype(np.float32)


def test_qkv_fft2_matches_direct_dft_reference():
    rng = np.random.default_rng(0)
    q, k, v = rand(rng, 2, 6, 3, 4), rand(rng, 2, 5, 3, 4), rand(rng, 2, 5, 3, 4)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    for impl in spectral.QKV_FFT2_IMPLS:  # the literal formula and its half-spectrum forms
        for m in (None, mask):
            got = spectral.qkv_fft2_attention(
                jnp.asarray(q),
                jnp.asarray(k),
                jnp.asarray(v),
                None if m is None else jnp.asarray(m),
                impl=impl,
            )
            np.testing.assert_allclose(np.asarray(got), np_qkv_fft2(q, k, v, m), atol=2e-5, rtol=1e-4)
    # Odd and even token counts take different rfft paths (with and without a Nyquist row).
    q7 = rand(np.random.default_rng(9), 2, 7, 3, 4)
    np.testing.assert_allclose(
        np.asarray(spectral.qkv_fft2_attention(q7, k, v)), np_qkv_fft2(q7, k, v), atol=2e-5, rtol=1e-4
    )
    # The operator is not plain attention in disguise: the token-axis FFT changes the result.
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / 2.0
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    plain = np.einsum("bhqk,bkhd->bqhd", probs / probs.sum(-1, keepdims=True), v)
    assert np.abs(np_qkv_fft2(q, k, v) - plain).max() > 0.1


@pytest.mark.parametrize("queries,keys", [(8, 8), (7, 9), (6, 5)])
def test_qkv_fft2_impls_have_the_literal_formulas_gradients(queries, keys, monkeypatch):
    # "hermitian" has its backward pass written out (half-spectrum maps); "fft2" is the formula under autodiff.
    # Even and odd key counts differ in the mirrored keys (an even spectrum's Nyquist key has no mirror).
    rng = np.random.default_rng(queries * keys)
    q, w = rand(rng, 2, queries, 3, 4), rand(rng, 2, queries, 3, 4)
    k, v = rand(rng, 2, keys, 3, 4), rand(rng, 2, keys, 3, 4)
    mask = jnp.asarray(rng.random((2, keys)) < 0.7).at[:, 0].set(True)

    def grads(impl, query_chunk=0):
        def loss(q, k, v):
            out = spectral.qkv_fft2_attention(q, k, v, mask, impl=impl, query_chunk=query_chunk)
            return jnp.sum(out * w)

        return jax.value_and_grad(loss, argnums=(0, 1, 2))(q, k, v)

    want_loss, want = grads("fft2")
    # A map past ROW_BLOCK_MAP_BYTES is built in blocks of query rows, the last block overlapping the one before.
    row_block = spectral.ROW_BLOCK_MAP_BYTES
    one_row = 2 * 3 * (keys // 2 + 1) * 4  # (batch, heads, 1 row, rfft keys) float32
    for impl, chunk, block in (
        ("rfft", 0, row_block),
        ("hermitian", 0, row_block),
        ("hermitian", 3, row_block),
        ("hermitian", 0, 2 * one_row),
        ("hermitian", 0, one_row),
    ):
        monkeypatch.setattr(spectral, "ROW_BLOCK_MAP_BYTES", block)
        got_loss, got = grads(impl, chunk)
        forward = functools.partial(spectral.qkv_fft2_attention, impl=impl)
        jaxpr = str(jax.make_jaxpr(forward)(q, k, v))
        looped = "scan[" in jaxpr or "while[" in jaxpr
        assert looped == (block < row_block), (impl, block)
        with spectral.whole_maps():  # how FLOPs are counted: the same step with no loop (a fresh trace)
            whole = functools.partial(spectral.qkv_fft2_attention, impl=impl)
            assert "scan[" not in str(jax.make_jaxpr(whole)(q, k, v))
        np.testing.assert_allclose(float(got_loss), float(want_loss), atol=2e-5, err_msg=impl)
        for g, g_want in zip(got, want, strict=True):
            np.testing.assert_allclose(
                np.asarray(g), np.asarray(g_want), atol=2e-5, err_msg=f"{impl} {chunk}"
            )


def test_qkv_fft2_padded_values_do_not_matter_and_empty_mask_gives_zero():
    rng = np.random.default_rng(1)
    q, k, v = rand(rng, 1, 4, 2, 4), rand(rng, 1, 5, 2, 4), rand(rng, 1, 5, 2, 4)
    mask = jnp.asarray([[1, 1, 0, 0, 0]], bool)
    k2, v2 = k.copy(), v.copy()
    k2[:, 2:], v2[:, 2:] = 7.0, -3.0
    a = spectral.qkv_fft2_attention(q, k, v, mask)
    b = spectral.qkv_fft2_attention(q, k2, v2, mask)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    empty = spectral.qkv_fft2_attention(q, k, v, jnp.zeros((1, 5), bool))
    np.testing.assert_allclose(np.asarray(empty), 0.0, atol=1e-7)


def test_fnet_mix_matches_direct_dft_reference():
    y = rand(np.random.default_rng(2), 2, 7, 6)
    got = spectral.fnet_mix(jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(got), np_fft2(y, 1, 2).real, atol=2e-5, rtol=1e-4)


def test_global_filter_matches_numpy_reference():
    rng = np.random.default_rng(3)
    y = rand(rng, 2, 3, 4, 6, 5)
    fr, fi = rand(rng, 4, 4, 5), rand(rng, 4, 4, 5)
    got = spectral.global_filter(jnp.asarray(y), jnp.asarray(fr), jnp.asarray(fi))
    ref = np.fft.irfft2(
        np.fft.rfft2(y, axes=(2, 3), norm="ortho") * (fr + 1j * fi), s=(4, 6), axes=(2, 3), norm="ortho"
    )
    np.testing.assert_allclose(np.asarray(got), ref, atol=2e-5, rtol=1e-4)
    # An all-pass filter (1 + 0i) is the identity: checks the normalisation pair.
    ones = np.ones_like(fr)
    same = spectral.global_filter(jnp.asarray(y), jnp.asarray(ones), jnp.zeros_like(ones))
    np.testing.assert_allclose(np.asarray(same), y, atol=2e-5)
    with pytest.raises(ValueError, match="token grid"):
        spectral.global_filter(jnp.asarray(y), jnp.zeros((4, 6, 5)), jnp.zeros((4, 6, 5)))


def test_spectral_ops_run_in_bf16_and_stay_close_to_float32():
    rng = np.random.default_rng(4)
    q, k, v = (jnp.asarray(rand(rng, 1, 8, 2, 8)) for _ in range(3))
    y = jnp.asarray(rand(rng, 1, 8, 16))
    out16 = spectral.qkv_fft2_attention(*(a.astype(jnp.bfloat16) for a in (q, k, v)))
    assert out16.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(out16, np.float32), np.asarray(spectral.qkv_fft2_attention(q, k, v)), atol=0.08
    )
    mix16 = spectral.fnet_mix(y.astype(jnp.bfloat16))
    assert mix16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(mix16, np.float32), np.asarray(spectral.fnet_mix(y)), atol=0.08)


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="spectral_mode"):
        spectral.check_mode("fft")


# ------------------------------------------------------------------------------------------------------------
# shard_map path == plain path on a (data=2, fsdp=2, tensor=2) mesh of 8 fake CPU devices.


@pytest.fixture(scope="module", params=[{"data": 2, "fsdp": 2, "tensor": 2}, {"data": 2, "sequence": 4}])
def mesh(request):
    return mesh_lib.make_mesh(request.param)


def _sharded(mesh, x, spec):
    return jax.device_put(x, NamedSharding(mesh, spec))


def test_shard_map_path_equals_plain_path(mesh):
    rng = np.random.default_rng(5)
    q, k, v = rand(rng, 4, 8, 4, 4), rand(rng, 4, 6, 4, 4), rand(rng, 4, 6, 4, 4)
    mask = rng.random((4, 6)) > 0.3
    y = rand(rng, 4, 4, 2, 4, 6)
    fr, fi = rand(rng, 2, 3, 6), rand(rng, 2, 3, 6)
    w = rand(rng, 4, 6, 4, 10)  # values that carry an output projection: heads summed (psum over head shards)

    def loss(q, k, v, mask, y, fr, fi, w):
        a = spectral.qkv_fft2_attention(q, k, v, mask)
        b = spectral.fnet_mix(y.reshape(4, 32, 6))
        c = spectral.global_filter(y, fr, fi)
        d = spectral.qkv_fft2_attention(q, k, w, mask, sum_heads=True)
        return jnp.sum(a * a) + jnp.sum(jnp.sin(b)) + jnp.sum(c * c) + jnp.sum(jnp.sin(d)), (a, b, c, d)

    argnums = (0, 4, 5, 6, 7)
    fn = jax.jit(jax.value_and_grad(loss, argnums=argnums, has_aux=True))
    (plain_loss, plain_out), plain_grads = fn(q, k, v, mask, y, fr, fi, w)
    summed = spectral.qkv_fft2_attention(q, k, w, mask, sum_heads=True)
    np.testing.assert_allclose(
        np.asarray(summed),
        np.asarray(spectral.qkv_fft2_attention(q, k, w, mask).sum(2)),
        atol=1e-5,
        rtol=1e-5,
    )

    # Inputs arrive split the way the model's activation rules split them (tokens over `sequence`).
    def per_head(x):
        return _sharded(
            mesh, x, sharding.logical_to_spec(("act_batch", "act_len", "act_heads", None), x.shape, mesh)
        )

    args = (
        per_head(q),
        per_head(k),
        per_head(v),
        _sharded(mesh, mask, PartitionSpec("data")),
        _sharded(mesh, y, sharding.logical_to_spec(("act_batch", "act_frames"), y.shape[:2], mesh)),
        fr,
        fi,
        per_head(w),
    )
    with sharding.use_mesh(mesh):
        jaxpr = str(jax.make_jaxpr(loss)(*args))
        (mesh_loss, mesh_out), mesh_grads = jax.jit(jax.value_and_grad(loss, argnums=argnums, has_aux=True))(
            *args
        )
    assert jaxpr.count("shard_map") >= 4, "the mesh path should run every FFT block under shard_map"
    if mesh.shape["sequence"] > 1:  # heads (attention) and frames (global filter) split over sequence
        assert "P('data', None, 'sequence', None)" in jaxpr and "P('data', 'sequence')" in jaxpr
    np.testing.assert_allclose(float(mesh_loss), float(plain_loss), rtol=1e-5)
    for got, want in zip(mesh_out + mesh_grads, plain_out + plain_grads, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4, rtol=1e-4)
