"""Frequency-domain mixing of the spectral denoiser (`spectral_mode`), after paper_notes §4.2.

The paper says only that its denoiser "processes video data in the frequency domain" with 2D FFT layers,
inside self- and cross-attention; the equations were not recoverable, so the variant is a switch:

- "qkv_fft2": per head, FFT2 over (tokens, head_dim) of q, k, v; A = softmax(Re(q̂ k̂ᴴ)/√d);
  out = Re(IFFT2(A·v̂)). An FFT over head_dim alone would leave the logits unchanged (Parseval), the token
  axis is what changes the operator. In fact the head_dim FFT drops out of the operator entirely, and real
  inputs let half the query frequencies stand for the rest, so the default implementation ("rfft") costs what
  plain attention costs (derivation in `_qkv_fft2_local`). Used in self-attention and (with `cross_fft`)
  cross-attention to text.
- "fnet_mix": x + Re(FFT2_{L,D}(LN x)) before plain attention (FNet token mixing).
- "global_filter": per latent frame FFT2 over (h, w) -> learnable complex filter -> IFFT2 (GFNet), before
  plain attention.
- "none": plain attention, the ablation baseline.

Every FFT runs in float32 (JAX rejects bf16 FFTs; casts in and out), with norm="ortho" so the residual stream
keeps its scale (an unnormalised FFT2 over 5120 tokens x 2048 channels would multiply it by ~3000). XLA
replicates an FFT over a sharded axis, so when a mesh is active (`parallel.sharding.active_mesh()`) each FFT
block runs under `jax.shard_map` with its FFT axes local: only batch axes and axes the FFT does not cross
(heads for per-head attention, frames for the per-frame filter) are split across devices.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from motionaura_jax.parallel import sharding as sharding_lib

SPECTRAL_MODES = ("qkv_fft2", "fnet_mix", "global_filter", "none")
# Mesh axes a spectral block may split: batch over those of the active `act_batch` rule (default below).
BATCH_MESH_AXES = ("data", "fsdp")
# Heads are independent, so spectral attention splits them over tensor and over sequence: tokens that arrive
# split over `sequence` are regrouped by head (an all-to-all, as in Ulysses sequence parallelism) rather than
# gathered whole onto every device. Frames are independent for the per-frame global filter.
HEAD_MESH_AXES = ("tensor", "sequence")
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


QKV_FFT2_IMPLS = ("rfft", "fft2")


def _real_imag(xf: jax.Array, dtype: jnp.dtype) -> jax.Array:
    # [Re, Im] side by side turns complex products into one real matmul: Re(a·conj(b)) = ar·br + ai·bi.
    return jnp.concatenate([xf.real, xf.imag], axis=-1).astype(dtype)


def _spectral_softmax_attention(q_ri, k_ri, v_ri, head_dim: int, dtype: jnp.dtype) -> jax.Array:
    """softmax(Re(q̂ k̂ᴴ)/√Dh) · v̂ on [Re, Im] stacks; returns the complex (B, rows, H, Dh) result."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q_ri, k_ri, preferred_element_type=jnp.float32)
    probs = jax.nn.softmax(logits / math.sqrt(head_dim), axis=-1)
    # A is real, so A·v̂ = A·Re(v̂) + i·A·Im(v̂): again one real matmul over [Re, Im].
    o_ri = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(dtype), v_ri, preferred_element_type=jnp.float32)
    return jax.lax.complex(o_ri[..., :head_dim], o_ri[..., head_dim:])


