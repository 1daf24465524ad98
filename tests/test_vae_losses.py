"""Tokenizer loss terms checked by value, not by existence: the LPIPS-in-training path runs on small local
random weights and changes the gradient; the hinge losses, the adaptive GAN weight and the total loss equal
numbers computed here by hand from the same model outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from motionaura_jax import config as config_lib
from motionaura_jax.models import lpips as lpips_net
from motionaura_jax.models.discriminator import hinge_d_loss, hinge_g_loss
from motionaura_jax.parallel.sharding import unbox
from motionaura_jax.train import vae as vae_train

SIZE = 32  # LPIPS-alex needs >= 32 px frames (two 3/2 max-pools after a stride-4 conv)


def _write_random_alex(path) -> str:
    """An LPIPS-alex weight file in the format models/lpips.py reads (torchvision names, OIHW), random."""
    rng = np.random.default_rng(0)
    arrays, c_in = {}, 3
    for layer in lpips_net.NETS["alex"]:
        if layer[0] != "conv":
            continue
        _, index, c_out, kernel, _, _ = layer
        fan_in = c_in * kernel * kernel
        arrays[f"features.{index}.weight"] = (
            rng.normal(size=(c_out, c_in, kernel, kernel)) * np.sqrt(2 / fan_in)
        ).astype(np.float32)
        arrays[f"features.{index}.bias"] = np.zeros(c_out, np.float32)
        c_in = c_out
    taps = [
        layer[2]
        for i, layer in enumerate(lpips_net.NETS["alex"][:-1])
        if lpips_net.NETS["alex"][i + 1] == ("tap",)
    ]
    for k, c in enumerate(taps):
        arrays[f"lin{k}.model.1.weight"] = rng.uniform(0, 0.2, size=(1, c, 1, 1)).astype(np.float32)
    np.savez(path, **arrays)
    return str(path)


def _config(extra=()):
    return config_lib.load_config(
        "experiments/vae.py:tiny",
        [
            f"--config.data.size={SIZE}",
            "--config.model.mask.enabled=False",  # the model sees the clean clip: recon is reproducible here
            "--config.model.mfi=False",
            "--config.mesh.num_devices=1",
            *extra,
        ],
    )


def _clips(config, n=2):
    from motionaura_jax.data.pipeline import make_source, to_model_range

    source = make_source(config.data, split="train", seed=0)
    return jnp.asarray(np.stack([to_model_range(source.load(i, i)["video"]) for i in range(n)]))


def _one_step(config, x, step=0):
    """(state before, metrics, the recon the step's loss saw) of one jitted tokenizer step."""
    model, disc, tx, tx_disc, train_step = vae_train.make_vae_step(config)
    init = jax.jit(lambda rng: unbox(vae_train.init_vae_state(config, model, disc, tx, tx_disc, rng)))
    state = init(jax.random.key(0))  # jitted: eager init of the tokenizer takes tens of seconds
    rng = jax.random.key(1)
    _, metrics = jax.jit(train_step)(state, {"video": x}, rng, jnp.asarray(step))
    _, rng_restart = jax.random.split(rng)
    forward = jax.jit(
        lambda params, vq, v: model.apply(
            {"params": params, "vq": vq}, v, train=True, mutable=["vq"], rngs={"restart": rng_restart}
        )[0]["recon"]
    )
    return state, jax.device_get(metrics), forward(state.params, state.vq, x), (model, disc)


PERCEPTUAL, L2, GAN = 2.0, 0.5, 0.1


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    """One GAN-on tokenizer step without and with LPIPS (same init, clip and rng): two compiles in all."""
    weights = _write_random_alex(tmp_path_factory.mktemp("lpips") / "lpips_alex.npz")
    gan = ["--config.loss.gan_start=0", f"--config.loss.gan_weight={GAN}", f"--config.loss.l2={L2}"]
    plain = _config(gan)
    x = _clips(plain)
    lpips = _config(
        [*gan, f"--config.loss.perceptual={PERCEPTUAL}", f"--config.loss.perceptual_weights={weights}"]
    )
    return {"x": x, "weights": weights, "plain": _one_step(plain, x), "lpips": _one_step(lpips, x)}


def _lpips_mean(weights):
    metric = lpips_net.LPIPS.from_file(weights)
    return lambda r, x: jnp.mean(
        metric.module.apply(metric.variables, r.reshape(-1, *r.shape[2:]), x.reshape(-1, *x.shape[2:]))
    )


def test_lpips_in_training_runs_and_changes_the_gradient(steps):
    x, (_, plain, recon, _), (_, perc, recon_p, _) = steps["x"], steps["plain"], steps["lpips"]
    np.testing.assert_allclose(np.asarray(recon_p), np.asarray(recon), atol=1e-6)  # same model, same clip
    # The logged term is LPIPS of (recon, clip) over every frame, computed by the metric class on its own.
    expected = lpips_net.LPIPS.from_file(steps["weights"]).video(np.asarray(recon), np.asarray(x)).mean()
    assert plain["perceptual"] == 0.0 and expected > 1e-3
    np.testing.assert_allclose(perc["perceptual"], expected, rtol=1e-4)
    # The gradient changes, not just the logged loss: its norm, and the adaptive GAN weight (a ratio of
    # gradient norms at the recon, checked by hand with the LPIPS gradient included below).
    assert abs(perc["grad_norm"] - plain["grad_norm"]) > 1e-3 * plain["grad_norm"]  # measured: 1.67 vs 1.69
    assert (
        abs(perc["gan_adaptive_weight"] - plain["gan_adaptive_weight"]) > 0.1 * plain["gan_adaptive_weight"]
    )


def test_hinge_losses_by_hand():
    real = jnp.array([0.5, 2.0, -1.0])
    fake = jnp.array([-2.0, 0.3, 1.5])
    # mean(relu(1 - real)) = (0.5 + 0 + 2) / 3; mean(relu(1 + fake)) = (0 + 1.3 + 2.5) / 3
    np.testing.assert_allclose(float(hinge_d_loss(real, fake)), 2.5 / 3 + 3.8 / 3, rtol=1e-6)
    np.testing.assert_allclose(float(hinge_g_loss(fake)), -(-2.0 + 0.3 + 1.5) / 3, rtol=1e-6)


@pytest.mark.parametrize("run", ["plain", "lpips"])
def test_adaptive_gan_weight_and_total_loss_by_hand(steps, run):
    """VQGAN's weight ||d rec / d recon|| / (||d G / d recon|| + 1e-4) (unclipped here), G = -mean D(recon);
    the discriminator's hinge on its logits of the clean clip and the recon; the loss is the weighted sum."""
    x = steps["x"]
    state, m, recon, (_, disc) = steps[run]
    r, xn = np.asarray(recon, np.float64), np.asarray(x, np.float64)
    n = r.size
    # d/dr [l1 · mean|r - x| + l2 · mean (r - x)²] = l1 · sign(r - x) / n + 2 · l2 · (r - x) / n
    g_rec = 1.0 * np.sign(r - xn) / n + 2 * L2 * (r - xn) / n
    perc = 0.0
    if run == "lpips":  # + w · d LPIPS / d recon
        g_rec = g_rec + PERCEPTUAL * np.asarray(jax.grad(_lpips_mean(steps["weights"]))(recon, x), np.float64)
        perc = m["perceptual"]
    d_of = jax.jit(lambda v: disc.apply({"params": state.disc_params}, v))
    g_gan = np.asarray(jax.grad(lambda v: -jnp.mean(d_of(v)))(recon), np.float64)
    weight = np.linalg.norm(g_rec) / (np.linalg.norm(g_gan) + 1e-4)
    assert weight < 1e4  # loss.gan_max_adaptive: not clipped, the ratio itself is compared
    np.testing.assert_allclose(m["gan_adaptive_weight"], weight, rtol=2e-4)
    np.testing.assert_allclose(
        m["gan_g"], -np.mean(np.asarray(d_of(recon), np.float64)), rtol=1e-4, atol=1e-6
    )
    real, fake = (np.asarray(d_of(v), np.float64) for v in (x, recon))
    d_hand = np.mean(np.maximum(0, 1 - real)) + np.mean(np.maximum(0, 1 + fake))
    np.testing.assert_allclose(m["gan_d"], d_hand, rtol=1e-4)
    np.testing.assert_allclose(m["l1"], np.mean(np.abs(r - xn)), rtol=1e-5)
    np.testing.assert_allclose(m["l2"], np.mean((r - xn) ** 2), rtol=1e-5)
    total = m["l1"] + L2 * m["l2"] + PERCEPTUAL * perc + 1.0 * m["vq_loss"] + GAN * weight * m["gan_g"]
    np.testing.assert_allclose(m["loss"], total, rtol=1e-5, atol=1e-6)


def test_gradient_l1_by_hand_ignores_offsets_and_sees_blur():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(2, 3, 6, 5, 3)).astype(np.float32)
    r = rng.uniform(-1, 1, size=x.shape).astype(np.float32)
    dy = lambda v: np.diff(v, axis=2)  # noqa: E731
    dx = lambda v: np.diff(v, axis=3)  # noqa: E731
    expected = np.abs(dy(r) - dy(x)).mean() + np.abs(dx(r) - dx(x)).mean()
    np.testing.assert_allclose(vae_train.gradient_l1(jnp.asarray(r), jnp.asarray(x)), expected, rtol=1e-6)
    assert (
        float(vae_train.gradient_l1(jnp.asarray(x + 0.3), jnp.asarray(x))) < 1e-6
    )  # a flat offset: no edges
    square = np.zeros((1, 1, 8, 8, 1), np.float32)
    square[..., 2:6, 2:6, :] = 1.0
    blurred = (square + np.roll(square, 1, axis=2) + np.roll(square, 1, axis=3)) / 3
    assert float(vae_train.gradient_l1(jnp.asarray(blurred), jnp.asarray(square))) > 0.05


def test_foreground_weights_by_hand():
    """1 + w x brightness (largest channel, [-1, 1] -> [0, 1]), normalised to mean 1 per clip."""
    x = -np.ones((2, 1, 4, 4, 3), np.float32)  # black clips
    x[0, 0, 1, 1] = (1.0, -1.0, -1.0)  # one red pixel in clip 0; clip 1 stays black
    weight = np.asarray(vae_train.foreground_weights(jnp.asarray(x), 3.0))
    assert weight.shape == (2, 1, 4, 4, 1)
    raw = np.ones(16)
    raw[5] = 4.0  # 1 + 3 x brightness 1
    np.testing.assert_allclose(weight[0].reshape(-1), raw / raw.mean(), rtol=1e-6)
    np.testing.assert_allclose(weight[1], 1.0, rtol=1e-6)  # nothing bright: plain mean
    np.testing.assert_allclose(weight.mean(axis=(1, 2, 3, 4)), 1.0, rtol=1e-6)
