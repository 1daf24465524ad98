"""The tiny regressor (train/tiny.py): a task that exercises the loop, sharding and checkpoints in seconds."""

from __future__ import annotations

import ml_collections

from motionaura_jax.configs import base


def get_config() -> ml_collections.ConfigDict:
    """Every key of the tiny task with its default; experiments/tiny.py sets the run's train.* values."""
    config = base.get_config("tiny")
    config.model = ml_collections.ConfigDict(dict(embed=32, mlp=64, out_dim=8))
    # Examples x ~ N(0,1)^(length, in_dim), y = tanh(x W1) W2 from a fixed teacher of width `hidden`.
    config.data = ml_collections.ConfigDict(
        dict(length=4, in_dim=8, hidden=16, out_dim=8, num_examples=512, delay_s=0.0)
    )
    # Plain AdamW at a constant rate, no clipping (optax.adamw's own b2).
    config.train.update(dict(schedule="constant", b2=0.999, weight_decay=0.0, grad_clip=0.0))
    return config
