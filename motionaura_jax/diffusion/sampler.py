"""Reverse process: all-[MASK] token grid → code ids, with step skipping and classifier-free guidance.

One jittable `lax.fori_loop` over a small state (MaskGIT's parallel_decode style). The sampling schedule is a
descending list of timestep indices t_0 > t_1 > ... > t_{n-1} (t_0 = T - 1, t_{n-1} = 0 unless fewer steps are
asked); step i draws z_{t_{i+1}} ~ Σ_z0 q(z_{t_{i+1}} | z_{t_i}, z_0) p̃(z_0 | z_{t_i}) with the exact skip
transition t_{i+1} → t_i (`DiscreteSchedule.log_between`), and the last step draws the clean ids (z_{-1}).
With n = T it is the full chain of VQ-Diffusion, step for step.
Guidance: log p = log p_u + s·(log p_c − log p_u), renormalised over the K codes (s = 0: unconditional,
s = 1: conditional), applied to p̃(z_0 | z_t) before the posterior; temperature divides the x0 logits.

Two methods (`sample(method, ...)`, config key sample.method):
  * "posterior" (`sample_tokens`): the exact reverse chain above;
  * "confidence" (`sample_tokens_confidence`, absorbing kind only): MaskGIT's confidence-ordered decoding.
    Step i predicts x0 for every position, draws a candidate code for each masked one (guided, at
    temperature), and keeps the most confident candidates so that exactly m_i positions stay masked, with
    m_i following `mask_curve` ("cosine": N·cos(π/2·(i+1)/n), MaskGIT's; "linear"; "diffusion": N·γ̄ at the
    posterior sampler's timesteps). Confidence = log p(candidate) + choice_temperature·(1 − (i+1)/n)·Gumbel
    (MaskGIT's annealed randomness of the choice). The denoiser is shown the timestep whose γ̄ is nearest to
    the masked fraction it gets.
Both take an optional temperature_end: the x0 temperature then goes linearly from `temperature` at the first
step to `temperature_end` at the last.

The denoiser is any `denoise_fn(ids_bthw, t_b, fps_b, text_bld, text_mask_bl) -> logits (B, T', H', W', K)`
(e.g. `lambda *a: SpectralDenoiser(cfg).apply({"params": params}, *a)`); ids in [0, K], K = [MASK].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from motionaura_jax.diffusion.losses import null_text
from motionaura_jax.diffusion.schedule import DiscreteSchedule, LogTransition, posterior_log_probs

DenoiseFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


@flax.struct.dataclass
class SamplerState:
    """Loop carry: which sampling step is next, the current ids (B, T', H', W') int32, and the key."""

    step: jax.Array
    ids: jax.Array
    rng: jax.Array


def sampling_timesteps(num_timesteps: int, num_steps: int | None = None) -> np.ndarray:
    """Descending timestep indices from T - 1 down to 0, evenly spaced, `num_steps` of them (default T)."""
    num_steps = num_timesteps if num_steps is None else int(num_steps)
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"sampling steps must be in [1, {num_timesteps}] (the training T), got {num_steps}")
    if num_steps == 1:
        return np.array([num_timesteps - 1], np.int64)
    steps = np.round(np.linspace(num_timesteps - 1, 0, num_steps)).astype(np.int64)
    return np.unique(steps)[::-1].copy()


def _transitions(
    schedule: DiscreteSchedule, timesteps: np.ndarray
) -> tuple[LogTransition, LogTransition, LogTransition, np.ndarray]:
    previous = np.concatenate([timesteps[1:], [-1]])
    cum_t = schedule.log_cumulative_at(timesteps)
    cum_s = schedule.log_cumulative_at(previous)
    step = schedule.log_between(previous, timesteps)
    return cum_t, cum_s, step, previous


