"""Building blocks shared by the models: parameter helpers (dense, layer_norm, logical axis names, compute
dtypes), per-frame norms, causal 3D convolutions. Attention-specific blocks (RoPE, multi-head attention,
AdaLN-Zero) live in `attention.py`.

Parameter convention, for every model: parameters are float32 and carry logical axis names; a dense kernel is
initialised `lecun_normal` (Flax's default) unless the caller passes `kernel_init` (the transformer passes
xavier-uniform, zero-initialised projections pass zeros); biases start at zero; norm scales at one.

Video tensors are channels-last `x_bthwc` (batch, frames, height, width, channels). Everything here is causal
in time: an output frame never reads a later input frame. Causal layers can run in *streaming* mode: when the
"cache" variable collection is mutable (`apply(..., mutable=["cache"])`, outside `init`), each causal layer
keeps the input frames the next chunk needs, so a long clip encoded chunk by chunk equals the whole-clip
result.

Measured on the project's CPU machine (jax 0.10.2): XLA CPU runs a depthwise 3D conv written with
`feature_group_count` ~24x slower than a dense conv, so `depthwise_conv3d` defaults to a shift-and-add form
(27 shifted multiply-adds that XLA fuses into one loop, with a hand-written backward pass); `impl="grouped"`
keeps the `lax.conv` form (the better choice on TPU/GPU). Spatial downsampling is written as space-to-depth + matmul (a stride-p, kernel-p
conv), which is exact as a conv and fast everywhere.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from motionaura_jax.parallel import sharding as sharding_lib

Names = tuple[str | None, ...]
Dtype = Any
Initializer = Any  # jax.nn.initializers.Initializer: (key, shape, dtype) -> array

DEFAULT_KERNEL_INIT: Initializer = nn.initializers.lecun_normal()


# ------------------------------------------------------------------------------------------------------------
# Parameter helpers


def dtype_from_name(name: str | Dtype) -> jnp.dtype:
    """ "bfloat16" / "float32" / a dtype -> jnp.dtype, with a clear error for anything else."""
    try:
        dtype = jnp.dtype(name)
    except TypeError as err:
        raise ValueError(f"unknown dtype {name!r}; use bfloat16 or float32") from err
    if dtype not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32), jnp.dtype(jnp.float16)):
        raise ValueError(f"compute dtype {name!r} is not a float type; use bfloat16 or float32")
    return dtype


def partitioned(init: Initializer, names: Names) -> Initializer:
    """`init` whose parameter carries the logical axis names `names` (one per dimension); the box also converts
    to an NNX Variable with or without a mesh (`sharding.LogicallyPartitioned`)."""
    return sharding_lib.with_logical_partitioning(init, names)


def dense(
    features: int,
    names: tuple[str | None, str | None],
    name: str,
    *,
    kernel_init: Initializer = DEFAULT_KERNEL_INIT,
    use_bias: bool = True,
    dtype: Dtype | None = None,
) -> nn.Dense:
    """nn.Dense with float32 parameters named `names` = (input axis, output axis); `dtype` is the compute
    dtype (None: the input's). Kernel `kernel_init` (lecun_normal unless given), bias zeros."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        name=name,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=partitioned(kernel_init, names),
        bias_init=partitioned(nn.initializers.zeros, (names[1],)),
        dot_general=dense_dot_general,
    )


def dense_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None) -> jax.Array:
    """`lax.dot_general` for `dense` (x (..., Din) · W (Din, Dout)) whose kernel gradient, on a CPU, is taken as
    (gᵀ·x)ᵀ when Din > Dout: XLA:CPU runs the (Din x Dout) = xᵀ·g product over tokens in its generic dot at
    2/3 the speed of the (Dout x Din) form (the FFN's output layer; its forward + backward at 1k tokens 42 ->
    27 ms). The same values; other platforms get autodiff's form."""
    if (
        rhs.ndim != 2
        or tuple(map(tuple, dimension_numbers[0])) != ((lhs.ndim - 1,), (0,))
        or dimension_numbers[1] != ((), ())
    ):
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type)
    return _dense_matmul(lhs, rhs, precision, preferred_element_type)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _dense_matmul(x, w, precision, preferred_element_type):
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())), precision, preferred_element_type)


def _dense_matmul_fwd(x, w, precision, preferred_element_type):
    return _dense_matmul(x, w, precision, preferred_element_type), (x, w)