def _qkv_fft2_local(
    q_blhd: jax.Array,
    k_bshd: jax.Array,
    v_bshd: jax.Array,
    key_mask_bs: jax.Array | None,
    compute_dtype: jnp.dtype,
    impl: str = "rfft",
) -> jax.Array:
    head_dim, length = q_blhd.shape[-1], q_blhd.shape[1]
    if key_mask_bs is not None:
        # Padded keys are zeroed before the token-axis FFT, so their values cannot reach any frequency.
        keep = key_mask_bs[:, :, None, None]
        k_bshd = jnp.where(keep, k_bshd, 0)
        v_bshd = jnp.where(keep, v_bshd, 0)
    q32, k32, v32 = (x.astype(jnp.float32) for x in (q_blhd, k_bshd, v_bshd))
    if impl == "fft2":  # the formula as written
        q_hat, k_hat, v_hat = (jnp.fft.fft2(x, axes=(1, 3), norm="ortho") for x in (q32, k32, v32))
        o_hat = _spectral_softmax_attention(
            *(_real_imag(x, compute_dtype) for x in (q_hat, k_hat, v_hat)), head_dim, compute_dtype
        )
        return jnp.fft.ifft2(o_hat, axes=(1, 3), norm="ortho").real.astype(compute_dtype)
    if impl != "rfft":
        raise ValueError(f"unknown qkv_fft2 impl {impl!r}; use one of {QKV_FFT2_IMPLS}")
    # The same operator at the cost of plain attention, exactly:
    # (1) the orthonormal head_dim FFT is unitary, so it leaves q̂·conj(k̂) unchanged (Parseval), and it
    #     commutes with A (which acts on the token axis): IFFT_D(A·FFT_D ṽ) = A·ṽ. Only the token FFT matters;
    # (2) q, v are real, so their token spectra are Hermitian (x̃[-i] = conj(x̃[i])), hence logits[-i, j] =
    #     logits[i, -j], A[-i] is a column permutation of A[i], and the output spectrum is Hermitian too: the
    #     rows i <= L/2 (an rfft) determine it and its inverse (an irfft) is real, matching Re(IFFT2(·)).
    q_hat = jnp.fft.rfft(q32, axis=1, norm="ortho")  # (B, L//2+1, H, Dh)
    k_hat = jnp.fft.fft(k32, axis=1, norm="ortho")
    v_hat = jnp.fft.fft(v32, axis=1, norm="ortho")
    o_hat = _spectral_softmax_attention(
        *(_real_imag(x, compute_dtype) for x in (q_hat, k_hat, v_hat)), head_dim, compute_dtype
    )
    return jnp.fft.irfft(o_hat, n=length, axis=1, norm="ortho").astype(compute_dtype)


def qkv_fft2_attention(
    q_blhd: jax.Array,
    k_bshd: jax.Array,
    v_bshd: jax.Array,
    key_mask_bs: jax.Array | None = None,
    *,
    dtype: jnp.dtype | None = None,
    impl: str = "rfft",
) -> jax.Array:
    """Spectral attention (B,L,H,Dh) x (B,S,H,Dh) -> (B,L,H,Dh) in `dtype` (default q's dtype).

    FFT2 over (tokens, head_dim) of q, k, v in float32, logits Re(q̂ k̂ᴴ)/√Dh with softmax over the key
    frequencies, Re(IFFT2(A·v̂)). `key_mask_bs` (True = real token) zeroes padded keys/values before the
    FFT, so padded tokens' values never change the result; an all-False row gives zero output.
    `impl="fft2"` computes the formula literally; the default "rfft" is the same operator (exactly, see
    `_qkv_fft2_local`) with half the query rows, i.e. the FLOPs and memory of plain attention.
    """
    compute_dtype = jnp.dtype(dtype or q_blhd.dtype)
    local = functools.partial(_qkv_fft2_local, compute_dtype=compute_dtype, impl=impl)
    mesh = sharding_lib.active_mesh()
    if mesh is None:
        return local(q_blhd, k_bshd, v_bshd, key_mask_bs)
    batch, _, heads, _ = q_blhd.shape
    b_axes = _batch_axes(mesh, batch)
    h_axes = _dividing_axes(mesh, tuple(a for a in HEAD_MESH_AXES if a not in b_axes), heads)
    spec = PartitionSpec(_entry(b_axes), None, _entry(h_axes), None)
    if key_mask_bs is None:
        return jax.shard_map(
            lambda q, k, v: local(q, k, v, None),
            mesh=mesh,
            in_specs=(spec, spec, spec),
            out_specs=spec,
            check_vma=False,
        )(q_blhd, k_bshd, v_bshd)
    mask_spec = PartitionSpec(_entry(b_axes), None)
    return jax.shard_map(
        local, mesh=mesh, in_specs=(spec, spec, spec, mask_spec), out_specs=spec, check_vma=False
    )(q_blhd, k_bshd, v_bshd, key_mask_bs)


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