def step_transitions(
    schedule: DiscreteSchedule, num_steps: int | None = None
) -> tuple[np.ndarray, LogTransition, LogTransition, LogTransition]:
    """The sampling timesteps and, per step i, the transitions the sampler uses: q(z_{t_i} | z_0),
    q(z_{t_{i+1}} | z_0) and the skip q(z_{t_{i+1}} -> z_{t_i}) (each field shaped (n,); t_n = -1, clean data)."""
    timesteps = sampling_timesteps(schedule.num_timesteps, num_steps)
    cum_t, cum_s, step, _ = _transitions(schedule, timesteps)
    return timesteps, cum_t, cum_s, step


def reverse_step_log_probs(
    log_p_x0: jax.Array,
    ids: jax.Array,
    *,
    cum_t: LogTransition,
    cum_s: LogTransition,
    step: LogTransition,
    absorbing: bool,
    is_last: jax.Array | bool,
) -> jax.Array:
    """One reverse step's log distribution (..., K + 1) of z_s given z_t = ids and log p̃(z_0 | z_t) (..., K).

    The exposed per-step law of `sample_tokens` (which draws from it with Gumbel-max), so that tests can check
    every intermediate step against diffusers and a dense Bayes posterior.
    """
    num_codes = log_p_x0.shape[-1]
    log_post = posterior_log_probs(log_p_x0, ids, cum_t=cum_t, cum_s=cum_s, step=step, absorbing=absorbing)
    # The last step lands on clean data: [MASK] is impossible (its log is already -inf; make it exact).
    mask_column = jnp.where(is_last, -jnp.inf, log_post[..., num_codes:])
    return jnp.concatenate([log_post[..., :num_codes], mask_column], axis=-1)


def step_temperatures(num_steps: int, temperature: float, temperature_end: float | None = None) -> np.ndarray:
    """(n,) float32 x0 temperatures per sampling step: constant, or linear from temperature to temperature_end."""
    end = temperature if temperature_end is None else temperature_end
    if temperature <= 0 or end <= 0:
        raise ValueError(f"temperatures must be > 0, got {temperature} and temperature_end={temperature_end}")
    if num_steps == 1:
        return np.array([temperature], np.float32)
    return np.linspace(temperature, end, num_steps).astype(np.float32)


def guided_log_probs(
    logits_cond: jax.Array,
    logits_uncond: jax.Array | None,
    guidance_scale: float | None,
    temperature: float = 1.0,
) -> jax.Array:
    """log p̃(z_0 | z_t) over K from conditional (and unconditional) logits, guidance and temperature."""
    log_cond = jax.nn.log_softmax(logits_cond.astype(jnp.float32) / temperature, axis=-1)
    if logits_uncond is None:
        return log_cond
    log_uncond = jax.nn.log_softmax(logits_uncond.astype(jnp.float32) / temperature, axis=-1)
    return jax.nn.log_softmax(log_uncond + guidance_scale * (log_cond - log_uncond), axis=-1)


def _x0_log_probs_fn(
    denoise_fn: DenoiseFn,
    text_bld: jax.Array,
    text_mask_bl: jax.Array,
    fps_b: jax.Array,
    guidance_scale: float | None,
    null_text_bld: jax.Array | None,
    null_text_mask_bl: jax.Array | None,
) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """(ids, t_b, temperature) -> guided log p̃(z_0 | z_t), (B, ..., K): one conditional pass, or with
    guidance_scale two passes batched as 2B (the null text defaults to `losses.null_text`). A scale of 1 is the
    conditional model exactly: one pass."""
    batch = text_bld.shape[0]
    fps_b = jnp.asarray(fps_b, jnp.float32)
    if guidance_scale is None or guidance_scale == 1.0:

        def conditional(ids, t_b, temperature):
            logits = denoise_fn(ids, t_b, fps_b, text_bld, text_mask_bl)
            return guided_log_probs(logits, None, None, temperature)

        return conditional
    if null_text_bld is None:
        null_text_bld, null_text_mask_bl = null_text(text_bld, text_mask_bl)
    text_2bld = jnp.concatenate([text_bld, null_text_bld.astype(text_bld.dtype)], axis=0)
    mask_2bl = jnp.concatenate([text_mask_bl.astype(bool), null_text_mask_bl.astype(bool)], axis=0)
    fps_2b = jnp.concatenate([fps_b, fps_b], axis=0)

    def guided(ids, t_b, temperature):
        logits = denoise_fn(
            jnp.concatenate([ids, ids], 0), jnp.concatenate([t_b, t_b], 0), fps_2b, text_2bld, mask_2bl
        )
        return guided_log_probs(logits[:batch], logits[batch:], guidance_scale, temperature)

    return guided


