"""Forward process and posterior: parity with diffusers' VQDiffusionScheduler, and the laws they must obey."""

import diffusers.schedulers.scheduling_vq_diffusion as vq  # test dependency (requirements-test.txt)
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from motionaura_jax.diffusion import schedule as S

K, T = 37, 100
TOL = 1e-5


def _close(ours, ref, tol=TOL):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(np.isfinite(ours), finite)
    np.testing.assert_array_equal(ours[~finite], ref[~finite])
    diff = np.abs(ours[finite] - ref[finite]).max() if finite.any() else 0.0
    assert diff <= tol, diff
    return diff


@pytest.fixture(scope="module")
def pair():
    kwargs = dict(
        num_train_timesteps=T,
        alpha_cum_start=0.99999,
        alpha_cum_end=0.000009,
        gamma_cum_start=0.000009,
        gamma_cum_end=0.99999,
    )
    ref = vq.VQDiffusionScheduler(num_vec_classes=K + 1, **kwargs)
    ours = S.make_schedule(
        K, **{k: v for k, v in kwargs.items() if k != "num_train_timesteps"}, num_timesteps=T
    )
    return ref, ours


def _inputs(seed, batch=2, tokens=40):
    rng = np.random.default_rng(seed)
    x_t = rng.integers(0, K + 1, size=(batch, tokens))
    x_t[:, : tokens // 4] = K  # plenty of [MASK] and of codes
    logits = torch.tensor(rng.normal(size=(batch, K, tokens)).astype(np.float32) * 3)
    return torch.tensor(x_t), torch.log_softmax(logits, dim=1)


def _bkn(x):  # ours (B, N, C) -> diffusers' (B, C, N)
    return np.asarray(x).transpose(0, 2, 1)


def test_tables_match_diffusers(pair):
    ref, ours = pair
    cum, step = ours.log_cumulative_table(), ours.log_step_table()
    for mine, theirs in [
        (cum.log_a, ref.log_cumprod_at),
        (cum.log_b, ref.log_cumprod_bt),
        (cum.log_c, ref.log_cumprod_ct),
        (step.log_a, ref.log_at),
        (step.log_b, ref.log_bt),
        (step.log_c, ref.log_ct),
    ]:
        _close(mine, theirs.numpy())


@pytest.mark.parametrize("t", [0, 1, 37, 98, 99])
def test_transition_rows_and_posterior_match_diffusers(pair, t):
    ref, ours = pair
    x_t, log_p = _inputs(t)
    log_onehot = vq.index_to_log_onehot(x_t, K + 1)
    tb = jnp.full((x_t.shape[0],), t)
    xj, log_pj = jnp.asarray(x_t.numpy()), jnp.asarray(log_p.numpy().transpose(0, 2, 1))
    _close(
        _bkn(S.log_q_xt_given_x0(xj, S.cumulative(ours, tb), K)),
        ref.log_Q_t_transitioning_to_known_class(t=t, x_t=x_t, log_onehot_x_t=log_onehot, cumulative=True),
    )
    _close(
        _bkn(S.log_q_xt_given_xprev(xj, S.one_step(ours, tb), K)),
        ref.log_Q_t_transitioning_to_known_class(t=t, x_t=x_t, log_onehot_x_t=log_onehot, cumulative=False),
    )
    _close(
        _bkn(S.apply_cumulative(log_pj, S.cumulative(ours, tb))), ref.apply_cumulative_transitions(log_p, t)
    )
    _close(_bkn(S.q_posterior(ours, log_pj, xj, tb)), ref.q_posterior(log_p, x_t, t))


@pytest.mark.parametrize("t", [0, 5, 99])
def test_step_log_probs_match_diffusers(pair, t, monkeypatch):
    """diffusers' step() before its Gumbel draw: the posterior (t > 0) or the x0 prediction itself (t = 0)."""
    ref, ours = pair
    seen = {}

    def capture(logits, generator):
        seen["log_probs"] = logits.clone()
        return logits

    monkeypatch.setattr(vq, "gumbel_noised", capture)
    x_t, log_p = _inputs(100 + t)
    ref.set_timesteps(T)
    prev = ref.step(log_p, torch.tensor(t), x_t).prev_sample.numpy()
    ours_lp = _bkn(
        S.q_posterior(
            ours,
            jnp.asarray(log_p.numpy().transpose(0, 2, 1)),
            jnp.asarray(x_t.numpy()),
            jnp.full((x_t.shape[0],), t),
        )
    )
    theirs = seen["log_probs"].numpy()
    if t == 0:
        assert theirs.shape[1] == K  # diffusers hands back the x0 prediction; ours adds a -inf [MASK] row
        assert np.all(ours_lp[:, K] == -np.inf)
        ours_lp = ours_lp[:, :K]
    _close(ours_lp, theirs)
    np.testing.assert_array_equal(ours_lp.argmax(1), prev)


def test_absorbing_tables_and_posterior_are_mask_only():
    sched = S.make_schedule(K, T, kind="absorbing")
    np.testing.assert_allclose(sched.cum_alpha[:-1], 1 - sched.cum_gamma[:-1], rtol=0, atol=1e-15)
    assert np.all(sched.beta == 0) and np.all(sched.cum_beta == 0)
    rng = np.random.default_rng(3)
    x_t = jnp.asarray(rng.integers(0, K + 1, size=(2, 30)))
    log_p = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(2, 30, K)), jnp.float32))
    post = np.exp(np.asarray(S.q_posterior(sched, log_p, x_t, jnp.array([10, 60]))))
    np.testing.assert_allclose(post.sum(-1), 1.0, atol=1e-5)
    unmasked = np.asarray(x_t) != K
    np.testing.assert_allclose(post[unmasked, np.asarray(x_t)[unmasked]], 1.0, atol=1e-6)  # stays
    # A masked token stays masked with probability γ̄_{t-1}/γ̄_t and is revealed as code j with the rest ∝ p(j).
    t = np.array([10, 60])
    stay = sched.cum_gamma[t - 1] / sched.cum_gamma[t]
    masked_b = np.nonzero(~unmasked)
    np.testing.assert_allclose(post[..., K][masked_b], stay[masked_b[0]], rtol=1e-4)
    reveal = post[..., :K][masked_b] / (1 - stay[masked_b[0]])[:, None]
    np.testing.assert_allclose(reveal, np.exp(np.asarray(log_p))[masked_b], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("kind", S.KINDS)
def test_posterior_is_normalised_and_jit_equals_eager(kind):
    sched = S.make_schedule(11, 20, kind=kind)
    rng = np.random.default_rng(4)
    x_t = jnp.asarray(rng.integers(0, 12, size=(4, 3, 5)))
    log_p = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(4, 3, 5, 11)), jnp.float32))
    t_b = jnp.array([0, 1, 10, 19])
    eager = S.q_posterior(sched, log_p, x_t, t_b)
    jitted = jax.jit(S.q_posterior, static_argnums=0)(sched, log_p, x_t, t_b)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), atol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.nn.logsumexp(eager, axis=-1)), 0.0, atol=1e-5)