def _dense_matmul_bwd(precision, preferred_element_type, residuals, g):
    del preferred_element_type
    x, w = residuals
    g_x = jax.lax.dot_general(g, w, (((g.ndim - 1,), (1,)), ((), ())), precision)
    x_nd, g_ne = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1]).astype(x.dtype)
    over_rows = (((0,), (0,)), ((), ()))

    def swapped(x_nd, g_ne):  # the barrier keeps XLA from turning (gᵀx)ᵀ back into xᵀg
        return jax.lax.optimization_barrier(jax.lax.dot_general(g_ne, x_nd, over_rows, precision)).T

    def direct(x_nd, g_ne):
        return jax.lax.dot_general(x_nd, g_ne, over_rows, precision)

    if w.shape[0] > w.shape[1]:
        g_w = jax.lax.platform_dependent(x_nd, g_ne, cpu=swapped, default=direct)
    else:
        g_w = direct(x_nd, g_ne)
    return g_x.astype(x.dtype), g_w.astype(w.dtype)


_dense_matmul.defvjp(_dense_matmul_fwd, _dense_matmul_bwd)


def layer_norm(name: str, *, affine: bool = True) -> nn.LayerNorm:
    """LayerNorm over the last axis computed in float32 (the caller casts back); `affine=False` for
    AdaLN-modulated norms."""
    return nn.LayerNorm(
        epsilon=1e-6,
        dtype=jnp.float32,
        use_scale=affine,
        use_bias=affine,
        scale_init=partitioned(nn.initializers.ones, ("norm",)),
        bias_init=partitioned(nn.initializers.zeros, ("norm",)),
        name=name,
    )


def _acts_on_trailing_axes(module: nn.Module) -> bool:
    """Whether `module` maps (..., features) row by row, so a leading batch axis can be dropped around it."""
    if isinstance(module, nn.DenseGeneral):
        axes = module.axis if isinstance(module.axis, Sequence) else (module.axis,)
        return not module.batch_dims and all(a < 0 for a in axes)
    if isinstance(module, nn.LayerNorm):
        return module.reduction_axes == -1 and module.feature_axes == -1
    return isinstance(module, nn.Dense)


def _squeeze_unit_batch(next_fun, args, kwargs, context):
    x = args[0] if len(args) == 1 and not kwargs else None
    if (
        context.method_name == "__call__"
        and isinstance(x, jax.Array)
        and x.ndim >= 3
        and x.shape[0] == 1
        and _acts_on_trailing_axes(context.module)
    ):
        return next_fun(x[0])[None]
    return next_fun(*args, **kwargs)


@contextlib.contextmanager
def unit_batch_squeezed() -> Iterator[None]:
    """Within this block, Dense, DenseGeneral and LayerNorm called on a batch of one see it without the batch
    axis, (L, D) instead of (1, L, D); the same values.

    Why: the backward pass reduces every bias and norm-scale gradient over the token axis, and XLA:CPU's fused
    reductions run that reduction on a (1, L, D) array 30x (4096 tokens) to 40x (16k) slower than on (L, D)
    (docs/bench_denoiser.md, "Batch of one"). A batch of one is the long-sequence case: a whole clip per
    device, the benchmark. Enter it inside the traced function: interceptors act at trace time."""
    with nn.intercept_methods(_squeeze_unit_batch):
        yield


def over_unit_batch(fn: Callable[..., jax.Array], *arrays: jax.Array | None) -> jax.Array:
    """fn(*arrays); for a batch of one, fn(*(x[0] ...))[None], for the reason of `unit_batch_squeezed` (attention
    maps: a (1, H, L, S) softmax and its backward run ~2x slower than (H, L, S)). `fn` must take its arrays with
    or without their leading batch axis (einsums over "..."); it may return a tuple of arrays."""
    if arrays[0].shape[0] != 1:
        return fn(*arrays)
    return jax.tree.map(lambda y: y[None], fn(*(None if x is None else x[0] for x in arrays)))


def with_unit_batch_squeezed(method: Callable) -> Callable:
    """A module method run inside `unit_batch_squeezed` (put it under `@nn.compact`)."""

    @functools.wraps(method)
    def wrapped(*args, **kwargs):
        with unit_batch_squeezed():
            return method(*args, **kwargs)

    return wrapped


# ------------------------------------------------------------------------------------------------------------
# Layout helpers


