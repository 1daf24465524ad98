"""The discrete forward process of VQ-Diffusion over code ids, in float32 log space.

States are the codes 0..K-1 plus [MASK] = K. One forward step keeps a code with probability α_t, moves it to
each specific code with probability β_t (so K·β_t in all, the code itself included) and masks it with
probability γ_t; [MASK] is absorbing. The cumulative q(z_t | z_0) has the same form with ᾱ_t, β̄_t, γ̄_t.

Timestep convention (the one of VQ-Diffusion and diffusers' `VQDiffusionScheduler`): the index t ∈ [0, T)
names the state after t + 1 corruption steps. The cumulative tables have one extra entry at index T (also
reachable as t = -1) holding the identity, so "t - 1" of t = 0 is the clean data and the same formulas cover
every step. Two variants, chosen by `kind`:
  * "mask_and_replace": VQ-Diffusion's linear ᾱ (0.99999 → 0.000009) and γ̄ (0.000009 → 0.99999),
    β̄ = (1 − ᾱ − γ̄)/K;
  * "absorbing": β ≡ 0, ᾱ = 1 − γ̄ (mask-only corruption, as MotionAura's figure draws it). Where a log
    needs log 0 we use LOG_ZERO, and the posterior of an unmasked token is exactly "stay".

The tables are computed in float64 on the host and stored as float32 logs, as diffusers does, so that the
parity test can hold to 1e-5. Everything that takes a timestep is jittable in it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# log(1e-30): the "log of zero" of VQ-Diffusion's log one-hot vectors; finite, so no inf - inf appears.
LOG_ZERO = float(np.log(1e-30))
KINDS = ("mask_and_replace", "absorbing")


class LogTransition(NamedTuple):
    """log α, log β, log γ of one transition matrix (one step, several steps or cumulative).

    Each field is a scalar or has the batch shape (B,); it broadcasts over the token axes.
    """

    log_a: jax.Array
    log_b: jax.Array
    log_c: jax.Array


def _log64(x: np.ndarray, floor: float | None = None) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if floor is not None:
        x = np.maximum(x, np.exp(floor))
    with np.errstate(divide="ignore"):
        return np.log(x).astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class DiscreteSchedule:
    """Host tables of one forward process. Hashable by identity, so it can be a static jit argument.

    cum_alpha/cum_beta/cum_gamma: (T + 1,) float64, index T = identity (ᾱ = 1, β̄ = γ̄ = 0).
    alpha/beta/gamma: (T,) float64, the one-step transition from index t - 1 to t.
    """

    num_codes: int
    num_timesteps: int
    kind: str
    cum_alpha: np.ndarray
    cum_beta: np.ndarray
    cum_gamma: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    gamma: np.ndarray

    @property
    def mask_id(self) -> int:
        return self.num_codes

    @property
    def absorbing(self) -> bool:
        return self.kind == "absorbing"

    def _beta_floor(self) -> float | None:
        # β = 0 exactly in the absorbing variant: keep its log finite.
        return LOG_ZERO if self.absorbing else None

    def log_cumulative_table(self) -> LogTransition:
        """(T + 1,) float32 logs of ᾱ, β̄, γ̄ (index T: identity; log 0 = -inf there as in diffusers)."""
        beta = _log64(self.cum_beta, self._beta_floor())
        if self.absorbing:
            beta[-1] = -np.inf  # the identity has no replacement either
        return LogTransition(
            jnp.asarray(_log64(self.cum_alpha)), jnp.asarray(beta), jnp.asarray(_log64(self.cum_gamma))
        )

    def log_step_table(self) -> LogTransition:
        """(T,) float32 logs of the one-step α_t, β_t, γ_t."""
        return LogTransition(
            jnp.asarray(_log64(self.alpha)),
            jnp.asarray(_log64(self.beta, self._beta_floor())),
            jnp.asarray(_log64(self.gamma)),
        )

    def log_between(self, s: Sequence[int] | np.ndarray, t: Sequence[int] | np.ndarray) -> LogTransition:
        """Logs of the transition z_s → z_t for host integer arrays s < t (s = -1: the clean data).

        The family {αI + β11ᵀ, γ → [MASK]} is closed under products: α and 1 − γ multiply and β follows
        from the row sum, so a skip of several steps is exact. Computed in float64 (β is a small difference).
        """
        s = np.asarray(s, np.int64)
        t = np.asarray(t, np.int64)
        if np.any(s >= t) or np.any(t >= self.num_timesteps) or np.any(s < -1):
            raise ValueError(f"log_between needs -1 <= s < t < T={self.num_timesteps}; got s={s}, t={t}")
        s_index = np.where(s < 0, self.num_timesteps, s)
        alpha = self.cum_alpha[t] / self.cum_alpha[s_index]
        gamma = 1.0 - (1.0 - self.cum_gamma[t]) / (1.0 - self.cum_gamma[s_index])
        beta = np.zeros_like(alpha) if self.absorbing else (1.0 - alpha - gamma) / self.num_codes
        return LogTransition(
            jnp.asarray(_log64(alpha)),
            jnp.asarray(_log64(beta, self._beta_floor())),
            jnp.asarray(_log64(gamma)),
        )

    def log_cumulative_at(self, s: Sequence[int] | np.ndarray) -> LogTransition:
        """Host-indexed cumulative logs (s = -1: identity)."""
        s = np.asarray(s, np.int64)
        index = np.where(s < 0, self.num_timesteps, s)
        table = self.log_cumulative_table()
        return LogTransition(*(field[index] for field in table))


def make_schedule(
    num_codes: int,
    num_timesteps: int = 100,
    *,
    kind: str = "mask_and_replace",
    alpha_cum_start: float = 0.99999,
    alpha_cum_end: float = 0.000009,
    gamma_cum_start: float = 0.000009,
    gamma_cum_end: float = 0.99999,
) -> DiscreteSchedule:
    """VQ-Diffusion's `alpha_schedule`: linear ᾱ and γ̄ over T steps; per-step values as ratios.

    For kind="absorbing" the ᾱ arguments are ignored: ᾱ = 1 − γ̄ and β ≡ 0.
    """
    if kind not in KINDS:
        raise ValueError(f"diffusion kind {kind!r} is not one of {KINDS} (config key diffusion.kind)")
    if num_codes < 2 or num_timesteps < 2:
        raise ValueError(f"need num_codes >= 2 and num_timesteps >= 2, got {num_codes}, {num_timesteps}")
    ramp = np.arange(num_timesteps, dtype=np.float64) / (num_timesteps - 1)
    cum_gamma = gamma_cum_start + ramp * (gamma_cum_end - gamma_cum_start)
    if kind == "absorbing":
        cum_alpha = 1.0 - cum_gamma
    else:
        cum_alpha = alpha_cum_start + ramp * (alpha_cum_end - alpha_cum_start)
    if np.any(cum_alpha + cum_gamma > 1.0 + 1e-12) or np.any(cum_alpha <= 0) or np.any(cum_gamma <= 0):
        raise ValueError(
            "schedule needs 0 < ᾱ, 0 < γ̄ and ᾱ + γ̄ <= 1 at every step; check "
            "diffusion.alpha_cum_* / diffusion.gamma_cum_*"
        )
    previous_alpha = np.concatenate([[1.0], cum_alpha[:-1]])
    previous_gamma = np.concatenate([[0.0], cum_gamma[:-1]])
    alpha = cum_alpha / previous_alpha
    gamma = 1.0 - (1.0 - cum_gamma) / (1.0 - previous_gamma)
    if kind == "absorbing":
        beta = np.zeros_like(alpha)
        cum_beta = np.zeros(num_timesteps + 1)
    else:
        beta = (1.0 - alpha - gamma) / num_codes
        cum_beta = np.concatenate([(1.0 - cum_alpha - cum_gamma) / num_codes, [0.0]])
    return DiscreteSchedule(
        num_codes=num_codes,
        num_timesteps=num_timesteps,
        kind=kind,
        cum_alpha=np.concatenate([cum_alpha, [1.0]]),
        cum_beta=cum_beta,
        cum_gamma=np.concatenate([cum_gamma, [0.0]]),
        alpha=alpha,
        beta=beta,
        gamma=gamma,
    )


def schedule_from_config(diffusion_cfg, num_codes: int) -> DiscreteSchedule:
    """`config.diffusion` (num_timesteps, kind, alpha_cum_*, gamma_cum_*) → schedule over num_codes codes."""
    c = diffusion_cfg
    return make_schedule(
        num_codes,
        c.num_timesteps,
        kind=c.kind,
        alpha_cum_start=c.alpha_cum_start,
        alpha_cum_end=c.alpha_cum_end,
        gamma_cum_start=c.gamma_cum_start,
        gamma_cum_end=c.gamma_cum_end,
    )


# ----------------------------------------------------------------------------------------------------------
# Gathering the tables at traced timesteps.


def cumulative(schedule: DiscreteSchedule, t_b: jax.Array) -> LogTransition:
    """Logs of ᾱ, β̄, γ̄ at timestep indices t_b (any int shape); t = -1 or t = T gives the identity."""
    t_b = jnp.asarray(t_b, jnp.int32)
    index = jnp.where(t_b < 0, schedule.num_timesteps, t_b)
    return LogTransition(*(field[index] for field in schedule.log_cumulative_table()))


def one_step(schedule: DiscreteSchedule, t_b: jax.Array) -> LogTransition:
    """Logs of the one-step α_t, β_t, γ_t (transition from t - 1 to t) at indices t_b."""
    t_b = jnp.asarray(t_b, jnp.int32)
    return LogTransition(*(field[t_b] for field in schedule.log_step_table()))


def _per_example(value: jax.Array, ndim: int) -> jax.Array:
    """A scalar or (B,) value shaped (B, 1, ..., 1) to broadcast against (B, ...tokens, classes)."""
    value = jnp.asarray(value, jnp.float32)
    return value.reshape(value.shape + (1,) * (ndim - value.ndim))


def log_onehot(ids: jax.Array, num_classes: int) -> jax.Array:
    """ids (...) → (..., num_classes): 0 at the id, LOG_ZERO elsewhere (ids >= num_classes: all LOG_ZERO)."""
    hot = jax.nn.one_hot(ids, num_classes, dtype=jnp.float32)
    return jnp.where(hot > 0, 0.0, LOG_ZERO)


# ----------------------------------------------------------------------------------------------------------
# Rows and columns of the transition matrices.


def log_q_xt_given_x0(x_t: jax.Array, cum: LogTransition, num_codes: int) -> jax.Array:
    """(..., K): log q(z_t = x_t | z_0 = i) for every code i (cumulative matrix, column of x_t)."""
    ndim = x_t.ndim + 1
    a, b, c = (_per_example(v, ndim) for v in cum)
    rows = jnp.logaddexp(log_onehot(x_t, num_codes) + a, b)
    return jnp.where((x_t == num_codes)[..., None], c, rows)


def log_q_xt_given_xprev(x_t: jax.Array, step: LogTransition, num_codes: int) -> jax.Array:
    """(..., K + 1): log q(z_t = x_t | z_{t-1} = j) for every state j, [MASK] included (one-step column)."""
    ndim = x_t.ndim + 1
    a, b, c = (_per_example(v, ndim) for v in step)
    is_mask = (x_t == num_codes)[..., None]
    rows = jnp.where(is_mask, c, jnp.logaddexp(log_onehot(x_t, num_codes) + a, b))
    # From [MASK] the only way is to stay [MASK].
    from_mask = jnp.where(is_mask, 0.0, LOG_ZERO)
    return jnp.concatenate([rows, from_mask], axis=-1)


def apply_cumulative(log_p_k: jax.Array, cum: LogTransition) -> jax.Array:
    """(..., K) log distribution over codes of z_0 → (..., K + 1) log distribution of z_t.

    log(ᾱ p_i + β̄) for the codes (β̄ Σp = β̄ for a normalised p) and log γ̄ for [MASK].
    """
    a, b, c = (_per_example(v, log_p_k.ndim) for v in cum)
    codes = jnp.logaddexp(log_p_k + a, b)
    mask = jnp.broadcast_to(c, log_p_k.shape[:-1] + (1,))
    return jnp.concatenate([codes, mask], axis=-1)


def forward_log_probs(log_x: jax.Array, transition: LogTransition) -> jax.Array:
    """(..., K + 1) log distribution of a state → (..., K + 1) log distribution one transition later.

    Works for a one-step, a skip or a cumulative transition (VQ-Diffusion's q_pred / q_pred_one_timestep).
    """
    a, b, c = (_per_example(v, log_x.ndim) for v in transition)
    log_codes, log_mask = log_x[..., :-1], log_x[..., -1:]
    log_code_mass = jax.nn.logsumexp(log_codes, axis=-1, keepdims=True)
    codes = jnp.logaddexp(log_codes + a, b + log_code_mass)
    mask = jnp.logaddexp(log_mask, c + log_code_mass)
    return jnp.concatenate([codes, mask], axis=-1)


# ----------------------------------------------------------------------------------------------------------
# Sampling the forward process.


def _corrupt(
    rng: jax.Array, x: jax.Array, transition: LogTransition, num_codes: int, replace: bool
) -> jax.Array:
    """One draw of a transition: mask with γ, else a uniform code with K·β, else keep (masks stay masks).

    Exact for the family (the uniform draw may return the same code: P(keep) = α + β) and needs no
    (..., K + 1) array, which matters for K = 16384.
    """
    a, b, c = (_per_example(v, x.ndim) for v in transition)
    rng_u, rng_code = jax.random.split(rng)
    u = jax.random.uniform(rng_u, x.shape, jnp.float32)
    p_mask = jnp.exp(c)
    p_replace = num_codes * jnp.exp(b) if replace else jnp.zeros_like(p_mask)
    random_code = jax.random.randint(rng_code, x.shape, 0, num_codes, dtype=x.dtype)
    out = jnp.where(u < p_mask + p_replace, random_code, x)
    out = jnp.where(u < p_mask, jnp.asarray(num_codes, x.dtype), out)
    return jnp.where(x == num_codes, x, out)


def q_sample(rng: jax.Array, schedule: DiscreteSchedule, x0: jax.Array, t_b: jax.Array) -> jax.Array:
    """z_t ~ q(z_t | z_0 = x0) for int ids x0 (B, ...) in [0, K) and timestep indices t_b (B,)."""
    return _corrupt(rng, x0, cumulative(schedule, t_b), schedule.num_codes, not schedule.absorbing)


def q_step_sample(rng: jax.Array, schedule: DiscreteSchedule, x_prev: jax.Array, t_b: jax.Array) -> jax.Array:
    """z_t ~ q(z_t | z_{t-1} = x_prev) for ids in [0, K] (one forward step into index t_b)."""
    return _corrupt(rng, x_prev, one_step(schedule, t_b), schedule.num_codes, not schedule.absorbing)


# ----------------------------------------------------------------------------------------------------------
# The posterior and the x0-parameterised reverse step.


def posterior_log_probs(
    log_p_x0: jax.Array,
    x_t: jax.Array,
    *,
    cum_t: LogTransition,
    cum_s: LogTransition,
    step: LogTransition,
    absorbing: bool,
) -> jax.Array:
    """log Σ_i q(z_s | z_t = x_t, z_0 = i) p(z_0 = i), shape (..., K + 1), for s < t.

    log_p_x0: (..., K) log p(z_0) (a log one-hot gives the true posterior, the network's log-softmax the
    model's p(z_s | z_t)); x_t: (...) ids in [0, K]; cum_t / cum_s: q(z_t | z_0), q(z_s | z_0);
    step: q(z_t | z_s).
    Same arithmetic as VQ-Diffusion's q_posterior (the normaliser of p/q(x_t|x0) is carried so that the
    result is the un-normalised sum); not clamped. In the absorbing variant an unmasked x_t came from itself,
    whatever the network says, so its posterior is exactly "stay".
    """
    num_codes = log_p_x0.shape[-1]
    log_qt = log_q_xt_given_x0(x_t, cum_t, num_codes)
    log_q_step = log_q_xt_given_xprev(x_t, step, num_codes)
    ratio = log_p_x0 - log_qt
    log_norm = jax.nn.logsumexp(ratio, axis=-1, keepdims=True)
    out = apply_cumulative(ratio - log_norm, cum_s) + log_q_step + log_norm
    if absorbing:
        out = jnp.where((x_t == num_codes)[..., None], out, log_onehot(x_t, num_codes + 1))
    return out


def q_posterior(schedule: DiscreteSchedule, log_p_x0: jax.Array, x_t: jax.Array, t_b: jax.Array) -> jax.Array:
    """log p(z_{t-1} | z_t) = log Σ_i q(z_{t-1} | z_t, z_0 = i) p(z_0 = i) at timestep indices t_b (B,).

    At t = 0 the "previous" state is the clean data: the result is p(z_0 = ·) itself (with a -inf [MASK]).
    """
    t_b = jnp.asarray(t_b, jnp.int32)
    return posterior_log_probs(
        log_p_x0,
        x_t,
        cum_t=cumulative(schedule, t_b),
        cum_s=cumulative(schedule, t_b - 1),
        step=one_step(schedule, t_b),
        absorbing=schedule.absorbing,
    )


def reverse_log_probs(
    schedule: DiscreteSchedule, logits: jax.Array, x_t: jax.Array, t_b: jax.Array
) -> jax.Array:
    """x0-parameterisation: network logits (..., K) over z_0 → log p_θ(z_{t-1} | z_t), (..., K + 1)."""
    return q_posterior(schedule, jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), x_t, t_b)
