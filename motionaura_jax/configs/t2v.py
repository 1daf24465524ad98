"""The text-to-video stage: every key of the denoiser (with its size presets), diffusion, data, tokens,
train, sample and eval.

| size | width | depth | heads | notes                                                        |
|------|-------|-------|-------|--------------------------------------------------------------|
| tiny | 32    | 2     | 4     | float32, no remat; tests and the tiny/quickstart experiments |
| S    | 1024  | 24    | 16    | paper_notes §4.3                                             |
| B    | 1536  | 28    | 24    | our choice within the notes' range                           |
| L    | 2560  | 40    | 40    | ~5.9B parameters on T5-XXL text (notes: D 1920-3072, 30-42)  |
"""

from __future__ import annotations

from typing import Any

import ml_collections

from motionaura_jax.configs import base, data

# width, depth, heads (head_dim 64 except tiny).
SIZES = {
    "tiny": (32, 2, 4),
    "S": (1024, 24, 16),
    "B": (1536, 28, 24),
    "L": (2560, 40, 40),
}


def denoiser_config(size: str = "S", **overrides: Any) -> ml_collections.ConfigDict:
    """`config.model` of one denoiser size ("tiny", "S", "B", "L"); keyword overrides replace fields.

    For example:

        model = SpectralDenoiser(denoiser_config("S", spectral_mode="global_filter"))
    """
    if size not in SIZES:
        raise ValueError(f"unknown denoiser size {size!r}; use one of {', '.join(SIZES)}")
    width, depth, heads = SIZES[size]
    big = size != "tiny"
    config = ml_collections.ConfigDict(
        {
            "vocab_size": 16384 if big else 16,  # K codes; the embedding has K+1 rows ([MASK] = K)
            "width": width,
            "depth": depth,
            "heads": heads,
            "mlp_ratio": 4.0,
            "text_dim": 4096 if big else 24,  # T5-XXL width
            "spectral_mode": "qkv_fft2",
            "cross_fft": True,  # FFT on the text side of cross-attention (paper, per R3)
            "qkv_fft2_impl": "hermitian",  # same result as "rfft" (plain attention's FLOPs), "fft2" (the formula, 2x)
            "rope": "3d",
            "rope_theta": 10_000.0,
            "qk_norm": True,
            "remat": big,
            "scan_layers": True,
            "dtype": "bfloat16" if big else "float32",
            "dropout": 0.0,
            # The masked mean of the text embeddings, through an MLP, added to the adaLN condition c (beside t
            # and fps): every token's modulation sees the caption, not only what cross-attention reads.
            "text_pool_cond": False,
            # Self-attention query rows per chunk (0: all at once). With chunks, each chunk's logits are
            # recomputed in the backward pass, so memory grows with tokens x chunk, not tokens^2.
            "attention_chunk": 0,
            # Codes per token (t, h, w): (1, 2, 2) reads a 5x8x8 code grid as 5x4x4 tokens.
            "patch_size": (1, 1, 1),
        }
    )
    for key, value in overrides.items():
        if key not in config:
            raise ValueError(f"denoiser_config: unknown field {key!r}; fields: {', '.join(config)}")
        config[key] = value
    return config


def diffusion_config() -> ml_collections.ConfigDict:
    """`config.diffusion`: the discrete diffusion (diffusion/schedule.py, diffusion/losses.py)."""
    return ml_collections.ConfigDict(
        dict(
            kind="absorbing",  # or "mask_and_replace" (VQ-Diffusion); paper_notes §8.7
            num_timesteps=100,
            alpha_cum_start=0.99999,
            alpha_cum_end=0.000009,
            gamma_cum_start=0.000009,
            gamma_cum_end=0.99999,
            objective="vlb",  # or "masked_ce" (absorbing only)
            aux_weight=5e-4,
            aux_positions="corrupted",
            adaptive_aux=True,
            mask_weight=(1.0, 1.0),
            ce_weighting="elbo",
            t_sampling="uniform",  # or "cosine" (MaskGIT's: more steps at high masked fractions; masked_ce only)
        )
    )


def sample_config() -> ml_collections.ConfigDict:
    """The sampler's keys (diffusion/sampler.py), shared by `config.sample` of the t2v and inpaint stages."""
    return ml_collections.ConfigDict(
        dict(
            num_steps=50,
            guidance_scale=3.0,
            temperature=1.0,
            fps=8.0,
            seed=0,
            method="posterior",  # or "confidence" (MaskGIT order; absorbing only): diffusion/sampler.py
            temperature_end=0.0,  # > 0: the temperature ramps linearly to this over the steps
            mask_curve="cosine",  # confidence: how many stay masked after each step ("linear", "diffusion")
            choice_temperature=4.5,  # confidence: MaskGIT's annealed Gumbel noise on the choice
            frame_order=0.0,  # confidence: > 0 reveals earlier latent frames first (diffusion/sampler.py)
            refine_steps=0,  # confidence: Gibbs rounds after decoding, each redrawing refine_fraction of the codes
            refine_fraction=0.2,
            refine_guidance=0.0,  # confidence: the refinement rounds' guidance scale (0: guidance_scale's)
        )
    )


def get_config() -> ml_collections.ConfigDict:
    """Every key of the text-to-video stage with its default; experiments start here and override."""
    config = base.get_config("t2v")
    config.model = denoiser_config("tiny", vocab_size=0, text_dim=0)  # both filled from the token cache
    config.diffusion = diffusion_config()
    # Clips the token cache is built from (any data source; Moving Shapes by default).
    config.data = data.get_config(size=32)
    config.tokens = ml_collections.ConfigDict(
        dict(
            tokenizer_workdir="",  # the trained tokenizer run (required)
            cache="",  # default: <tokenizer_workdir>/token_cache_<split>
            split="train",
            num_clips=0,
            shard_size=256,
            batch_size=16,
            text_encoder="minilm",
            text_model_dir="",
            text_max_length=0,
            text_cache_dir="",
            grid=(),
            text_len=0,  # filled from the cache
        )
    )
    config.train.update(dict(steps=1000, batch_size=16, lr=3e-4, weight_decay=0.01))
    config.train.text_drop_prob = 0.1
    config.sample = sample_config()
    config.sample.prompts = ("a red circle moving left", "a blue square moving up")
    config.eval = ml_collections.ConfigDict(dict(num_videos=16, batch_size=8))
    return config
