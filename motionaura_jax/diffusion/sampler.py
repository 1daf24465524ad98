"""Reverse process: all-[MASK] token grid → code ids, with step skipping and classifier-free guidance.

One jittable `lax.fori_loop` over a small state (MaskGIT's parallel_decode style). The sampling schedule is a
descending list of timestep indices t_0 > t_1 > ... > t_{n-1} (t_0 = T - 1, t_{n-1} = 0 unless fewer steps are
asked); step i draws z_{t_{i+1}} ~ Σ_z0 q(z_{t_{i+1}} | z_{t_i}, z_0) p̃(z_0 | z_{t_i}) with the exact skip
transition t_{i+1} → t_i (`DiscreteSchedule.log_between`), and the last step draws the clean ids (z_{-1}).
With n = T it is the full chain of VQ-Diffusion, step for step.
Guidance: log p = log p_u + s·(log p_c − log p_u), renormalised over the K codes (s = 0: unconditional,
s = 1: conditional), applied to p̃(z_0 | z_t) before the posterior; temperature divides the x0 logits.

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
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    timesteps = sampling_timesteps(schedule.num_timesteps, num_steps)
    cum_t, cum_s, step_tr, _ = _transitions(schedule, timesteps)
    timesteps_j = jnp.asarray(timesteps, jnp.int32)
    num_codes, n = schedule.num_codes, len(timesteps)
    use_cfg = guidance_scale is not None
    if use_cfg:
        if null_text_bld is None:
            null_text_bld, null_text_mask_bl = null_text(text_bld, text_mask_bl)
        text_2bld = jnp.concatenate([text_bld, null_text_bld.astype(text_bld.dtype)], axis=0)
        mask_2bl = jnp.concatenate([text_mask_bl.astype(bool), null_text_mask_bl.astype(bool)], axis=0)
        fps_2b = jnp.concatenate([fps_b, fps_b], axis=0)
    fps_b = jnp.asarray(fps_b, jnp.float32)

    def body(i: jax.Array, state: SamplerState) -> SamplerState:
        ids = state.ids
        t_b = jnp.full((batch,), timesteps_j[i], jnp.int32)
        if use_cfg:
            logits = denoise_fn(
                jnp.concatenate([ids, ids], 0), jnp.concatenate([t_b, t_b], 0), fps_2b, text_2bld, mask_2bl
            )
            log_p_x0 = guided_log_probs(logits[:batch], logits[batch:], guidance_scale, temperature)
        else:
            logits = denoise_fn(ids, t_b, fps_b, text_bld, text_mask_bl)
            log_p_x0 = guided_log_probs(logits, None, None, temperature)
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
