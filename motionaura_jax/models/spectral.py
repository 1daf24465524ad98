"""Frequency-domain mixing of the spectral denoiser (`spectral_mode`), after paper_notes §4.2.

The paper says only that its denoiser "processes video data in the frequency domain" with 2D FFT layers,
inside self- and cross-attention; the equations were not recoverable, so the variant is a switch:

- "qkv_fft2": per head, FFT2 over (tokens, head_dim) of q, k, v; A = softmax(Re(q̂ k̂ᴴ)/√d);
  out = Re(IFFT2(A·v̂)). An FFT over head_dim alone would leave the logits unchanged (Parseval), the token
  axis is what changes the operator. In fact the head_dim FFT drops out of the operator entirely, and real
  inputs let half the query frequencies stand for the rest ("rfft": what plain attention costs), and half the
  key and value frequencies too ("hermitian", the default: half the matmul FLOPs of plain attention), with
  the same result (derivations in `_qkv_fft2_local` and `_hermitian_softmax`). Used in self-attention and
  (with `cross_fft`) cross-attention to text.
- "fnet_mix": x + Re(FFT2_{L,D}(LN x)) before plain attention (FNet token mixing).
- "global_filter": per latent frame FFT2 over (h, w) -> learnable complex filter -> IFFT2 (GFNet), before
  plain attention.
- "filter3d": attention-free. Token self-attention is replaced by a gated global filter over the whole
  (frames, height, width) grid: RFFTN_{t,h,w} -> learnable complex filter per channel -> IRFFTN, between
  channel projections (`Filter3DMixer`). Cross-attention to the short text stays, so the block costs
  O(N log N) in the N video tokens instead of O(N^2) (the paper's "global context in the frequency domain",
  taken to its end).
- "none": plain attention, the ablation baseline.

Every FFT runs in float32 (JAX rejects bf16 FFTs; casts in and out), with norm="ortho" so the residual stream
keeps its scale (an unnormalised FFT2 over 5120 tokens x 2048 channels would multiply it by ~3000). XLA
replicates an FFT over a sharded axis, so when a mesh is active (`parallel.sharding.active_mesh()`) each FFT
block runs under `jax.shard_map` with its FFT axes local: only batch axes and axes the FFT does not cross
(heads for per-head attention, frames for the per-frame filter) are split across devices.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from motionaura_jax.models.layers import over_query_chunks, over_unit_batch, softmax_attention
from motionaura_jax.parallel import sharding as sharding_lib

SPECTRAL_MODES = ("qkv_fft2", "fnet_mix", "global_filter", "filter3d", "none")
# Modes with no token self-attention (the block's self-attention branch is the mixer).
ATTENTION_FREE_MODES = ("filter3d",)
# Mesh axes a spectral block may split: batch over those of the active `act_batch` rule (default below).
BATCH_MESH_AXES = ("data", "fsdp")
# Heads are independent, so spectral attention splits them over tensor and over sequence: tokens that arrive
# split over `sequence` are regrouped by head (an all-to-all, as in Ulysses sequence parallelism) rather than
# gathered whole onto every device. Frames are independent for the per-frame global filter.
HEAD_MESH_AXES = ("tensor", "sequence")
# The 3D filter acts on each channel alone: channels split over tensor and sequence like heads do.
CHANNEL_MESH_AXES = ("tensor", "sequence")
FRAME_MESH_AXES = ("sequence",)


def check_mode(mode: str) -> str:
    if mode not in SPECTRAL_MODES:
        raise ValueError(f"unknown spectral_mode {mode!r}; use one of {', '.join(SPECTRAL_MODES)}")
    return mode


# ------------------------------------------------------------------------------------------------------------
# shard_map plumbing: split only non-FFT axes, and only over mesh axes whose product divides them.


def _dividing_axes(mesh: Mesh, candidates: tuple[str, ...], size: int) -> tuple[str, ...]:
    axes = [a for a in candidates if mesh.shape.get(a, 1) > 1]
    while axes and size % math.prod(mesh.shape[a] for a in axes):
        axes.pop()
    return tuple(axes)


def _entry(axes: tuple[str, ...]) -> str | tuple[str, ...] | None:
    return None if not axes else axes[0] if len(axes) == 1 else axes


def _batch_axes(mesh: Mesh, batch: int) -> tuple[str, ...]:
    return _dividing_axes(mesh, sharding_lib.mesh_axes_for("act_batch", BATCH_MESH_AXES), batch)


def _batch_spec(mesh: Mesh, batch: int, ndim: int) -> PartitionSpec:
    return PartitionSpec(_entry(_batch_axes(mesh, batch)), *([None] * (ndim - 1)))


# ------------------------------------------------------------------------------------------------------------
# qkv_fft2: attention between spectral components.


QKV_FFT2_IMPLS = ("hermitian", "rfft", "fft2")


def _real_imag(xf: jax.Array, dtype: jnp.dtype) -> jax.Array:
    # [Re, Im] side by side turns complex products into one real matmul: Re(a·conj(b)) = ar·br + ai·bi.
    return jnp.concatenate([xf.real, xf.imag], axis=-1).astype(dtype)


def _spectral_softmax_attention(
    q_ri, k_ri, v_ri, head_dim: int, dtype: jnp.dtype, query_chunk: int = 0
) -> jax.Array:
    """softmax(Re(q̂ k̂ᴴ)/√Dh) · v̂ on [Re, Im] stacks; returns the complex (B, rows, H, Dh) result. The
    softmax is over keys, so query rows are independent: `query_chunk` > 0 computes them in rematerialised
    chunks (layers.over_query_chunks)."""
    if query_chunk:
        rows = functools.partial(
            _spectral_softmax_attention, k_ri=k_ri, v_ri=v_ri, head_dim=head_dim, dtype=dtype
        )
        return over_query_chunks(rows, q_ri, query_chunk)
    rows = functools.partial(_softmax_rows, head_dim=head_dim, dtype=dtype)
    o_ri = over_unit_batch(rows, q_ri, k_ri, v_ri)
    return jax.lax.complex(o_ri[..., :head_dim], o_ri[..., head_dim:])


def _softmax_rows(q_ri, k_ri, v_ri, head_dim: int, dtype: jnp.dtype) -> jax.Array:  # with or without batch
    # A is real, so A·v̂ = A·Re(v̂) + i·A·Im(v̂): again one real matmul over [Re, Im].
    return softmax_attention(q_ri, k_ri, v_ri.astype(dtype), 1.0 / math.sqrt(head_dim))


def _qkv_fft2_hermitian(
    q32, k32, v32, dtype: jnp.dtype, query_chunk: int = 0, sum_heads: bool = False
) -> jax.Array:
    """(B, L, H, Dh) x (B, S, H, Dh) float32 -> (B, L, H, Dh) in `dtype`, from rfft halves of q, k and v
    (`_hermitian_softmax`). It works in a (B, H, Dh, tokens) layout: every FFT runs over the minor axis and the
    real and imaginary parts stay apart, where the (B, tokens, H, Dh) layout costs a strided transpose around
    each FFT and an [Re, Im] concatenation (a third of the attention's time at 1k tokens on a CPU)."""
    length, keys, head_dim = q32.shape[1], k32.shape[1], q32.shape[-1]

    def spectrum(x_bnhd):
        xf = jnp.fft.rfft(jnp.transpose(x_bnhd, (0, 2, 3, 1)), axis=-1, norm="ortho")
        return xf.real.astype(dtype), xf.imag.astype(dtype)

    (qr, qi), (kr, ki), (vr, vi) = spectrum(q32), spectrum(k32), spectrum(v32)

    def core(qr, qi, kr, ki, vr, vi):  # with or without the batch axis
        if sum_heads:
            return _hermitian_summed(qr, qi, kr, ki, vr, vi, keys, 1.0 / math.sqrt(head_dim))
        # per_pass is static, so a trace under `whole_maps` is not a cached one that has the loop.
        per_pass = _rows_per_pass(qr.shape[-1], qr.size // head_dim * kr.shape[-1] * 4)
        return _hermitian_softmax(qr, qi, kr, ki, vr, vi, keys, 1.0 / math.sqrt(head_dim), per_pass)

    def rows(q_parts):
        return over_unit_batch(core, *q_parts, kr, ki, vr, vi)

    out_r, out_i = over_query_chunks(rows, (qr, qi), query_chunk, axis=-1)
    out_bhdl = jnp.fft.irfft(jax.lax.complex(out_r, out_i), n=length, axis=-1, norm="ortho")
    out = jnp.transpose(out_bhdl, (0, 3, 1, 2)).astype(dtype)
    return out[:, :, 0] if sum_heads else out


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8))
def _hermitian_softmax(qr, qi, kr, ki, vr, vi, keys: int, scale: float, per_pass: int):
    """The qkv_fft2 core from half the key and value spectrum ("...hdq" in, float32 (out_r, out_i) out).

    k and v are real, so k̂[-j] = conj(k̂[j]) and v̂[-j] = conj(v̂[j]): with a = q̂rᵀ·k̂r and b = q̂iᵀ·k̂i over the
    rfft keys j = 0..keys//2, the logits are a + b at key j and a - b at key -j (j = 1..keys - half; 0 and
    an even spectrum's Nyquist key have no mirror), and the output A·v̂ is (P₊ + P₋)·v̂r + i·(P₊ - P₋)·v̂i,
    P± the probabilities of the two halves under one softmax. Every matmul is (rows x half x Dh) where plain
    attention's is (rows x keys x Dh): half the FLOPs, the same operator (and the backward, written out
    below in FlashAttention's form, likewise)."""
    return _hermitian_softmax_fwd(qr, qi, kr, ki, vr, vi, keys, scale, per_pass)[0]


