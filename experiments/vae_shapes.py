"""Tokenizer quality run on Moving Shapes at 4x8x8 within 60 minutes of 2 CPU cores.

    motionaura train --config=experiments/vae_shapes.py:32 --workdir=runs/vae_shapes32
    motionaura train --config=experiments/vae_shapes.py:64 --workdir=runs/vae_shapes64
    motionaura eval recon --ckpt=runs/vae_shapes32 --out=runs/vae_shapes32/recon.json

The quickstart's choices (see experiments/vae_quickstart.py), wider and deeper, trained longer. Targets on the
held-out split: PSNR >= 30 dB at 32x32x17, >= 27 dB at 64x64x17, codebook usage >= 30%, colours kept.

| arg | clip     | stem | channels       | blocks    | steps |
|-----|----------|------|----------------|-----------|-------|
| 32  | 17x32x32 | 4    | (64, 128, 160) | (1, 2, 2) | 6000  |
| 64  | 17x64x64 | 4    | (48, 96, 160)  | (1, 2, 2) | 3000  |
"""

from motionaura_jax.train.vae import vae_config


def get_config(arg: str | None = None):
    arg = arg or "32"
    if arg not in ("32", "64"):
        raise ValueError(f"vae_shapes: arg must be 32 or 64 (the clip size), got {arg!r}")
    config = vae_config()
    m = config.model
    m.blocks = (1, 2, 2)
    m.down_space, m.down_time = (False, True), (True, True)
    m.stem_patch, m.expand, m.depthwise, m.norm = 4, 2, "2+1d", "layer"
    m.z_channels, m.mfi_hidden = 32, 128
    m.quantizer.num_codes, m.quantizer.code_dim = 1024, 8
    config.data.update(dict(source="synthetic", frames=17, size=int(arg)))
    config.loss.update(dict(l1=1.0, l2=1.0))
    if arg == "32":
        m.channels = (64, 128, 160)
        steps = 6000
    else:
        m.channels = (48, 96, 160)
        steps = 3000
    config.train.update(
        dict(
            steps=steps,
            batch_size=8,
            lr=2e-3,
            warmup=200,
            log_every=50,
            ckpt_every=500,
            eval_every=1000,
            sample_every=steps,
        )
    )
    config.eval.update(dict(num_clips=128, batch_size=16))
    return config
