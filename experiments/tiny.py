"""The smallest end-to-end config: a tiny regressor that exercises the loop, sharding and checkpoints.

    motionaura train --config=experiments/tiny.py --workdir=runs/tiny
    motionaura train --config=experiments/tiny.py --workdir=runs/tiny --config.mesh.data=2 --config.mesh.fsdp=4

| arg    | embed | mlp | steps |
|--------|-------|-----|-------|
| (none) | 32    | 64  | 20    |

The model and data keys are the defaults of motionaura_jax/configs/tiny.py.
"""

from motionaura_jax.configs import tiny


def get_config(arg: str | None = None):
    config = tiny.get_config()
    config.train.update(dict(steps=20, batch_size=16, lr=3e-3, log_every=5, ckpt_every=10))
    return config