def _hermitian_summed(qr, qi, kr, ki, vr, vi, keys: int, scale: float):
    """The core for values that carry the output projection (`attention.fold_output`): (.., h, d, q) queries,
    (.., h, c, k) values, the output (.., 1, c, q) summed over heads inside its matmul, which contracts
    (heads, keys) at once. By autodiff: it serves cross-attention to a short text, whose maps are small."""
    probs_r, probs_i, _ = _hermitian_probs(qr, qi, kr, ki, keys, scale)
    inv_sum_hq1 = 1.0 / jnp.sum(probs_r, axis=-1, keepdims=True)
    out_r = jnp.einsum("...hqk,...hck->...cq", probs_r * inv_sum_hq1, vr, preferred_element_type=jnp.float32)
    out_i = jnp.einsum("...hqk,...hck->...cq", probs_i * inv_sum_hq1, vi, preferred_element_type=jnp.float32)
    return out_r[..., None, :, :], out_i[..., None, :, :]


def _to_map(x, y):  # (.., h, d, q) x (.., h, d, k) -> (.., h, q, k)
    return jnp.einsum("...hdq,...hdk->...hqk", x, y, preferred_element_type=jnp.float32)


def _to_queries(m, y):  # (.., h, q, k) x (.., h, d, k) -> (.., h, d, q)
    return jnp.einsum("...hqk,...hdk->...hdq", m.astype(y.dtype), y, preferred_element_type=jnp.float32)


