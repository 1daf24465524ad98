"""The spectral transformer denoiser of MotionAura T2V (paper_notes §4.3, choices from §8 made switchable).

    logits = SpectralDenoiser(config).apply(params, ids_bthw, t_b, fps_b, text_bld, text_mask_bl)

ids (B,T',H',W') in [0, K] (K = [MASK]) -> Embed(K+1, D) -> N DiT-style blocks -> LN -> Linear(D, K) logits
over the K codes (no [MASK] logit), float32 (B,T',H',W',K). With `patch_size` (pt, ph, pw) != (1, 1, 1) a
token is a block of codes (the concatenated embeddings projected to D; the head predicts all its codes), so
a finer code grid costs no longer sequence. Each block, with c = MLP(sin t) + MLP(sin fps) (+ MLP(mean text)
with `text_pool_cond`):

    [mixer]  x += g_m · Mixer(modulate(LN x))        fnet_mix / global_filter modes only
    self     x += g_1 · SelfAttn(modulate(LN x))     3D RoPE; spectral (qkv_fft2) or plain core; in the
                                                     attention-free filter3d mode a gated 3D global filter
                                                     (`spectral.Filter3DMixer`) instead, O(N log N)
    cross    x += CrossAttn(LN x, text)              K/V from the projected text; zero-init output projection
    ffn      x += g_2 · FFN(modulate(LN x))          GELU, mlp_ratio·D

AdaLN-Zero makes every gate and modulation zero at init and the cross-attention output projection is
zero-init too (PixArt-α), so each block starts as the identity. The text side gets the FFT as the paper says
(`cross_fft`): the spectral core in cross-attention for qkv_fft2, an FNet mix of the projected text for
fnet_mix; global_filter and filter3d have no text-side analogue (text has no (h, w) grid), and filter3d
adds a fixed sin-cos 3D position code to the token embeddings (it has no RoPE to carry positions). An
all-False text mask (an unconditional sample for CFG) makes cross-attention contribute nothing.

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
    "patch_size",
    "text_pool_cond",
    "attention_chunk",
)


_NO_INPAINT = (
    "spectral_mode={mode} has no self-attention, so the target tokens cannot read the masked-video and sketch "
    "tokens beside them in one sequence; use context_fusion='channel' (inpaint.context_fusion), or a mode with "
    "attention (qkv_fft2, fnet_mix, global_filter, none)"
)
CONTEXT_FUSIONS = ("sequence", "channel")


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
    if len(tuple(config.patch_size)) != 3 or min(config.patch_size) < 1:
        raise ValueError(f"denoiser patch_size {config.patch_size}: use three positive ints (t, h, w)")


class DenoiserBlock(nn.Module):
    """One spectral transformer block; returns (x, None) so it can be the body of `nn.scan`."""

    config: ml_collections.ConfigDict
    grid_thw: tuple[int, int, int]
    deterministic: bool = True
    # Inpainting layout (see `SpectralDenoiser`): `num_grids` token grids of `grid_thw` (target, then context),
    # then `num_extra` unpositioned tokens (sketch). The defaults are the text-to-video sequence.
    num_grids: int = 1
    num_extra: int = 0
    context_rope: str = "aligned"
    context_mixing: str = "per_grid"

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
            normed = norm("norm_mix", x_bld, shift_mix, scale_mix)
            if self.num_grids == 1 and self.num_extra == 0:
                mixed = spectral.SpectralMixer(mode, self.grid_thw, name="mixer")(normed)
            else:
                mixed = self._mix_grids(mode, normed)
            x_bld = x_bld + attn.gated(gate_mix, mixed)

        mha = dict(
            num_heads=cfg.heads,
            head_dim=head_dim,
            qk_norm=cfg.qk_norm,
            spectral_impl=cfg.qkv_fft2_impl,
            dtype=dtype,
        )
        if mode in spectral.ATTENTION_FREE_MODES:  # the 3D filter takes self-attention's place (and gates)
            if self.num_grids > 1 or self.num_extra:
                raise ValueError(_NO_INPAINT.format(mode=mode))
            y = spectral.Filter3DMixer(self.grid_thw, dtype=dtype, name="mixer")(
                norm("norm_mix", x_bld, shift_attn, scale_attn)
            )
        else:
            rope = attn.video_rope(cfg.rope, self.grid_thw, head_dim, cfg.rope_theta)
            if rope is not None and (self.num_grids > 1 or self.num_extra):
                rope = self._sequence_rope(rope)
            y = attn.MultiHeadAttention(
                spectral=mode == "qkv_fft2", query_chunk=int(cfg.attention_chunk), name="self_attn", **mha
            )(norm("norm_attn", x_bld, shift_attn, scale_attn), rope_q=rope, rope_k=rope)
        x_bld = x_bld + attn.gated(gate_attn, dropout(y, deterministic=self.deterministic))

        cross_spectral = mode == "qkv_fft2" and cfg.cross_fft
        y = attn.MultiHeadAttention(spectral=cross_spectral, zero_init_out=True, name="cross_attn", **mha)(
            norm("norm_cross", x_bld), text_bsd, key_mask_bs=text_mask_bs
        )
        x_bld = x_bld + dropout(y, deterministic=self.deterministic)

        y = attn.FeedForward(cfg.mlp_ratio, cfg.dropout, dtype=dtype, name="ffn")(
            norm("norm_ffn", x_bld, shift_ffn, scale_ffn), deterministic=self.deterministic
        )
        x_bld = x_bld + attn.gated(gate_ffn, dropout(y, deterministic=self.deterministic))
        return constrain(x_bld.astype(dtype), attn.TOKENS), None

    def _mix_grids(self, mode: str, normed_bld: jax.Array) -> jax.Array:
        """The spectral mixer of an inpainting sequence: the FFT mixers assume one token grid, so each grid
        (target, context) is mixed on its own ("per_grid") or only the target is ("target_only"); the sketch
        tokens have no (h, w) grid and are never mixed (their update is zero). One "mixer" call, so the
        text-to-video parameter names (and a global filter's weights) are shared by every grid."""
        b, _, d = normed_bld.shape
        t, h, w = self.grid_thw
        n = t * h * w
        grids = self.num_grids if self.context_mixing == "per_grid" else 1
        if self.context_mixing not in ("per_grid", "target_only"):
            raise ValueError(f"context_mixing={self.context_mixing!r}: use per_grid or target_only")
        tokens = normed_bld[:, : grids * n]
        if mode == "global_filter":  # per frame over (h, w): grids stacked along time are mixed apart
            mixed = spectral.SpectralMixer(mode, (grids * t, h, w), name="mixer")(tokens)
        else:  # fnet_mix over (tokens, channels): one FFT per grid
            mixed = spectral.SpectralMixer(mode, self.grid_thw, name="mixer")(tokens.reshape(b * grids, n, d))
            mixed = mixed.reshape(b, grids * n, d)
        rest = normed_bld.shape[1] - grids * n
        return jnp.concatenate([mixed, jnp.zeros((b, rest, d), mixed.dtype)], axis=1)

    def _sequence_rope(self, rope_grid: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        """RoPE of [target ; context ; extra]: context tokens take the positions of the target tokens they
        sit under ("aligned") or no rotation ("none"); extra (sketch) tokens are never rotated."""
        if self.context_rope not in ("aligned", "none"):
            raise ValueError(f"context_rope={self.context_rope!r}: use aligned or none")
        cos, sin = rope_grid
        identity = (jnp.ones_like(cos), jnp.zeros_like(sin))
        context = rope_grid if self.context_rope == "aligned" else identity
        parts = [rope_grid] + [context] * (self.num_grids - 1)
        if self.num_extra:
            parts.append(
                (
                    jnp.ones((self.num_extra, cos.shape[1]), cos.dtype),
                    jnp.zeros((self.num_extra, sin.shape[1]), sin.dtype),
                )
            )
        return jnp.concatenate([p[0] for p in parts]), jnp.concatenate([p[1] for p in parts])


class SegmentEmbeddings(nn.Module):
    """Learned embeddings of the inpainting segments {target, context, sketch} (`SEGMENTS`), added to the
    tokens of each. New parameters, absent from a text-to-video run, in their own submodule
    ("inpaint_segments") so that a fine-tune can train them beside frozen denoiser weights. The target row
    starts at zero, so a fresh model sees target tokens exactly as the text-to-video model did.

    With `context_fusion` it also holds the (D, D) projection that adds each context token to the target
    token at its position, and with `sketch_grid` the (D, D) projection that adds each sketch token to the
    target token of latent frame 0 under it; both zero at init (as ControlNet's zero convolutions), for the
    same reason. Returns (table, context projection or None, sketch projection or None)."""

    width: int
    context_fusion: bool = False
    sketch_grid: bool = False

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
        def init(rng, shape, dtype=jnp.float32):
            table = nn.initializers.normal(0.02)(rng, shape, dtype)
            return table.at[0].set(0.0)

        table = self.param(
            "embedding", layers.partitioned(init, (None, "embed")), (len(SEGMENTS), self.width), jnp.float32
        )

        def projection(name):
            zeros = layers.partitioned(nn.initializers.zeros, ("embed", "mlp"))
            return self.param(name, zeros, (self.width, self.width), jnp.float32)

        fuse = projection("context_fuse") if self.context_fusion else None
        sketch_fuse = projection("sketch_fuse") if self.sketch_grid else None
        return table, fuse, sketch_fuse


SEGMENTS = ("target", "context", "sketch")


class PooledText(nn.Module):
    """MLP(masked mean of the text embeddings): the caption as one vector for the adaLN condition. An all-False
    mask (the unconditional branch of guidance) gives the MLP of zeros, a learned constant."""

    width: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, text_bld: jax.Array, text_mask_bl: jax.Array) -> jax.Array:
        keep = text_mask_bl[:, :, None].astype(jnp.float32)
        pooled = (text_bld.astype(jnp.float32) * keep).sum(1) / jnp.maximum(keep.sum(1), 1.0)
        kernel = attn.TRANSFORMER_KERNEL_INIT
        h = layers.dense(self.width, (None, "embed"), "in", dtype=self.dtype, kernel_init=kernel)(pooled)
        return layers.dense(self.width, ("mlp", "embed"), "out", dtype=self.dtype, kernel_init=kernel)(
            nn.silu(h)
        )


class SpectralDenoiser(nn.Module):
    """p̃(z_0 | z_t, t, fps, text) as logits over the K codes; see the module docstring.

    Inpainting (paper_notes §5.1): with `context_ids_bthw` (ids of the masked video, the target's grid) and/or
    `extra_tokens_bsd` (sketch tokens already at the denoiser width) the sequence is [target ; context ;
    extra], each segment plus its `SegmentEmbeddings` row; the logits are read out on the target only, so
    the output shape is unchanged. Without them the computation is the text-to-video one, bit for bit.
    `context_rope` ("aligned": context tokens take the RoPE positions of the target tokens they sit under;
    "none") and `context_mixing` ("per_grid" / "target_only", see `DenoiserBlock._mix_grids`) are switches.
    `context_fusion="channel"` instead keeps the sequence the target's: each context token is added to the
    target token at its position through a zero-initialised projection, and the sketch tokens join the text
    in cross-attention; it works with every spectral mode, the attention-free filter3d included.
    `sketch_grid=True` (either fusion) also adds each sketch token, through a zero-initialised projection, to
    the target token of latent frame 0 at its position: the sketch is drawn where the object is in frame 0,
    so its grid of tokens must be the target's per-frame grid (`add_sketch_at_frame0`).

        model = SpectralDenoiser(denoiser_config("tiny"))
        params = model.init(jax.random.PRNGKey(0), ids_bthw, t_b, fps_b, text_bld, text_mask_bl)
        logits = model.apply(params, ids_bthw, t_b, fps_b, text_bld, text_mask_bl)   # (B, T', H', W', K)
    """

    config: ml_collections.ConfigDict
    context_rope: str = "aligned"
    context_mixing: str = "per_grid"
    context_fusion: str = "sequence"
    sketch_grid: bool = False

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
    @layers.with_unit_batch_squeezed
    def __call__(
        self,
        ids_bthw: jax.Array,
        t_b: jax.Array,
        fps_b: jax.Array,
        text_bld: jax.Array,
        text_mask_bl: jax.Array,
        *,
        deterministic: bool = True,
        context_ids_bthw: jax.Array | None = None,
        extra_tokens_bsd: jax.Array | None = None,
    ) -> jax.Array:
        cfg = self.config
        _check_config(cfg)
        self._check_inputs(ids_bthw, t_b, fps_b, text_bld, text_mask_bl)
        if context_ids_bthw is not None and context_ids_bthw.shape != ids_bthw.shape:
            raise ValueError(
                f"SpectralDenoiser: context_ids {context_ids_bthw.shape} must have the target's shape "
                f"{ids_bthw.shape} (the masked video is encoded by the same tokenizer)"
            )
        if extra_tokens_bsd is not None and (
            extra_tokens_bsd.ndim != 3 or extra_tokens_bsd.shape[::2] != (ids_bthw.shape[0], cfg.width)
        ):
            raise ValueError(
                f"SpectralDenoiser: extra_tokens {extra_tokens_bsd.shape} must be ({ids_bthw.shape[0]}, S, "
                f"width={cfg.width})"
            )
        dtype = layers.dtype_from_name(cfg.dtype)
        b, t, h, w = ids_bthw.shape
        num_codes, width = cfg.vocab_size, cfg.width

        patch = tuple(int(p) for p in cfg.patch_size)
        if t % patch[0] or h % patch[1] or w % patch[2]:
            raise ValueError(
                f"SpectralDenoiser: token grid {(t, h, w)} is not divisible by model.patch_size {patch}"
            )
        grid = (t // patch[0], h // patch[1], w // patch[2])
        embed = nn.Embed(
            num_codes + 1,
            width,
            dtype=dtype,
            param_dtype=jnp.float32,
            name="token_embed",
            embedding_init=layers.partitioned(nn.initializers.normal(0.02), ("vocab", "embed")),
        )
        patch_in = (
            None
            if patch == (1, 1, 1)
            else layers.dense(
                width, ("mlp", "embed"), "patch_embed", dtype=dtype, kernel_init=attn.TRANSFORMER_KERNEL_INIT
            )
        )

        def tokens_of(ids):
            return patchify(embed(ids), patch, patch_in)

        x = tokens_of(ids_bthw)
        if cfg.spectral_mode in spectral.ATTENTION_FREE_MODES:
            # No RoPE without attention, and the filter is shift-equivariant (circularly): a fixed 3D position
            # code lets the model know where a token sits (an object moving left starts on the right).
            x = x + attn.sincos_3d_embedding(grid, width).astype(dtype)[None]
        x = constrain(x, attn.TOKENS)
        num_grids, num_extra = 1, 0
        sketch_bsd = None  # context_fusion="channel": the sketch tokens, for cross-attention beside the text
        if self.context_fusion not in CONTEXT_FUSIONS:
            raise ValueError(
                f"context_fusion={self.context_fusion!r}: use one of {', '.join(CONTEXT_FUSIONS)}"
            )
        if (
            context_ids_bthw is not None or extra_tokens_bsd is not None
        ) and self.context_fusion == "channel":
            table, fuse, sketch_fuse = SegmentEmbeddings(
                width, context_fusion=True, sketch_grid=self.sketch_grid, name="inpaint_segments"
            )()
            segments = table.astype(dtype)
            x = x + segments[0]
            if context_ids_bthw is not None:
                x = x + jnp.dot(tokens_of(context_ids_bthw) + segments[1], fuse.astype(dtype))
            if extra_tokens_bsd is not None:
                sketch_bsd = extra_tokens_bsd.astype(dtype) + segments[2]
                x = add_sketch_at_frame0(x, extra_tokens_bsd.astype(dtype), sketch_fuse, grid)
            x = constrain(x, attn.TOKENS)
        elif context_ids_bthw is not None or extra_tokens_bsd is not None:
            if cfg.spectral_mode in spectral.ATTENTION_FREE_MODES:
                raise ValueError(_NO_INPAINT.format(mode=cfg.spectral_mode))
            table, _, sketch_fuse = SegmentEmbeddings(
                width, sketch_grid=self.sketch_grid, name="inpaint_segments"
            )()
            segments = table.astype(dtype)
            if extra_tokens_bsd is not None:
                x = add_sketch_at_frame0(x, extra_tokens_bsd.astype(dtype), sketch_fuse, grid)
            parts = [x + segments[0]]
            if context_ids_bthw is not None:
                parts.append(tokens_of(context_ids_bthw) + segments[1])
                num_grids = 2
            if extra_tokens_bsd is not None:
                parts.append(extra_tokens_bsd.astype(dtype) + segments[2])
                num_extra = extra_tokens_bsd.shape[1]
            x = constrain(jnp.concatenate(parts, axis=1), attn.TOKENS)

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
        if cfg.text_pool_cond:
            c = c + PooledText(width, dtype=dtype, name="text_pool")(text_bld, text_mask_bl)
        if sketch_bsd is not None:  # always visible, as the sketch tokens of a [target ; sketch] sequence are
            text = constrain(jnp.concatenate([text, sketch_bsd], axis=1), attn.TOKENS)
            sketch_mask = jnp.ones(sketch_bsd.shape[:2], jnp.bool_)
            text_mask_bl = jnp.concatenate([text_mask_bl, sketch_mask], axis=1)

        block_cls = DenoiserBlock
        if cfg.remat:
            block_cls = nn.remat(block_cls, prevent_cse=not cfg.scan_layers)
        block_kwargs = dict(config=cfg, grid_thw=grid, deterministic=deterministic)
        if num_grids > 1 or num_extra:
            block_kwargs.update(
                num_grids=num_grids,
                num_extra=num_extra,
                context_rope=self.context_rope,
                context_mixing=self.context_mixing,
            )
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

        x = x[:, : math.prod(grid)]  # the read-out is the target's (a no-op for text-to-video)
        x = layers.layer_norm("final_norm")(x).astype(dtype)
        logits = layers.dense(
            math.prod(patch) * num_codes,
            ("embed", "vocab"),
            "head",
            dtype=dtype,
            kernel_init=attn.TRANSFORMER_KERNEL_INIT,
        )(x)
        return unpatchify(logits.astype(jnp.float32), (t, h, w), patch, num_codes)


def add_sketch_at_frame0(
    x_bnd: jax.Array, sketch_bsd: jax.Array, projection: jax.Array | None, grid_thw: tuple[int, int, int]
) -> jax.Array:
    """Target tokens (frame-major, as `patchify` orders them) plus each sketch token projected onto the token
    of the first latent frame at its position (row-major, as the conv sketch encoder orders them); a no-op
    without the projection (sketch_grid off)."""
    if projection is None:
        return x_bnd
    _, gh, gw = grid_thw
    if sketch_bsd.shape[1] != gh * gw:
        raise ValueError(
            f"sketch_grid: the sketch encoder gives {sketch_bsd.shape[1]} tokens but a latent frame has "
            f"{gh}x{gw} = {gh * gw} target tokens; choose inpaint.sketch_channels so that the conv encoder's "
            f"grid is {gh}x{gw} (each stage after the first halves the sketch), or turn inpaint.sketch_grid off"
        )
    frame0 = jnp.dot(sketch_bsd, projection.astype(x_bnd.dtype))
    return x_bnd.at[:, : gh * gw].add(frame0)


def patchify(x_bthwd: jax.Array, patch: tuple[int, int, int], proj: nn.Module | None) -> jax.Array:
    """(B,T',H',W',D) code embeddings -> (B, N, D) tokens, N = T'H'W' / prod(patch): each token is the linear
    projection `proj` of the concatenated embeddings of a pt x ph x pw block of codes (CogVideoX's latent
    patchify, applied to code embeddings). patch (1, 1, 1): one token per code, no projection."""
    b, t, h, w, d = x_bthwd.shape
    if patch == (1, 1, 1):
        return x_bthwd.reshape(b, t * h * w, d)
    (pt, ph, pw), (gt, gh, gw) = patch, (t // patch[0], h // patch[1], w // patch[2])
    x = x_bthwd.reshape(b, gt, pt, gh, ph, gw, pw, d).transpose(0, 1, 3, 5, 2, 4, 6, 7)
    return proj(x.reshape(b, gt * gh * gw, pt * ph * pw * d))


def unpatchify(
    logits_bnk: jax.Array, grid_thw: tuple[int, int, int], patch: tuple[int, int, int], num_codes: int
) -> jax.Array:
    """(B, N, prod(patch)·K) per-token logits -> (B,T',H',W',K) per-code logits (the inverse of `patchify`'s
    ordering: the head predicts every code of its block)."""
    (t, h, w), (pt, ph, pw) = grid_thw, patch
    b = logits_bnk.shape[0]
    x = logits_bnk.reshape(b, t // pt, h // ph, w // pw, pt, ph, pw, num_codes)
    return x.transpose(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, t, h, w, num_codes)


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
