"""Non-finite numbers in a run: where they first appear, skipping such steps on request, and injecting them.

Every step reports, as `finite/<quantity>` flags in its metrics (stripped before logging), whether the batch,
the loss, the gradient norm and each field of the new train state (params, opt_state, a tokenizer's EMA
codebook `vq`, ...) are finite. The loop names the first quantity that is not, in that order, with the step:

    parameters are not finite at step 37 (task vae) ...

`train.skip_nonfinite=True` (for long runs) keeps the previous state for such a step, counts it and goes on;
more than `train.max_nonfinite` skipped steps stop the run. `train.inject_nonfinite="QUANTITY@STEP"` puts a NaN
there on purpose (QUANTITY: batch, loss, grads, codebook), for drills and the tests of all this.
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

FLAG_PREFIX = "finite/"
INJECT_KINDS = ("batch", "loss", "grads", "codebook")
# How a flag is named in an error (the state fields keep their own names).
_LABELS = {"batch": "the input batch", "loss": "the loss", "grad_norm": "the gradients (their global norm)",
           "params": "the parameters after the update", "opt_state": "the optimizer state",
           "vq": "the EMA codebook"}  # fmt: skip


# The traced step of the step being traced by `guarded_step`, for `poison_gradients`: the optimizer's own update
# count is part of the state a skipped step rolls back, so counting with it would hit the same step forever.
_TRACED_STEP: contextvars.ContextVar[Any] = contextvars.ContextVar("motionaura_traced_step", default=None)


class NonFiniteError(RuntimeError):
    """A NaN or inf in the run; the message names the step and the first non-finite quantity."""


@dataclasses.dataclass(frozen=True)
class Injection:
    kind: str
    step: int  # 1-based: the step whose metrics line carries the fault


def parse_injection(text: str) -> Injection | None:
    """ "loss@5" -> Injection("loss", 5); "" -> None; anything else is a ValueError naming the fix."""
    if not text:
        return None
    kind, sep, step = str(text).partition("@")
    if not sep or kind not in INJECT_KINDS or not step.isdigit() or int(step) < 1:
        raise ValueError(
            f"train.inject_nonfinite={text!r}: use QUANTITY@STEP with QUANTITY one of {', '.join(INJECT_KINDS)} "
            "and STEP >= 1, e.g. loss@5"
        )
    return Injection(kind, int(step))


def _all_finite(tree: Any) -> jax.Array:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _state_fields(state: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(state):
        return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    if isinstance(state, Mapping):
        return dict(state)
    return {"state": state}


def flags(
    batch: Mapping[str, jax.Array], metrics: Mapping[str, jax.Array], state: Any
) -> dict[str, jax.Array]:
    """`finite/<quantity>` -> float32 1.0 (finite) or 0.0, in the order an error names them."""
    out = {f"{FLAG_PREFIX}batch": _all_finite(dict(batch))}
    for key in ("loss", "grad_norm"):
        if key in metrics:
            out[f"{FLAG_PREFIX}{key}"] = _all_finite(metrics[key])
    fields = _state_fields(state)
    for name in ["params", *[n for n in fields if n not in ("params", "opt_state")], "opt_state"]:
        if name in fields:
            out[f"{FLAG_PREFIX}{name}"] = _all_finite(fields[name])
    return {k: v.astype(jnp.float32) for k, v in out.items()}


def guarded_step(step_fn, injection: Injection | None, skip: bool):
    """`step_fn(state, batch, step) -> (state, metrics)` with the finite flags in the metrics, the injection (if
    any) applied, and, with `skip`, the old state kept for a step whose flags are not all 1."""

    def run(state, batch, step):
        hit = (step + 1) == (injection.step if injection else -1)
        if injection is not None and injection.kind == "batch":
            batch = {k: jnp.where(hit, jnp.nan, v) if jnp.issubdtype(v.dtype, jnp.inexact) else v
                     for k, v in batch.items()}  # fmt: skip
        token = _TRACED_STEP.set(step)
        try:
            new_state, metrics = step_fn(state, batch, step)
        finally:
            _TRACED_STEP.reset(token)
        metrics = dict(metrics)
        if injection is not None and injection.kind == "loss":
            metrics["loss"] = jnp.where(hit, jnp.nan, metrics["loss"])
        if injection is not None and injection.kind == "codebook":
            new_state = new_state.replace(vq=jax.tree.map(lambda x: jnp.where(hit, jnp.nan, x), new_state.vq))
        found = flags(batch, metrics, new_state)
        if skip:
            ok = jnp.all(jnp.stack(list(found.values())) > 0)
            new_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
        metrics.update(found)
        return new_state, metrics

    return run


def poison_gradients(step: int) -> optax.GradientTransformation:
    """An optax stage that turns the gradients of training step `step` (1-based; outside `guarded_step`, of
    optimizer update number `step`) into NaN."""

    def init(params):
        return jnp.zeros((), jnp.int32)

    def update(updates, count, params=None):
        traced = _TRACED_STEP.get()
        hit = ((count if traced is None else traced) + 1) == step
        return jax.tree.map(lambda g: jnp.where(hit, jnp.nan, g), updates), count + 1

    return optax.GradientTransformation(init, update)


def first_bad(metrics: Mapping[str, Any]) -> str | None:
    """The first `finite/` flag of one step's fetched metrics that is 0, as words; None when all are finite.
    A NaN loss without flags (a task step outside `guarded_step`) is reported too."""
    # Fetched metrics come back with their keys sorted (pytree order), so the order is set here: what goes in
    # first, then what the step computed, then what it changed.
    names = [k[len(FLAG_PREFIX) :] for k in metrics if k.startswith(FLAG_PREFIX)]
    first = [n for n in ("batch", "loss", "grad_norm", "params") if n in names]
    ordered = (
        first
        + sorted(n for n in names if n not in first and n != "opt_state")
        + (["opt_state"] if "opt_state" in names else [])
    )
    for name in ordered:
        if float(np.asarray(metrics[FLAG_PREFIX + name])) < 0.5:
            return _LABELS.get(name, f"the train-state field {name!r}")
    if "loss" in metrics and not np.isfinite(float(np.asarray(metrics["loss"]))):
        return _LABELS["loss"]
    return None


def strip_flags(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if not k.startswith(FLAG_PREFIX)}
