"""The reverse chain step by step, not just its end: with a fixed logits function, every intermediate step of
`sample_tokens` follows diffusers' `VQDiffusionScheduler.step` (full chain) or a dense float64 Bayes posterior
computed here in numpy (skip steps), and the tokens it actually draws follow that law within sampling error.

Why: the oracle tests only see the final ids, and the last step samples straight from the x0 prediction, so
a sampler that skipped the posterior (drew every step from p(z_0 | z_t)) would still pass them.
"""

import diffusers.schedulers.scheduling_vq_diffusion as vq  # test dependency (requirements-test.txt)
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from motionaura_jax.diffusion import sampler as SM
from motionaura_jax.diffusion import schedule as S
from motionaura_jax.diffusion.schedule import LogTransition

K = 6
GRID = (4, 16, 16)  # 1024 tokens per example
B = 4  # 4096 tokens: the per-step frequency bound below is ~0.04


def _fixed_logits_fn():
    """A deterministic denoiser: logits depend on the position, the current ids and t (not on the text)."""
    table = jnp.asarray(np.random.default_rng(0).normal(size=(B, *GRID, K)) * 1.5, jnp.float32)
    k = jnp.arange(K, dtype=jnp.float32)

    def denoise(ids, t_b, fps_b, text_bld, text_mask_bl):
        wave = jnp.sin(
            0.9 * ids[..., None].astype(jnp.float32) * (k + 1) + 0.07 * t_b[:, None, None, None, None]
        )
        return table + 1.5 * wave

    return denoise


def _run_chain(schedule, num_steps, seed=0):
    """Runs the real `sample_tokens` eagerly, recording the ids each step is given; returns the chain
    [z_{t_0}, z_{t_1}, ..., z_{t_{n-1}}, z_{-1}] as numpy arrays and the denoiser used."""
    denoise = _fixed_logits_fn()
    seen = []

    def recording(ids, t_b, fps_b, text_bld, text_mask_bl):
        seen.append((np.asarray(ids), np.asarray(t_b)))
        return denoise(ids, t_b, fps_b, text_bld, text_mask_bl)

    text = jnp.zeros((B, 3, 4))
    with jax.disable_jit():  # the fori_loop runs as a Python loop, so each step's input is visible
        out = SM.sample_tokens(
            recording,
            schedule,
            jax.random.key(seed),
            grid_thw=GRID,
            text_bld=text,
            text_mask_bl=jnp.ones((B, 3), bool),
            fps_b=jnp.full((B,), 8.0),
            num_steps=num_steps,
        )
    timesteps = SM.sampling_timesteps(schedule.num_timesteps, num_steps)
    assert len(seen) == len(timesteps)
    for (_, t_b), t in zip(seen, timesteps, strict=True):
        assert np.all(t_b == t)
    return [ids for ids, _ in seen] + [np.asarray(out)], denoise


def _log_p_x0(denoise, ids, t):
    logits = denoise(jnp.asarray(ids), jnp.full((B,), t, jnp.int32), None, None, None)
    return SM.guided_log_probs(logits, None, None)


def _our_step(schedule, num_steps, i, log_p_x0, ids):
    timesteps, cum_t, cum_s, step = SM.step_transitions(schedule, num_steps)
    pick = lambda tr: LogTransition(*(field[i] for field in tr))  # noqa: E731
    return np.asarray(
        SM.reverse_step_log_probs(
            log_p_x0,
            jnp.asarray(ids),
            cum_t=pick(cum_t),
            cum_s=pick(cum_s),
            step=pick(step),
            absorbing=schedule.absorbing,
            is_last=i == len(timesteps) - 1,
        )
    )


def _assert_draws_follow(drawn, probs_nk, what):
    """The drawn states' frequencies equal the mean per-token law, within 5 standard errors."""
    n = drawn.size
    freq = np.bincount(drawn.ravel(), minlength=K + 1) / n
    expected = probs_nk.reshape(-1, K + 1).mean(0)
    bound = 5 * np.sqrt(0.25 / n) + 1e-6
    assert np.all(np.abs(freq - expected) <= bound), (
        f"{what}: drawn {freq.round(4)} vs law {expected.round(4)}"
    )


