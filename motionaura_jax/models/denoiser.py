"""The spectral transformer denoiser of MotionAura T2V (paper_notes §4.3, choices from §8 made switchable).

    logits = SpectralDenoiser(config).apply(params, ids_bthw, t_b, fps_b, text_bld, text_mask_bl)

ids (B,T',H',W') in [0, K] (K = [MASK]) -> Embed(K+1, D) -> N DiT-style blocks -> LN -> Linear(D, K) logits
over the K codes (no [MASK] logit), float32 (B,T',H',W',K). Each block, with c = MLP(sin t) + MLP(sin fps):

    [mixer]  x += g_m · Mixer(modulate(LN x))        fnet_mix / global_filter modes only
    self     x += g_1 · SelfAttn(modulate(LN x))     3D RoPE; spectral (qkv_fft2) or plain core
    cross    x += CrossAttn(LN x, text)              K/V from the projected text; zero-init output projection
    ffn      x += g_2 · FFN(modulate(LN x))          GELU, mlp_ratio·D

AdaLN-Zero makes every gate and modulation zero at init and the cross-attention output projection is
zero-init too (PixArt-α), so each block starts as the identity. The text side gets the FFT as the paper says
(`cross_fft`): the spectral core in cross-attention for qkv_fft2, an FNet mix of the projected text for
fnet_mix; global_filter has no text-side analogue (text has no (h, w) grid). An all-False text mask (an
unconditional sample for CFG) makes cross-attention contribute nothing.

Blocks are stacked with `nn.scan` (parameter axis "layers") when `scan_layers`, rematerialised when `remat`;
compute runs in `dtype` with float32 parameters.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from motionaura_jax.models import attention as attn
from motionaura_jax.models import layers, spectral
from motionaura_jax.parallel.sharding import constrain

REQUIRED_FIELDS = (
    "vocab_size",
    "width",
    "depth",
    "heads",
    "mlp_ratio",
    "text_dim",
    "spectral_mode",
    "cross_fft",
    "qkv_fft2_impl",
    "rope",
    "rope_theta",
    "qk_norm",
    "remat",
    "scan_layers",
    "dtype",
    "dropout",
)


def _check_config(config: ml_collections.ConfigDict) -> None:
    missing = [f for f in REQUIRED_FIELDS if f not in config]
    if missing:
        raise ValueError(
            f"denoiser config lacks {missing}; start from motionaura_jax.configs.t2v.denoiser_config(size)"
        )
    spectral.check_mode(config.spectral_mode)
    if config.width % config.heads:
        raise ValueError(f"denoiser width {config.width} is not a multiple of heads {config.heads}")
    layers.dtype_from_name(config.dtype)


class DenoiserBlock(nn.Module):
    """One spectral transformer block; returns (x, None) so it can be the body of `nn.scan`."""

    config: ml_collections.ConfigDict
    grid_thw: tuple[int, int, int]
    deterministic: bool = True

    @nn.compact
    def __call__(
        self, x_bld: jax.Array, c_bd: jax.Array, text_bsd: jax.Array, text_mask_bs: jax.Array
    ) -> tuple[jax.Array, None]:
        cfg = self.config
        dtype = layers.dtype_from_name(cfg.dtype)
        mode = cfg.spectral_mode
        head_dim = cfg.width // cfg.heads
        has_mixer = mode in ("fnet_mix", "global_filter")
        mods = attn.AdaLNZero(9 if has_mixer else 6, dtype=dtype, name="adaln")(c_bd)
        shift_attn, scale_attn, gate_attn, shift_ffn, scale_ffn, gate_ffn = mods[:6]
        dropout = nn.Dropout(cfg.dropout)

        def norm(name, x, shift=None, scale=None):
            y = layers.layer_norm(name, affine=shift is None)(x)
            if shift is not None:
                y = attn.modulate(y, shift, scale)
            return y.astype(dtype)

        if has_mixer:
            shift_mix, scale_mix, gate_mix = mods[6:]
            mixed = spectral.SpectralMixer(mode, self.grid_thw, name="mixer")(
                norm("norm_mix", x_bld, shift_mix, scale_mix)
            )
            x_bld = x_bld + gate_mix * mixed

        rope = attn.video_rope(cfg.rope, self.grid_thw, head_dim, cfg.rope_theta)
        mha = dict(
            num_heads=cfg.heads,
            head_dim=head_dim,
            qk_norm=cfg.qk_norm,
            spectral_impl=cfg.qkv_fft2_impl,
            dtype=dtype,
        )
        y = attn.MultiHeadAttention(spectral=mode == "qkv_fft2", name="self_attn", **mha)(
            norm("norm_attn", x_bld, shift_attn, scale_attn), rope_q=rope, rope_k=rope
        )
        x_bld = x_bld + gate_attn * dropout(y, deterministic=self.deterministic)

        cross_spectral = mode == "qkv_fft2" and cfg.cross_fft
        y = attn.MultiHeadAttention(spectral=cross_spectral, zero_init_out=True, name="cross_attn", **mha)(
            norm("norm_cross", x_bld), text_bsd, key_mask_bs=text_mask_bs
        )
        x_bld = x_bld + dropout(y, deterministic=self.deterministic)

        y = attn.FeedForward(cfg.mlp_ratio, cfg.dropout, dtype=dtype, name="ffn")(
            norm("norm_ffn", x_bld, shift_ffn, scale_ffn), deterministic=self.deterministic
        )
        x_bld = x_bld + gate_ffn * dropout(y, deterministic=self.deterministic)
        return constrain(x_bld.astype(dtype), attn.TOKENS), None


class SpectralDenoiser(nn.Module):
    """p̃(z_0 | z_t, t, fps, text) as logits over the K codes; see the module docstring."""

    config: ml_collections.ConfigDict

    def _check_inputs(self, ids, t_b, fps_b, text_bld, text_mask_bl) -> None:
        cfg = self.config
        if ids.ndim != 4 or not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(
                f"SpectralDenoiser: ids must be integer (B,T',H',W'), got {ids.dtype}{ids.shape}"
            )
        b = ids.shape[0]
        if t_b.shape != (b,) or fps_b.shape != (b,):
            raise ValueError(f"SpectralDenoiser: t_b {t_b.shape} and fps_b {fps_b.shape} must both be ({b},)")
        if text_bld.ndim != 3 or text_bld.shape[0] != b or text_bld.shape[-1] != cfg.text_dim:
            raise ValueError(
                f"SpectralDenoiser: text_bld {text_bld.shape} must be ({b}, L, text_dim={cfg.text_dim}); "
                "set config.text_dim to the text encoder's width"
            )
        if text_mask_bl.shape != text_bld.shape[:2] or text_mask_bl.dtype != jnp.bool_:
            raise ValueError(
                f"SpectralDenoiser: text_mask_bl must be bool {text_bld.shape[:2]}, got "
                f"{text_mask_bl.dtype}{text_mask_bl.shape}"
            )

    @nn.compact
    def __call__(
        self,
        ids_bthw: jax.Array,
        t_b: jax.Array,
        fps_b: jax.Array,
        text_bld: jax.Array,
        text_mask_bl: jax.Array,
        *,
        deterministic: bool = True,
    ) -> jax.Array:
        cfg = self.config
        _check_config(cfg)
        self._check_inputs(ids_bthw, t_b, fps_b, text_bld, text_mask_bl)
        dtype = layers.dtype_from_name(cfg.dtype)
        b, t, h, w = ids_bthw.shape
        num_codes, width = cfg.vocab_size, cfg.width

        embed = nn.Embed(
            num_codes + 1,
            width,
            dtype=dtype,
            param_dtype=jnp.float32,
            name="token_embed",
            embedding_init=layers.partitioned(nn.initializers.normal(0.02), ("vocab", "embed")),
        )
        x = constrain(embed(ids_bthw.reshape(b, t * h * w)), attn.TOKENS)

        keep = text_mask_bl[:, :, None]
        text = layers.dense(
            width, ("mlp", "embed"), "text_proj", dtype=dtype, kernel_init=attn.TRANSFORMER_KERNEL_INIT
        )(text_bld.astype(dtype))
        text = jnp.where(keep, text, 0).astype(dtype)
        if cfg.spectral_mode == "fnet_mix" and cfg.cross_fft:
            # Padded tokens are zeroed before the FFT so their values cannot leak into real ones.
            normed = jnp.where(keep, layers.layer_norm("text_mix_norm")(text), 0).astype(dtype)
            text = text + spectral.fnet_mix(normed)
        text = constrain(text, attn.TOKENS)

        c = attn.ConditionEmbedding(width, dtype=dtype, name="cond")(t_b, fps_b)

        block_cls = DenoiserBlock
        if cfg.remat:
            block_cls = nn.remat(block_cls, prevent_cse=not cfg.scan_layers)
        block_kwargs = dict(config=cfg, grid_thw=(t, h, w), deterministic=deterministic)
        if cfg.scan_layers:
            stack = nn.scan(
                block_cls,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
                length=cfg.depth,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            x, _ = stack(name="blocks", **block_kwargs)(x, c, text, text_mask_bl)
        else:
            for i in range(cfg.depth):
                x, _ = block_cls(name=f"block_{i}", **block_kwargs)(x, c, text, text_mask_bl)

        x = layers.layer_norm("final_norm")(x).astype(dtype)
        logits = layers.dense(
            num_codes, ("embed", "vocab"), "head", dtype=dtype, kernel_init=attn.TRANSFORMER_KERNEL_INIT
        )(x)
        return logits.astype(jnp.float32).reshape(b, t, h, w, num_codes)


def example_inputs(
    config: ml_collections.ConfigDict,
    batch: int = 1,
    grid_thw: tuple[int, int, int] = (5, 32, 32),
    text_len: int = 226,
    *,
    abstract: bool = False,
) -> tuple:
    """Inputs of the right shapes and dtypes (zeros, or ShapeDtypeStructs when `abstract`)."""
    shapes = [
        ((batch, *grid_thw), jnp.int32),
        ((batch,), jnp.int32),
        ((batch,), jnp.float32),
        ((batch, text_len, config.text_dim), jnp.float32),
        ((batch, text_len), jnp.bool_),
    ]
    if abstract:
        return tuple(jax.ShapeDtypeStruct(s, d) for s, d in shapes)
    return tuple(jnp.zeros(s, d) for s, d in shapes)


def count_params(
    config: ml_collections.ConfigDict, grid_thw: tuple[int, int, int] = (5, 32, 32), text_len: int = 226
) -> int:
    """Parameter count from `jax.eval_shape` of init: no parameter is ever allocated (works for size L)."""
    model = SpectralDenoiser(config)
    inputs = example_inputs(config, 1, grid_thw, text_len, abstract=True)
    shapes = jax.eval_shape(model.init, jax.random.key(0), *inputs)
    leaves = jax.tree.leaves(shapes, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))
    return sum(
        math.prod((leaf.value if isinstance(leaf, nn.meta.AxisMetadata) else leaf).shape) for leaf in leaves
    )
