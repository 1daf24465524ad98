"""3D patch discriminator for the tokenizer's adversarial loss (hinge GAN).

Built from the same fast pieces as the tokenizer: a patchified stem (space-to-depth + matmul), patch-conv
downsampling with a 3-frame temporal window, depthwise 3x3x3 mixing, LeakyReLU, per-frame norms. It outputs
one logit per space-time patch: (B, T', H', W'). The discriminator sees whole clips, so it need not be
causal; it reuses the causal layers because they are the fast ones.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from motionaura_jax.models.layers import CausalDepthwiseConv3D, CausalPatchConv, FrameNorm, dense


class PatchDiscriminator3D(nn.Module):
    """config: channels (per level), stem_patch, depthwise_impl, norm, norm_groups."""

    config: ml_collections.ConfigDict

    @nn.compact
    def __call__(self, x_bthwc: jax.Array) -> jax.Array:
        c = self.config
        h = CausalPatchConv(
            c.channels[0], patch=c.stem_patch, time_kernel=3, names=(None, "conv_in"), name="stem"
        )(x_bthwc)
        h = nn.leaky_relu(h, 0.2)
        for i, ch in enumerate(c.channels[1:]):
            h = CausalPatchConv(ch, patch=2, time_kernel=3, time_stride=1, name=f"down{i}")(h)
            h = nn.leaky_relu(FrameNorm(c.norm, c.norm_groups, name=f"norm{i}")(h), 0.2)
            r = CausalDepthwiseConv3D((3, 3, 3), c.depthwise_impl, name=f"dw{i}")(h)
            h = h + dense(ch, ("conv_in", "conv_out"), f"pw{i}")(nn.leaky_relu(r, 0.2))
        return dense(1, ("conv_in", None), "logits")(h)[..., 0].astype(jnp.float32)


def hinge_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    return jnp.mean(nn.relu(1.0 - real_logits)) + jnp.mean(nn.relu(1.0 + fake_logits))


def hinge_g_loss(fake_logits: jax.Array) -> jax.Array:
    return -jnp.mean(fake_logits)