def test_every_step_equals_diffusers_vq_step(monkeypatch):
    """Full chain (num_steps = T), mask-and-replace: each step's law = diffusers' step() before its Gumbel draw."""
    T = 40
    kwargs = dict(
        alpha_cum_start=0.99999, alpha_cum_end=0.000009, gamma_cum_start=0.000009, gamma_cum_end=0.99999
    )
    ours = S.make_schedule(K, T, kind="mask_and_replace", **kwargs)
    ref = vq.VQDiffusionScheduler(num_vec_classes=K + 1, num_train_timesteps=T, **kwargs)
    ref.set_timesteps(T)
    captured = {}

    def capture(logits, generator):
        captured["log_probs"] = logits.clone()
        return logits

    monkeypatch.setattr(vq, "gumbel_noised", capture)
    chain, denoise = _run_chain(ours, None)
    timesteps = SM.sampling_timesteps(T)
    masked_seen = []
    for i, t in enumerate(timesteps):
        ids, drawn = chain[i], chain[i + 1]
        log_p = _log_p_x0(denoise, ids, int(t))
        mine = _our_step(ours, None, i, log_p, ids).reshape(B, -1, K + 1)
        x_t = torch.tensor(ids.reshape(B, -1).astype(np.int64))
        model_output = torch.tensor(np.asarray(log_p).reshape(B, -1, K).transpose(0, 2, 1).copy())
        ref.step(model_output, torch.tensor(int(t)), x_t)
        theirs = captured["log_probs"].numpy().transpose(0, 2, 1)  # (B, N, K + 1), or K at t = 0
        if t == 0:
            assert theirs.shape[-1] == K and np.all(mine[..., K] == -np.inf)
            mine = mine[..., :K]
        np.testing.assert_allclose(np.exp(mine), np.exp(theirs), atol=2e-5, err_msg=f"step {i} (t={t})")
        probs = np.exp(theirs)
        if t == 0:
            probs = np.concatenate([probs, np.zeros_like(probs[..., :1])], -1)
        _assert_draws_follow(drawn, probs, f"step {i} (t={t})")
        masked_seen.append((drawn == K).mean())
    # The chain unmasks gradually (a sampler drawing from the x0 prediction unmasks everything at once).
    assert masked_seen[0] > 0.9 and masked_seen[len(masked_seen) // 2] > 0.2 and masked_seen[-1] == 0


def _dense(schedule):
    """Float64 one-step matrices Q_t (row = from, column = to) over K + 1 states, built from α, β, γ alone."""
    k = schedule.num_codes
    steps = []
    for a, b, c in zip(schedule.alpha, schedule.beta, schedule.gamma, strict=True):
        q = np.zeros((k + 1, k + 1))
        q[:k, :k] = a * np.eye(k) + b
        q[:k, k] = c
        q[k, k] = 1.0
        steps.append(q)
    return steps


def _dense_bayes(steps, s, t, p_nk, x_n):
    """p(z_s | z_t = x) = Σ_x0 q(z_s | z_t = x, z_0 = x0) p(x0 | z_t), with q(z_s | z_t, x0) =
    Q_{s→t}[z_s, x] Q̄_s[x0, z_s] / Q̄_t[x0, x], p renormalised over the x0 that can reach x. Shapes (N, K+1)."""
    k1 = steps[0].shape[0]
    bar_s = np.eye(k1)
    for q in steps[: s + 1]:
        bar_s = bar_s @ q
    skip = np.eye(k1)
    for q in steps[s + 1 : t + 1]:
        skip = skip @ q
    bar_t = bar_s @ skip
    k = k1 - 1
    reach = bar_t[:k, x_n].T  # (N, K): Q̄_t[x0, x_n]
    weights = p_nk * (reach > 0)
    weights /= weights.sum(-1, keepdims=True)
    ratio = np.where(reach > 0, weights / np.where(reach > 0, reach, 1.0), 0.0)  # (N, K)
    return skip[:, x_n].T * (ratio @ bar_s[:k])  # (N, K + 1)


@pytest.mark.parametrize("kind", S.KINDS)
@pytest.mark.parametrize("num_steps", [50, 7])
def test_skip_steps_equal_dense_bayes(kind, num_steps):
    """num_steps < T (the default 50 of 100): each step's law = the dense float64 Bayes posterior of the skip."""
    T = 100
    sched = S.make_schedule(K, T, kind=kind)
    steps = _dense(sched)
    chain, denoise = _run_chain(sched, num_steps, seed=num_steps)
    timesteps = SM.sampling_timesteps(T, num_steps)
    previous = np.concatenate([timesteps[1:], [-1]])
    for i, (t, s) in enumerate(zip(timesteps, previous, strict=True)):
        ids, drawn = chain[i], chain[i + 1]
        log_p = _log_p_x0(denoise, ids, int(t))
        mine = np.exp(_our_step(sched, num_steps, i, log_p, ids)).reshape(-1, K + 1)
        p64 = np.exp(np.asarray(log_p, np.float64)).reshape(-1, K)
        expected = _dense_bayes(steps, int(s), int(t), p64 / p64.sum(-1, keepdims=True), ids.ravel())
        np.testing.assert_allclose(mine, expected, atol=5e-5, err_msg=f"step {i}: t={t} -> s={s}")
        _assert_draws_follow(drawn, expected, f"step {i}: t={t} -> s={s}")


@pytest.mark.parametrize("num_steps", [100, 20])
def test_absorbing_masked_fraction_follows_the_schedule(num_steps):
    """Absorbing: a masked token stays masked with γ̄_s / γ̄_t whatever the network says, so after the step
    landing on s the masked fraction is γ̄_s / γ̄_{T-1} (binomial over the tokens)."""
    T = 100
    sched = S.make_schedule(K, T, kind="absorbing")
    chain, _ = _run_chain(sched, num_steps, seed=1)
    timesteps = SM.sampling_timesteps(T, num_steps)
    previous = np.concatenate([timesteps[1:], [-1]])
    n = chain[0].size
    assert np.all(chain[0] == K)
    for i, s in enumerate(previous):
        masked = (chain[i + 1] == K).mean()
        expected = 0.0 if s < 0 else sched.cum_gamma[s] / sched.cum_gamma[T - 1]
        bound = 5 * np.sqrt(expected * (1 - expected) / n) + 1e-9
        assert abs(masked - expected) <= bound, (
            f"after step {i} (s={s}): masked {masked:.4f}, schedule {expected:.4f}"
        )
        # Revealed tokens never change again.
        kept = chain[i] != K
        np.testing.assert_array_equal(chain[i + 1][kept], chain[i][kept])
