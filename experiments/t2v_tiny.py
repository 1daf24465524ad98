"""The smallest text-to-video run: a 2-block denoiser on the tokens of a vae_tiny run, in seconds.

    motionaura train --config=experiments/vae_tiny.py --workdir=runs/vae_tiny
    motionaura train --config=experiments/t2v_tiny.py --workdir=runs/t2v_tiny \
        --config.tokens.tokenizer_workdir=runs/vae_tiny
    motionaura sample --ckpt=runs/t2v_tiny --prompt "a red circle moving left" --out runs/t2v_tiny/red.mp4

Clips 5x16x16 (vae_tiny: 4x4x4 compression, K=32) -> 2x4x4 tokens; MiniLM text at 16 tokens; 64 clips.

| arg    | diffusion                      |
|--------|--------------------------------|
| (none) | absorbing, VLB + 5e-4 CE       |
| mar    | mask-and-replace (VQ-Diffusion)|
"""

from motionaura_jax.train.t2v import t2v_config


def get_config(arg: str | None = None):
    config = t2v_config()
    config.model.update(dict(width=32, depth=2, heads=4, mlp_ratio=2.0))
    config.data.update(dict(source="synthetic", frames=5, size=16, num_clips=64))
    config.tokens.update(
        dict(tokenizer_workdir="runs/vae_tiny", text_max_length=16, shard_size=32, batch_size=16)
    )
    config.diffusion.num_timesteps = 20
    config.train.update(dict(steps=3, batch_size=8, lr=1e-3, warmup=1, log_every=1, ckpt_every=0))
    config.sample.update(dict(prompts=("a red circle moving left",), num_steps=5, guidance_scale=2.0))
    config.eval.update(dict(num_videos=2, batch_size=2))
    if arg == "mar":
        config.diffusion.kind = "mask_and_replace"
    elif arg:
        raise ValueError(f"t2v_tiny: unknown arg {arg!r}; use nothing or 'mar'")
    return config