def space_to_depth(x_bthwc: jax.Array, patch: int) -> jax.Array:
    """(B,T,H,W,C) -> (B,T,H/p,W/p,p*p*C); the inverse of `depth_to_space`."""
    if patch == 1:
        return x_bthwc
    b, t, h, w, c = x_bthwc.shape
    if h % patch or w % patch:
        raise ValueError(f"space_to_depth: height/width {h}x{w} must be multiples of the patch size {patch}")
    x = x_bthwc.reshape(b, t, h // patch, patch, w // patch, patch, c)
    x = x.transpose(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, t, h // patch, w // patch, patch * patch * c)


def depth_to_space(x_bthwc: jax.Array, patch: int) -> jax.Array:
    """(B,T,H,W,p*p*C) -> (B,T,H*p,W*p,C)."""
    if patch == 1:
        return x_bthwc
    b, t, h, w, pc = x_bthwc.shape
    c = pc // (patch * patch)
    x = x_bthwc.reshape(b, t, h, w, patch, patch, c).transpose(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, t, h * patch, w * patch, c)


# ------------------------------------------------------------------------------------------------------------
# Norms: per frame / per position, so they stay causal and chunkable (a GroupNorm over (T,H,W) would leak
# future frames into the statistics of past ones).


class FrameNorm(nn.Module):
    """`kind`: "group" (GroupNorm over H,W and channel groups of each frame), "layer" (over channels) or
    "rms"."""

    kind: str = "group"
    groups: int = 32
    eps: float = 1e-6

    @nn.compact
    def __call__(self, x_bthwc: jax.Array) -> jax.Array:
        c = x_bthwc.shape[-1]
        dtype = x_bthwc.dtype
        x = x_bthwc.astype(jnp.float32)
        if self.kind == "group":
            g = _largest_divisor_at_most(c, self.groups)
            xs = x.reshape(*x.shape[:-1], g, c // g)
            mean = jnp.mean(xs, axis=(2, 3, 5), keepdims=True)
            var = jnp.mean(jnp.square(xs - mean), axis=(2, 3, 5), keepdims=True)
            x = ((xs - mean) * jax.lax.rsqrt(var + self.eps)).reshape(x.shape)
        elif self.kind == "layer":
            mean = jnp.mean(x, axis=-1, keepdims=True)
            x = (x - mean) * jax.lax.rsqrt(jnp.var(x, axis=-1, keepdims=True) + self.eps)
        elif self.kind == "rms":
            x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.eps)
        else:
            raise ValueError(f"FrameNorm: unknown kind {self.kind!r}; use group, layer or rms")
        scale = self.param("scale", partitioned(nn.initializers.ones, ("norm",)), (c,))
        x = x * scale
        if self.kind != "rms":
            x = x + self.param("bias", partitioned(nn.initializers.zeros, ("norm",)), (c,))
        return x.astype(dtype)


def _largest_divisor_at_most(n: int, k: int) -> int:
    for g in range(min(n, k), 0, -1):
        if n % g == 0:
            return g
    return 1


# ------------------------------------------------------------------------------------------------------------
# Causal time padding with an optional streaming cache


def _streaming(module: nn.Module) -> bool:
    return module.is_mutable_collection("cache") and not module.is_initializing()


def causal_time_pad(
    module: nn.Module, x_bthwc: jax.Array, kernel: int, stride: int = 1, mode: str = "replicate"
) -> jax.Array:
    """Prepends the frames a causal temporal window of `kernel` taps needs.

    Whole clip: `kernel - 1` padding frames ("replicate" repeats frame 0, "zeros" is zeros). Streaming: the
    first chunk is padded the same way; later chunks get the frames the previous chunk left over (kept in the
    "cache" collection), so windows continue exactly where they stopped, for any stride.
    """
    if kernel == 1 and stride == 1:
        return x_bthwc
    if mode not in ("replicate", "zeros"):
        raise ValueError(f"causal padding mode {mode!r}: use replicate or zeros")

    def initial_pad():
        first = x_bthwc[:, :1]
        pad = first if mode == "replicate" else jnp.zeros_like(first)
        return jnp.repeat(pad, kernel - 1, axis=1)

    if not _streaming(module):
        return jnp.concatenate([initial_pad(), x_bthwc], axis=1)
    cache = module.variable("cache", "frames", initial_pad)
    xp = jnp.concatenate([cache.value, x_bthwc], axis=1)
    n_out = (xp.shape[1] - kernel) // stride + 1 if xp.shape[1] >= kernel else 0
    cache.value = xp[:, n_out * stride :]
    return xp


def time_windows(xp_bthwc: jax.Array, kernel: int, stride: int) -> list[jax.Array]:
    """The `kernel` strided frame views of a causally padded clip: view i holds xp[j*stride + i] at j."""
    n_out = (xp_bthwc.shape[1] - kernel) // stride + 1
    return [
        jax.lax.slice_in_dim(xp_bthwc, i, i + (n_out - 1) * stride + 1, stride, axis=1) for i in range(kernel)
    ]


# ------------------------------------------------------------------------------------------------------------
# Depthwise 3D convolution


def depthwise_conv3d(xp_bthwc: jax.Array, kernel_thwc: jax.Array, impl: str = "shift_add") -> jax.Array:
    """Depthwise 3D conv over an already padded input (VALID); kernel (kt, kh, kw, C).

    "shift_add": sum of kt*kh*kw shifted slices times per-channel taps (fast on XLA CPU, fused in one loop).
    "grouped": `lax.conv_general_dilated` with `feature_group_count=C` (the reference form).
    """
    kt, kh, kw, c = kernel_thwc.shape
    kernel_thwc = kernel_thwc.astype(xp_bthwc.dtype)
    if impl == "grouped":
        return jax.lax.conv_general_dilated(
            xp_bthwc,
            kernel_thwc.reshape(kt, kh, kw, 1, c),
            window_strides=(1, 1, 1),
            padding="VALID",
            dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
            feature_group_count=c,
        )
    if impl != "shift_add":
        raise ValueError(f"depthwise impl {impl!r}: use shift_add or grouped")
    return _shift_add(xp_bthwc, kernel_thwc)


def _shift_add_forward(xp_bthwc: jax.Array, kernel_thwc: jax.Array) -> jax.Array:
    kt, kh, kw, _ = kernel_thwc.shape
    _, tp, hp, wp, _ = xp_bthwc.shape
    t, h, w = tp - kt + 1, hp - kh + 1, wp - kw + 1
    out = None
    for a in range(kt):
        for i in range(kh):
            for j in range(kw):
                term = xp_bthwc[:, a : a + t, i : i + h, j : j + w, :] * kernel_thwc[a, i, j]
                out = term if out is None else out + term
    return out


@jax.custom_vjp
def _shift_add(xp_bthwc: jax.Array, kernel_thwc: jax.Array) -> jax.Array:
    return _shift_add_forward(xp_bthwc, kernel_thwc)


def _shift_add_fwd(xp_bthwc, kernel_thwc):
    return _shift_add_forward(xp_bthwc, kernel_thwc), (xp_bthwc, kernel_thwc)


def _shift_add_bwd(residuals, g_bthwc):
    """The same gradients as autodiff of the forward, 2-4x faster on XLA CPU (measured at the quickstart
    tokenizer's shapes): the input's gradient is the forward's loop again (the padded output gradient against
    the flipped kernel), and each tap's gradient is one reduction, run one tap after another (`lax.map`), where
    autodiff leaves XLA CPU nine slice-multiply-reduce fusions side by side, several times slower."""
    xp_bthwc, kernel_thwc = residuals
    kt, kh, kw, c = kernel_thwc.shape
    g_padded = jnp.pad(g_bthwc, ((0, 0), (kt - 1, kt - 1), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
    dxp = _shift_add_forward(g_padded, kernel_thwc[::-1, ::-1, ::-1])
    taps = jnp.asarray([(a, i, j) for a in range(kt) for i in range(kh) for j in range(kw)], jnp.int32)

    def tap_gradient(tap: jax.Array) -> jax.Array:
        window = jax.lax.dynamic_slice(xp_bthwc, (0, tap[0], tap[1], tap[2], 0), g_bthwc.shape)
        return jnp.sum(window * g_bthwc, axis=(0, 1, 2, 3))

    dkernel = jax.lax.map(tap_gradient, taps).reshape(kt, kh, kw, c)
    return dxp, dkernel


_shift_add.defvjp(_shift_add_fwd, _shift_add_bwd)


class CausalDepthwiseConv3D(nn.Module):
    """Depthwise conv, causal in time (streamable), SAME zero padding in space."""

    kernel: Sequence[int] = (3, 3, 3)
    impl: str = "shift_add"
    pad_mode: str = "replicate"
    use_bias: bool = True

    @nn.compact
    def __call__(self, x_bthwc: jax.Array) -> jax.Array:
        kt, kh, kw = self.kernel
        c = x_bthwc.shape[-1]
        w = self.param(
            "kernel",
            partitioned(
                nn.initializers.normal(stddev=(kt * kh * kw) ** -0.5), (None, None, None, "conv_out")
            ),
            (kt, kh, kw, c),
        )
        xp = causal_time_pad(self, x_bthwc, kt, 1, self.pad_mode)
        xp = jnp.pad(xp, ((0, 0), (0, 0), (kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2), (0, 0)))
        y = depthwise_conv3d(xp, w, self.impl)
        if self.use_bias:
            y = y + self.param("bias", partitioned(nn.initializers.zeros, ("conv_out",)), (c,)).astype(
                y.dtype
            )
        return y


# ------------------------------------------------------------------------------------------------------------
# Dense (matmul) convolutions: patch convs for resampling


class CausalPatchConv(nn.Module):
    """A conv with spatial kernel = stride = `patch` and a causal temporal window (`time_kernel`,
    `time_stride`).

    Written as time-im2col + space-to-depth + one matmul. With time_stride 2 and an input of 1+2m frames it
    yields 1+m frames: output j reads input frames 2j-2..2j, so frame 0 is kept on its own ("first frame
    kept").
    """

    features: int
    patch: int = 1
    time_kernel: int = 1
    time_stride: int = 1
    pad_mode: str = "replicate"
    names: tuple[str | None, str | None] = ("conv_in", "conv_out")
    kernel_init: Initializer = DEFAULT_KERNEL_INIT

    @nn.compact
    def __call__(self, x_bthwc: jax.Array) -> jax.Array:
        if self.time_kernel > 1 or self.time_stride > 1:
            xp = causal_time_pad(self, x_bthwc, self.time_kernel, self.time_stride, self.pad_mode)
            x = jnp.concatenate(time_windows(xp, self.time_kernel, self.time_stride), axis=-1)
        else:
            x = x_bthwc
        x = space_to_depth(x, self.patch)
        return dense(self.features, self.names, "proj", kernel_init=self.kernel_init)(x)


class PatchUpsample(nn.Module):
    """The decoder's inverse of `CausalPatchConv`: a matmul to patch*patch*time_stride*features, then
    depth-to-space in space and time. With time_stride 2, latent frame 0 gives one frame and every later
    latent frame two, so 1+m latent frames give 1+2m frames (streaming: only the very first chunk drops a
    frame)."""

    features: int
    patch: int = 1
    time_stride: int = 1
    names: tuple[str | None, str | None] = ("conv_in", "conv_out")
    kernel_init: Initializer = DEFAULT_KERNEL_INIT

    @nn.compact
    def __call__(self, x_bthwc: jax.Array) -> jax.Array:
        s, p = self.time_stride, self.patch
        y = dense(self.features * p * p * s, self.names, "proj", kernel_init=self.kernel_init)(x_bthwc)
        b, t, h, w, _ = y.shape
        if s > 1:
            y = y.reshape(b, t, h, w, s, -1).transpose(0, 1, 4, 2, 3, 5).reshape(b, t * s, h, w, -1)
            # Only the clip's first chunk starts with latent frame 0. In streaming mode "first" is whether
            # this layer's cache marker exists yet: part of the variables' structure, so it is static under
            # jit.
            first = True
            if _streaming(self):
                first = not self.has_variable("cache", "started")
                self.variable("cache", "started", lambda: jnp.zeros((), jnp.int32))
            if first:
                y = y[:, s - 1 :]
        return depth_to_space(y, p)


def over_query_chunks(fn: Callable[[Any], Any], q: Any, chunk: int, axis: int = 1) -> Any:
    """fn(q) computed `chunk` query rows at a time (zero-padded to a multiple), each chunk rematerialised in
    the backward pass: only one chunk's (chunk x keys) logits exist at once instead of the whole L x S map.
    `q` is an array or a tuple of arrays with the query rows on `axis` ((B, rows, H, Dh) by default); `fn`
    maps it to outputs (an array or tuple) with the rows on the same axis, row by row (attention does);
    chunk 0 or >= L calls it once."""
    leaf = jax.tree.leaves(q)[0]
    axis %= leaf.ndim
    rows = leaf.shape[axis]
    if not chunk or rows <= chunk:
        return fn(q)
    pad = -rows % chunk

    def split(x):  # (.., rows, ..) -> (n, .., chunk, ..)
        x = jnp.pad(x, [(0, pad if a == axis else 0) for a in range(x.ndim)])
        return jnp.moveaxis(x.reshape(*x.shape[:axis], -1, chunk, *x.shape[axis + 1 :]), axis, 0)

    def merge(y):  # (n, .., chunk, ..) -> (.., rows, ..)
        y = jnp.moveaxis(y, 0, axis)
        y = y.reshape(*y.shape[:axis], -1, *y.shape[axis + 2 :])
        return jax.lax.slice_in_dim(y, 0, rows, axis=axis)

    return jax.tree.map(merge, jax.lax.map(jax.checkpoint(fn), jax.tree.map(split, q)))


# ------------------------------------------------------------------------------------------------------------
# The softmax attention core, with its backward pass written out


def softmax_attention(
    q_qhd: jax.Array, k_khd: jax.Array, v_khd: jax.Array, scale: float, key_mask_k: jax.Array | None = None
) -> jax.Array:
    """softmax(scale · q kᵀ) v over keys, float32 logits and output, any leading batch axes ("...qhd").

    The values and gradients of that formula under autodiff, in fewer passes over the (heads, queries, keys)
    map, where the step spends its time once the map outgrows the cache: the forward keeps exp(s - max)
    unnormalised and divides the (q, d) output instead of the map; the backward takes the softmax's row term
    from rowsum(dO ∘ O) on (q, d) arrays (FlashAttention's identity) instead of a reduction over the map.
    Only that map is kept for the backward pass (autodiff keeps the probabilities and more). With no more
    keys than channels (cross-attention to a short text) the map is the small side and the formula by
    autodiff is the faster one. `key_mask_k` (True = attend) is not differentiated; a row with no key left
    averages every value.
    """
    mask = jnp.ones(k_khd.shape[:-2], bool) if key_mask_k is None else key_mask_k
    if k_khd.shape[-3] > q_qhd.shape[-1]:
        return _softmax_attention(q_qhd, k_khd, v_khd, mask, scale)
    logits = jnp.einsum("...qhd,...khd->...hqk", q_qhd, k_khd, preferred_element_type=jnp.float32) * scale
    probs = jax.nn.softmax(jnp.where(mask[..., None, None, :], logits, jnp.finfo(jnp.float32).min), axis=-1)
    return jnp.einsum(
        "...hqk,...khd->...qhd", probs.astype(v_khd.dtype), v_khd, preferred_element_type=jnp.float32
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _softmax_attention(q, k, v, mask, scale):
    return _softmax_attention_fwd(q, k, v, mask, scale)[0]


def _softmax_attention_fwd(q, k, v, mask, scale):
    logits = jnp.einsum("...qhd,...khd->...hqk", q, k, preferred_element_type=jnp.float32) * scale
    logits = jnp.where(mask[..., None, None, :], logits, jnp.finfo(jnp.float32).min)
    unnormalised = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
    inv_sum_qh1 = jnp.swapaxes(1.0 / jnp.sum(unnormalised, axis=-1), -1, -2)[..., None]
    pv = jnp.einsum(
        "...hqk,...khd->...qhd", unnormalised.astype(v.dtype), v, preferred_element_type=jnp.float32
    )
    out = pv * inv_sum_qh1
    return out, (q, k, v, mask, unnormalised, inv_sum_qh1, out)


def _softmax_attention_bwd(scale, residuals, g_out):
    q, k, v, mask, unnormalised, inv_sum_qh1, out = residuals
    g_scaled = g_out * inv_sum_qh1  # probabilities = unnormalised / sum: fold 1/sum into the (q, d) side
    g_v = jnp.einsum("...hqk,...qhd->...khd", unnormalised, g_scaled)
    g_probs_scaled = jnp.einsum("...qhd,...khd->...hqk", g_scaled, v.astype(jnp.float32))
    row_term = jnp.swapaxes(jnp.sum(g_scaled * out, axis=-1), -1, -2)[..., None]  # rowsum(dO ∘ O) / sum
    g_logits = unnormalised * (g_probs_scaled - row_term) * scale
    g_q = jnp.einsum("...hqk,...khd->...qhd", g_logits, k.astype(jnp.float32))
    g_k = jnp.einsum("...hqk,...qhd->...khd", g_logits, q.astype(jnp.float32))
    return g_q.astype(q.dtype), g_k.astype(k.dtype), g_v.astype(v.dtype), None


_softmax_attention.defvjp(_softmax_attention_fwd, _softmax_attention_bwd)
