"""The `tiny` task: a small regressor on deterministic data, used to test the loop, sharding and checkpoints."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from motionaura_jax.models.tiny import TinyModel, mse
from motionaura_jax.train.state import TrainState, make_optimizer
from motionaura_jax.train.task import Task


class TinyRegressionData:
    """Examples `x ~ N(0,1)^(L,D)`, `y = tanh(x W1) W2` from a fixed teacher; each example a pure function of
    (seed, index). Every epoch is a seeded permutation; global batch j is permutation[j*B:(j+1)*B] and process p
    takes its contiguous slice, so processes are disjoint and the state is just the batch counter."""

    def __init__(
        self,
        data_cfg: ml_collections.ConfigDict,
        *,
        global_batch: int,
        seed: int,
        process_index: int,
        process_count: int,
    ):
        self.cfg = data_cfg
        self.global_batch, self.seed = global_batch, seed
        self.local_batch = global_batch // process_count
        self.offset = process_index * self.local_batch
        self.batch_index = 0
        teacher = np.random.default_rng([seed, 7])
        self.w1 = teacher.normal(size=(data_cfg.in_dim, data_cfg.hidden)).astype(np.float32) / np.sqrt(
            data_cfg.in_dim
        )
        self.w2 = teacher.normal(size=(data_cfg.hidden, data_cfg.out_dim)).astype(np.float32)

    def example(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.random.default_rng([self.seed, 1, index]).normal(size=(self.cfg.length, self.cfg.in_dim))
        x = x.astype(np.float32)
        return x, np.tanh(x @ self.w1) @ self.w2

    def _indices(self, batch_index: int) -> np.ndarray:
        n = self.cfg.num_examples
        per_epoch = n // self.global_batch
        epoch, within = divmod(batch_index, per_epoch)
        perm = np.random.default_rng([self.seed, 2, epoch]).permutation(n)
        start = within * self.global_batch + self.offset
        return perm[start : start + self.local_batch]

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.cfg.delay_s:
            time.sleep(self.cfg.delay_s)  # simulated I/O latency (tests of kill/preemption timing)
        indices = self._indices(self.batch_index)
        self.batch_index += 1
        xs, ys = zip(*(self.example(int(i)) for i in indices), strict=True)
        return {"x": np.stack(xs), "y": np.stack(ys).astype(np.float32), "index": indices.astype(np.int32)}

    def get_state(self) -> dict:
        return {"batch_index": self.batch_index}

    def set_state(self, state: dict) -> None:
        self.batch_index = int(state["batch_index"])


def make_task(config: ml_collections.ConfigDict, mesh: Mesh) -> Task:
    model = TinyModel(config.model)
    tx = make_optimizer(config.train)
    dummy = jnp.zeros((1, config.data.length, config.data.in_dim), jnp.float32)

    def init_state(rng: jax.Array) -> TrainState:
        params = model.init(rng, dummy)["params"]
        return TrainState.create(params, tx)

    def train_step(state: TrainState, batch, rng, step):
        def loss_fn(params):
            return mse(model.apply({"params": params}, batch["x"]), batch["y"])

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        state, grad_norm = state.apply_gradients(grads, tx)
        # Order-sensitive fingerprint of the batch: lets tests compare the data order of two runs.
        position = jnp.arange(1, batch["index"].shape[0] + 1, dtype=jnp.float32)
        fingerprint = jnp.sum((batch["index"].astype(jnp.float32) + 1.0) * position)
        metrics = {"loss": loss, "grad_norm": grad_norm, "batch_fingerprint": fingerprint}
        return state, metrics

    def make_data(process_index: int, process_count: int) -> TinyRegressionData:
        return TinyRegressionData(
            config.data,
            global_batch=config.train.batch_size,
            seed=config.train.seed,
            process_index=process_index,
            process_count=process_count,
        )

    held_out = TinyRegressionData(
        config.data,
        global_batch=config.train.batch_size,
        seed=config.train.seed + 1,
        process_index=0,
        process_count=1,
    )
    eval_x, eval_y = (np.stack(a) for a in zip(*(held_out.example(i) for i in range(64)), strict=True))
    eval_loss = jax.jit(lambda params: mse(model.apply({"params": params}, eval_x), eval_y))

    def eval_fn(state: TrainState, step: int, workdir) -> dict[str, float]:
        return {"loss": float(eval_loss(state.params))}

    def batch_spec(batch: int) -> dict[str, jax.ShapeDtypeStruct]:
        d = config.data
        return {
            "x": jax.ShapeDtypeStruct((batch, d.length, d.in_dim), jnp.float32),
            "y": jax.ShapeDtypeStruct((batch, d.length, d.out_dim), jnp.float32),
            "index": jax.ShapeDtypeStruct((batch,), jnp.int32),
        }

    return Task(
        init_state=init_state,
        train_step=train_step,
        make_data=make_data,
        eval_fn=eval_fn,
        batch_spec=batch_spec,
    )
