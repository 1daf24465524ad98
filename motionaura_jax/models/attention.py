"""Attention building blocks of the spectral denoiser: multi-head (self/cross) attention with QK-LayerNorm and
RoPE (1D or 3D over (t, h, w)), AdaLN-Zero modulation, sinusoidal timestep/FPS embeddings, the GELU FFN.

Parameters follow `layers.py`'s convention (float32, logical axis names) with DiT's initialisers: every
linear layer xavier-uniform (`TRANSFORMER_KERNEL_INIT`), AdaLN-Zero's modulation and optionally the attention
output zero. Compute runs in the module's `dtype` (bf16 on TPU), with norms, softmax and rotary phases in
float32. Token activations are constrained as ("act_batch", "act_len", "act_embed"); per-head ones as
("act_batch", "act_len", "act_heads", None).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from motionaura_jax.models import spectral
from motionaura_jax.models.layers import (
    dense,
    layer_norm,
    over_query_chunks,
    over_unit_batch,
    partitioned,
    softmax_attention,
)
from motionaura_jax.parallel.sharding import constrain

Dtype = Any
TOKENS = ("act_batch", "act_len", "act_embed")
HEADS = ("act_batch", "act_len", "act_heads", None)
# DiT initialises every linear layer of the transformer xavier-uniform.
TRANSFORMER_KERNEL_INIT = nn.initializers.xavier_uniform()


# ------------------------------------------------------------------------------------------------------------
# Sinusoidal embeddings of scalars (diffusion step, FPS)


def sinusoidal_embedding(x_b: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """(B,) scalars -> (B, dim) float32 [cos(x·f_i), sin(x·f_i)], f_i = max_period^(-i/half) (DiT/ADM)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = x_b.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class ConditionEmbedding(nn.Module):
    """c = MLP(sin(t)) + MLP(sin(fps)), each MLP Linear-SiLU-Linear (DiT's timestep embedder)."""

    width: int
    freq_dim: int = 256
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, t_b: jax.Array, fps_b: jax.Array) -> jax.Array:
        def mlp(x_b, prefix):
            h = dense(
                self.width,
                (None, "embed"),
                f"{prefix}_in",
                dtype=self.dtype,
                kernel_init=TRANSFORMER_KERNEL_INIT,
            )(sinusoidal_embedding(x_b, self.freq_dim).astype(self.dtype))
            return dense(
                self.width,
                ("mlp", "embed"),
                f"{prefix}_out",
                dtype=self.dtype,
                kernel_init=TRANSFORMER_KERNEL_INIT,
            )(nn.silu(h))

        return mlp(t_b, "time") + mlp(fps_b, "fps")


# ------------------------------------------------------------------------------------------------------------
# Rotary position embeddings


def rope_inv_freq(pairs: int, theta: float) -> jax.Array:
    return theta ** (-jnp.arange(pairs, dtype=jnp.float32) / pairs)


def rope_1d(positions_l: jax.Array, head_dim: int, theta: float = 10_000.0) -> tuple[jax.Array, jax.Array]:
    """(cos, sin), each (L, head_dim/2), for positions along one axis."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
    angles = positions_l.astype(jnp.float32)[:, None] * rope_inv_freq(head_dim // 2, theta)[None, :]
    return jnp.cos(angles), jnp.sin(angles)


def rope_3d_split(head_dim: int) -> tuple[int, int, int]:
    """Rotation pairs given to (t, h, w): 3/8 of them to each spatial axis, the rest (~1/4) to time, as in
    CogVideoX's 3D RoPE (dim_t = head_dim/4)."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
    pairs = head_dim // 2
    spatial = (3 * pairs) // 8
    temporal = pairs - 2 * spatial
    if spatial < 1 or temporal < 1:
        raise ValueError(f"3D RoPE needs head_dim >= 6 (one rotation pair per axis), got {head_dim}")
    return temporal, spatial, spatial


