"""Diffusion objectives: KL >= 0, perfect < uniform predictor, absorbing VLB = ELBO-weighted masked CE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from motionaura_jax.configs.t2v import diffusion_config
from motionaura_jax.diffusion import losses as L
from motionaura_jax.diffusion import schedule as S

K = 16


def _batch(seed, shape=(8, 2, 4, 4)):
    return jax.random.randint(jax.random.key(seed), shape, 0, K, dtype=jnp.int32)


@pytest.mark.parametrize("kind", S.KINDS)
def test_kl_terms_are_non_negative(kind):
    sched = S.make_schedule(K, 20, kind=kind, alpha_cum_end=0.05, gamma_cum_end=0.9)
    x0 = _batch(0)
    t_b = jnp.arange(8) * 2 + jnp.array([0, 1, 0, 1, 0, 1, 0, 1])
    z_t = S.q_sample(jax.random.key(1), sched, x0, t_b)
    logits = 2.0 * jax.random.normal(jax.random.key(2), x0.shape + (K,))
    log_model = S.reverse_log_probs(sched, logits, z_t, t_b)
    log_true = S.q_posterior(sched, S.log_onehot(x0, K), z_t, t_b)
    kl = np.asarray(L.multinomial_kl(log_true, log_model))
    assert np.isfinite(kl).all() and kl.min() >= -1e-5, kl.min()
    assert kl.max() > 1e-2  # a random predictor is wrong somewhere
    # And KL(p || p) = 0.
    np.testing.assert_allclose(np.asarray(L.multinomial_kl(log_model, log_model)), 0.0, atol=1e-6)


@pytest.mark.parametrize(
    "kind,objective", [("mask_and_replace", "vlb"), ("absorbing", "vlb"), ("absorbing", "masked_ce")]
)
def test_perfect_predictor_beats_uniform(kind, objective):
    sched = S.make_schedule(K, 50, kind=kind)
    cfg = diffusion_config()
    cfg.objective = objective
    x0 = _batch(3)
    z_t, t_b = L.corrupt(jax.random.key(4), sched, x0)
    perfect = 30.0 * jax.nn.one_hot(x0, K)
    uniform = jnp.zeros(x0.shape + (K,))
    slightly_wrong = 3.0 * jax.nn.one_hot(x0, K) + jax.random.normal(jax.random.key(5), perfect.shape)
    losses = {
        name: L.diffusion_losses(sched, logits, x0, z_t, t_b, cfg)
        for name, logits in [("perfect", perfect), ("uniform", uniform), ("noisy", slightly_wrong)]
    }
    assert float(losses["perfect"]["loss"]) < 1e-3
    assert (
        float(losses["perfect"]["loss"]) < float(losses["noisy"]["loss"]) < float(losses["uniform"]["loss"])
    )
    assert float(losses["perfect"]["x0_accuracy"]) == 1.0
    for metrics in losses.values():
        assert all(np.isfinite(float(v)) for v in metrics.values())


def test_absorbing_vlb_equals_elbo_weighted_masked_ce():
    """For mask-only corruption the VLB term at a masked token is (γ̄_t − γ̄_{t−1})/γ̄_t · CE, 0 elsewhere."""
    sched = S.make_schedule(K, 100, kind="absorbing")
    x0 = _batch(6)
    t_b = jnp.array([0, 1, 2, 10, 40, 70, 98, 99])
    z_t = S.q_sample(jax.random.key(7), sched, x0, t_b)
    logits = 1.5 * jax.random.normal(jax.random.key(8), x0.shape + (K,))
    vlb = L.vlb_losses(sched, logits, x0, z_t, t_b, aux_weight=0.0)
    ce = L.masked_ce_losses(sched, logits, x0, z_t, t_b, weighting="elbo")
    np.testing.assert_allclose(float(vlb["loss"]), float(ce["loss"]), rtol=1e-4)
    # The weight is ≈ 1/γ̄_t ≈ T/t for the linear schedule (γ̄_t ≈ t/(T-1), t >= 1).
    weight = np.asarray(L.masked_ce_weight(sched, t_b))
    np.testing.assert_allclose(weight[1:], 100.0 / np.asarray(t_b[1:]), rtol=2e-3)


@pytest.mark.parametrize(
    "objective,weighting", [("vlb", "elbo"), ("masked_ce", "elbo"), ("masked_ce", "uniform")]
)
def test_token_weight_scales_each_tokens_loss(objective, weighting):
    """Weights of one change nothing; weight zero on a token removes it (its logits get no gradient); the
    ELBO-weighted objectives are linear in the weights, "uniform" a weighted mean."""
    sched = S.make_schedule(K, 50, kind="absorbing")
    cfg = diffusion_config()
    cfg.objective, cfg.ce_weighting = objective, weighting
    x0 = _batch(14)
    z_t, t_b = L.corrupt(jax.random.key(15), sched, x0)
    logits = jax.random.normal(jax.random.key(16), x0.shape + (K,))

    def loss(lg, weight=None):
        return L.diffusion_losses(sched, lg, x0, z_t, t_b, cfg, weight)["loss"]

    np.testing.assert_allclose(float(loss(logits, jnp.ones(x0.shape))), float(loss(logits)), rtol=1e-6)
    left = jnp.zeros(x0.shape).at[..., :2].set(1.0)  # half the tokens, by column
    grad = np.asarray(jax.grad(loss)(logits, left))
    assert np.abs(grad[..., 2:, :]).max() == 0.0 and np.abs(grad[..., :2, :]).max() > 0
    if weighting == "elbo":  # a sum over tokens: linear in the weights
        np.testing.assert_allclose(
            float(loss(logits, 1.0 + 3.0 * left)), float(loss(logits) + 3.0 * loss(logits, left)), rtol=1e-5
        )
    else:  # a weighted mean: with the left half all but right, weighting it lowers the loss
        better_left = logits + left[..., None] * 5.0 * jax.nn.one_hot(x0, K)
        assert float(loss(better_left, 1.0 + 3.0 * left)) < 0.8 * float(loss(better_left))


@pytest.mark.parametrize("kind", S.KINDS)
def test_gradients_are_finite_at_every_step(kind):
    sched = S.make_schedule(K, 10, kind=kind)
    x0 = _batch(9, (10, 1, 2, 3))
    t_b = jnp.arange(10)
    z_t = S.q_sample(jax.random.key(10), sched, x0, t_b)
    logits = jax.random.normal(jax.random.key(11), x0.shape + (K,))
    grad = jax.grad(lambda lg: L.vlb_losses(sched, lg, x0, z_t, t_b)["loss"])(logits)
    assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad).sum()) > 0


def test_corrupt_masks_fraction_gamma_bar_in_absorbing_variant():
    sched = S.make_schedule(K, 100, kind="absorbing")
    x0 = _batch(12, (64, 1, 32, 32))
    z_t, t_b = L.corrupt(jax.random.key(13), sched, x0)
    masked = np.asarray(jnp.mean(z_t == K, axis=(1, 2, 3)))
    expected = sched.cum_gamma[np.asarray(t_b)]
    np.testing.assert_allclose(masked, expected, atol=4 * np.sqrt(0.25 / 1024))
    assert len(np.unique(np.asarray(t_b))) > 20  # t is spread over [0, T)
    assert np.all((np.asarray(z_t) == K) | (np.asarray(z_t) == np.asarray(x0)))


def test_drop_text_and_null_text():
    text = jnp.ones((4000, 5, 3))
    mask = jnp.ones((4000, 5), bool).at[:, 3:].set(False)
    out, out_mask, dropped = L.drop_text(jax.random.key(0), text, mask, 0.1)
    dropped = np.asarray(dropped)
    assert abs(dropped.mean() - 0.1) < 4 * np.sqrt(0.09 / 4000)
    np.testing.assert_array_equal(np.asarray(out[dropped]), 0.0)
    np.testing.assert_array_equal(
        np.asarray(out_mask[dropped]), [[True, False, False, False, False]] * dropped.sum()
    )
    np.testing.assert_array_equal(np.asarray(out[~dropped]), 1.0)
    np.testing.assert_array_equal(np.asarray(out_mask[~dropped]), np.asarray(mask[~dropped]))
    learned = jnp.arange(3.0)
    null, _ = L.null_text(text[:2], mask[:2], learned)
    np.testing.assert_array_equal(np.asarray(null), np.broadcast_to(np.arange(3.0), (2, 5, 3)))


def test_bad_objective_settings_raise_clear_errors():
    sched = S.make_schedule(K, 10)
    x0 = _batch(0, (1, 1, 1, 2))
    logits = jnp.zeros(x0.shape + (K,))
    with pytest.raises(ValueError, match="diffusion.kind=absorbing"):
        L.masked_ce_losses(sched, logits, x0, x0, jnp.zeros(1, jnp.int32))
    with pytest.raises(ValueError, match="diffusion.objective"):
        bad = diffusion_config()
        bad.objective = "x"
        L.diffusion_losses(sched, logits, x0, x0, jnp.zeros(1, jnp.int32), bad)


def test_cosine_t_sampling_masks_more_and_matches_maskgit_ratio():
    # MaskGIT's schedule: masked fraction r = cos(pi/2 u), u ~ U[0, 1): E[r] = 2/pi, P(r > 0.5) = 2/3.
    sched = S.make_schedule(K, 100, kind="absorbing")
    x0 = _batch(21, shape=(4096, 1, 4, 4))
    z_t, t_b = L.corrupt(jax.random.key(22), sched, x0, t_sampling="cosine")
    ratio = np.asarray(sched.cum_gamma)[np.asarray(t_b)]
    assert abs(ratio.mean() - 2 / np.pi) < 0.02, ratio.mean()
    assert abs((ratio > 0.5).mean() - 2 / 3) < 0.03
    masked = np.asarray(z_t == K).mean()
    assert abs(masked - 2 / np.pi) < 0.02, masked  # the corruption follows the drawn t
    _, t_uniform = L.corrupt(jax.random.key(22), sched, x0)
    assert abs(np.asarray(sched.cum_gamma)[np.asarray(t_uniform)].mean() - 0.5) < 0.02


def test_t_sampling_config_is_checked():
    from motionaura_jax.train.t2v import check_t_sampling

    cfg = diffusion_config()
    cfg.objective, cfg.t_sampling = "masked_ce", "cosine"
    assert check_t_sampling(cfg) == "cosine"
    cfg.t_sampling = "cosin"
    with pytest.raises(ValueError, match="t_sampling='cosin'"):
        check_t_sampling(cfg)
    cfg.objective, cfg.t_sampling = "vlb", "cosine"
    with pytest.raises(ValueError, match="masked_ce"):
        check_t_sampling(cfg)
