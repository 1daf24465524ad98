"""Tokenizer quickstart (the tokenizer stage of `make demo`): Moving Shapes 32x32x17 at 4x8x8 on 2 CPU cores
in about 10 minutes.

    motionaura train --config=experiments/vae_quickstart.py --workdir=runs/vae_quickstart
    motionaura eval recon --ckpt=runs/vae_quickstart --out=runs/vae_quickstart/recon.json
    # ablation: masking + MFI off
    motionaura train --config=experiments/vae_quickstart.py:nomask --workdir=runs/vae_quickstart_nomask

Choices where the paper is silent (each a config switch):
- patchified stem (space-to-depth 4, no full-resolution 3D conv), then one spatial x2 downsampling: 8x8 space
- time x4 in two causal stride-2 steps, first frame kept: 17 frames -> 5 latent frames
- MBConv3D blocks with (2+1)D depthwise kernels (model.depthwise="2+1d"), expand 2, per-frame SE; LayerNorm
  over channels (model.norm="layer": learned faster here than per-frame GroupNorm, 21 vs 14 dB at step 200)
- cosine (l2-normalised) EMA codebook, K=1024 codes of dim 8 (factorised from z_channels=32), dead-code
  restart
- masking: 2 black squares (1/8-1/4 of the side) on half the frames, one fully masked frame on half the clips;
  MFI head on the pooled pre-quantization latent, CE weight 0.1
- L1 + L2 (L1 alone sat at the all-black optimum of mostly-black clips for hundreds of steps); no LPIPS
  (no weights ship offline), no GAN (too slow for the CPU budget; vae_S turns it on)

| arg     | masking + MFI |
|---------|---------------|
| (none)  | on            |
| nomask  | off           |
"""

from motionaura_jax.train.vae import vae_config


def get_config(arg: str | None = None):
    config = vae_config()
    m = config.model
    m.channels, m.blocks = (48, 96, 128), (1, 1, 1)
    m.down_space, m.down_time = (True, False), (True, True)
    m.stem_patch, m.expand, m.depthwise, m.norm = 4, 2, "2+1d", "layer"
    m.z_channels, m.mfi_hidden = 32, 128
    m.quantizer.num_codes, m.quantizer.code_dim = 1024, 8
    config.data.update(dict(source="synthetic", frames=17, size=32))
    config.loss.update(dict(l1=1.0, l2=1.0))
    config.train.update(
        dict(
            steps=1200,
            batch_size=8,
            lr=2e-3,
            warmup=100,
            log_every=50,
            ckpt_every=600,
            eval_every=600,
            sample_every=1200,
        )
    )
    config.eval.update(dict(num_clips=64, batch_size=16))
    if arg == "nomask":
        m.mask.enabled, m.mfi = False, False
    elif arg:
        raise ValueError(f"vae_quickstart: unknown arg {arg!r}; use nothing or 'nomask'")
    return config