def _to_keys(m, x):  # (.., h, q, k) x (.., h, d, q) -> (.., h, d, k)
    return jnp.einsum("...hqk,...hdq->...hdk", m.astype(x.dtype), x, preferred_element_type=jnp.float32)


# On a CPU backend, past this many bytes of one (heads, query rows, keys) map, the core runs a block of query rows
# at a time in a loop and keeps no map for the backward pass, which recomputes each block's probabilities from
# the rows' maxima (FlashAttention's way, 2 more of the 12 map-sized matmuls): at 16k tokens a map is 1.1 GB and
# whole maps took 8.9 GB of XLA temporaries. Elsewhere (and for counting FLOPs, `whole_maps`) the maps are built
# whole, as `motionaura compile`'s memory reports assume; `attention_chunk` is the knob for memory there.
ROW_BLOCK_MAP_BYTES = 1 << 28


@contextlib.contextmanager
def whole_maps():
    """Within it the qkv_fft2 core builds its maps whole on every backend: XLA's cost analysis counts a loop's
    body once, so FLOPs are counted on a step traced in here."""
    global ROW_BLOCK_MAP_BYTES
    saved, ROW_BLOCK_MAP_BYTES = ROW_BLOCK_MAP_BYTES, 1 << 62
    try:
        yield
    finally:
        ROW_BLOCK_MAP_BYTES = saved


