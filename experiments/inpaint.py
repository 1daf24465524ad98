"""Sketch-guided inpainting experiments (paper_notes §5); the defaults are motionaura_jax/configs/inpaint.py.

    motionaura train --config=experiments/inpaint.py:tiny --workdir=runs/inpaint_tiny \
        --config.inpaint.t2v_workdir=runs/t2v_tiny
    motionaura inpaint --ckpt=runs/inpaint_tiny --video=in.mp4 --mask=8,4,14,12 --sketch=sketch.png \
        --prompt="a red circle moving left" --out=out.mp4

    motionaura train --config=experiments/inpaint.py:quickstart --workdir=runs/quickstart/inpaint
    motionaura eval inpaint --ckpt=runs/quickstart/inpaint --out=inpaint_metrics.json
    motionaura eval inpaint --ckpt=runs/quickstart/t2v --out=inpaint_none.json     # the no-fine-tune arm

| arg             | base run                 | clips        | fine-tune            | sketch encoder      | steps |
|-----------------|--------------------------|--------------|----------------------|---------------------|-------|
| tiny            | t2v.py:tiny (given)      | 16 5x16²     | LoRA r=1 (default)   | conv (8,16,16) → 16 tok | 3     |
| quickstart      | runs/quickstart/t2v      | 2048 17x32²  | LoRA r=16 on attention, FFN, adaLN, patch-in and head kernels, lr 3e-3; context by channel, region grey; known tokens given, no shape word in captions, border tokens weighted 4x; sampled without guidance | conv (16,32,64,64) → 16 tok, also at frame 0 (sketch_grid) | 400 |
| quickstart_full | as quickstart            | 2048 17x32²  | full fine-tune, lr 1e-3, context by channel | as quickstart | 400 |
| quickstart_sequence | as quickstart (a t2v run with self-attention) | 2048 17x32² | LoRA, the paper's [target ; context ; sketch] | as quickstart | 400 |

quickstart is the stage after t2v.py:quickstart in `motionaura quickstart` (budget: at most 8 more minutes on
2 CPU cores). Measured there on 2026-12-03 (2 cores, fresh inpainting cache): 426 s for the cache, compile and
400 steps (1.17 steps/s), 39 s for the demo's `eval inpaint --num_clips=16`: 7.75 minutes.

Choices where the paper is silent (each a switch under `config.inpaint`):
- Sequence [z_t ; z_m ; sketch tokens] through the frozen text-to-video denoiser (context_fusion="sequence"); z_t is the target's ids
  corrupted across t (the paper draws the T endpoint), z_m the ids of the masked video (object mask dilated by
  `mask_dilate` px, its pixels set to `mask_fill`, encoded by the frozen tokenizer), clean. The paper does not
  say what the masked pixels become; the quickstart makes them mid-grey (mask_fill=0, as Stable Diffusion's
  inpainting does): black, the default, is Moving Shapes' background, so z_m showed nothing of where the
  region ends inside its token cells and LoRA drew the object over the margin (README, "Inpainting and LoRA").
- Learned segment embeddings for {target, context, sketch} (`models/denoiser.SegmentEmbeddings`, the target's
  row starting at zero so the base model is unchanged at init); context tokens take the RoPE positions of the
  target tokens they sit under (`context_rope="aligned"`, or "none"); sketch tokens are not rotated.
- The FFT mixers assume one token grid: global_filter / fnet_mix mix the target and context grids apart
  (`context_mixing="per_grid"`, or "target_only"); sketch tokens are never mixed by them. qkv_fft2 attention
  runs over the whole sequence (it takes any length). Self-attention is joint over all three segments.
- Sketch encoder: a small conv encoder + MLP, trained (`sketch_encoder="conv"`, offline, the default), or the
  paper's frozen SigLIP vision tower from a local Hugging Face folder + a trainable MLP (`sketch_encoder="siglip"`,
  `--config.inpaint.siglip_dir=/models/siglip-so400m-patch14-384`); the tower's params ride in the train state
  beside the base (frozen, checkpointed with it) and run in every step.
- Trainable: LoRA adapters on q/k/v/out of self- and cross-attention and both FFN linears (models/lora.py
  default targets and rank), the conv sketch encoder + MLP projector, the segment embeddings. Frozen: the
  denoiser, the tokenizer, the text encoder (`finetune="full"` trains every denoiser weight instead: an arm).
- Loss: the t2v stage's diffusion loss, read out on the target half only; every target token is corrupted
  (`corrupt_region="all"`, the paper) or only the region's, the rest given clean ("masked", which matches
  `motionaura inpaint --paste_every_step`); the text is dropped with p = 0.1 for classifier-free guidance.
- `context_fusion="channel"` (the quickstart rows; the paper's one sequence is quickstart_sequence) departs
  from the paper: each context token is added to the target token at its position through a zero-initialised
  projection (trained with the segment embeddings), and the sketch tokens join the text in cross-attention.
  The sequence stays the target's 80 tokens (less than half the paper's 2x80 + 16: the demo's inpainting took
  11.6 minutes with the paper's sequence, over its budget), and it is the only way to inpaint the
  attention-free filter3d denoiser (t2v.py:quickstart_filter3d), which has no self-attention to read a context
  segment. The paper's sequence: inpaint.py:quickstart_sequence.
- Caption: with `shape_word_drop` (quickstart: 1.0) a share of the training captions lose their shape word
  ("a red moving left"), so the shape must come from the sketch; with the shape always named the sketch
  could be ignored. The paper does not say how its sketch is made to matter.
- Inference: sample the target from all-[MASK] (the paper), or with `sample.paste_every_step` (the
  quickstart rows, with `corrupt_region="masked"` in training) from the known tokens, which stay; the
  sampler is the run's `sample.*` (quickstart: t2v.py:quickstart's). Then paste back the tokens outside the
  region. On Moving Shapes' black background the masked video shows nothing of the object, so an all-[MASK]
  start tells the model nothing of where the region is: it draws the object anywhere and the paste-back cuts
  it away (docs/inpaint.md, measured). The pasted
  tokens are the input video's own (`paste_from="input"`), which keeps the preserved region at the
  tokenizer's reconstruction quality (z_m's boundary tokens see the blacked-out pixels); "masked" pastes z_m.
"""

