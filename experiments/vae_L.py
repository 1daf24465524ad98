"""Tokenizer L: the paper scale, ~300M parameters at 4x8x8 (PyraTok measured 317M for 3D-MBQ-VAE).

    motionaura train --config=experiments/vae_L.py --workdir=gs://BUCKET/vae_L --config.mesh.fsdp=-1 \
        --config.data.source=tfds --config.data.path=DATA_DIR
    python -c "from motionaura_jax import config; from motionaura_jax.train.vae import count_params; \
        print(count_params(config.load_config('experiments/vae_L.py')))"   # jax.eval_shape: no allocation

256x256x17 clips -> 5x32x32 tokens; K=16384 cosine EMA codes of dim 8 (factorised from 512); expand 4, full
3x3x3 depthwise kernels (grouped-conv form for TPU), mid attention, remat per block, bf16, FSDP-ready (every
parameter carries logical axis names). Never trained here; compiled ahead of time for TPU topologies.
"""

from motionaura_jax.train.vae import vae_config


def get_config(arg: str | None = None):
    config = vae_config()
    m = config.model
    m.channels, m.blocks = (256, 512, 1024, 1024), (2, 3, 4, 6)
    m.down_space, m.down_time = (True, True, False), (True, True, False)
    m.stem_patch, m.expand, m.depthwise, m.depthwise_impl = 2, 4, "3d", "grouped"
    m.norm_groups, m.mid_blocks, m.mid_attention, m.attn_heads = 32, 2, True, 16
    m.z_channels, m.mfi_hidden = 512, 512
    m.remat, m.dtype = True, "bfloat16"
    m.quantizer.num_codes, m.quantizer.code_dim = 16384, 8
    config.disc.channels, config.disc.depthwise_impl, config.disc.norm_groups = (128, 256, 512), "grouped", 32
    config.data.update(dict(source="tfds", frames=17, size=256, read_threads=16, prefetch=32))
    config.loss.update(dict(gan_weight=0.1, gan_start=50000))
    config.train.update(
        dict(
            steps=500000,
            batch_size=256,
            lr=1e-4,
            warmup=5000,
            log_every=100,
            ckpt_every=5000,
            eval_every=10000,
            sample_every=10000,
        )
    )
    config.mesh.update(dict(data=-1, fsdp=8))
    config.eval.update(dict(num_clips=256, batch_size=32))
    return config