def _rows_per_pass(num_rows: int, map_bytes: int) -> int:
    if jax.default_backend() != "cpu":
        return num_rows
    return min(num_rows, max(1, ROW_BLOCK_MAP_BYTES * num_rows // max(map_bytes, 1)))


def _row_blocks(fn: Callable, per_pass: int, num_rows: int, init: tuple) -> tuple:
    """fori_loop of fn(start, fresh, carry) -> carry over blocks of `per_pass` query rows; the last block ends at
    the last row, `fresh` marks its rows that no earlier block took."""

    def one_pass(i, carry):
        start = jnp.minimum(i * per_pass, num_rows - per_pass)
        return fn(start, start + jnp.arange(per_pass) >= i * per_pass, carry)

    return jax.lax.fori_loop(0, -(-num_rows // per_pass), one_pass, init)


def _take_rows(x: jax.Array, start: jax.Array, size: int, axis: int) -> jax.Array:
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis=x.ndim + axis)


def _put_rows(x: jax.Array, rows: jax.Array, start: jax.Array, axis: int) -> jax.Array:
    return jax.lax.dynamic_update_slice_in_dim(x, rows, start, axis=x.ndim + axis)


def _hermitian_probs(qr, qi, kr, ki, keys, scale, row_max_hq1=None):
    """Unnormalised P₊ ± P₋ (the two maps the output's matmuls take) and the rows' maxima (given: recomputed)."""
    a, b = _to_map(qr, kr), _to_map(qi, ki)
    key = jnp.arange(kr.shape[-1])
    mirrored = (key >= 1) & (key <= keys - kr.shape[-1])
    pos = (a + b) * scale
    neg = jnp.where(mirrored, (a - b) * scale, -jnp.inf)
    if row_max_hq1 is None:
        row_max_hq1 = jnp.maximum(jnp.max(pos, axis=-1, keepdims=True), jnp.max(neg, axis=-1, keepdims=True))
    exp_pos, exp_neg = jnp.exp(pos - row_max_hq1), jnp.exp(neg - row_max_hq1)
    return exp_pos + exp_neg, exp_pos - exp_neg, row_max_hq1


def _hermitian_softmax_fwd(qr, qi, kr, ki, vr, vi, keys, scale, per_pass):
    num_rows = qr.shape[-1]

    def rows(qr, qi):  # (.., h, d, q) query rows
        probs_r, probs_i, row_max_hq1 = _hermitian_probs(qr, qi, kr, ki, keys, scale)
        inv_sum_h1q = (1.0 / jnp.sum(probs_r, axis=-1))[..., None, :]
        out_r = _to_queries(probs_r, vr) * inv_sum_h1q
        out_i = _to_queries(probs_i, vi) * inv_sum_h1q
        return out_r, out_i, probs_r, probs_i, row_max_hq1, inv_sum_h1q

    if per_pass == num_rows:
        out_r, out_i, probs_r, probs_i, _, inv_sum_h1q = rows(qr, qi)
        return (out_r, out_i), (qr, qi, kr, ki, vr, vi, (probs_r, probs_i), inv_sum_h1q, out_r, out_i)

    def block(start, fresh, outs):  # a repeated row is computed again, to the same values
        del fresh
        out_r, out_i, _, _, row_max_hq1, inv_sum_h1q = rows(
            *(_take_rows(x, start, per_pass, -1) for x in (qr, qi))
        )
        new = (out_r, out_i, row_max_hq1, inv_sum_h1q)
        return tuple(
            _put_rows(x, y, start, axis) for x, y, axis in zip(outs, new, (-1, -1, -2, -1), strict=True)
        )

    shapes = (qr.shape, qi.shape, (*qr.shape[:-2], num_rows, 1), (*qr.shape[:-2], 1, num_rows))
    init = tuple(jnp.zeros(shape, jnp.float32) for shape in shapes)
    out_r, out_i, row_max_hq1, inv_sum_h1q = _row_blocks(block, per_pass, num_rows, init)
    return (out_r, out_i), (qr, qi, kr, ki, vr, vi, row_max_hq1, inv_sum_h1q, out_r, out_i)


def _hermitian_softmax_bwd(keys, scale, per_pass, residuals, g_out):
    qr, qi, kr, ki, vr, vi, kept, inv_sum_h1q, out_r, out_i = residuals
    f32 = jnp.float32
    kr32, ki32, vr32, vi32 = (x.astype(f32) for x in (kr, ki, vr, vi))
    g_r, g_i = (g * inv_sum_h1q for g in g_out)  # fold 1/sum into the (d, q) side
    row_term = jnp.sum(g_r * out_r + g_i * out_i, axis=-2)[..., None]  # rowsum(dO ∘ O) / sum, (.., h, q, 1)

    def rows(qr, qi, g_r, g_i, probs_r, probs_i, row_term):  # q-side arrays (.., h, d, q), maps (.., h, q, k)
        g_map_r, g_map_i = _to_map(g_r, vr32), _to_map(g_i, vi32)
        # With exp_pos, exp_neg = (probs_r ± probs_i)/2, the logits' gradients exp_pos·(g_map_r + g_map_i - row)
        # and exp_neg·(g_map_r - g_map_i - row), summed and subtracted for a and b, are:
        shifted = g_map_r - row_term
        g_a = (probs_r * shifted + probs_i * g_map_i) * scale
        g_b = (probs_i * shifted + probs_r * g_map_i) * scale
        g_q = (_to_queries(g_a, kr32), _to_queries(g_b, ki32))
        g_kv = (_to_keys(g_a, qr.astype(f32)), _to_keys(g_b, qi.astype(f32)))
        return g_q, g_kv + (_to_keys(probs_r, g_r), _to_keys(probs_i, g_i))

    if per_pass == qr.shape[-1]:
        (g_qr, g_qi), g_kv = rows(qr, qi, g_r, g_i, *kept, row_term)
        return _hermitian_grads(g_qr, g_qi, g_kv, (qr, qi, kr, ki, vr, vi))

    def block(start, fresh, carry):  # the repeated rows of the last block add nothing
        g_q, g_kv = carry
        q_rows = [_take_rows(x, start, per_pass, -1) for x in (qr, qi)]
        probs = _hermitian_probs(*q_rows, kr, ki, keys, scale, _take_rows(kept, start, per_pass, -2))[:2]
        g_rows = [jnp.where(fresh, _take_rows(x, start, per_pass, -1), 0.0) for x in (g_r, g_i)]
        row_rows = jnp.where(fresh[:, None], _take_rows(row_term, start, per_pass, -2), 0.0)
        g_q_rows, part = rows(*q_rows, *g_rows, *probs, row_rows)
        g_q = tuple(
            _put_rows(x, jnp.where(fresh, new, _take_rows(x, start, per_pass, -1)), start, -1)
            for x, new in zip(g_q, g_q_rows, strict=True)
        )
        return g_q, tuple(x + y for x, y in zip(g_kv, part, strict=True))

    zeros = (
        tuple(jnp.zeros(x.shape, f32) for x in (qr, qi)),
        tuple(jnp.zeros(x.shape, f32) for x in (kr, ki, vr, vi)),
    )
    (g_qr, g_qi), g_kv = _row_blocks(block, per_pass, qr.shape[-1], zeros)
    return _hermitian_grads(g_qr, g_qi, g_kv, (qr, qi, kr, ki, vr, vi))


def _hermitian_grads(g_qr, g_qi, g_kv, primals):
    return tuple(g.astype(x.dtype) for g, x in zip((g_qr, g_qi, *g_kv), primals, strict=True))


_hermitian_softmax.defvjp(_hermitian_softmax_fwd, _hermitian_softmax_bwd)


def _qkv_fft2_local(
    q_blhd: jax.Array,
    k_bshd: jax.Array,
    v_bshd: jax.Array,
    key_mask_bs: jax.Array | None,
    compute_dtype: jnp.dtype,
    impl: str = "hermitian",
    query_chunk: int = 0,
    sum_heads: bool = False,
) -> jax.Array:
    if sum_heads and impl != "hermitian":
        raise ValueError(
            f"qkv_fft2 sum_heads (a folded output projection) needs impl='hermitian', got {impl!r}"
        )
    head_dim, length = q_blhd.shape[-1], q_blhd.shape[1]
    attend = functools.partial(
        _spectral_softmax_attention, head_dim=head_dim, dtype=compute_dtype, query_chunk=query_chunk
    )
    if key_mask_bs is not None:
        # Padded keys are zeroed before the token-axis FFT, so their values cannot reach any frequency.
        keep = key_mask_bs[:, :, None, None]
        k_bshd = jnp.where(keep, k_bshd, 0)
        v_bshd = jnp.where(keep, v_bshd, 0)
    q32, k32, v32 = (x.astype(jnp.float32) for x in (q_blhd, k_bshd, v_bshd))
    if impl == "fft2":  # the formula as written
        q_hat, k_hat, v_hat = (jnp.fft.fft2(x, axes=(1, 3), norm="ortho") for x in (q32, k32, v32))
        o_hat = attend(*(_real_imag(x, compute_dtype) for x in (q_hat, k_hat, v_hat)))
        return jnp.fft.ifft2(o_hat, axes=(1, 3), norm="ortho").real.astype(compute_dtype)
    if impl not in QKV_FFT2_IMPLS:
        raise ValueError(f"unknown qkv_fft2 impl {impl!r}; use one of {QKV_FFT2_IMPLS}")
    # The same operator at the cost of plain attention, exactly:
    # (1) the orthonormal head_dim FFT is unitary, so it leaves q̂·conj(k̂) unchanged (Parseval), and it
    #     commutes with A (which acts on the token axis): IFFT_D(A·FFT_D ṽ) = A·ṽ. Only the token FFT matters;
    # (2) q, v are real, so their token spectra are Hermitian (x̃[-i] = conj(x̃[i])), hence logits[-i, j] =
    #     logits[i, -j], A[-i] is a column permutation of A[i], and the output spectrum is Hermitian too: the
    #     rows i <= L/2 (an rfft) determine it and its inverse (an irfft) is real, matching Re(IFFT2(·)).
    # (3) "hermitian": k and v are real too, so half their spectrum stands for the rest (`_hermitian_softmax`).
    if impl == "hermitian":
        return _qkv_fft2_hermitian(q32, k32, v32, compute_dtype, query_chunk, sum_heads)
    q_hat = jnp.fft.rfft(q32, axis=1, norm="ortho")  # (B, L//2+1, H, Dh)
    k_hat = jnp.fft.fft(k32, axis=1, norm="ortho")
    v_hat = jnp.fft.fft(v32, axis=1, norm="ortho")
    o_hat = attend(*(_real_imag(x, compute_dtype) for x in (q_hat, k_hat, v_hat)))
    return jnp.fft.irfft(o_hat, n=length, axis=1, norm="ortho").astype(compute_dtype)


def qkv_fft2_attention(
    q_blhd: jax.Array,
    k_bshd: jax.Array,
    v_bshd: jax.Array,
    key_mask_bs: jax.Array | None = None,
    *,
    dtype: jnp.dtype | None = None,
    impl: str = "hermitian",
    query_chunk: int = 0,
    sum_heads: bool = False,
) -> jax.Array:
    """Spectral attention (B,L,H,Dh) x (B,S,H,Dh) -> (B,L,H,Dh) in `dtype` (default q's dtype).

    FFT2 over (tokens, head_dim) of q, k, v in float32, logits Re(q̂ k̂ᴴ)/√Dh with softmax over the key
    frequencies, Re(IFFT2(A·v̂)). `key_mask_bs` (True = real token) zeroes padded keys/values before the
    FFT, so padded tokens' values never change the result; an all-False row gives zero output.
    `impl="fft2"` computes the formula literally; "rfft" is the same operator (exactly, see `_qkv_fft2_local`)
    with half the query rows, i.e. the FLOPs and memory of plain attention; the default "hermitian" also takes
    half the key and value rows, i.e. half the matmul FLOPs of plain attention and the same map memory.
    `query_chunk` > 0 computes the query frequencies that many at a time, rematerialised in the backward
    pass, so the (rows x keys) probabilities never exist whole (the same result).
    `sum_heads`: values of any width (B,S,H,C) and the output summed over heads, (B,L,C): attention whose
    output projection is folded into its values (`attention.fold_output`).
    """
    compute_dtype = jnp.dtype(dtype or q_blhd.dtype)
    local = functools.partial(
        _qkv_fft2_local, compute_dtype=compute_dtype, impl=impl, query_chunk=query_chunk, sum_heads=sum_heads
    )
    mesh = sharding_lib.active_mesh()
    if mesh is None:
        return local(q_blhd, k_bshd, v_bshd, key_mask_bs)
    batch, _, heads, _ = q_blhd.shape
    b_axes = _batch_axes(mesh, batch)
    h_axes = _dividing_axes(mesh, tuple(a for a in HEAD_MESH_AXES if a not in b_axes), heads)
    spec = PartitionSpec(_entry(b_axes), None, _entry(h_axes), None)
    out_spec = PartitionSpec(_entry(b_axes), None, None) if sum_heads else spec
    if sum_heads and h_axes:  # each device holds its heads' share of the sum
        local = _then_psum(local, h_axes)
    if key_mask_bs is None:
        return jax.shard_map(
            lambda q, k, v: local(q, k, v, None),
            mesh=mesh,
            in_specs=(spec, spec, spec),
            out_specs=out_spec,
            check_vma=False,
        )(q_blhd, k_bshd, v_bshd)
    mask_spec = PartitionSpec(_entry(b_axes), None)
    return jax.shard_map(
        local, mesh=mesh, in_specs=(spec, spec, spec, mask_spec), out_specs=out_spec, check_vma=False
    )(q_blhd, k_bshd, v_bshd, key_mask_bs)


def _then_psum(fn: Callable, axes: tuple[str, ...]) -> Callable:
    return lambda *args: jax.lax.psum(fn(*args), axes)


# ------------------------------------------------------------------------------------------------------------
# fnet_mix: Re(FFT2) over (tokens, channels).


def _fnet_local(y_bld: jax.Array) -> jax.Array:
    return jnp.fft.fft2(y_bld.astype(jnp.float32), axes=(1, 2), norm="ortho").real.astype(y_bld.dtype)


def fnet_mix(y_bld: jax.Array) -> jax.Array:
    """Re(FFT2_{L,D}(y)) (ortho), float32 inside, y's dtype out; batch-local under an active mesh."""
    mesh = sharding_lib.active_mesh()
    if mesh is None:
        return _fnet_local(y_bld)
    spec = _batch_spec(mesh, y_bld.shape[0], y_bld.ndim)
    return jax.shard_map(_fnet_local, mesh=mesh, in_specs=(spec,), out_specs=spec, check_vma=False)(y_bld)


# ------------------------------------------------------------------------------------------------------------
# global_filter: per frame, a learnable complex filter on the (h, w) spectrum.


def _global_filter_local(
    y_bthwd: jax.Array, filter_real_hfd: jax.Array, filter_imag_hfd: jax.Array
) -> jax.Array:
    _, _, h, w, _ = y_bthwd.shape
    spectrum = jnp.fft.rfft2(y_bthwd.astype(jnp.float32), axes=(2, 3), norm="ortho")  # (B,T,H,W//2+1,D)
    spectrum = spectrum * jax.lax.complex(
        filter_real_hfd.astype(jnp.float32), filter_imag_hfd.astype(jnp.float32)
    )
    return jnp.fft.irfft2(spectrum, s=(h, w), axes=(2, 3), norm="ortho").astype(y_bthwd.dtype)


def global_filter(y_bthwd: jax.Array, filter_real_hfd: jax.Array, filter_imag_hfd: jax.Array) -> jax.Array:
    """IRFFT2_{h,w}(RFFT2_{h,w}(y) · (re + i·im)) per frame; filters (H, W//2+1, D); batch-local on a mesh."""
    _, _, h, w, d = y_bthwd.shape
    expected = (h, w // 2 + 1, d)
    if filter_real_hfd.shape != expected or filter_imag_hfd.shape != expected:
        raise ValueError(
            f"global_filter: the filter has shape {filter_real_hfd.shape} but a {h}x{w} latent grid with {d} "
            f"channels needs {expected}; global_filter parameters are tied to the token grid they were "
            f"created for: run on that grid, or use spectral_mode=qkv_fft2 or fnet_mix (any grid)"
        )
    mesh = sharding_lib.active_mesh()
    if mesh is None:
        return _global_filter_local(y_bthwd, filter_real_hfd, filter_imag_hfd)
    frames = _dividing_axes(mesh, FRAME_MESH_AXES, y_bthwd.shape[1])
    b_axes = _batch_axes(mesh, y_bthwd.shape[0])
    frames = tuple(a for a in frames if a not in b_axes)
    spec = PartitionSpec(_entry(b_axes), _entry(frames))
    return jax.shard_map(
        _global_filter_local,
        mesh=mesh,
        in_specs=(spec, PartitionSpec(), PartitionSpec()),
        out_specs=spec,
        check_vma=False,
    )(y_bthwd, filter_real_hfd, filter_imag_hfd)


class SpectralMixer(nn.Module):
    """The token mixer that runs before attention in "fnet_mix" and "global_filter" modes.

    Input is already normalised (the block applies LN + AdaLN modulation); the output is the update to add to
    the residual stream (the block gates it).
    """

    mode: str
    grid_thw: tuple[int, int, int]
    filter_init_std: float = 0.02  # GFNet's init of its complex weight

    @nn.compact
    def __call__(self, y_bld: jax.Array) -> jax.Array:
        if self.mode == "fnet_mix":
            return fnet_mix(y_bld)
        if self.mode != "global_filter":
            raise ValueError(f"SpectralMixer: mode {self.mode!r} has no mixer; use fnet_mix or global_filter")
        b, length, d = y_bld.shape
        t, h, w = self.grid_thw
        if t * h * w != length:
            raise ValueError(f"SpectralMixer: {length} tokens do not form the grid {self.grid_thw}")
        init = sharding_lib.with_logical_partitioning(
            nn.initializers.normal(self.filter_init_std), (None, None, "embed")
        )
        filter_real = self.param("filter_real", init, (h, w // 2 + 1, d), jnp.float32)
        filter_imag = self.param("filter_imag", init, (h, w // 2 + 1, d), jnp.float32)
        out = global_filter(y_bld.reshape(b, t, h, w, d), filter_real, filter_imag)
        return out.reshape(b, length, d)


# ------------------------------------------------------------------------------------------------------------
# filter3d: attention-free token mixing by a learnable complex filter on the (t, h, w) spectrum.


def _interp_matrix(n_out: int, n_ref: int, *, periodic: bool) -> np.ndarray:
    """(n_out, n_ref) linear interpolation in frequency from n_ref stored samples to n_out wanted ones.

    periodic (a full FFT axis): stored sample k sits at k/n_ref cycles per token, wanted j at j/n_out (both
    mod 1), so negative frequencies interpolate with their neighbours across the wrap. Otherwise (the rfft
    axis): n_ref samples evenly from 0 to Nyquist (0.5), the wanted ones at rfftfreq(2(n_out-1)), clamped.
    """
    out = np.zeros((n_out, n_ref), np.float32)
    if periodic:
        pos = (np.fft.fftfreq(n_out) % 1.0) * n_ref
    else:
        pos = np.linspace(0.0, n_ref - 1, n_out) if n_out > 1 else np.zeros(1)
    lo = np.floor(pos).astype(int)
    frac = pos - lo
    rows = np.arange(n_out)
    hi = (lo + 1) % n_ref if periodic else np.minimum(lo + 1, n_ref - 1)
    np.add.at(out, (rows, lo % n_ref), 1.0 - frac)
    np.add.at(out, (rows, hi), frac)
    return out


def resample_filter(filter_tfhd: jax.Array, spectrum_thf: tuple[int, int, int]) -> jax.Array:
    """A (T0, H0, F0, D) filter on the spectrum of another grid, (T, H, F, D) with F = W//2 + 1.

    The filter is stored for the grid the model was initialised on; on any other grid it is read at that
    grid's frequencies by linear interpolation per axis (GFNet resizes its global filters the same way), so
    the parameters do not depend on the grid. On the stored grid it is returned unchanged.
    """
    if filter_tfhd.shape[:3] == tuple(spectrum_thf):
        return filter_tfhd
    t, h, f = spectrum_thf
    t0, h0, f0, _ = filter_tfhd.shape
    mt = jnp.asarray(_interp_matrix(t, t0, periodic=True))
    mh = jnp.asarray(_interp_matrix(h, h0, periodic=True))
    mf = jnp.asarray(_interp_matrix(f, f0, periodic=False))
    return jnp.einsum("ta,hb,fc,abcd->thfd", mt, mh, mf, filter_tfhd.astype(jnp.float32))


def _filter3d_local(y_bthwd: jax.Array, filter_real: jax.Array, filter_imag: jax.Array) -> jax.Array:
    _, t, h, w, _ = y_bthwd.shape
    spectrum = jnp.fft.rfftn(y_bthwd.astype(jnp.float32), axes=(1, 2, 3), norm="ortho")  # (B,T,H,W//2+1,D)
    spectrum = spectrum * jax.lax.complex(filter_real.astype(jnp.float32), filter_imag.astype(jnp.float32))
    return jnp.fft.irfftn(spectrum, s=(t, h, w), axes=(1, 2, 3), norm="ortho").astype(y_bthwd.dtype)


def filter3d(y_bthwd: jax.Array, filter_real_tfhd: jax.Array, filter_imag_tfhd: jax.Array) -> jax.Array:
    """IRFFTN_{t,h,w}(RFFTN_{t,h,w}(y) · (re + i·im)): a circular convolution of each channel with a kernel
    as large as the grid, in O(N log N). Filters (T0, H0, F0, D) at any stored grid (`resample_filter`).
    Under a mesh the batch splits over data/fsdp and the channels over tensor/sequence: the FFT axes stay
    local on every device."""
    b, t, h, w, d = y_bthwd.shape
    if filter_real_tfhd.shape != filter_imag_tfhd.shape or filter_real_tfhd.shape[-1] != d:
        raise ValueError(
            f"filter3d: filters {filter_real_tfhd.shape} / {filter_imag_tfhd.shape} must both be (T, H, "
            f"W//2+1, {d}) for {d} channels"
        )
    spectrum_thf = (t, h, w // 2 + 1)
    filter_real = resample_filter(filter_real_tfhd, spectrum_thf)
    filter_imag = resample_filter(filter_imag_tfhd, spectrum_thf)
    mesh = sharding_lib.active_mesh()
    if mesh is None:
        return _filter3d_local(y_bthwd, filter_real, filter_imag)
    b_axes = _batch_axes(mesh, b)
    c_axes = _dividing_axes(mesh, tuple(a for a in CHANNEL_MESH_AXES if a not in b_axes), d)
    spec = PartitionSpec(_entry(b_axes), None, None, None, _entry(c_axes))
    filter_spec = PartitionSpec(None, None, None, _entry(c_axes))
    return jax.shard_map(
        _filter3d_local,
        mesh=mesh,
        in_specs=(spec, filter_spec, filter_spec),
        out_specs=spec,
        check_vma=False,
    )(y_bthwd, filter_real, filter_imag)


def _all_pass_init(std: float):
    # 1 + noise: the filter starts close to the identity (each token keeps itself), so the mixer starts as a
    # gated channel MLP and learns how far to reach; GFNet's pure-noise init starts from a random global blur.
    def init(key, shape, dtype=jnp.float32):
        return 1.0 + std * jax.random.normal(key, shape, dtype)

    return init


class Filter3DMixer(nn.Module):
    """The attention-free replacement of self-attention ("filter3d"):

        out = W_o( GELU(W_g y) ⊙ filter3d(W_v y) )

    The filter mixes every token with every other over (t, h, w) at O(N log N); the gate makes the update
    depend on the token's own content, as attention's weights do (H3/Hyena-style gating: a fixed convolution
    alone is a linear, content-blind mixer). The filter's parameters are (T0, H0, W0//2+1, D) for the grid the
    model is initialised on and are resampled to any other grid (`resample_filter`).
    """

    grid_thw: tuple[int, int, int]
    dtype: Any = jnp.float32
    filter_init_std: float = 0.02

    @nn.compact
    def __call__(self, y_bld: jax.Array) -> jax.Array:
        b, length, d = y_bld.shape
        t, h, w = self.grid_thw
        if t * h * w != length:
            raise ValueError(f"Filter3DMixer: {length} tokens do not form the grid {self.grid_thw}")

        def proj(name, names):
            return nn.Dense(
                d,
                dtype=self.dtype,
                param_dtype=jnp.float32,
                kernel_init=sharding_lib.with_logical_partitioning(nn.initializers.xavier_uniform(), names),
                bias_init=sharding_lib.with_logical_partitioning(nn.initializers.zeros, (names[1],)),
                name=name,
            )

        value = proj("value", ("embed", "mlp"))(y_bld)
        gate = proj("gate", ("embed", "mlp"))(y_bld)
        shape = (t, h, w // 2 + 1, d)
        if self.has_variable("params", "filter_real"):  # a stored filter keeps its grid; resampled below
            stored = self.get_variable("params", "filter_real")
            shape = getattr(stored, "value", stored).shape
        names = (None, None, None, "mlp")
        filter_real = self.param(
            "filter_real",
            sharding_lib.with_logical_partitioning(_all_pass_init(self.filter_init_std), names),
            shape,
            jnp.float32,
        )
        filter_imag = self.param(
            "filter_imag",
            sharding_lib.with_logical_partitioning(nn.initializers.normal(self.filter_init_std), names),
            shape,
            jnp.float32,
        )
        mixed = filter3d(value.reshape(b, t, h, w, d), filter_real, filter_imag).reshape(b, length, d)
        mixed = sharding_lib.constrain(mixed, ("act_batch", "act_len", "act_mlp"))
        return proj("out", ("mlp", "embed"))(nn.gelu(gate) * mixed)
