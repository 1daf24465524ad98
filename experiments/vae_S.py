"""Tokenizer S: one GPU/TPU host, 128x128x17 clips at 4x8x8, GAN after 20k steps.

    motionaura train --config=experiments/vae_S.py --workdir=runs/vae_S
    motionaura train --config=experiments/vae_S.py --workdir=runs/vae_S \
        --config.data.source=folder --config.data.path=VIDEOS --config.mesh.data=-1

Full 3x3x3 depthwise kernels in the grouped-conv form (fast on accelerators), K=16384 cosine EMA codes of dim
8, hinge GAN with VQGAN's adaptive weight from step 20k, bf16 activations, remat per block.
"""

from motionaura_jax.train.vae import vae_config


def get_config(arg: str | None = None):
    config = vae_config()
    m = config.model
    m.channels, m.blocks = (128, 256, 256, 512), (2, 2, 2, 2)
    m.down_space, m.down_time = (True, True, False), (True, True, False)
    m.stem_patch, m.expand, m.depthwise, m.depthwise_impl = 2, 4, "3d", "grouped"
    m.norm_groups, m.mid_blocks, m.mid_attention, m.attn_heads = 32, 2, True, 8
    m.z_channels, m.mfi_hidden = 256, 512
    m.remat, m.dtype = True, "bfloat16"
    m.quantizer.num_codes, m.quantizer.code_dim = 16384, 8
    config.disc.channels, config.disc.depthwise_impl, config.disc.norm_groups = (64, 128, 256), "grouped", 32
    config.data.update(dict(source="synthetic", frames=17, size=128, read_threads=8, prefetch=16))
    config.loss.update(dict(gan_weight=0.1, gan_start=20000))
    config.train.update(
        dict(
            steps=200000,
            batch_size=64,
            lr=1e-4,
            warmup=5000,
            log_every=100,
            ckpt_every=5000,
            eval_every=5000,
            sample_every=5000,
        )
    )
    config.eval.update(dict(num_clips=256, batch_size=32))
    return config
