"""Tokenizer experiment files: they load, compress 4x8x8, and vae_L is the paper scale (~300M parameters)
counted with jax.eval_shape (nothing allocated)."""

import pytest

from motionaura_jax import config as config_lib
from motionaura_jax.models.vqvae import compression
from motionaura_jax.train.vae import count_params


@pytest.mark.parametrize(
    "spec", ["vae_quickstart", "vae_quickstart:nomask", "vae_shapes:32", "vae_shapes:64", "vae_S", "vae_L"]
)
def test_experiments_load_and_compress_4x8x8(spec):
    name, _, arg = spec.partition(":")
    config = config_lib.load_config(f"experiments/{name}.py" + (f":{arg}" if arg else ""))
    assert config.task == "vae"
    assert compression(config.model) == (4, 8)
    assert (config.data.frames - 1) % 4 == 0 and config.data.size % 8 == 0
    if arg == "nomask":
        assert not config.model.mask.enabled and not config.model.mfi


def test_vae_L_is_paper_scale():
    counts = count_params(config_lib.load_config("experiments/vae_L.py"))
    assert 280e6 <= counts["total"] <= 330e6, counts  # PyraTok measured 317M for 3D-MBQ-VAE
    assert counts["encoder"] > 100e6 and counts["decoder"] > 100e6


def test_bad_experiment_arg_is_a_clear_error():
    with pytest.raises(ValueError, match="32 or 64"):
        config_lib.load_config("experiments/vae_shapes.py:48")
