"""What a training stage hands the generic loop: how to build its state, one step, and its data."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import jax
import numpy as np
from etils import epath


class HostIterator(Protocol):
    """Host-local batches (numpy, leading dim = per-host batch) with exactly resumable state."""

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]: ...

    def __next__(self) -> dict[str, np.ndarray]: ...

    def get_state(self) -> dict:
        """JSON-able state *after* the batches already returned."""
        ...

    def set_state(self, state: dict) -> None: ...


@dataclasses.dataclass
class Task:
    """A stage of training, as the loop sees it.

    init_state: rng -> train-state pytree. Array leaves may be boxed with `nn.with_logical_partitioning`; the
      loop reads their logical names through `jax.eval_shape`, builds the shardings, jits the init with those
      `out_shardings` and unboxes, so no full copy of the parameters ever lives on one host.
    train_step: (state, batch, rng, step) -> (new_state, metrics). Pure; the loop jits it with explicit shardings
      and a donated state. `metrics` are scalars and include "loss".
    make_data: (process_index, process_count) -> this host's iterator.
    batch_axes: logical axes per batch field (default: first dim "act_batch", the rest replicated).
    eval_fn / sample_fn: host-side hooks every `train.eval_every` / `train.sample_every` steps; eval_fn returns
      scalars that are logged with an "eval/" prefix, sample_fn writes files under the workdir and may return
      {tag: uint8 image (H, W, 3) or video (T, H, W, 3)} that the loop logs to TensorBoard (`write_images`).
    params_of: picks the parameters out of the state for the parameter count (default: `state.params`).
    batch_spec: global batch size -> {field: jax.ShapeDtypeStruct} of the numeric fields `make_data` yields
      (global shapes), so the step can be compiled ahead of time without data (`motionaura compile`).
    """

    init_state: Callable[[jax.Array], Any]
    train_step: Callable[
        [Any, Mapping[str, jax.Array], jax.Array, jax.Array], tuple[Any, dict[str, jax.Array]]
    ]
    make_data: Callable[[int, int], HostIterator]
    batch_axes: Mapping[str, tuple[str | None, ...]] = dataclasses.field(default_factory=dict)
    eval_fn: Callable[[Any, int, epath.Path], dict[str, float]] | None = None
    sample_fn: Callable[[Any, int, epath.Path], Mapping[str, np.ndarray] | None] | None = None
    params_of: Callable[[Any], Any] = lambda state: state.params
    batch_spec: Callable[[int], dict[str, jax.ShapeDtypeStruct]] | None = None