@pytest.mark.parametrize("kind", S.KINDS)
def test_skip_transitions_compose(kind):
    """Q̄_s · Q_{s→t} = Q̄_t: applying the skip transition to q(z_s | z_0) gives q(z_t | z_0)."""
    sched = S.make_schedule(9, 50, kind=kind, gamma_cum_end=0.9)
    x0 = jnp.asarray(np.arange(9))
    for s, t in [(-1, 0), (-1, 30), (4, 5), (10, 37), (0, 49)]:
        at_s = S.forward_log_probs(S.log_onehot(x0, 10), sched.log_cumulative_at(s))
        at_t = S.forward_log_probs(at_s, sched.log_between(s, t))
        direct = S.forward_log_probs(S.log_onehot(x0, 10), sched.log_cumulative_at(t))
        np.testing.assert_allclose(np.exp(np.asarray(at_t)), np.exp(np.asarray(direct)), atol=2e-6)
    # One-step skips equal the one-step tables.
    steps = np.arange(50)
    between = sched.log_between(steps - 1, steps)
    for mine, table in zip(between, sched.log_step_table(), strict=True):
        np.testing.assert_allclose(np.asarray(mine), np.asarray(table), rtol=1e-6)


@pytest.mark.parametrize("kind", S.KINDS)
def test_q_sample_marginals_match_cumulative_and_step_chain(kind):
    """Statistical: q_sample frequencies and a chain of one-step draws both follow q(z_t | z_0)."""
    codes, steps = 6, 10
    sched = S.make_schedule(codes, steps, kind=kind, gamma_cum_end=0.6, alpha_cum_end=0.3)
    n = 20000
    x0 = jnp.full((n,), 2, jnp.int32)
    t = 6
    expected = np.exp(
        np.asarray(S.forward_log_probs(S.log_onehot(jnp.array([2]), codes + 1), sched.log_cumulative_at(t)))
    )[0]
    direct = S.q_sample(jax.random.key(0), sched, x0, jnp.full((n,), t))
    chain = x0
    for i, key in enumerate(jax.random.split(jax.random.key(1), t + 1)):
        chain = S.q_step_sample(key, sched, chain, jnp.full((n,), i))
    for draws in (direct, chain):
        freq = np.bincount(np.asarray(draws), minlength=codes + 1) / n
        np.testing.assert_allclose(freq, expected, atol=4 * np.sqrt(0.25 / n) + 1e-4)


