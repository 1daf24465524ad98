"""One home for defaults: each stage's every config key with its default value, and nothing else.

    from motionaura_jax.configs import vae
    config = vae.get_config()          # the tokenizer stage; experiments/vae.py overrides sizes

| module   | stage                                  | entry points                                   |
|----------|----------------------------------------|------------------------------------------------|
| base     | the loop: train.*, mesh.*, sharding.*  | get_config(task)                               |
| data     | the video pipeline (config.data)       | get_config(**overrides)                        |
| vae      | tokenizer: model, disc, loss, eval     | get_config(), model_config(), disc_config()    |
| t2v      | text-to-video: denoiser, diffusion ... | get_config(), denoiser_config(size), SIZES     |
| tiny     | the tiny regressor (loop checks)       | get_config()                                   |

Code reads `cfg.key` and never repeats a default (`cfg.get(key, default)`), so a key changes here only;
tests/test_configs.py checks both. These modules import nothing of the package but each other, so a config
can be built without JAX. `override` applies a nested dict of values (the size tables of experiments/*.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections


def override(config: ml_collections.ConfigDict, values: Mapping[str, Any], where: str = "") -> None:
    """Sets `config.a.b = v` for every leaf of the nested `values`; an unknown key is an error naming it."""
    for key, value in values.items():
        dotted = f"{where}{key}"
        if key not in config:
            raise KeyError(
                f"config has no key {dotted!r}; known under {where or 'the root'}: {sorted(config)}"
            )
        if isinstance(value, Mapping):
            override(config[key], value, dotted + ".")
        else:
            config[key] = value