def rope_3d(positions_l3: jax.Array, head_dim: int, theta: float = 10_000.0) -> tuple[jax.Array, jax.Array]:
    """(cos, sin), each (L, head_dim/2), for (t, h, w) positions (L, 3), split per `rope_3d_split`."""
    angles = []
    for axis, pairs in enumerate(rope_3d_split(head_dim)):
        angles.append(
            positions_l3[:, axis].astype(jnp.float32)[:, None] * rope_inv_freq(pairs, theta)[None, :]
        )
    angles = jnp.concatenate(angles, axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def grid_positions(grid_thw: tuple[int, int, int]) -> jax.Array:
    """(T*H*W, 3) integer (t, h, w) of each token in row-major (t, h, w) order."""
    t, h, w = grid_thw
    tt, hh, ww = jnp.meshgrid(jnp.arange(t), jnp.arange(h), jnp.arange(w), indexing="ij")
    return jnp.stack([tt.ravel(), hh.ravel(), ww.ravel()], axis=-1)


def video_rope(
    kind: str, grid_thw: tuple[int, int, int], head_dim: int, theta: float = 10_000.0
) -> tuple[jax.Array, jax.Array] | None:
    """The rotary table of a video token grid: kind "3d" (t,h,w), "1d" (flat token index) or "none"."""
    if kind == "none":
        return None
    positions = grid_positions(grid_thw)
    if kind == "3d":
        return rope_3d(positions, head_dim, theta)
    if kind == "1d":
        return rope_1d(jnp.arange(positions.shape[0]), head_dim, theta)
    raise ValueError(f"unknown rope {kind!r}; use 3d, 1d or none")


def sincos_3d_embedding(grid_thw: tuple[int, int, int], dim: int, theta: float = 10_000.0) -> jax.Array:
    """(T*H*W, dim) fixed [cos, sin] of the (t, h, w) positions, the channels split as `rope_3d_split` splits
    rotation pairs (an absolute 3D position code, DiT-style, for blocks that have no RoPE to carry it)."""
    if dim % 2:
        raise ValueError(f"sincos_3d_embedding needs an even dim, got {dim}")
    cos, sin = rope_3d(grid_positions(grid_thw), dim, theta)
    return jnp.concatenate([cos, sin], axis=-1)


def apply_rope(x_blhd: jax.Array, rope: tuple[jax.Array, jax.Array]) -> jax.Array:
    """Rotates pairs (x[i], x[i + Dh/2]) by the angle of each position; float32 inside, x's dtype out."""
    cos_lp, sin_lp = rope
    x = x_blhd.astype(jnp.float32)
    x1, x2 = jnp.split(x, 2, axis=-1)
    cos, sin = cos_lp[None, :, None, :], sin_lp[None, :, None, :]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x_blhd.dtype)


# ------------------------------------------------------------------------------------------------------------
# Attention


def dot_product_attention(
    q_blhd: jax.Array, k_bshd: jax.Array, v_bshd: jax.Array, key_mask_bs: jax.Array | None = None
) -> jax.Array:
    """softmax(q kᵀ/√Dh) v with float32 logits/softmax; `key_mask_bs` True = attend. A row with no key left
    (an all-False mask, e.g. an unconditional sample) outputs zero instead of averaging padding."""
    return over_unit_batch(_dot_product_attention, q_blhd, k_bshd, v_bshd, key_mask_bs)


def _dot_product_attention(q_lhd, k_shd, v_shd, key_mask_s):  # with or without the batch axis
    out = softmax_attention(q_lhd, k_shd, v_shd, 1.0 / math.sqrt(q_lhd.shape[-1]), key_mask_s)
    if key_mask_s is not None:
        out = jnp.where(jnp.any(key_mask_s, axis=-1)[..., None, None, None], out, 0.0)
    return out.astype(v_shd.dtype)


