"""Training objectives of the discrete diffusion, given the network's x0 logits at a corrupted z_t.

Two objectives (config `diffusion.objective`):
  * "vlb" (VQ-Diffusion): L = T·KL(q(z_{t-1} | z_t, z_0) || p_θ(z_{t-1} | z_t)) (the decoder NLL at t = 0)
    + λ·w_t·T·CE(p̃_θ(z_0 | z_t), z_0) on the corrupted positions, with t ~ U[0, T) so T·(term) is an unbiased
    estimate of the sum over steps; λ = 5e-4 and VQ-Diffusion's adaptive w_t = 2 − t/T by default.
  * "masked_ce" (absorbing variant only): w_t·CE on the masked positions with the discrete ELBO weight
    w_t = T·(γ̄_t − γ̄_{t−1})/γ̄_t (≈ 1/t for a linear γ̄), or "uniform" w_t = 1 averaged over masked tokens.
    With the ELBO weight it equals the absorbing VLB term exactly (a test checks this).
Everything is averaged per token (VQ-Diffusion divides the sum by B·N) and returned as a dict of scalars.

Text dropout for classifier-free guidance is the trainer's job; `drop_text` / `null_text` are the helpers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from motionaura_jax.diffusion.schedule import (
    DiscreteSchedule,
    cumulative,
    log_onehot,
    q_posterior,
    q_sample,
)

# VQ-Diffusion clamps its log posteriors to [-70, 0] before the KL: log 0 would give 0·(-inf) = NaN.
_LOG_CLAMP = -70.0
OBJECTIVES = ("vlb", "masked_ce")
T_SAMPLINGS = ("uniform", "cosine")


def sample_timesteps(
    rng: jax.Array, batch: int, num_timesteps: int, how: str = "uniform", cum_gamma: np.ndarray | None = None
) -> jax.Array:
    """int32 (B,) timesteps. "uniform": t ~ U{0, ..., T-1}. "cosine" (MaskGIT's training schedule, absorbing
    diffusion): a masked fraction r = cos(pi/2 · u), u ~ U[0, 1), then the t whose γ̄ (`cum_gamma`) is nearest
    to r; r has mean 2/pi and half its mass above 0.71, so more of the steps are spent where most codes are
    masked and only the text says what to draw."""
    if how == "uniform":
        return jax.random.randint(rng, (batch,), 0, num_timesteps, dtype=jnp.int32)
    if how != "cosine":
        raise ValueError(f"diffusion.t_sampling {how!r} is not one of {T_SAMPLINGS}")
    if cum_gamma is None:
        raise ValueError('t_sampling="cosine" needs the schedule\'s cum_gamma')
    gamma_t = jnp.asarray(np.asarray(cum_gamma)[:num_timesteps], jnp.float32)
    ratio_b = jnp.cos(0.5 * jnp.pi * jax.random.uniform(rng, (batch,)))
    return jnp.argmin(jnp.abs(gamma_t[None, :] - ratio_b[:, None]), axis=-1).astype(jnp.int32)


def corrupt(
    rng: jax.Array, schedule: DiscreteSchedule, x0: jax.Array, t_sampling: str = "uniform"
) -> tuple[jax.Array, jax.Array]:
    """Draws t per example (`sample_timesteps`, U[0, T) by default) and z_t ~ q(z_t | x0). x0: int (B, ...)
    codes → (z_t, t_b)."""
    rng_t, rng_z = jax.random.split(rng)
    t_b = sample_timesteps(rng_t, x0.shape[0], schedule.num_timesteps, t_sampling, schedule.cum_gamma)
    return q_sample(rng_z, schedule, x0.astype(jnp.int32), t_b), t_b


def multinomial_kl(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
    """KL(p || q) over the last axis from log probabilities (clamped as VQ-Diffusion does)."""
    log_p = jnp.maximum(log_p, _LOG_CLAMP)
    log_q = jnp.maximum(log_q, _LOG_CLAMP)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def _per_example(value_b: jax.Array, ndim: int) -> jax.Array:
    return value_b.reshape(value_b.shape + (1,) * (ndim - 1))


def _token_mean(x: jax.Array) -> jax.Array:
    return jnp.mean(x.astype(jnp.float32))


def _masked_mean(x: jax.Array, where: jax.Array) -> jax.Array:
    where = where.astype(jnp.float32)
    return jnp.sum(x * where) / jnp.maximum(jnp.sum(where), 1.0)


def vlb_losses(
    schedule: DiscreteSchedule,
    logits: jax.Array,
    x0: jax.Array,
    z_t: jax.Array,
    t_b: jax.Array,
    *,
    aux_weight: float = 5e-4,
    aux_positions: str = "corrupted",
    adaptive_aux: bool = True,
    mask_weight: tuple[float, float] = (1.0, 1.0),
    token_weight: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """VQ-Diffusion's loss for logits (B, ..., K), clean ids x0 (B, ...), z_t (B, ...) and t_b (B,).

    aux_positions: "corrupted" (z_t ≠ z_0: masked or replaced) or "all" (VQ-Diffusion's choice).
    mask_weight: (weight of KL at masked z_t, at unmasked z_t), VQ-Diffusion's `mask_weight`.
    token_weight: optional weights shaped like x0, multiplying each token's terms of the loss.
    """
    if aux_positions not in ("corrupted", "all"):
        raise ValueError(
            f"aux_positions must be 'corrupted' or 'all', got {aux_positions!r} "
            "(config key diffusion.aux_positions)"
        )
    num_codes, num_steps = schedule.num_codes, schedule.num_timesteps
    x0 = x0.astype(jnp.int32)
    log_x0_recon = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    log_model = q_posterior(schedule, log_x0_recon, z_t, t_b)
    log_true = q_posterior(schedule, log_onehot(x0, num_codes), z_t, t_b)

    is_masked = z_t == num_codes
    kl = multinomial_kl(log_true, log_model)
    kl = kl * jnp.where(is_masked, mask_weight[0], mask_weight[1])
    decoder_nll = -jnp.take_along_axis(log_model, x0[..., None], axis=-1)[..., 0]
    at_start = _per_example(t_b == 0, x0.ndim)
    step_loss = jnp.where(at_start, decoder_nll, kl)
    vlb = num_steps * step_loss  # uniform t: each term / p(t) with p(t) = 1/T

    ce = -jnp.take_along_axis(log_x0_recon, x0[..., None], axis=-1)[..., 0]
    corrupted = z_t != x0
    aux_where = corrupted if aux_positions == "corrupted" else jnp.ones_like(corrupted)
    t_weight = (
        (2.0 - t_b.astype(jnp.float32) / num_steps) if adaptive_aux else jnp.ones(t_b.shape, jnp.float32)
    )
    aux = num_steps * _per_example(t_weight, x0.ndim) * ce * aux_where
    if token_weight is not None:
        vlb, aux = vlb * token_weight, aux * token_weight
    loss = _token_mean(vlb) + aux_weight * _token_mean(aux)
    predicted = jnp.argmax(log_x0_recon, axis=-1)
    return {
        "loss": loss,
        "vlb": _token_mean(vlb),
        "kl": _token_mean(step_loss),
        "aux_ce": _masked_mean(ce, aux_where),
        "masked_fraction": _token_mean(is_masked),
        "corrupted_fraction": _token_mean(corrupted),
        "x0_accuracy": _masked_mean(predicted == x0, corrupted),
    }


def masked_ce_weight(schedule: DiscreteSchedule, t_b: jax.Array, weighting: str = "elbo") -> jax.Array:
    """Per-example weight of the masked CE: T·(γ̄_t − γ̄_{t−1})/γ̄_t ("elbo") or 1 ("uniform")."""
    if weighting == "uniform":
        return jnp.ones(t_b.shape, jnp.float32)
    if weighting != "elbo":
        raise ValueError(
            f"masked CE weighting must be 'elbo' or 'uniform', got {weighting!r} "
            "(config key diffusion.ce_weighting)"
        )
    gamma_t = jnp.exp(cumulative(schedule, t_b).log_c)
    gamma_prev = jnp.exp(cumulative(schedule, t_b - 1).log_c)  # t = 0: identity, γ̄ = 0
    return schedule.num_timesteps * (gamma_t - gamma_prev) / gamma_t


def masked_ce_losses(
    schedule: DiscreteSchedule,
    logits: jax.Array,
    x0: jax.Array,
    z_t: jax.Array,
    t_b: jax.Array,
    *,
    weighting: str = "elbo",
    token_weight: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Masked-diffusion objective for the absorbing variant: weighted CE of z_0 on the [MASK] positions.

    "elbo" is averaged over all tokens (an ELBO per token, comparable with "vlb"); "uniform" over masked ones.
    token_weight (shaped like x0, optional) weights each token: "uniform" then averages with those weights.
    """
    if not schedule.absorbing:
        raise ValueError(
            "the masked_ce objective is the absorbing variant's; set diffusion.kind=absorbing or "
            "diffusion.objective=vlb"
        )
    x0 = x0.astype(jnp.int32)
    log_x0_recon = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    ce = -jnp.take_along_axis(log_x0_recon, x0[..., None], axis=-1)[..., 0]
    is_masked = z_t == schedule.num_codes
    weight = _per_example(masked_ce_weight(schedule, t_b, weighting), x0.ndim)
    weighted = weight * ce * is_masked
    if token_weight is None:
        loss = _token_mean(weighted) if weighting == "elbo" else _masked_mean(weight * ce, is_masked)
    elif weighting == "elbo":
        loss = _token_mean(weighted * token_weight)
    else:
        loss = _masked_mean(weight * ce * token_weight, is_masked) / _masked_mean(token_weight, is_masked)
    predicted = jnp.argmax(log_x0_recon, axis=-1)
    return {
        "loss": loss,
        "masked_ce": _masked_mean(ce, is_masked),
        "masked_fraction": _token_mean(is_masked),
        "x0_accuracy": _masked_mean(predicted == x0, is_masked),
    }


def diffusion_losses(
    schedule: DiscreteSchedule,
    logits: jax.Array,
    x0: jax.Array,
    z_t: jax.Array,
    t_b: jax.Array,
    diffusion_cfg,
    token_weight: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Dispatches on `diffusion_cfg.objective` ("vlb" or "masked_ce") with the config's weights (configs/t2v.py);
    token_weight (shaped like x0) optionally weights each token's loss."""
    c = diffusion_cfg
    objective = c.objective
    if objective == "vlb":
        return vlb_losses(
            schedule,
            logits,
            x0,
            z_t,
            t_b,
            aux_weight=c.aux_weight,
            aux_positions=c.aux_positions,
            adaptive_aux=c.adaptive_aux,
            mask_weight=tuple(c.mask_weight),
            token_weight=token_weight,
        )
    if objective == "masked_ce":
        return masked_ce_losses(
            schedule, logits, x0, z_t, t_b, weighting=c.ce_weighting, token_weight=token_weight
        )
    raise ValueError(f"diffusion.objective {objective!r} is not one of {OBJECTIVES}")


# ----------------------------------------------------------------------------------------------------------
# Classifier-free guidance: the "no text" condition.


def null_text(
    text_bld: jax.Array, text_mask_bl: jax.Array, null_ld: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """The unconditional text: a learned null embedding (broadcast from (D,) or (L, D)) or zeros, with only
    the first position valid, so cross-attention always has one key to attend to (an all-False mask gives
    NaN)."""
    if null_ld is None:
        text = jnp.zeros_like(text_bld)
    else:
        text = jnp.broadcast_to(jnp.asarray(null_ld, text_bld.dtype), text_bld.shape)
    mask = jnp.zeros(text_mask_bl.shape, bool).at[:, 0].set(True)
    return text, mask


def drop_text(
    rng: jax.Array,
    text_bld: jax.Array,
    text_mask_bl: jax.Array,
    drop_prob: float,
    null_ld: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Replaces each example's text by the null text with probability drop_prob → (text, mask, dropped_b)."""
    dropped_b = jax.random.uniform(rng, (text_bld.shape[0],)) < drop_prob
    null_bld, null_mask = null_text(text_bld, text_mask_bl, null_ld)
    text = jnp.where(dropped_b[:, None, None], null_bld, text_bld)
    mask = jnp.where(dropped_b[:, None], null_mask, text_mask_bl.astype(bool))
    return text, mask, dropped_b
