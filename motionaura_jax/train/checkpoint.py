"""Orbax checkpoints behind one small class.

One checkpoint = the train state (model, optimizer, RNG, step: one pytree), every process's data-iterator
state, and a JSON record (config, step, time). Saves are asynchronous and committed atomically by Orbax (a step
directory appears under its final name only once complete). Restore goes through an abstract target whose leaves
carry the *current* mesh's shardings, so a checkpoint written on one mesh restores onto any other. A latest
checkpoint that cannot be read is moved aside with a warning and the previous good one is used.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from motionaura_jax import atomic, paths

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Restored:
    step: int
    state: Any
    data_state: dict | None
    meta: dict


def _gather_json(obj: Any) -> list[Any]:
    """Every process's JSON-able object, in process order (a no-op list of one for a single process)."""
    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils

    raw = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)
    lengths = multihost_utils.process_allgather(np.array([raw.size], np.int32))
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: raw.size] = raw
    gathered = multihost_utils.process_allgather(padded)
    return [
        json.loads(bytes(row[: int(n)]).decode())
        for row, n in zip(gathered, lengths.reshape(-1), strict=True)
    ]


class Checkpointer:
    """Async, keep-N, atomic checkpoints of (state, data-iterator state, meta) in `directory`."""

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3, async_save: bool = True):
        # epath, not pathlib: a gs:// directory must reach Orbax (and TensorStore's GCS driver) as a URL; only
        # local paths are made absolute (Orbax requires it; on a URL `.absolute()` would prepend the cwd).
        self.directory = paths.absolute(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    # -- save --------------------------------------------------------------------------------------------------

    def save(
        self,
        step: int,
        state: Any,
        *,
        data_state: dict | None = None,
        meta: dict | None = None,
        wait: bool = False,
    ) -> None:
        """Starts an asynchronous save of `state` at `step`; `wait=True` returns only once it is committed."""
        data_states = _gather_json(data_state)
        record = {
            "step": int(step),
            "time": time.time(),
            "process_count": jax.process_count(),
            **(meta or {}),
        }
        if step in self._manager.all_steps():
            log.info("checkpoint %d already exists; not saving again", step)
            return
        try:
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    data=ocp.args.JsonSave({"processes": data_states}),
                    meta=ocp.args.JsonSave(record),
                ),
                force=True,
            )
        except Exception as error:
            if atomic.is_disk_full(error):
                raise self._disk_full(error, step, state) from error
            raise
        if wait:
            self.wait()

    def wait(self) -> None:
        try:
            self._manager.wait_until_finished()
        except Exception as error:  # an async save's failure surfaces here
            if atomic.is_disk_full(error):
                raise self._disk_full(error, None, None) from error
            raise

    def _disk_full(self, error: BaseException, step: int | None, state: Any) -> atomic.DiskFullError:
        """One line naming the folder and the space needed; the previous checkpoints are untouched (Orbax writes
        a step under a temporary name, removed here, and commits it by renaming)."""
        for tmp in self.directory.glob("*.orbax-checkpoint-tmp-*") if paths.is_local(self.directory) else []:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        need = None
        if state is not None:
            need = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(state))
        where = self.directory / str(step) if step is not None else self.directory
        return atomic.disk_full(where, need, "saving checkpoint")

    # -- restore -----------------------------------------------------------------------------------------------

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def restore(self, abstract_state: Any, step: int | None = None) -> Restored | None:
        """Restores `step` (default: the newest readable one) onto the shardings in `abstract_state`.

        `abstract_state` is a tree of `jax.ShapeDtypeStruct`s with `.sharding` set. Returns None when there is no
        checkpoint. A newest checkpoint that fails to read is moved aside (`damaged-STEP-TIME`) with a warning.
        """
        steps = [step] if step is not None else sorted(self._manager.all_steps(), reverse=True)
        for candidate in steps:
            try:
                restored = self._manager.restore(
                    candidate,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state),
                        data=ocp.args.JsonRestore(),
                        meta=ocp.args.JsonRestore(),
                    ),
                )
            except Exception as error:  # noqa: BLE001 - any unreadable checkpoint falls back the same way
                if step is not None:
                    raise
                log.warning(
                    "checkpoint at step %d in %s is unreadable (%s: %s); falling back to the previous one",
                    candidate,
                    self.directory,
                    type(error).__name__,
                    str(error).splitlines()[0][:300],
                )
                self._move_aside(candidate)
                continue
            processes = (restored.data or {}).get("processes") or [None]
            index = jax.process_index()
            if len(processes) != jax.process_count():
                log.warning(
                    "checkpoint was written by %d processes, now %d: the data iterator starts afresh",
                    len(processes),
                    jax.process_count(),
                )
                data_state = None
            else:
                data_state = processes[index]
            return Restored(
                step=candidate, state=restored.state, data_state=data_state, meta=dict(restored.meta)
            )
        return None

    def _move_aside(self, step: int) -> None:
        if jax.process_index() == 0:
            source = self.directory / str(step)
            if source.exists():
                source.rename(self.directory / f"damaged-{step}-{int(time.time())}")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"moved aside checkpoint {step}")
        self._manager.reload()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