def summed_heads_attention(
    q_blhd: jax.Array, k_bshd: jax.Array, v_bshc: jax.Array, key_mask_bs: jax.Array | None = None
) -> jax.Array:
    """`dot_product_attention` of values that carry the output projection (`fold_output`), summed over heads
    in the output matmul, which contracts (heads, keys) at once: (B,L,H,Dh) x (B,S,H,Dh) x (B,S,H,C) ->
    (B,L,C). For a short text (few keys), so the logits are formed whole."""
    logits = jnp.einsum("blhd,bshd->bhls", q_blhd, k_bshd, preferred_element_type=jnp.float32)
    logits = logits / math.sqrt(q_blhd.shape[-1])
    if key_mask_bs is not None:
        logits = jnp.where(key_mask_bs[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v_bshc.dtype)
    out = jnp.einsum("bhls,bshc->blc", probs, v_bshc, preferred_element_type=jnp.float32)
    if key_mask_bs is not None:
        out = jnp.where(jnp.any(key_mask_bs, axis=-1)[:, None, None], out, 0.0)
    return out.astype(v_bshc.dtype)


class MultiHeadAttention(nn.Module):
    """Self-attention (`context=None`) or cross-attention; `spectral=True` swaps the core for `qkv_fft2`.
    Cross-attention moves its output projection onto the values where that is cheaper (`output_fold_pays`)."""

    num_heads: int
    head_dim: int
    spectral: bool = False
    spectral_impl: str = "hermitian"  # spectral.QKV_FFT2_IMPLS
    qk_norm: bool = True
    zero_init_out: bool = False
    query_chunk: int = 0  # > 0: `over_query_chunks` (memory O(chunk x keys) instead of O(L x keys))
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        x_bld: jax.Array,
        context_bsd: jax.Array | None = None,
        *,
        rope_q: tuple[jax.Array, jax.Array] | None = None,
        rope_k: tuple[jax.Array, jax.Array] | None = None,
        key_mask_bs: jax.Array | None = None,
    ) -> jax.Array:
        width = x_bld.shape[-1]
        context = x_bld if context_bsd is None else context_bsd

        def proj(name):
            return nn.DenseGeneral(
                (self.num_heads, self.head_dim),
                dtype=self.dtype,
                param_dtype=jnp.float32,
                kernel_init=partitioned(TRANSFORMER_KERNEL_INIT, ("embed", "heads", "kv")),
                bias_init=partitioned(nn.initializers.zeros, ("heads", "kv")),
                name=name,
            )

        q = constrain(proj("query")(x_bld), HEADS)
        k = constrain(proj("key")(context), HEADS)
        v = constrain(proj("value")(context), HEADS)
        if self.qk_norm:
            q = layer_norm("query_norm")(q).astype(self.dtype)
            k = layer_norm("key_norm")(k).astype(self.dtype)
        if rope_q is not None:
            q = apply_rope(q, rope_q)
        if rope_k is not None:
            k = apply_rope(k, rope_k)
        out_init = nn.initializers.zeros if self.zero_init_out else TRANSFORMER_KERNEL_INIT
        out_proj = nn.DenseGeneral(
            width,
            axis=(-2, -1),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=partitioned(out_init, ("heads", "kv", "embed")),
            bias_init=partitioned(nn.initializers.zeros, ("embed",)),
            name="out",
        )
        fold = (
            context_bsd is not None
            and (not self.spectral or self.spectral_impl == "hermitian")
            and output_fold_pays(q.shape[1], k.shape[1], self.num_heads, self.head_dim, width)
        )
        if fold:
            v, bias_b1c = fold_output(v, out_proj)
        if self.spectral:
            out = spectral.qkv_fft2_attention(
                q,
                k,
                v,
                key_mask_bs,
                dtype=self.dtype,
                impl=self.spectral_impl,
                query_chunk=self.query_chunk,
                sum_heads=fold,
            )
        else:
            attend = summed_heads_attention if fold else dot_product_attention
            out = over_query_chunks(lambda q_rows: attend(q_rows, k, v, key_mask_bs), q, self.query_chunk)
        if fold:
            return constrain(out + bias_b1c, TOKENS)
        return constrain(out_proj(constrain(out, HEADS)), TOKENS)


