"""Reverse sampler: an oracle denoiser is reproduced exactly, no [MASK] survives, CFG at s=0 / s=1."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from motionaura_jax.diffusion import sampler as SM
from motionaura_jax.diffusion import schedule as S

K, GRID, B, L, D = 7, (2, 3, 4), 3, 4, 5


def _text(seed=0):
    text = jax.random.normal(jax.random.key(seed), (B, L, D))
    mask = jnp.ones((B, L), bool).at[:, 2:].set(False)
    return text, mask, jnp.full((B,), 8.0)


def _oracle(target_bthw):
    """Always predicts the target, whatever it is shown (a denoiser with the real signature)."""

    def denoise(ids, t_b, fps_b, text_bld, text_mask_bl):
        assert ids.shape[1:] == target_bthw.shape[1:] and ids.shape[0] % target_bthw.shape[0] == 0
        reps = ids.shape[0] // target_bthw.shape[0]
        return jnp.tile(jnp.where(jax.nn.one_hot(target_bthw, K) > 0, 0.0, -1e4), (reps, 1, 1, 1, 1))

    return denoise


def _text_dependent(ids, t_b, fps_b, text_bld, text_mask_bl):
    """A deterministic toy denoiser whose logits depend on ids, t, fps and the (masked) text."""
    pooled = jnp.sum(text_bld * text_mask_bl[..., None], axis=1) / jnp.maximum(
        text_mask_bl.sum(1, keepdims=True), 1
    )
    k = jnp.arange(K, dtype=jnp.float32)
    logits = (
        jnp.sin(ids[..., None] * 0.7 + k)
        + 0.01 * t_b[:, None, None, None, None]
        + 0.001 * fps_b[:, None, None, None, None]
    )
    return logits + 2.0 * jnp.cos(pooled[:, None, None, None, :1] * k + pooled[:, None, None, None, 1:2])


@pytest.mark.parametrize("kind", S.KINDS)
@pytest.mark.parametrize("num_steps", [None, 7, 1])
def test_oracle_denoiser_gives_its_target_exactly(kind, num_steps):
    sched = S.make_schedule(K, 30, kind=kind)
    target = jax.random.randint(jax.random.key(1), (B, *GRID), 0, K, dtype=jnp.int32)
    text, mask, fps = _text()
    run = jax.jit(
        functools.partial(SM.sample_tokens, _oracle(target), sched, grid_thw=GRID, num_steps=num_steps)
    )
    ids = run(jax.random.key(2), text_bld=text, text_mask_bl=mask, fps_b=fps)
    assert ids.shape == (B, *GRID) and ids.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(ids), np.asarray(target))


@pytest.mark.parametrize("kind", ["mask_and_replace"])  # the absorbing path is covered by the oracle tests
def test_no_mask_left_and_cfg_limits(kind):
    sched = S.make_schedule(K, 20, kind=kind, gamma_cum_end=0.99999)
    text, mask, fps = _text(3)
    common = dict(grid_thw=GRID, fps_b=fps, num_steps=10)
    sample = jax.jit(
        functools.partial(SM.sample_tokens, _text_dependent, sched, **common),
        static_argnames=("guidance_scale",),
    )
    rng = jax.random.key(4)
    null_text, null_mask = text[::-1] * 0.3, mask[::-1]
    with_null = dict(null_text_bld=null_text, null_text_mask_bl=null_mask)
    cond = sample(rng, text_bld=text, text_mask_bl=mask)
    uncond = sample(rng, text_bld=null_text, text_mask_bl=null_mask)
    cfg0 = sample(rng, text_bld=text, text_mask_bl=mask, guidance_scale=0.0, **with_null)
    cfg1 = sample(rng, text_bld=text, text_mask_bl=mask, guidance_scale=1.0, **with_null)
    cfg3 = sample(rng, text_bld=text, text_mask_bl=mask, guidance_scale=3.0, **with_null)
    for ids in (cond, uncond, cfg0, cfg1, cfg3):
        ids = np.asarray(ids)
        assert ids.min() >= 0 and ids.max() < K  # no [MASK] left
    assert not np.array_equal(np.asarray(cond), np.asarray(uncond))  # the text matters to this denoiser
    np.testing.assert_array_equal(np.asarray(cfg0), np.asarray(uncond))
    np.testing.assert_array_equal(np.asarray(cfg1), np.asarray(cond))
    assert not np.array_equal(np.asarray(cfg3), np.asarray(cond))
    batches = []  # scale 1 is the conditional model: one pass of the batch, not two

    def recording(ids, *args):
        batches.append(ids.shape[0])
        return _text_dependent(ids, *args)

    SM.sample_tokens(recording, sched, rng, text_bld=text, text_mask_bl=mask, guidance_scale=1.0, **common)
    assert batches and set(batches) == {text.shape[0]}


def test_guided_log_probs_formula():
    rng = np.random.default_rng(0)
    cond, uncond = (jnp.asarray(rng.normal(size=(4, K)), jnp.float32) for _ in range(2))
    s, temp = 2.5, 0.7
    got = np.asarray(SM.guided_log_probs(cond, uncond, s, temp))
    lc, lu = (np.asarray(jax.nn.log_softmax(x / temp)) for x in (cond, uncond))
    mixed = lu + s * (lc - lu)
    expected = mixed - np.log(np.exp(mixed).sum(-1, keepdims=True))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_absorbing_sampler_marginal_equals_a_fixed_prediction():
    """With mask-only corruption, a masked token's x0-posterior is the prediction itself, so a denoiser that
    always predicts p gives samples distributed as p (any number of steps)."""
    sched = S.make_schedule(K, 50, kind="absorbing")
    p = np.array([0.4, 0.25, 0.15, 0.1, 0.05, 0.04, 0.01])
    grid = (4, 16, 16)

    def fixed(ids, t_b, fps_b, text_bld, text_mask_bl):
        return jnp.broadcast_to(jnp.log(jnp.asarray(p, jnp.float32)), ids.shape + (K,))

    text, mask, fps = _text()
    for steps in (50, 6):
        ids = SM.sample_tokens(
            fixed,
            sched,
            jax.random.key(steps),
            grid_thw=grid,
            text_bld=text,
            text_mask_bl=mask,
            fps_b=fps,
            num_steps=steps,
        )
        freq = np.bincount(np.asarray(ids).ravel(), minlength=K + 1) / ids.size
        assert freq[K] == 0
        np.testing.assert_allclose(freq[:K], p, atol=4 * np.sqrt(0.25 / ids.size))


def test_sampling_timesteps():
    full = SM.sampling_timesteps(100)
    np.testing.assert_array_equal(full, np.arange(99, -1, -1))
    few = SM.sampling_timesteps(100, 10)
    assert len(few) == 10 and few[0] == 99 and few[-1] == 0 and np.all(np.diff(few) < 0)
    np.testing.assert_array_equal(SM.sampling_timesteps(100, 1), [99])
    with pytest.raises(ValueError, match="sampling steps"):
        SM.sampling_timesteps(100, 101)


# ----------------------------------------------------------------------------------------------------------
# Confidence-ordered (MaskGIT) decoding.


@pytest.mark.parametrize("curve", SM.MASK_CURVES)
@pytest.mark.parametrize("num_steps", [None, 7, 1])
@pytest.mark.parametrize("guidance", [None, 3.0])
def test_confidence_sampler_oracle_gives_its_target(curve, num_steps, guidance):
    sched = S.make_schedule(K, 30, kind="absorbing")
    target = jax.random.randint(jax.random.key(1), (B, *GRID), 0, K, dtype=jnp.int32)
    text, mask, fps = _text()
    run = jax.jit(
        functools.partial(
            SM.sample,
            "confidence",
            _oracle(target),
            sched,
            grid_thw=GRID,
            num_steps=num_steps,
            mask_curve=curve,
            guidance_scale=guidance,
            temperature=0.7,
            temperature_end=0.2,
        )
    )
    ids = run(jax.random.key(2), text_bld=text, text_mask_bl=mask, fps_b=fps)
    assert ids.shape == (B, *GRID) and ids.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(ids), np.asarray(target))


@pytest.mark.parametrize("curve", SM.MASK_CURVES)
def test_confidence_sampler_masked_count_follows_the_curve(curve):
    sched = S.make_schedule(K, 30, kind="absorbing")
    n, num_tokens = 6, int(np.prod(GRID))
    seen_masked, seen_t = [], []

    def record(ids, t_b):
        seen_masked.append(np.asarray((ids == K).sum(axis=(1, 2, 3))))
        seen_t.append(np.asarray(t_b))

    def denoise(ids, t_b, fps_b, text_bld, text_mask_bl):
        jax.debug.callback(record, ids, t_b, ordered=True)
        return _text_dependent(jnp.minimum(ids, K - 1), t_b, fps_b, text_bld, text_mask_bl)

    text, mask, fps = _text()
    ids = jax.jit(
        functools.partial(
            SM.sample_tokens_confidence, denoise, sched, grid_thw=GRID, num_steps=n, mask_curve=curve
        )
    )(jax.random.key(3), text_bld=text, text_mask_bl=mask, fps_b=fps)
    jax.effects_barrier()
    counts = SM.masked_counts(num_tokens, n, curve, sched)
    assert counts[-1] == 0 and counts[0] < num_tokens and np.all(np.diff(counts) <= 0)
    # The denoiser sees all-[MASK] first, then exactly the curve's count after each step, every example.
    expected_before = np.concatenate([[num_tokens], counts[:-1]])
    np.testing.assert_array_equal(np.stack(seen_masked), np.repeat(expected_before[:, None], B, axis=1))
    assert np.asarray(ids).max() < K  # none left after the last step
    # It is shown the timestep whose γ̄ matches the masked fraction: all-[MASK] is the last timestep.
    assert seen_t[0][0] == 29 and np.all(np.diff(np.stack(seen_t)[:, 0]) <= 0)


def test_masked_counts_curves():
    np.testing.assert_array_equal(SM.masked_counts(100, 4, "linear"), [75, 50, 25, 0])
    np.testing.assert_array_equal(SM.masked_counts(100, 4, "cosine"), [92, 70, 38, 0])
    np.testing.assert_array_equal(SM.masked_counts(80, 1, "cosine"), [0])
    sched = S.make_schedule(K, 10, kind="absorbing")
    expected = np.floor(1000 * np.append(sched.cum_gamma[8::-1], 0.0) + 1e-9).astype(int)
    np.testing.assert_array_equal(SM.masked_counts(1000, 10, "diffusion", sched), expected)
    with pytest.raises(ValueError, match="mask_curve"):
        SM.masked_counts(10, 3, "square")


def test_confidence_sampler_refuses_mask_and_replace_and_unknown_method():
    sched = S.make_schedule(K, 10, kind="mask_and_replace")
    text, mask, fps = _text()
    common = dict(grid_thw=GRID, text_bld=text, text_mask_bl=mask, fps_b=fps)
    with pytest.raises(ValueError, match="absorbing"):
        SM.sample("confidence", _text_dependent, sched, jax.random.key(0), **common)
    with pytest.raises(ValueError, match="method"):
        SM.sample("greedy", _text_dependent, sched, jax.random.key(0), **common)


def test_step_temperatures():
    np.testing.assert_allclose(SM.step_temperatures(3, 1.0), [1, 1, 1])
    np.testing.assert_allclose(SM.step_temperatures(3, 1.0, 0.2), [1.0, 0.6, 0.2], rtol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        SM.step_temperatures(3, 0.0)


def _consensus(ids, t_b, fps_b, text_bld, text_mask_bl):
    """Predicts, at every position, the codes in proportion to how often they are already revealed in that
    example: a denoiser whose samples are coherent only if each code is drawn given the others."""
    revealed_bk = jax.nn.one_hot(ids, K + 1)[..., :K].sum(axis=(1, 2, 3))
    share_bk = revealed_bk / jnp.maximum(revealed_bk.sum(-1, keepdims=True), 1.0)
    return jnp.broadcast_to(20.0 * share_bk[:, None, None, None, :], (*ids.shape, K))


def test_confidence_refinement_redraws_a_fixed_share_given_the_rest():
    sched = S.make_schedule(K, 30, kind="absorbing")
    num_tokens, fraction = int(np.prod(GRID)), 0.25
    seen_masked = []

    def denoise(ids, t_b, fps_b, text_bld, text_mask_bl):
        jax.debug.callback(lambda m: seen_masked.append(np.asarray(m)), (ids == K).sum(axis=(1, 2, 3)))
        return _consensus(ids, t_b, fps_b, text_bld, text_mask_bl)

    text, mask, fps = _text()

    def run(refine_steps):
        seen_masked.clear()
        ids = jax.jit(
            functools.partial(
                SM.sample,
                "confidence",
                denoise,
                sched,
                grid_thw=GRID,
                num_steps=4,
                choice_temperature=0.0,
                refine_steps=refine_steps,
                refine_fraction=fraction,
            )  # fmt: skip
        )(jax.random.key(5), text_bld=text, text_mask_bl=mask, fps_b=fps)
        jax.effects_barrier()
        return np.asarray(ids), np.stack(seen_masked)

    def consensus_share(ids):
        flat = ids.reshape(B, -1)
        return np.array([np.bincount(row, minlength=K).max() / num_tokens for row in flat])

    plain, masked_plain = run(0)
    refined, masked_refined = run(40)
    assert len(masked_plain) == 4 and len(masked_refined) == 4 + 40
    # Each round masks exactly round(fraction x tokens) positions of every example, redrawn given the rest.
    np.testing.assert_array_equal(masked_refined[4:], round(fraction * num_tokens))
    assert refined.max() < K
    # Positions revealed together were drawn independently: the plain decode mixes codes; the rounds settle it.
    assert consensus_share(plain).min() < 1.0
    np.testing.assert_array_equal(consensus_share(refined), 1.0)


def test_confidence_refinement_keeps_an_oracle_target_and_is_dropped_for_the_posterior_chain():
    sched = S.make_schedule(K, 30, kind="absorbing")
    target = jax.random.randint(jax.random.key(1), (B, *GRID), 0, K, dtype=jnp.int32)
    text, mask, fps = _text()
    for method in SM.METHODS:
        ids = SM.sample(
            method, _oracle(target), sched, jax.random.key(2), grid_thw=GRID, text_bld=text, text_mask_bl=mask,
            fps_b=fps, num_steps=5, guidance_scale=2.0, refine_steps=3, refine_fraction=0.5,
        )  # fmt: skip
        np.testing.assert_array_equal(np.asarray(ids), np.asarray(target))
    with pytest.raises(ValueError, match="refine_fraction"):
        SM.sample(
            "confidence", _oracle(target), sched, jax.random.key(2), grid_thw=GRID, text_bld=text,
            text_mask_bl=mask, fps_b=fps, refine_steps=2, refine_fraction=1.0,
        )  # fmt: skip


def test_confidence_sampler_from_init_ids_draws_only_the_masked_positions():
    """Inpainting: known positions stay as given, each example's [MASK] positions follow the curve scaled to
    their number, and refinement rounds redraw only them."""
    sched = S.make_schedule(K, 30, kind="absorbing")
    num_tokens, n = int(np.prod(GRID)), 4
    target = jax.random.randint(jax.random.key(1), (B, *GRID), 0, K, dtype=jnp.int32)
    known = (target + 1) % K  # never what the oracle predicts
    drawable = np.zeros((B, num_tokens), bool)
    drawable[0, :] = True  # everything
    drawable[1, 3:13] = True  # 10 positions
    drawable[2, 5] = True  # one position
    drawable = drawable.reshape(B, *GRID)
    init = jnp.where(drawable, K, known)
    seen_masked = []

    def denoise(ids, t_b, fps_b, text_bld, text_mask_bl):
        jax.debug.callback(lambda m: seen_masked.append(np.asarray(m)), (ids == K).sum(axis=(1, 2, 3)))
        return _oracle(target)(ids, t_b, fps_b, text_bld, text_mask_bl)

    text, mask, fps = _text()
    ids = SM.sample(
        "confidence", denoise, sched, jax.random.key(2), grid_thw=GRID, text_bld=text, text_mask_bl=mask,
        fps_b=fps, num_steps=n, init_ids=init, refine_steps=3, refine_fraction=0.25,
    )  # fmt: skip
    jax.effects_barrier()
    ids = np.asarray(ids)
    np.testing.assert_array_equal(ids[drawable], np.asarray(target)[drawable])
    np.testing.assert_array_equal(ids[~drawable], np.asarray(known)[~drawable])
    seen = np.stack(seen_masked)
    counts = SM.masked_counts(num_tokens, n, "cosine", sched)
    per_example = np.array([num_tokens, 10, 1])
    expected = per_example[None] * np.concatenate([[num_tokens], counts[:-1]])[:, None] // num_tokens
    np.testing.assert_array_equal(seen[:n], expected)
    np.testing.assert_array_equal(seen[n:], np.tile([round(0.25 * num_tokens), 2, 1], (3, 1)))
    # Without init_ids the chain is the all-[MASK] one, bit for bit.
    plain = functools.partial(
        SM.sample, "confidence", _text_dependent, sched, jax.random.key(4), grid_thw=GRID, text_bld=text,
        text_mask_bl=mask, fps_b=fps, num_steps=n, refine_steps=2,
    )  # fmt: skip
    np.testing.assert_array_equal(
        np.asarray(plain()), np.asarray(plain(init_ids=jnp.full((B, *GRID), K, jnp.int32)))
    )


def test_refine_guidance_sets_the_refinement_rounds_guidance_alone():
    sched = S.make_schedule(K, 30, kind="absorbing")
    text, mask, fps = _text()
    batches = []

    def denoise(ids, t_b, fps_b, text_bld, text_mask_bl):
        jax.debug.callback(lambda n: batches.append(int(n)), jnp.int32(ids.shape[0]))
        # Conditional: code 0 a little ahead of code 1; unconditional (the null text has one valid key): code 0
        # far ahead. Guidance at 2 turns that into code 1; the conditional model alone draws code 0.
        conditional = (text_mask_bl.sum(-1) > 1)[:, None, None, None, None]
        logits = jnp.where(conditional, jnp.array([1.0, 0.8]), jnp.array([2.0, 0.0]))
        return jnp.broadcast_to(
            jnp.pad(logits, [(0, 0)] * 4 + [(0, K - 2)], constant_values=-1e4), (*ids.shape, K)
        )

    def run(refine_guidance):
        batches.clear()
        ids = SM.sample(
            "confidence", denoise, sched, jax.random.key(3), grid_thw=GRID, text_bld=text, text_mask_bl=mask,
            fps_b=fps, num_steps=3, guidance_scale=2.0, temperature=0.05, refine_steps=2, refine_fraction=0.2,
            refine_guidance=refine_guidance,
        )  # fmt: skip
        jax.effects_barrier()
        return np.asarray(ids).reshape(B, -1), list(batches)

    guided, passes = run(None)
    np.testing.assert_array_equal(guided, 1)
    assert passes == [2 * B] * 5
    np.testing.assert_array_equal(run(2.0)[0], guided)  # the decoding's scale, stated or not: the same
    conditional, passes = run(1.0)
    assert passes == [2 * B] * 3 + [B] * 2  # guided decoding, then one conditional pass per round
    redrawn = round(0.2 * int(np.prod(GRID)))
    # Exactly the positions the two rounds redrew (some perhaps twice) turned to code 0, none other.
    assert set(np.unique(conditional)) == {0, 1}
    assert all(redrawn <= n <= 2 * redrawn for n in (conditional == 0).sum(-1))
