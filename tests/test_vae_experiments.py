"""Tokenizer experiments: they load, compress 4x8x8 (quickstart and quickstart_fine 2x4x4: 9x8x8 codes of a 32x32
clip), and vae.py:L is the paper scale (~300M parameters) counted with jax.eval_shape (nothing allocated)."""

import pytest

from motionaura_jax import config as config_lib
from motionaura_jax.models.vqvae import compression
from motionaura_jax.train.vae import count_params


@pytest.mark.parametrize(
    "arg",
    [
        "quickstart",
        "quickstart_fine",
        "quickstart_coarse",
        "quickstart_nomask",
        "shapes32",
        "shapes64",
        "S",
        "L",
    ],
)
def test_experiments_load_and_compress(arg):
    config = config_lib.load_config(f"experiments/vae.py:{arg}")
    assert config.task == "vae"
    fine = arg in ("quickstart", "quickstart_fine")
    assert compression(config.model) == ((2, 4) if fine else (4, 8))
    assert bool(config.model.refine_channels) == fine
    assert (config.data.frames - 1) % 4 == 0 and config.data.size % 8 == 0
    if arg == "quickstart_nomask":
        assert not config.model.mask.enabled and not config.model.mfi


def test_vae_L_is_paper_scale():
    counts = count_params(config_lib.load_config("experiments/vae.py:L"))
    assert 280e6 <= counts["total"] <= 330e6, counts  # PyraTok measured 317M for 3D-MBQ-VAE
    assert counts["encoder"] > 100e6 and counts["decoder"] > 100e6


def test_bad_experiment_arg_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown arg 'shapes48'; use one of .*shapes32, shapes64"):
        config_lib.load_config("experiments/vae.py:shapes48")
