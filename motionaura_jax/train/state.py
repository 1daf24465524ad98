"""The step plumbing every stage shares: one optimizer builder, one train state, one apply-gradients.

A stage file (train/vae.py, train/t2v.py, ...) then holds only its loss, its step and its hooks:

    tx = make_optimizer(config.train)
    state = TrainState.create(params, tx)
    ...
    state, metrics = gradient_step(state, tx, loss_fn)
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import ml_collections
import optax

from motionaura_jax.train import finite


def learning_rate(train: ml_collections.ConfigDict) -> optax.Schedule | float:
    """`train.schedule`: "warmup_cosine" (linear warm-up over `warmup` steps to `lr`, cosine decay to lr/10 at
    `steps`) or "constant"."""
    if train.schedule == "constant":
        return float(train.lr)
    if train.schedule == "warmup_cosine":
        warmup = max(1, int(train.warmup))
        return optax.warmup_cosine_decay_schedule(
            0.0, train.lr, warmup, max(int(train.steps), warmup + 1), end_value=train.lr * 0.1
        )
    raise ValueError(f"train.schedule={train.schedule!r}: use 'warmup_cosine' or 'constant'")


def make_optimizer(train: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """AdamW on `learning_rate(train)` with `b1`, `b2`, `weight_decay`, after global-norm clipping at
    `grad_clip` (0: no clipping)."""
    adamw = optax.adamw(learning_rate(train), b1=train.b1, b2=train.b2, weight_decay=train.weight_decay)
    tx = optax.chain(optax.clip_by_global_norm(train.grad_clip), adamw) if train.grad_clip > 0 else adamw
    injection = finite.parse_injection(train.inject_nonfinite)
    if injection is not None and injection.kind == "grads":  # a fault drill: NaN gradients at one step
        tx = optax.chain(finite.poison_gradients(injection.step), tx)
    return tx


@flax.struct.dataclass
class TrainState:
    """Parameters and their optimizer state. Stages with more (a codebook's EMA statistics, a discriminator)
    subclass it and add fields; the loop only needs a pytree and `params`."""

    params: Any
    opt_state: Any

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation, **fields: Any) -> TrainState:
        return cls(params=params, opt_state=tx.init(params), **fields)

    def apply_gradients(self, grads: Any, tx: optax.GradientTransformation) -> tuple[TrainState, jax.Array]:
        """(state after one optimizer update, global norm of the gradients before clipping)."""
        return apply_gradients(self, grads, tx)


def apply_gradients(
    state: Any,
    grads: Any,
    tx: optax.GradientTransformation,
    *,
    params: str = "params",
    opt_state: str = "opt_state",
) -> tuple[Any, jax.Array]:
    """One optimizer update of the fields `params` / `opt_state` of `state` (another pair of a state, e.g. a
    discriminator's, by name); returns (new state, gradient global norm)."""
    current = getattr(state, params)
    updates, new_opt_state = tx.update(grads, getattr(state, opt_state), current)
    new_state = state.replace(**{params: optax.apply_updates(current, updates), opt_state: new_opt_state})
    return new_state, optax.global_norm(grads)


def gradient_step(
    state: TrainState, tx: optax.GradientTransformation, loss_fn: Any
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update on `loss_fn(params) -> (loss, metrics)`: (new state, metrics + grad_norm)."""
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state, grad_norm = state.apply_gradients(grads, tx)
    return state, dict(metrics, grad_norm=grad_norm)
