"""3D-MBQ-VAE: a causal MBConv3D encoder/decoder around a vector quantizer, the masked-frame-index (MFI) head
and the training-time masking (random square patches + one fully masked frame per clip).

Shapes: clips are `x_bthwc` in [-1, 1] with T = 1 + 4k frames (any 1 + 2^n k with n temporal downsamplings).
The first frame is kept on its own (causal, CogVideoX-style), so 17 frames -> 5 latent frames at 4x.

Layout (every choice is a `config.model` key):
  encoder: patchified stem (space-to-depth `stem_patch` + matmul; no 3D conv at full resolution)
           -> per stage: `blocks[i]` MBConv3D at `channels[i]`, then a causal patch-conv downsample
              (space x2 if `down_space[i]`, time x2 with the first frame kept if `down_time[i]`)
           -> mid: `mid_blocks` MBConv3D (+ per-frame spatial attention if `mid_attention`) -> norm, SiLU,
  matmul to `z_channels` decoder: the mirror image with sub-pixel (matmul + depth-to-space) upsampling.
  MBConv3D: pre-norm -> 1x1x1 expand (x`expand`) -> SiLU -> depthwise kxkxk causal conv ("3d") or kxk then k
            ("2+1d") -> norm -> SiLU -> squeeze-excite per frame (`se_ratio`, 0 = off) -> 1x1x1 project
            (zero-initialised, so every block starts as the identity) -> residual.
All norms, SE and attention act per frame, so the whole tokenizer is causal in time and streamable
(see `layers.causal_time_pad`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from motionaura_jax.models.layers import (
    CausalDepthwiseConv3D,
    CausalPatchConv,
    FrameNorm,
    PatchUpsample,
    dense,
    dtype_from_name,
    partitioned,
)
from motionaura_jax.models.quantizer import QuantizerOutput, VectorQuantizer, lookup_codes
from motionaura_jax.parallel.sharding import constrain

VIDEO_AXES = ("act_batch", "act_frames", "act_height", "act_width", "act_embed")
EXPANDED_AXES = ("act_batch", "act_frames", "act_height", "act_width", "act_mlp")


def _norm(config: ml_collections.ConfigDict, name: str) -> FrameNorm:
    return FrameNorm(kind=config.norm, groups=config.norm_groups, name=name)


class MBConv3D(nn.Module):
    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, x_bthwc: jax.Array) -> jax.Array:
        c = self.config
        channels = x_bthwc.shape[-1]
        expanded = channels * c.expand
        k = c.kernel_size
        h = _norm(c, "norm_in")(x_bthwc)
        h = nn.silu(dense(expanded, ("conv_in", "conv_out"), "expand")(h))
        h = constrain(h, EXPANDED_AXES)
        if c.depthwise == "3d":
            h = CausalDepthwiseConv3D((k, k, k), c.depthwise_impl, c.causal_pad, name="depthwise")(h)
        elif c.depthwise == "2+1d":
            h = CausalDepthwiseConv3D((1, k, k), c.depthwise_impl, c.causal_pad, name="depthwise_space")(h)
            h = CausalDepthwiseConv3D((k, 1, 1), c.depthwise_impl, c.causal_pad, name="depthwise_time")(h)
        else:
            raise ValueError(f"model.depthwise={c.depthwise!r}: use '3d' or '2+1d'")
        if c.mid_norm:
            h = _norm(c, "norm_mid")(h)
        h = nn.silu(h)
        if c.se_ratio > 0:
            # Squeeze-excite per frame (a pool over T would let later frames steer earlier ones).
            s = jnp.mean(h.astype(jnp.float32), axis=(2, 3), keepdims=True).astype(h.dtype)
            s = nn.silu(dense(max(1, int(channels * c.se_ratio)), ("conv_out", None), "se_reduce")(s))
            h = h * nn.sigmoid(dense(expanded, (None, "conv_out"), "se_expand")(s))
        h = dense(channels, ("conv_out", "conv_in"), "project", kernel_init=nn.initializers.zeros)(h)
        return constrain(x_bthwc + h, VIDEO_AXES)


class FrameAttention(nn.Module):
    """Self-attention over the H*W positions of each frame (per frame: causal in time)."""

    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, x_bthwc: jax.Array) -> jax.Array:
        c = self.config
        b, t, hh, ww, ch = x_bthwc.shape
        heads = c.attn_heads
        if ch % heads:
            raise ValueError(f"attention: {ch} channels do not split into model.attn_heads={heads}")
        h = _norm(c, "norm")(x_bthwc).reshape(b * t, hh * ww, ch)
        qkv = dense(3 * ch, ("conv_in", "heads"), "qkv")(h).reshape(b * t, hh * ww, 3, heads, ch // heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) / jnp.sqrt(ch // heads)
        attn = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        o = jnp.einsum("bhqk,bkhd->bqhd", attn, v).reshape(b, t, hh, ww, ch)
        return x_bthwc + dense(ch, ("heads", "conv_in"), "out", kernel_init=nn.initializers.zeros)(o)


def _block(config: ml_collections.ConfigDict):
    return nn.remat(MBConv3D) if config.remat else MBConv3D


def check_frames(t: int, config: ml_collections.ConfigDict) -> None:
    factor = 2 ** sum(bool(d) for d in config.down_time)
    if (t - 1) % factor:
        raise ValueError(
            f"clips need 1 + {factor}k frames for {factor}x temporal compression (first frame kept); "
            f"got {t}. Set data.frames to e.g. {1 + factor * max(1, (t - 1) // factor)}."
        )


class Encoder(nn.Module):
    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, x_bthwc: jax.Array) -> jax.Array:
        c = self.config
        n = len(c.channels)
        h = CausalPatchConv(
            c.channels[0],
            patch=c.stem_patch,
            time_kernel=c.stem_time_kernel,
            pad_mode=c.causal_pad,
            names=(None, "conv_in"),
            name="stem",
        )(x_bthwc.astype(dtype_from_name(c.dtype)))
        block = _block(c)
        for i in range(n):
            for j in range(c.blocks[i]):
                h = block(c, name=f"stage{i}_block{j}")(h)
            if i < n - 1:
                down_t = bool(c.down_time[i])
                h = CausalPatchConv(
                    c.channels[i + 1],
                    patch=2 if c.down_space[i] else 1,
                    time_kernel=3 if down_t else 1,
                    time_stride=2 if down_t else 1,
                    pad_mode=c.causal_pad,
                    name=f"down{i}",
                )(h)
                h = constrain(h, VIDEO_AXES)
        for j in range(c.mid_blocks):
            h = block(c, name=f"mid_block{j}")(h)
            if c.mid_attention and j == 0:
                h = FrameAttention(c, name="mid_attention")(h)
        h = nn.silu(_norm(c, "norm_out")(h))
        return dense(c.z_channels, ("conv_in", None), "conv_out")(h).astype(jnp.float32)


class Decoder(nn.Module):
    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, z_bthwc: jax.Array) -> jax.Array:
        c = self.config
        n = len(c.channels)
        blocks = c.dec_blocks or c.blocks
        h = dense(c.channels[-1], (None, "conv_in"), "conv_in")(z_bthwc.astype(dtype_from_name(c.dtype)))
        block = _block(c)
        for j in range(c.mid_blocks):
            h = block(c, name=f"mid_block{j}")(h)
            if c.mid_attention and j == 0:
                h = FrameAttention(c, name="mid_attention")(h)
        for i in reversed(range(n)):
            for j in range(blocks[i]):
                h = block(c, name=f"stage{i}_block{j}")(h)
            if i > 0:
                h = PatchUpsample(
                    c.channels[i - 1],
                    patch=2 if c.down_space[i - 1] else 1,
                    time_stride=2 if c.down_time[i - 1] else 1,
                    name=f"up{i - 1}",
                )(h)
                h = constrain(h, VIDEO_AXES)
        h = nn.silu(_norm(c, "norm_out")(h))
        if not c.refine_channels:
            out = PatchUpsample(3, patch=c.stem_patch, names=("conv_in", None), name="head")(h)
            return out.astype(jnp.float32)
        # Without it each stem_patch x stem_patch pixel block is a linear map of one feature vector: edges that
        # cross a block boundary come back blocky (rounded squares). One 3x3 conv per frame at full resolution
        # lets neighbouring blocks agree on the edge.
        h = nn.silu(
            PatchUpsample(c.refine_channels, patch=c.stem_patch, names=("conv_in", None), name="head")(h)
        )
        h = nn.Conv(
            c.refine_channels,
            (1, 3, 3),
            padding="SAME",
            param_dtype=jnp.float32,
            dtype=h.dtype,
            kernel_init=partitioned(nn.initializers.lecun_normal(), (None, None, None, None, None)),
            name="refine_conv",
        )(h)
        out = dense(3, (None, None), "refine_out")(nn.silu(h))
        return out.astype(jnp.float32)


class MFIHead(nn.Module):
    """Masked-frame index: pre-quantization latent -> spatial mean -> flatten over latent frames -> MLP ->
    logits over the pixel frames (which one was fully masked)."""

    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, z_bthwc: jax.Array, num_frames: int) -> jax.Array:
        pooled = jnp.mean(z_bthwc.astype(jnp.float32), axis=(2, 3)).reshape(z_bthwc.shape[0], -1)
        h = nn.gelu(dense(self.config.mfi_hidden, (None, "mlp"), "fc1")(pooled))
        return dense(num_frames, ("mlp", None), "fc2")(h)


class VQVAE(nn.Module):
    """`__call__(x, train)` -> dict(recon, ids, z, vq_loss, mfi_logits, metrics); `encode`, `decode`,
    `decode_ids` for inference (streamable through the "cache" collection).

        model = VQVAE(vae_model_config())                        # configs/vae.py: model_config()
        variables = model.init(jax.random.PRNGKey(0), video_bthwc)  # {"params", "vq"}
        out = model.apply(variables, video_bthwc, train=False)
    """

    config: ml_collections.ConfigDict

    def setup(self):
        self.encoder = Encoder(self.config)
        self.quantizer = VectorQuantizer(self.config.quantizer)
        self.decoder = Decoder(self.config)
        if self.config.mfi:
            self.mfi = MFIHead(self.config)

    def encode(self, x_bthwc: jax.Array, *, train: bool = False) -> tuple[jax.Array, QuantizerOutput]:
        """-> (pre-quantization latent z, quantizer output with z_q and ids)."""
        if not self.is_mutable_collection("cache"):  # chunks after the first need not be 1 + 4k long
            check_frames(x_bthwc.shape[1], self.config)
        z = self.encoder(x_bthwc)
        return z, self.quantizer(z, train=train)

    def decode(self, z_q_bthwc: jax.Array) -> jax.Array:
        return self.decoder(z_q_bthwc)

    def decode_ids(self, ids_bthw: jax.Array) -> jax.Array:
        z_q = lookup_codes(self.quantizer.variables, self.config.quantizer, ids_bthw, self.config.z_channels)
        return self.decoder(z_q)

    def __call__(self, x_bthwc: jax.Array, *, train: bool = False) -> dict:
        z, q = self.encode(x_bthwc, train=train)
        noisy = self.config.code_noise > 0 or self.config.code_noise_neighbour > 0
        z_q = self._code_noise(q) if train and noisy else q.z_q
        out = {"recon": self.decode(z_q), "ids": q.ids, "z": z, "vq_loss": q.loss, "metrics": q.metrics}
        if self.config.mfi:
            out["mfi_logits"] = self.mfi(z, x_bthwc.shape[1])
        return out

    def _code_noise(self, q: QuantizerOutput) -> jax.Array:
        """The decoder's input with some positions given another code than their own (rng stream "code_noise"):
        a `code_noise` share a uniformly random code, then a `code_noise_neighbour` share the code of a random
        position at most one step away in each of (t, h, w). The decoder learns to draw clean objects from codes a
        generator got partly wrong. The quantizer's losses and statistics stay those of the true codes."""
        rng = self.make_rng("code_noise")
        ids, replaced = q.ids, jnp.zeros(q.ids.shape, bool)
        if self.config.code_noise > 0:
            rng_where, rng_code = jax.random.split(rng)
            random_ids = jax.random.randint(rng_code, ids.shape, 0, int(self.config.quantizer.num_codes))
            replaced = jax.random.uniform(rng_where, ids.shape) < self.config.code_noise
            ids = jnp.where(replaced, random_ids, ids)
        if self.config.code_noise_neighbour > 0:
            rng_where, rng_code = jax.random.split(jax.random.fold_in(rng, 1))
            moved = jax.random.uniform(rng_where, ids.shape) < self.config.code_noise_neighbour
            ids = jnp.where(moved, neighbour_ids(ids, rng_code), ids)
            replaced = replaced | moved
        z_noisy = lookup_codes(self.quantizer.variables, self.config.quantizer, ids, self.config.z_channels)
        return jnp.where(replaced[..., None], z_noisy.astype(q.z_q.dtype), q.z_q)


def neighbour_ids(ids_bthw: jax.Array, rng: jax.Array) -> jax.Array:
    """Each position's id replaced by that of a random position at most one step away along t, h and w
    (clipped at the borders; the offset may be zero)."""
    b, t, h, w = ids_bthw.shape
    offsets = jax.random.randint(rng, (3, b, t, h, w), -1, 2)
    grid = jnp.meshgrid(jnp.arange(t), jnp.arange(h), jnp.arange(w), indexing="ij")
    t_idx, h_idx, w_idx = (
        jnp.clip(g[None] + o, 0, n - 1) for g, o, n in zip(grid, offsets, (t, h, w), strict=True)
    )
    return ids_bthw[jnp.arange(b)[:, None, None, None], t_idx, h_idx, w_idx]


def compression(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """(temporal, spatial) compression factors of a model config."""
    return 2 ** sum(bool(d) for d in config.down_time), config.stem_patch * 2 ** sum(
        bool(d) for d in config.down_space
    )