def test_absorbing_masks_fraction_gamma_bar():
    sched = S.make_schedule(50, 100, kind="absorbing")
    x0 = jax.random.randint(jax.random.key(0), (8, 4096), 0, 50)
    t_b = jnp.array([0, 10, 25, 50, 75, 90, 98, 99])
    z = np.asarray(S.q_sample(jax.random.key(1), sched, x0, t_b))
    masked = (z == 50).mean(axis=1)
    np.testing.assert_allclose(masked, sched.cum_gamma[np.asarray(t_b)], atol=4 * np.sqrt(0.25 / 4096))
    assert np.all((z == 50) | (z == np.asarray(x0)))  # nothing replaced


def test_bad_schedule_arguments_name_the_key():
    with pytest.raises(ValueError, match="diffusion.kind"):
        S.make_schedule(10, kind="uniform")
    with pytest.raises(ValueError, match="alpha_cum"):
        S.make_schedule(10, alpha_cum_start=0.9, gamma_cum_start=0.5)


def _dense_matrices(sched):
    """Float64 (K+1)x(K+1) one-step and cumulative matrices (row = from, column = to), independent of the
    log-space code: Q_t = α I + β J on the codes, γ to [MASK], [MASK] absorbing."""
    k = sched.num_codes
    step = []
    for a, b, c in zip(sched.alpha, sched.beta, sched.gamma, strict=True):
        q = np.zeros((k + 1, k + 1))
        q[:k, :k] = a * np.eye(k) + b
        q[:k, k] = c
        q[k, k] = 1.0
        step.append(q)
    cum = [step[0]]
    for q in step[1:]:
        cum.append(cum[-1] @ q)
    return step, cum


@pytest.mark.parametrize("kind", S.KINDS)
def test_posterior_equals_dense_bayes(kind):
    """p(z_{t-1} | z_t) = Σ_i Q_t[j, x_t] Q̄_{t-1}[i, j] / Q̄_t[i, x_t] · p(i), summed over the x0 that can
    reach x_t (p renormalised over them), computed with dense float64 matrices."""
    codes, steps = 5, 10
    sched = S.make_schedule(codes, steps, kind=kind, alpha_cum_end=0.1, gamma_cum_end=0.8)
    step, cum = _dense_matrices(sched)
    np.testing.assert_allclose([c[0, 0] for c in cum], sched.cum_alpha[:-1] + sched.cum_beta[:-1], rtol=1e-9)
    np.testing.assert_allclose([c[0, codes] for c in cum], sched.cum_gamma[:-1], rtol=1e-9)
    rng = np.random.default_rng(7)
    x_t = np.arange(codes + 1)  # every state once
    p = rng.dirichlet(np.ones(codes), size=x_t.shape[0])
    for t in range(steps):
        prev = np.eye(codes + 1) if t == 0 else cum[t - 1]
        expected = np.zeros((x_t.shape[0], codes + 1))
        for n, x in enumerate(x_t):
            possible = cum[t][:codes, x] > 0
            weights = p[n] * possible / np.sum(p[n] * possible)
            for i in np.nonzero(possible)[0]:
                expected[n] += weights[i] * step[t][:, x] * prev[i, :] / cum[t][i, x]
        ours = np.exp(
            np.asarray(
                S.q_posterior(
                    sched,
                    jnp.log(jnp.asarray(p, jnp.float32)),
                    jnp.asarray(x_t),
                    jnp.full((x_t.shape[0],), t),
                )
            )
        )
        np.testing.assert_allclose(ours, expected, atol=2e-5, err_msg=f"t={t}")
