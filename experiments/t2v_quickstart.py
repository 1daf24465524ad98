"""Text-to-video quickstart (the stage after vae_quickstart in `motionaura quickstart`): Moving Shapes
32x32x17 as 5x4x4 tokens of the vae_quickstart tokenizer (K=1024), a 4-block spectral denoiser on MiniLM
captions.

    motionaura train --config=experiments/vae_quickstart.py --workdir=runs/quickstart/vae
    motionaura train --config=experiments/t2v_quickstart.py --workdir=runs/quickstart/t2v
    motionaura sample --ckpt=runs/quickstart/t2v --prompt "a red circle moving left" --out red.mp4
    motionaura eval t2v --videos=runs/quickstart/t2v/samples/step_0002000 --out=t2v_metrics.json

The tokenizer run defaults to runs/quickstart/vae (--config.tokens.tokenizer_workdir=DIR for another). The
first start encodes 2048 training clips into WORKDIR_OF_TOKENIZER/token_cache_train (resumable).
Choices (paper_notes §8): absorbing diffusion, T=100, linear γ̄, x0-parameterisation, VLB + 5e-4·CE on the
corrupted tokens, text dropped with p=0.1, 50 sampling steps, CFG scale 3.

| arg    | diffusion / mixer                         |
|--------|-------------------------------------------|
| (none) | absorbing, qkv_fft2 spectral attention    |
| mar    | mask-and-replace (VQ-Diffusion's)         |
| nofft  | absorbing, plain attention (FFT ablation) |
"""

from motionaura_jax.train.t2v import t2v_config


def get_config(arg: str | None = None):
    config = t2v_config()
    config.model.update(dict(width=128, depth=4, heads=4, mlp_ratio=4.0))
    config.data.update(dict(source="synthetic", frames=17, size=32, num_clips=2048))
    config.tokens.update(
        dict(tokenizer_workdir="runs/quickstart/vae", text_max_length=16, shard_size=512, batch_size=32)
    )
    config.train.update(
        dict(
            steps=2000,
            batch_size=32,
            lr=1e-3,
            warmup=100,
            log_every=50,
            ckpt_every=500,
            eval_every=1000,
            sample_every=1000,
        )
    )
    config.sample.update(
        dict(
            prompts=(
                "a red circle moving left",
                "a blue square moving up",
                "a green triangle moving right",
                "a yellow circle moving down",
            ),
            num_steps=50,
            guidance_scale=3.0,
        )
    )
    config.eval.update(dict(num_videos=32, batch_size=16))
    if arg == "mar":
        config.diffusion.kind = "mask_and_replace"
    elif arg == "nofft":
        config.model.spectral_mode = "none"
    elif arg:
        raise ValueError(f"t2v_quickstart: unknown arg {arg!r}; use nothing, 'mar' or 'nofft'")
    return config