def sample_tokens(
    denoise_fn: DenoiseFn,
    schedule: DiscreteSchedule,
    rng: jax.Array,
    *,
    grid_thw: Sequence[int],
    text_bld: jax.Array,
    text_mask_bl: jax.Array,
    fps_b: jax.Array,
    num_steps: int | None = None,
    guidance_scale: float | None = None,
    temperature: float = 1.0,
    temperature_end: float | None = None,
    null_text_bld: jax.Array | None = None,
    null_text_mask_bl: jax.Array | None = None,
    init_ids: jax.Array | None = None,
) -> jax.Array:
    """Draws code ids (B, T', H', W') int32 in [0, K), no [MASK] left. Jittable (wrap in `jax.jit` with the
    function, schedule and numbers static, or call inside a jitted function).

    guidance_scale None: one conditional pass per step; otherwise two passes (batched as 2B) and the guided
    mix. The null text defaults to `losses.null_text` (zeros, first position valid). init_ids (optional)
    starts from a given z_{T-1} instead of all-[MASK] (with mask-and-replace, all-[MASK] is z_{T-1} up to
    ~1e-5).
    """
    batch = text_bld.shape[0]
    timesteps = sampling_timesteps(schedule.num_timesteps, num_steps)
    cum_t, cum_s, step_tr, _ = _transitions(schedule, timesteps)
    timesteps_j = jnp.asarray(timesteps, jnp.int32)
    num_codes, n = schedule.num_codes, len(timesteps)
    temps = jnp.asarray(step_temperatures(n, temperature, temperature_end))
    x0_log_probs = _x0_log_probs_fn(
        denoise_fn, text_bld, text_mask_bl, fps_b, guidance_scale, null_text_bld, null_text_mask_bl
    )

    def body(i: jax.Array, state: SamplerState) -> SamplerState:
        ids = state.ids
        t_b = jnp.full((batch,), timesteps_j[i], jnp.int32)
        log_p_x0 = x0_log_probs(ids, t_b, temps[i])
        pick = lambda tr: LogTransition(*(field[i] for field in tr))  # noqa: E731
        log_post = reverse_step_log_probs(
            log_p_x0,
            ids,
            cum_t=pick(cum_t),
            cum_s=pick(cum_s),
            step=pick(step_tr),
            absorbing=schedule.absorbing,
            is_last=i == n - 1,
        )
        rng, rng_step = jax.random.split(state.rng)
        drawn = jnp.argmax(log_post + jax.random.gumbel(rng_step, log_post.shape), axis=-1).astype(jnp.int32)
        if schedule.absorbing:
            drawn = jnp.where(ids == num_codes, drawn, ids)  # revealed tokens stay, exactly
        return SamplerState(step=state.step + 1, ids=drawn, rng=rng)

    shape = (batch, *tuple(int(g) for g in grid_thw))
    ids0 = jnp.full(shape, num_codes, jnp.int32) if init_ids is None else init_ids.astype(jnp.int32)
    state = SamplerState(step=jnp.zeros((), jnp.int32), ids=ids0, rng=rng)
    state = jax.lax.fori_loop(0, n, body, state)
    return state.ids


# ----------------------------------------------------------------------------------------------------------
# MaskGIT-style confidence-ordered decoding (absorbing kind).

MASK_CURVES = ("cosine", "linear", "diffusion")
METHODS = ("posterior", "confidence")
# Options of the confidence method only (config.sample keys of the same names).
CONFIDENCE_OPTIONS = (
    "mask_curve",
    "choice_temperature",
    "frame_order",
    "refine_steps",
    "refine_fraction",
    "refine_guidance",
)


