"""The smallest end-to-end config: a tiny regressor that exercises the loop, sharding and checkpoints.

    motionaura train --config=experiments/tiny.py --workdir=runs/tiny
    motionaura train --config=experiments/tiny.py --workdir=runs/tiny --config.mesh.data=2 --config.mesh.fsdp=4

| arg    | embed | mlp | steps |
|--------|-------|-----|-------|
| (none) | 32    | 64  | 20    |
"""

from motionaura_jax.config import base_config


def get_config(arg: str | None = None):
    config = base_config("tiny")
    config.model.embed = 32
    config.model.mlp = 64
    config.model.out_dim = 8
    config.data.length = 4
    config.data.in_dim = 8
    config.data.hidden = 16
    config.data.out_dim = 8
    config.data.num_examples = 512
    config.data.delay_s = 0.0
    config.train.steps = 20
    config.train.batch_size = 16
    config.train.lr = 3e-3
    config.train.log_every = 5
    config.train.ckpt_every = 10
    return config