from motionaura_jax.configs import inpaint, override
from motionaura_jax.models.lora import DEFAULT_TARGETS

# LoRA on the adaLN modulation, patch-in and head kernels too: with the attention and FFN kernels only, the
# regenerated object spills past the mask (README, "Inpainting and LoRA").
_WIDE_LORA = DEFAULT_TARGETS + r"|(blocks|block_\d+)/adaln/modulation/kernel|patch_embed/kernel|head/kernel"

_TINY = dict(
    data=dict(source="synthetic", num_clips=16),
    tokens=dict(shard_size=16, batch_size=8),
    inpaint=dict(sketch_channels=(8, 16, 16), mask_dilate=1),
    train=dict(steps=3, batch_size=4, lr=1e-3, warmup=1, log_every=1, ckpt_every=0),
    sample=dict(num_clips=1, num_steps=4, guidance_scale=2.0),
    eval=dict(num_clips=2, batch_size=2),
)
_QUICKSTART = dict(
    data=dict(source="synthetic", num_clips=2048),
    tokens=dict(shard_size=512, batch_size=32),
    # channel fusion: the sequence stays the target's 144 tokens (the demo's time budget), and any t2v mode fits.
    # corrupt_region="masked" + sample.paste_every_step: trained and sampled with the known tokens given, so the
    # model sees where the region is; shape_word_drop: no training caption names the shape, so the sketch
    # is read; mask_fill=0: the region grey in the masked video, so z_m shows where it ends (docstring);
    # border_weight: the loss weighs 4x the border tokens, where the object must stop short of the cell's edge.
    inpaint=dict(
        t2v_workdir="runs/quickstart/t2v", sketch_channels=(16, 32, 64, 64), mask_dilate=2, context_fusion="channel",
        corrupt_region="masked", shape_word_drop=1.0, sketch_grid=True, lora_rank=16, lora_targets=_WIDE_LORA,
        mask_fill=0.0, border_weight=4.0,
    ),
    train=dict(
        steps=400, batch_size=32, lr=3e-3, warmup=50, log_every=50, ckpt_every=200, eval_every=0,
        sample_every=400,
    ),
    # The sampler of t2v.py:quickstart (MaskGIT order, 16 steps, 16 refinement rounds, T=0.2), from the known
    # tokens, without its guidance (scale 1: one conditional pass): with guidance 2 the PSNR outside the region
    # fell 0.5-0.7 dB and fewer squares followed the sketch (README, "Inpainting and LoRA").
    sample=dict(
        num_clips=4, method="confidence", num_steps=16, temperature=0.2, refine_steps=16, refine_fraction=0.2,
        guidance_scale=1.0, paste_every_step=True,
    ),
    eval=dict(num_clips=64, batch_size=16),
)  # fmt: skip

RUNS = {
    "tiny": _TINY,
    "quickstart": _QUICKSTART,
    # Full fine-tune at the rate it was measured at (README): LoRA's zero-started adapters take a higher one.
    "quickstart_full": dict(
        _QUICKSTART,
        inpaint=dict(_QUICKSTART["inpaint"], finetune="full"),
        train=dict(_QUICKSTART["train"], lr=1e-3),
    ),
    "quickstart_sequence": dict(_QUICKSTART, inpaint=dict(_QUICKSTART["inpaint"], context_fusion="sequence")),
}


def get_config(arg: str | None = None):
    if arg not in RUNS:
        raise ValueError(
            f"experiments/inpaint.py: unknown arg {arg!r}; use one of {', '.join(RUNS)} (inpaint.py:ARG)"
        )
    config = inpaint.get_config()
    override(config, RUNS[arg])
    return config