def masked_counts(
    num_tokens: int, num_steps: int, curve: str = "cosine", schedule: DiscreteSchedule | None = None
) -> np.ndarray:
    """(n,) int: how many of `num_tokens` positions are still [MASK] after each of n steps (last: 0).

    Non-increasing, from below num_tokens (the first step reveals at least one position) down to 0.
    "cosine": ⌊N·cos(π/2·(i+1)/n)⌋ (MaskGIT); "linear": ⌊N·(1 − (i+1)/n)⌋; "diffusion": ⌊N·γ̄⌋ at the
    timesteps the posterior sampler would visit next (needs the schedule).
    """
    if num_steps < 1:
        raise ValueError(f"sampling steps must be >= 1, got {num_steps}")
    ratio = np.arange(1, num_steps + 1, dtype=np.float64) / num_steps
    if curve == "cosine":
        frac = np.cos(np.pi / 2 * ratio)
    elif curve == "linear":
        frac = 1.0 - ratio
    elif curve == "diffusion":
        if schedule is None:
            raise ValueError('mask_curve="diffusion" needs the schedule')
        timesteps = sampling_timesteps(schedule.num_timesteps, min(num_steps, schedule.num_timesteps))
        previous = np.concatenate([timesteps[1:], [-1]])
        frac = np.where(previous < 0, 0.0, schedule.cum_gamma[np.maximum(previous, 0)])
        if len(frac) < num_steps:  # more steps than T: pad with the final state
            frac = np.concatenate([frac, np.zeros(num_steps - len(frac))])
    else:
        raise ValueError(f"mask_curve {curve!r} is not one of {MASK_CURVES}")
    counts = np.floor(num_tokens * frac + 1e-9).astype(np.int64)
    counts = np.minimum(counts, num_tokens - 1)
    counts[-1] = 0
    return np.minimum.accumulate(np.clip(counts, 0, num_tokens))


def timesteps_for_masked(schedule: DiscreteSchedule, masked_fraction: np.ndarray) -> np.ndarray:
    """Timestep indices whose γ̄ is nearest to each masked fraction (what the denoiser was trained on)."""
    gamma = schedule.cum_gamma[: schedule.num_timesteps]
    return np.abs(gamma[None, :] - np.asarray(masked_fraction, np.float64)[:, None]).argmin(-1)


