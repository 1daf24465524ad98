"""The sketch-guided inpainting stage: every key with its default (paper_notes §5; choices documented in
experiments/inpaint.py).

`model`, `diffusion` and the text settings of `tokens` are the frozen text-to-video run's: train/inpaint.py
copies them from `inpaint.t2v_workdir`'s config.json on first use (like t2v fills its grid from the token
cache), so the saved config.json alone rebuilds the inpainter.
"""

from __future__ import annotations

import ml_collections

from motionaura_jax.configs import base, data, t2v


def get_config() -> ml_collections.ConfigDict:
    """Every key of the inpaint stage with its default; experiments/inpaint.py overrides sizes."""
    config = base.get_config("inpaint")
    config.model = ml_collections.ConfigDict()  # the t2v run's denoiser config (filled)
    config.diffusion = ml_collections.ConfigDict()  # the t2v run's diffusion config (filled)
    # Clips with per-frame object masks and a sketch (Moving Shapes by default); frames and size are the t2v
    # run's (filled) so the token grid matches the one the denoiser was trained on.
    config.data = data.get_config(size=32, with_masks=True)
    config.tokens = ml_collections.ConfigDict(
        dict(
            tokenizer_workdir="",  # filled: the t2v run's tokenizer
            cache="",  # default: <t2v_workdir>/inpaint_cache_<split>
            split="train",
            num_clips=0,
            shard_size=256,
            batch_size=16,
            text_encoder="minilm",  # filled: the t2v run's text encoder settings
            text_model_dir="",
            text_max_length=0,
            text_cache_dir="",
            grid=(),  # filled
            text_len=0,  # filled
        )
    )
    config.inpaint = ml_collections.ConfigDict(
        dict(
            t2v_workdir="",  # the frozen text-to-video run (required)
            t2v_step=0,  # filled: the step of the base run the adapters were trained on
            finetune="lora",  # "lora" (the paper: frozen denoiser + adapters) or "full" (every denoiser weight)
            lora_rank=0,  # 0: lora.default_rank(width) = clip(width // 32, 1, 32)
            lora_alpha=0.0,  # 0: alpha = rank (scale 1)
            lora_targets="",  # kernel path regex; "": models/lora.py DEFAULT_TARGETS (attention q/k/v/out, FFN)
            sketch_encoder="conv",  # "conv" (small, trained) or "siglip" (the paper's: frozen tower + MLP)
            sketch_channels=(16, 32, 64),  # conv sketch encoder stages (each after the first halves H, W)
            siglip_dir="",  # sketch_encoder="siglip": a local Hugging Face SigLIP folder (safetensors)
            mask_dilate=2,  # pixels the object mask grows by before blacking out (and paste-back)
            # The masked pixels' value in the context video (z_m), in [-1, 1]: -1 black. On a black background
            # black hides where the region is; mid-grey (0, as Stable Diffusion inpainting) shows its outline.
            mask_fill=-1.0,
            context_rope="aligned",  # context tokens' RoPE: "aligned" with the target positions, or "none"
            context_mixing="per_grid",  # FFT mixers: "per_grid" (target, context apart) or "target_only"
            # "sequence" (the paper: [target ; context ; sketch] in self-attention) or "channel" (context added to
            # the target at its position, sketch tokens beside the text in cross-attention; any spectral mode)
            context_fusion="sequence",
            # The sketch tokens also added to the target tokens of latent frame 0 under them (zero-initialised
            # projection): the sketch is the object's outline where it is in frame 0. Needs the conv encoder's
            # grid to be the target's per-frame token grid.
            sketch_grid=False,
            # Classifier-free guidance on the sketch too: the sketch is dropped together with the text in training
            # (train.text_drop_prob) and guidance's unconditional branch has neither, so guidance pushes toward the
            # sketch as toward the caption. False: the sketch is always given, in both branches.
            sketch_guidance=False,
            # Loss weight of the region's border tokens (train/inpaint.region_border: where the region ends inside
            # its token cells, and the object must stop short of the cell's edge) against 1 for every other token.
            border_weight=1.0,
            corrupt_region="all",  # corrupt "all" target tokens (the paper) or only the "masked" region's
            # Share of training captions given without their shape word (Moving Shapes captions), so that the
            # shape must come from the sketch: the caption names it otherwise and the sketch can be ignored
            shape_word_drop=0.0,
            paste_from="input",  # paste-back source outside the region: "input" ids (z_in) or "masked" (z_m)
        )
    )
    config.train.update(dict(steps=1000, batch_size=16, lr=1e-3, weight_decay=0.0))
    config.train.text_drop_prob = 0.1
    # The text-to-video sampler's keys (method, guidance, temperature, refinement), plus: the examples drawn in
    # training, and whether the chain starts from the known tokens (kept, absorbing) or from all-[MASK] with
    # the paste-back at the end only.
    config.sample = t2v.sample_config()
    config.sample.update(dict(num_clips=4, split="heldout", paste_every_step=False))
    config.eval = ml_collections.ConfigDict(dict(num_clips=16, batch_size=8, split="heldout"))
    return config
