"""train.init_from: a fresh run starts from another run's weights (parameters and a tokenizer's EMA codebook),
with its own optimizer state; a run of another model size is refused by name."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from motionaura_jax import config as config_lib
from motionaura_jax.train import loop
from tests.tiny_runs import save_untrained


def _tiny_vae(*overrides: str):
    return config_lib.load_config("experiments/vae.py:tiny", ["--config.mesh.num_devices=1", *overrides])


def _leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_init_from_copies_the_source_weights_and_keeps_a_fresh_optimizer(tmp_path):
    source = save_untrained(_tiny_vae("--config.train.seed=0"), tmp_path / "source")
    setup = loop.build(_tiny_vae("--config.train.seed=1", f"--config.train.init_from={tmp_path / 'source'}"))
    fresh = loop.init_state(setup)
    # The seeds differ, so a copy is not a coincidence of the initialisation.
    assert any(
        not np.array_equal(a, b) for a, b in zip(_leaves(fresh.params), _leaves(source.params), strict=True)
    )

    started = loop.warm_start(fresh, setup, str(tmp_path / "source"))

    for field in ("params", "vq"):
        got, want = _leaves(getattr(started, field)), _leaves(getattr(source, field))
        assert len(got) == len(want) > 0
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)
    # Optimizer moments and the discriminator are this run's own.
    for a, b in zip(_leaves(started.opt_state), _leaves(fresh.opt_state), strict=True):
        np.testing.assert_array_equal(a, b)
    for leaf, ref in zip(jax.tree.leaves(started.params), jax.tree.leaves(fresh.params), strict=True):
        assert leaf.sharding == ref.sharding and leaf.dtype == ref.dtype


def test_init_from_a_run_of_another_model_names_the_difference(tmp_path):
    save_untrained(_tiny_vae(), tmp_path / "source")
    config = _tiny_vae("--config.model.z_channels=12", f"--config.train.init_from={tmp_path / 'source'}")
    setup = loop.build(config)
    with pytest.raises(
        ValueError, match=r"train.init_from=.*its model is not this config's \(params: .* is \("
    ):
        loop.warm_start(loop.init_state(setup), setup, str(tmp_path / "source"))


def test_init_from_is_applied_by_train_and_not_on_resume(tmp_path):
    source = save_untrained(_tiny_vae(), tmp_path / "source")
    overrides = ("--config.train.steps=1", "--config.train.lr=0.0", "--config.train.ckpt_every=1")
    config = _tiny_vae("--config.train.seed=1", f"--config.train.init_from={tmp_path / 'source'}", *overrides)
    result = loop.train(config, str(tmp_path / "run"))
    # lr 0: one step leaves the copied parameters as they were.
    for a, b in zip(_leaves(result.state.params), _leaves(source.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=0)
    # A second invocation resumes the run's own checkpoint (step 1) instead of copying again.
    config.train.steps = 2
    again = loop.train(config, str(tmp_path / "run"))
    assert again.step == 2