def sample_tokens_confidence(
    denoise_fn: DenoiseFn,
    schedule: DiscreteSchedule,
    rng: jax.Array,
    *,
    grid_thw: Sequence[int],
    text_bld: jax.Array,
    text_mask_bl: jax.Array,
    fps_b: jax.Array,
    num_steps: int | None = None,
    guidance_scale: float | None = None,
    temperature: float = 1.0,
    temperature_end: float | None = None,
    mask_curve: str = "cosine",
    choice_temperature: float = 4.5,
    frame_order: float = 0.0,
    refine_steps: int = 0,
    refine_fraction: float = 0.2,
    refine_guidance: float | None = None,
    null_text_bld: jax.Array | None = None,
    null_text_mask_bl: jax.Array | None = None,
    init_ids: jax.Array | None = None,
) -> jax.Array:
    """MaskGIT decoding from all-[MASK]: code ids (B, T', H', W') int32 in [0, K). Jittable like
    `sample_tokens`. num_steps defaults to min(T, number of tokens); choice_temperature = 0 keeps the
    plainly most probable candidates (no noise in the choice). `frame_order` > 0 lowers each position's
    choice score by frame_order x its latent frame index, so earlier frames are revealed first (large values:
    frame by frame, each later frame drawn given the earlier ones).

    `refine_steps` > 0 adds that many Gibbs-style rounds after decoding: each masks a fresh random
    `refine_fraction` of the positions and redraws them given all the others (at the last step's temperature).
    Parallel decoding draws the positions revealed in one step independently of each other, so neighbouring
    codes of an object can disagree (an outline that changes from code to code); a redrawn code sees its
    final neighbours. `refine_guidance` is the refinement rounds' guidance scale (None or 0: guidance_scale's;
    1: the conditional model alone, one pass).

    `init_ids` (B, T', H', W') starts from given ids instead: positions holding [MASK] (= K) are drawn, the others
    are known and kept to the end (inpainting). Each example's masked count follows the curve scaled to its own
    number of masked positions, the timesteps follow the masked share of those positions, and refinement
    redraws only them."""
    if not schedule.absorbing:
        raise ValueError(
            'the confidence sampler needs diffusion.kind="absorbing" (a mask-and-replace denoiser expects '
            'replaced tokens it would never see); use sample.method="posterior"'
        )
    grid = tuple(int(g) for g in grid_thw)
    batch, num_tokens = text_bld.shape[0], int(np.prod(grid))
    n = int(num_steps) if num_steps else min(schedule.num_timesteps, num_tokens)
    counts = masked_counts(num_tokens, n, mask_curve, schedule)
    before = np.concatenate([[num_tokens], counts[:-1]]) / num_tokens
    timesteps_j = jnp.asarray(timesteps_for_masked(schedule, before), jnp.int32)
    counts_j = jnp.asarray(counts, jnp.int32)
    temps = jnp.asarray(step_temperatures(n, temperature, temperature_end))
    noise_scale = jnp.asarray(choice_temperature * (1.0 - np.arange(1, n + 1) / n), jnp.float32)
    x0_log_probs = _x0_log_probs_fn(
        denoise_fn, text_bld, text_mask_bl, fps_b, guidance_scale, null_text_bld, null_text_mask_bl
    )
    mask_id = schedule.num_codes
    frame_of = np.repeat(np.arange(grid[0]), int(np.prod(grid[1:])))  # latent frame of each flat position
    order_penalty = jnp.asarray(float(frame_order) * frame_of, jnp.float32)

    if init_ids is None:
        ids0 = jnp.full((batch, *grid), mask_id, jnp.int32)
    else:
        ids0 = jnp.asarray(init_ids, jnp.int32)
        if ids0.shape != (batch, *grid):
            raise ValueError(f"init_ids {ids0.shape} must be (batch, *grid_thw) = {(batch, *grid)}")
    drawable_bn = ids0.reshape(batch, num_tokens) == mask_id
    num_drawable_b1 = drawable_bn.sum(axis=-1, keepdims=True).astype(jnp.int32)

    def body(i: jax.Array, state: SamplerState) -> SamplerState:
        ids = state.ids
        t_b = jnp.full((batch,), timesteps_j[i], jnp.int32)
        log_p = x0_log_probs(ids, t_b, temps[i]).reshape(batch, num_tokens, -1)
        rng, rng_draw, rng_choice = jax.random.split(state.rng, 3)
        drawn = jnp.argmax(log_p + jax.random.gumbel(rng_draw, log_p.shape), axis=-1).astype(jnp.int32)
        flat = ids.reshape(batch, num_tokens)
        masked = flat == mask_id
        confidence = jnp.take_along_axis(log_p, drawn[..., None], axis=-1)[..., 0]
        confidence = confidence + noise_scale[i] * jax.random.gumbel(rng_choice, confidence.shape)
        confidence = confidence - order_penalty
        confidence = jnp.where(masked, confidence, jnp.inf)  # revealed positions are never masked again
        # Rank per example (0 = least confident); the counts[i] least confident stay [MASK], exactly.
        rank = jnp.argsort(jnp.argsort(confidence, axis=-1), axis=-1)
        keep_masked = rank < num_drawable_b1 * counts_j[i] // num_tokens  # the curve, scaled per example
        new = jnp.where(masked, jnp.where(keep_masked, mask_id, drawn), flat)
        return SamplerState(step=state.step + 1, ids=new.reshape(ids.shape), rng=rng)

    state = SamplerState(step=jnp.zeros((), jnp.int32), ids=ids0, rng=rng)
    state = jax.lax.fori_loop(0, n, body, state)
    if refine_steps <= 0:
        return state.ids
    if not 0.0 < refine_fraction < 1.0:
        raise ValueError(f"refine_fraction must be in (0, 1), got {refine_fraction}")
    if refine_guidance:
        x0_log_probs = _x0_log_probs_fn(
            denoise_fn,
            text_bld,
            text_mask_bl,
            fps_b,
            float(refine_guidance),
            null_text_bld,
            null_text_mask_bl,
        )
    num_redrawn = max(1, int(round(refine_fraction * num_tokens)))
    refine_t = jnp.asarray(timesteps_for_masked(schedule, np.array([num_redrawn / num_tokens]))[0], jnp.int32)
    # Per example: the same share of its drawable positions (all of them without init_ids), at least one.
    redrawn_b1 = jnp.minimum(
        num_drawable_b1, jnp.maximum(1, jnp.round(refine_fraction * num_drawable_b1)).astype(jnp.int32)
    )

    def refine(i: jax.Array, state: SamplerState) -> SamplerState:
        flat = state.ids.reshape(batch, num_tokens)
        rng, rng_pick, rng_draw = jax.random.split(state.rng, 3)
        # A uniformly random subset of exactly redrawn_b1 drawable positions per example (known ones rank last).
        scores = jnp.where(drawable_bn, jax.random.uniform(rng_pick, flat.shape), 2.0)
        order = jnp.argsort(scores, axis=-1)
        redraw = jnp.argsort(order, axis=-1) < redrawn_b1
        masked = jnp.where(redraw, mask_id, flat).reshape(state.ids.shape)
        log_p = x0_log_probs(masked, jnp.full((batch,), refine_t), temps[-1]).reshape(batch, num_tokens, -1)
        drawn = jnp.argmax(log_p + jax.random.gumbel(rng_draw, log_p.shape), axis=-1).astype(jnp.int32)
        new = jnp.where(redraw, drawn, flat)
        return SamplerState(step=state.step + 1, ids=new.reshape(state.ids.shape), rng=rng)

    return jax.lax.fori_loop(0, int(refine_steps), refine, state).ids