def output_fold_pays(queries: int, keys: int, heads: int, head_dim: int, width: int) -> bool:
    """Whether `fold_output` takes fewer multiply-adds than projecting the attention's output: it projects
    heads x keys value rows (block-diagonally, so heads x heads x keys) where the output has `queries` rows,
    and its attention then carries `width` channels per head instead of `head_dim`. It pays for
    cross-attention to a short text (16 tokens, 4 heads of 64, 256 queries: half the cost), not at paper scale
    (226 T5 tokens, 40 heads), where the output is projected as usual."""
    projected = queries * heads * head_dim * width + queries * keys * heads * head_dim
    folded = (heads * keys + 1) * heads * head_dim * width + queries * keys * heads * width
    return folded < projected


def fold_output(v_bshd: jax.Array, out_proj: nn.Module) -> tuple[jax.Array, jax.Array]:
    """The output projection moved onto the values: per head, softmax(·)·v_h·W_h summed over heads is the
    projected output, so (B,S,H,Dh) values become (B,S,H,C) ones, W_h applied to each head's own rows, and
    the bias (B,1,C) is added after the sum. `out_proj` is called (on rows that are block-diagonal over heads,
    and a zero row that gives the bias), so whatever wraps it, a LoRA adapter included, is folded with it."""
    b, s, h, d = v_bshd.shape
    rows = jnp.einsum("bshd,hg->bhsgd", v_bshd, jnp.eye(h, dtype=v_bshd.dtype)).reshape(b, h * s, h, d)
    rows = jnp.concatenate([rows, jnp.zeros((b, 1, h, d), rows.dtype)], axis=1)
    y = out_proj(rows)  # (B, H*S + 1, C): v_h W_h + bias, then the bias alone
    bias_b1c = y[:, -1:]
    values = (y[:, :-1] - bias_b1c).reshape(b, h, s, -1).transpose(0, 2, 1, 3)
    return constrain(values, ("act_batch", None, "act_heads", None)), bias_b1c


# ------------------------------------------------------------------------------------------------------------
# AdaLN-Zero and the FFN


def modulate(x_bld: jax.Array, shift_b1d: jax.Array, scale_b1d: jax.Array) -> jax.Array:
    # A batch of one on (L, D): see layers.unit_batch_squeezed.
    return over_unit_batch(lambda x, shift, scale: x * (1.0 + scale) + shift, x_bld, shift_b1d, scale_b1d)


def gated(gate_b1d: jax.Array, y_bld: jax.Array) -> jax.Array:
    """gate · y, a per-sample gate over every token (AdaLN-Zero's residual gates); a batch of one on (L, D)."""
    return over_unit_batch(lambda y, gate: gate * y, y_bld, gate_b1d)


class AdaLNZero(nn.Module):
    """SiLU(c) -> Linear(D, n·D), zero-initialised (DiT's AdaLN-Zero): n chunks of (B, 1, D), all zero at
    init, so every gated branch starts switched off and each block starts as the identity."""

    num_chunks: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, c_bd: jax.Array) -> list[jax.Array]:
        width = c_bd.shape[-1]
        mod = dense(
            self.num_chunks * width,
            ("embed", "mlp"),
            "modulation",
            dtype=self.dtype,
            kernel_init=nn.initializers.zeros,
        )(nn.silu(c_bd))
        return [m[:, None, :] for m in jnp.split(mod, self.num_chunks, axis=-1)]


class FeedForward(nn.Module):
    """Linear(D, r·D) -> GELU -> dropout -> Linear(r·D, D)."""

    mlp_ratio: float = 4.0
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_bld: jax.Array, *, deterministic: bool = True) -> jax.Array:
        width = x_bld.shape[-1]
        hidden = dense(
            int(self.mlp_ratio * width),
            ("embed", "mlp"),
            "fc_in",
            dtype=self.dtype,
            kernel_init=TRANSFORMER_KERNEL_INIT,
        )(x_bld)
        hidden = constrain(nn.gelu(hidden), ("act_batch", "act_len", "act_mlp"))
        hidden = nn.Dropout(self.dropout)(hidden, deterministic=deterministic)
        out = dense(width, ("mlp", "embed"), "fc_out", dtype=self.dtype, kernel_init=TRANSFORMER_KERNEL_INIT)(
            hidden
        )
        return constrain(out, TOKENS)
