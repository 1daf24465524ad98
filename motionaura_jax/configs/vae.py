"""The tokenizer stage (3D-MBQ-VAE): every key of model (quantizer, mask), disc, data, loss, train, eval.

The defaults are the quickstart-sized choices; experiments/vae.py sets the sizes of each run.
"""

from __future__ import annotations

import ml_collections

from motionaura_jax.configs import base, data


def quantizer_config() -> ml_collections.ConfigDict:
    """`model.quantizer`: the VQ codebook (models/quantizer.py).

    For example:

        quantizer = VectorQuantizer(quantizer_config())
    """
    return ml_collections.ConfigDict(
        dict(
            num_codes=1024,  # K; the diffusion vocabulary is K + 1
            code_dim=8,  # factorised look-up dimension (ViT-VQGAN); == z_channels turns the projections off
            l2_normalize=True,  # cosine codes
            ema=True,  # EMA codebook (False: learned codebook with a codebook loss)
            decay=0.95,
            eps=1e-5,
            beta=0.25,  # commitment
            restart=True,
            restart_threshold=0.03,  # dead if EMA count < threshold * average count
        )
    )


def mask_config() -> ml_collections.ConfigDict:
    """`model.mask`: the training-time masking the MFI head learns to fill (train/vae.mask_clip)."""
    return ml_collections.ConfigDict(
        dict(
            enabled=True,
            patch_prob=0.5,
            num_squares=2,
            square_min=0.125,
            square_max=0.25,
            full_frame_prob=0.5,
            fill=-1.0,
        )
    )


def model_config() -> ml_collections.ConfigDict:
    """`config.model`: every key of models/vqvae.VQVAE with its default.

    For example:

        config = model_config()
        config.channels = (16, 32, 32)
        model = VQVAE(config)
    """
    return ml_collections.ConfigDict(
        dict(
            channels=(32, 64, 96),
            blocks=(1, 1, 1),
            dec_blocks=(),  # () = same as blocks
            down_space=(True, True),
            down_time=(True, True),  # per stage transition
            stem_patch=2,
            stem_time_kernel=1,  # space x stem_patch * 2^sum(down_space)
            refine_channels=0,  # > 0: the decoder ends with a 3x3 conv per frame at full resolution
            expand=2,
            kernel_size=3,
            depthwise="2+1d",
            depthwise_impl="shift_add",
            se_ratio=0.25,
            mid_norm=True,
            norm="group",
            norm_groups=8,
            causal_pad="replicate",
            mid_blocks=1,
            mid_attention=False,
            attn_heads=4,
            z_channels=32,
            remat=False,
            dtype="float32",
            quantizer=quantizer_config(),
            mfi=True,
            mfi_hidden=128,
            mask=mask_config(),
            code_noise=0.0,  # training only: share of the decoder's input codes replaced by random ones
            # training only: share of the decoder's input codes replaced by that of a random position at most one
            # step away in (t, h, w): an outline drawn one code off, as a generator gets it wrong
            code_noise_neighbour=0.0,
        )
    )


def disc_config() -> ml_collections.ConfigDict:
    """`config.disc`: the 3D patch discriminator (models/discriminator.py), used when loss.gan_weight > 0."""
    return ml_collections.ConfigDict(
        dict(channels=(32, 64, 128), stem_patch=2, depthwise_impl="shift_add", norm="group", norm_groups=8)
    )


def get_config() -> ml_collections.ConfigDict:
    """Every key of the tokenizer stage with its default; experiments start here and override."""
    config = base.get_config("vae")
    config.model = model_config()
    config.disc = disc_config()
    config.data = data.get_config(size=32, read_threads=1, prefetch=4)
    config.loss = ml_collections.ConfigDict(
        dict(
            l1=1.0,
            l2=0.0,
            gradient_l1=0.0,  # L1 of spatial pixel differences: keeps edges (and so shapes) sharp
            foreground_weight=0.0,  # pixel losses weighted 1 + w x target brightness (mean 1 per clip)
            perceptual=0.0,
            perceptual_weights="",
            perceptual_net="alex",  # LPIPS: off unless a local file
            vq=1.0,
            mfi=0.1,
            gan_weight=0.0,
            gan_start=0,
            gan_max_adaptive=1e4,
            disc_lr=2e-4,  # gan_weight 0: no discriminator
        )
    )
    config.eval = ml_collections.ConfigDict(
        dict(
            split="heldout",
            num_clips=32,
            batch_size=8,
            contact_sheet_clips=4,
            judge_colours=True,  # Moving Shapes: judge colour, shape and direction of the reconstructions
            lpips_weights="",  # a local LPIPS weights file (models/lpips.py); "" reports LPIPS "unavailable"
            lpips_net="alex",
            fvd=False,  # rFVD of reconstructions vs their clips (I3D, eval/fvd.py); needs >= 16 frames
        )
    )
    return config