def sample(method: str, *args, **kwargs) -> jax.Array:
    """`sample_tokens` (method "posterior") or `sample_tokens_confidence` ("confidence"), same arguments;
    options only the confidence method knows (mask_curve, choice_temperature, frame_order, refine_steps,
    refine_fraction) are dropped for the posterior chain."""
    if method == "posterior":
        for key in CONFIDENCE_OPTIONS:
            kwargs.pop(key, None)
        return sample_tokens(*args, **kwargs)
    if method == "confidence":
        return sample_tokens_confidence(*args, **kwargs)
    raise ValueError(f"sample.method {method!r} is not one of {METHODS}")


def options_from_config(sample_cfg) -> dict:
    """The method options of `config.sample` as keyword arguments of `T2VGenerator.tokens` / `sample`:
    method ("posterior" | "confidence"), temperature_end (0: constant temperature) and, for the confidence
    method, mask_curve, choice_temperature, frame_order, refine_steps, refine_fraction and refine_guidance
    (0: the decoding's guidance)."""
    method = sample_cfg.method
    if method not in METHODS:
        raise ValueError(f"sample.method {method!r} is not one of {METHODS}")
    end = float(sample_cfg.temperature_end)
    options = {"method": method, "temperature_end": end if end > 0 else None}
    if method == "confidence":
        options["mask_curve"] = sample_cfg.mask_curve
        options["choice_temperature"] = float(sample_cfg.choice_temperature)
        options["frame_order"] = float(sample_cfg.frame_order)
        options["refine_steps"] = int(sample_cfg.refine_steps)
        options["refine_fraction"] = float(sample_cfg.refine_fraction)
        options["refine_guidance"] = float(sample_cfg.refine_guidance) or None
    return options
