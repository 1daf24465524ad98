"""Each real stage learns, not just runs: a tiny tokenizer trained a few hundred CPU steps reconstructs
held-out clips well below the mean-frame predictor's error, and a tiny text-to-video denoiser trained on its
tokens reaches a per-token VLB well below the code-id unigram entropy (what a model that ignores the text and
the visible tokens gets). The other stage tests run 3 steps and check finiteness only.

Measured when written (2-core CPU): tokenizer held-out MSE ~0.072-0.077 vs the mean-frame predictor's 0.119
(PSNR ~17.3 vs 15.3 dB); t2v VLB ~1.56 nats/token vs a unigram entropy of ~2.80 nats after 800 steps.
"""

import json
import pathlib

import numpy as np
import pytest

from motionaura_jax import config as config_lib

TOKENIZER_STEPS, T2V_STEPS = 400, 800
pytestmark = pytest.mark.optimized  # hundreds of steps: XLA's optimisations pay for themselves


@pytest.fixture(scope="module")
def trained_tokenizer(tmp_path_factory) -> pathlib.Path:
    """vae.py:tiny trained TOKENIZER_STEPS steps, tuned to learn fast on CPU: L1 + L2, no masking/MFI/GAN."""
    from motionaura_jax.train import loop

    workdir = tmp_path_factory.mktemp("vae")
    config = config_lib.load_config(
        "experiments/vae.py:tiny",
        [
            "--config.mesh.num_devices=1",
            f"--config.train.steps={TOKENIZER_STEPS}",
            "--config.train.lr=4e-3",
            "--config.train.warmup=30",
            "--config.train.log_every=100",
            "--config.loss.l2=1.0",
            "--config.loss.gan_weight=0",
            "--config.model.mask.enabled=False",
            "--config.model.mfi=False",
        ],
    )
    result = loop.train(config, workdir)
    assert result.step == TOKENIZER_STEPS
    return workdir


def _clips(data_cfg, split, n):
    from motionaura_jax.data.pipeline import make_source, to_model_range

    source = make_source(data_cfg, split=split, seed=0)
    return np.stack([to_model_range(source.load(i, i)["video"]) for i in range(n)])


def test_tokenizer_reconstructs_well_below_the_mean_frame(trained_tokenizer):
    from motionaura_jax.pipelines.tokenizer import Tokenizer

    tokenizer = Tokenizer.load(trained_tokenizer)
    data_cfg = tokenizer.config.data
    heldout = _clips(data_cfg, "heldout", 32)
    mean_frame = _clips(data_cfg, "train", 256).mean(axis=(0, 1))  # the best constant frame
    baseline = float(((heldout - mean_frame) ** 2).mean())
    assert 0.10 < baseline < 0.14, baseline  # ~0.119 on Moving Shapes 5x16x16
    recon, _ = tokenizer.reconstruct(heldout)
    mse = float(((recon - heldout) ** 2).mean())
    untrained_like = float(((np.zeros_like(heldout) - heldout) ** 2).mean())
    assert mse < 0.75 * baseline, (
        f"tokenizer MSE {mse:.4f} vs mean-frame {baseline:.4f} (0 frame {untrained_like:.4f})"
    )


def test_t2v_vlb_falls_well_below_the_unigram_entropy(trained_tokenizer, tmp_path):
    from motionaura_jax.train import loop
    from motionaura_jax.train.t2v import ensure_token_cache

    config = config_lib.load_config(
        "experiments/t2v.py:tiny",
        [
            f"--config.tokens.tokenizer_workdir={trained_tokenizer}",
            f"--config.tokens.cache={tmp_path / 'cache'}",
            "--config.mesh.num_devices=1",
            f"--config.train.steps={T2V_STEPS}",
            "--config.train.lr=2e-3",
            "--config.train.warmup=20",
            "--config.train.log_every=100",
        ],
    )
    cache = ensure_token_cache(config)
    freq = np.bincount(cache.ids.ravel(), minlength=cache.num_codes) / cache.ids.size
    entropy = float(-(freq[freq > 0] * np.log(freq[freq > 0])).sum())  # nats per token
    assert entropy > 1.5, entropy  # ~2.8: the tokens carry information, so the bar is not trivial
    loop.train(config, tmp_path / "t2v")
    logged = [json.loads(line) for line in (tmp_path / "t2v" / "metrics.jsonl").read_text().splitlines()]
    vlb = [m["vlb"] for m in logged if "vlb" in m]  # each a mean over 100 steps
    assert vlb[0] > vlb[-1], vlb
    assert vlb[-1] < 0.75 * entropy, f"t2v VLB {vlb[-1]:.3f} nats/token vs unigram entropy {entropy:.3f}"
