"""The smallest tokenizer run: exercises every loss term (masking, MFI, EMA VQ with restarts, GAN) in seconds.

    motionaura train --config=experiments/vae_tiny.py --workdir=runs/vae_tiny
    motionaura train --config=experiments/vae_tiny.py --workdir=runs/vae_tiny \
        --config.mesh.data=2 --config.mesh.fsdp=4

Clips 5x16x16, compression 4x4x4, K=32 codes; the GAN starts at step 1 so both of its branches run.
"""

from motionaura_jax.train.vae import vae_config


def get_config(arg: str | None = None):
    config = vae_config()
    m = config.model
    m.channels, m.blocks = (8, 16, 16), (1, 1, 1)
    m.down_space, m.down_time = (True, False), (True, True)
    m.stem_patch, m.expand, m.norm_groups = 2, 2, 4
    m.z_channels, m.mfi_hidden = 8, 16
    m.quantizer.num_codes, m.quantizer.code_dim = 32, 4
    config.disc.channels, config.disc.norm_groups = (8, 16), 4
    config.data.frames, config.data.size = 5, 16
    config.loss.gan_weight, config.loss.gan_start = 0.1, 1
    config.train.update(dict(steps=3, batch_size=8, lr=1e-3, warmup=1, log_every=1, ckpt_every=0))
    config.eval.update(dict(num_clips=8, batch_size=8, contact_sheet_clips=2))
    return config
