"""The generic training loop every stage runs, read top to bottom:

mesh -> task and input -> sharded init -> checkpoint (restore or fresh) -> jitted step -> loop.

Re-running the same command on the same workdir resumes from the newest good checkpoint, with the data iterator
exactly where it stopped. SIGTERM (preemption) saves at the current step and returns normally. A non-finite loss
stops the run naming the first bad step, and no checkpoint is ever written from a non-finite state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from motionaura_jax import config as config_lib
from motionaura_jax import paths, runs
from motionaura_jax.parallel import mesh as mesh_lib
from motionaura_jax.parallel import sharding as sharding_lib
from motionaura_jax.train import finite
from motionaura_jax.train import tasks as tasks_lib
from motionaura_jax.train.checkpoint import Checkpointer
from motionaura_jax.train.logging import MetricWriter
from motionaura_jax.train.task import Task

log = logging.getLogger("motionaura")


# A NaN or inf in the run (train/finite.py); the message names the step and the first non-finite quantity.
NonFiniteLossError = finite.NonFiniteError


@dataclasses.dataclass
class TrainResult:
    state: Any
    step: int
    last_metrics: dict[str, float]
    preempted: bool = False
    out_of_time: bool = False  # stopped by train.time_limit_min


@dataclasses.dataclass
class Setup:
    """Everything derived from a config before any step runs (shared by training and inference restore)."""

    config: ml_collections.ConfigDict
    mesh: Mesh
    rules: tuple
    task: Task
    init_rng: jax.Array
    train_rng: jax.Array
    state_shardings: Any
    abstract_state: Any  # ShapeDtypeStructs carrying the shardings: the restore target


def _count(tree: Any) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def build(config: ml_collections.ConfigDict, mesh: Mesh | None = None) -> Setup:
    """Mesh, task and the sharded abstract state; allocates nothing."""
    # --- mesh ------------------------------------------------------------------------------------------------
    mesh = mesh or mesh_lib.make_mesh(config.mesh.to_dict())
    rules = sharding_lib.rules_from_config(config)
    # --- task ------------------------------------------------------------------------------------------------
    task = tasks_lib.make_task(config, mesh)
    init_rng, train_rng = jax.random.split(jax.random.PRNGKey(config.train.seed))
    # --- shardings from the logical names of an abstract init ------------------------------------------------
    with sharding_lib.use_mesh(mesh, rules):
        boxed = jax.eval_shape(task.init_state, init_rng)
    state_shardings = sharding_lib.tree_shardings(boxed, mesh, rules)
    abstract_state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        sharding_lib.unbox(boxed),
        state_shardings,
    )
    return Setup(config, mesh, rules, task, init_rng, train_rng, state_shardings, abstract_state)


def init_state(setup: Setup) -> Any:
    """Parameters and optimizer state created directly in their shards (`jit` with `out_shardings`)."""
    init = jax.jit(
        lambda rng: sharding_lib.unbox(setup.task.init_state(rng)), out_shardings=setup.state_shardings
    )
    with sharding_lib.use_mesh(setup.mesh, setup.rules):
        return init(setup.init_rng)


def warm_start(state: Any, setup: Setup, source: str) -> Any:
    """`state` with the inference variables of the run in `source` (its newest checkpoint through
    `runs.load_run`: the parameters, and a tokenizer's EMA codebook): a fresh run that starts from another's
    weights (`train.init_from`) with its own optimizer state, schedule and data. Both runs build the same model."""
    task = str(setup.config.task)
    run = runs.load_run(source, task=task, mesh=setup.mesh)
    fields = {}
    for collection, tree in run.variables.items():
        field = runs.SPECS[task]().collections[collection]
        own = getattr(setup.abstract_state, field)
        got, want = runs.shapes_by_name(tree), runs.shapes_by_name(own)
        if got.keys() != want.keys():
            mismatch = f"the variable names differ: {sorted(got.keys() ^ want.keys())[0]}"
        else:
            differ = [name for name in want if got[name] != want[name]]
            mismatch = differ and f"{differ[0]} is {got[differ[0]]} there but {want[differ[0]]} here"
        if mismatch:
            raise ValueError(
                f"train.init_from={source}: its model is not this config's ({collection}: {mismatch}); give the "
                "model.* keys of that run, or leave train.init_from empty"
            )
        fields[field] = jax.tree.map(
            lambda x, ref: jax.device_put(x.astype(ref.dtype), ref.sharding), tree, own
        )
    log.info("%s from %s (step %d); optimizer state fresh", ", ".join(fields), run.workdir, run.step)
    return state.replace(**fields)


def batch_field_sharding(setup: Setup, key: str, global_shape: tuple[int, ...]) -> NamedSharding:
    """The sharding of one global batch field: the task's `batch_axes[key]` (default: batch dim first)."""
    return sharding_lib.batch_sharding(
        setup.mesh, len(global_shape), setup.task.batch_axes.get(key), setup.rules, global_shape
    )


def _global_batch(host_batch: Mapping[str, np.ndarray], setup: Setup) -> dict[str, jax.Array]:
    """Host-local numpy fields -> global jax.Arrays on the mesh (strings stay on the host)."""
    batch = {}
    for key, value in host_batch.items():
        value = np.asarray(value)
        if value.dtype.kind not in "biuf":
            continue
        global_shape = (value.shape[0] * jax.process_count(),) + value.shape[1:]
        sharding = batch_field_sharding(setup, key, global_shape)
        batch[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
    return batch


def jit_train_step(setup: Setup, batch_shardings: Mapping[str, NamedSharding]) -> Any:
    """The jitted step `(state, batch, step) -> (state, metrics)` that `motionaura train` runs and `motionaura
    compile` (train/aot.py) compiles ahead of time: the task's step on `fold_in(train_rng, step)`, the state in
    and out on its shardings and donated, the batch on `batch_shardings`, the step and metrics replicated.
    Trace it inside `sharding_lib.use_mesh(setup.mesh, setup.rules)` (activation constraints)."""
    replicated = NamedSharding(setup.mesh, PartitionSpec())
    train_rng = setup.train_rng

    def task_step(state, batch, step):
        return setup.task.train_step(state, batch, jax.random.fold_in(train_rng, step), step)

    tcfg = setup.config.train
    step_fn = finite.guarded_step(
        task_step, finite.parse_injection(tcfg.inject_nonfinite), bool(tcfg.skip_nonfinite)
    )
    return jax.jit(
        step_fn,
        in_shardings=(setup.state_shardings, dict(batch_shardings), replicated),
        out_shardings=(setup.state_shardings, replicated),
        donate_argnums=0,
    )


def check_batch_size(config: ml_collections.ConfigDict, mesh: Mesh) -> int:
    """Global batch -> per-host batch, with clear errors for sizes that do not split."""
    global_batch = int(config.train.batch_size)
    if global_batch % jax.process_count():
        raise ValueError(
            f"train.batch_size={global_batch} does not split over {jax.process_count()} processes"
        )
    batch_devices = mesh.shape["data"] * mesh.shape["fsdp"]
    if global_batch % batch_devices:
        raise ValueError(
            f"train.batch_size={global_batch} is not a multiple of data*fsdp={batch_devices} "
            f"(mesh {mesh_lib.describe(mesh)})"
        )
    return global_batch // jax.process_count()


class _Preemption:
    """SIGTERM sets a flag the loop checks after each step (signal handlers only run in the main thread)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _profile_folder(workdir: epath.Path) -> str:
    """Where jax.profiler writes: WORKDIR/profile itself on a local folder, a local temporary folder for a URL
    (copied to WORKDIR/profile by `_stop_profile`), since the profiler writes through local file APIs."""
    if paths.is_local(workdir):
        return str(workdir / "profile")
    return tempfile.mkdtemp(prefix="motionaura-profile-")


def _stop_profile(workdir: epath.Path, folder: str) -> None:
    jax.profiler.stop_trace()
    if not paths.is_local(workdir):
        paths.sync_dir(folder, workdir / "profile")
        shutil.rmtree(folder, ignore_errors=True)


def _check_previous_task(workdir: epath.Path, task: str) -> None:
    """A workdir that already holds a run of another task (or an unreadable config.json) is refused before
    anything is built or written: resuming it is impossible and overwriting its config.json would orphan it."""
    previous = workdir / "config.json"
    if not previous.exists():
        return
    try:
        old_task = str(config_lib.config_from_json(previous).get("task", task))
    except (ValueError, UnicodeDecodeError) as error:
        raise paths.WorkdirError(
            f"workdir {workdir}: its config.json cannot be read ({type(error).__name__}); use a new --workdir, "
            "or restore config.json from checkpoints/<step>/meta"
        ) from None
    if old_task != task:
        raise paths.WorkdirError(
            f"workdir {workdir} holds a {old_task!r} run, not a {task!r} one; use a new --workdir"
        )


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> TrainResult:
    """Runs (or resumes) `config.task` for `config.train.steps` steps in `workdir` (a folder or a gs:// URL).

    The workdir is probed first (`paths.probe_workdir`): one that cannot be written fails here with
    `paths.WorkdirError`, before anything is built."""
    invocation_start = time.perf_counter()  # train.time_limit_min counts from here
    workdir = paths.probe_workdir(workdir)
    _check_previous_task(workdir, str(config.task))
    tcfg = config.train
    is_main = jax.process_index() == 0

    # --- mesh, task, sharded abstract state --------------------------------------------------------------------
    setup = build(config)
    # Before config.json is replaced: a checkpoint of another model size cannot be resumed, and moving it
    # aside as damaged would lose it.
    saved_steps = runs.checkpoint_steps(workdir)
    if saved_steps:
        newest = workdir / "checkpoints" / str(saved_steps[0]) / "state"
        mismatch = runs.checkpoint_mismatch(newest, setup.abstract_state)
        if mismatch:
            raise paths.WorkdirError(
                f"workdir {workdir} holds checkpoints of a different model ({mismatch}); use a new --workdir, "
                "or the config the run was trained with"
            )
    mesh = setup.mesh
    check_batch_size(config, mesh)
    n_params = _count(setup.task.params_of(setup.abstract_state))
    state_bytes = sharding_lib.bytes_per_device(setup.abstract_state)
    log.info(
        "task %s | mesh %s over %d devices, %d processes | %.3fM parameters | train state %.1f MiB total, "
        "%.1f MiB on the fullest device",
        config.task,
        mesh_lib.describe(mesh),
        mesh.size,
        jax.process_count(),
        n_params / 1e6,
        state_bytes["total"] / 2**20,
        state_bytes["max"] / 2**20,
    )
    if is_main:
        previous = workdir / "config.json"
        if previous.exists() and config_lib.config_from_json(previous).to_json(
            sort_keys=True
        ) != config.to_json(sort_keys=True):
            log.warning("config differs from the one already in %s; the new one is used and saved", workdir)
        config_lib.save_config(config, workdir)

    # --- input ---------------------------------------------------------------------------------------------------
    data = setup.task.make_data(jax.process_index(), jax.process_count())

    # --- checkpoint: resume or start fresh -----------------------------------------------------------------------
    checkpointer = Checkpointer(
        workdir / "checkpoints", max_to_keep=int(tcfg.keep), async_save=bool(tcfg.async_checkpoint)
    )
    restored = checkpointer.restore(setup.abstract_state)
    if restored is not None:
        state, start_step = restored.state, restored.step
        if restored.data_state is not None:
            data.set_state(restored.data_state)
        log.info("resumed from step %d in %s", start_step, checkpointer.directory)
    else:
        state, start_step = init_state(setup), 0
        if tcfg.init_from:
            state = warm_start(state, setup, str(tcfg.init_from))
    train_rng = setup.train_rng

    # --- step (jit_train_step: the same jit `motionaura compile` compiles) ---------------------------------------
    compiled_step = None

    def meta() -> dict:
        return {
            "config": config.to_dict(),
            "rng": np.asarray(jax.random.key_data(train_rng)).tolist(),
            "task": config.task,
            # Carried across resumes so that train.max_nonfinite bounds the whole run, not each attempt.
            "nonfinite_skipped": skipped,
        }

    # --- loop --------------------------------------------------------------------------------------------------
    writer = MetricWriter(workdir)
    total_steps = int(tcfg.steps)
    log_every, ckpt_every = max(1, int(tcfg.log_every)), int(tcfg.ckpt_every)
    eval_every, sample_every = int(tcfg.eval_every), int(tcfg.sample_every)
    profile_start, profile_steps = int(tcfg.profile_start), int(tcfg.profile_steps)
    profiling, profile_folder = False, ""
    pending: list[tuple[int, dict]] = []
    last_metrics: dict[str, float] = {}
    skip_nonfinite, max_nonfinite = bool(tcfg.skip_nonfinite), int(tcfg.max_nonfinite)
    skipped = int((restored.meta if restored is not None else {}).get("nonfinite_skipped", 0))
    last_saved = start_step if restored is not None else -1
    window_start, window_steps, data_wait = time.perf_counter(), 0, 0.0
    preempted = out_of_time = False
    time_limit_s = 60.0 * float(tcfg.time_limit_min)
    bar = tqdm(
        total=total_steps, initial=start_step, disable=not is_main, desc=config.task, dynamic_ncols=True
    )
    step = start_step
    try:
        with _Preemption() as preemption, sharding_lib.use_mesh(mesh, setup.rules):
            while step < total_steps:
                wait_start = time.perf_counter()
                batch = _global_batch(next(data), setup)
                data_wait += time.perf_counter() - wait_start
                if compiled_step is None:
                    compiled_step = jit_train_step(setup, {k: v.sharding for k, v in batch.items()})
                if step == profile_start and profile_steps > 0:
                    profile_folder = _profile_folder(workdir)
                    jax.profiler.start_trace(profile_folder)
                    profiling = True
                state, metrics = compiled_step(state, batch, jnp.asarray(step, jnp.int32))
                step += 1
                window_steps += 1
                pending.append((step, metrics))
                if profiling and step >= profile_start + profile_steps:
                    jax.block_until_ready(state)
                    _stop_profile(workdir, profile_folder)
                    profiling = False

                # Read the flag once: a SIGTERM landing during logging or hooks below is handled after the next step,
                # never announced as saved without a save.
                over_time = time_limit_s > 0 and time.perf_counter() - invocation_start > time_limit_s
                stop_requested = preemption.requested or over_time
                save_now = (
                    (ckpt_every > 0 and step % ckpt_every == 0) or step == total_steps or stop_requested
                )
                if step % log_every == 0 or save_now:
                    fetched = [(s, jax.device_get(m)) for s, m in pending]
                    pending.clear()
                    good = []
                    for s, m in fetched:
                        quantity = finite.first_bad(m)
                        if quantity is None:
                            good.append((s, finite.strip_flags(m)))
                            continue
                        where = (
                            f"The last good checkpoint is step {checkpointer.latest_step()} in "
                            f"{checkpointer.directory}"
                        )
                        if not skip_nonfinite:
                            raise NonFiniteLossError(
                                f"{quantity} is not finite at step {s} (task {config.task}); stopped. {where}. "
                                "Lower train.lr or check the data, then re-run to resume (or set "
                                "--config.train.skip_nonfinite=True to skip such steps)."
                            )
                        skipped += 1
                        log.warning(
                            "step %d skipped: %s is not finite (%d skipped so far)", s, quantity, skipped
                        )
                        if skipped > max_nonfinite:
                            raise NonFiniteLossError(
                                f"{quantity} is not finite at step {s} (task {config.task}), skipped step "
                                f"{skipped} of the run: over train.max_nonfinite={max_nonfinite}; stopped. {where}."
                            )
                    fetched = good or [(s, finite.strip_flags(m)) for s, m in fetched[-1:]]
                    elapsed = time.perf_counter() - window_start
                    last_metrics = {k: float(np.mean([m[k] for _, m in fetched])) for k in fetched[-1][1]}
                    last_metrics["steps_per_sec"] = window_steps / max(elapsed, 1e-9)
                    # Fraction of wall time the loop spent waiting for the input pipeline.
                    last_metrics["data_wait_frac"] = data_wait / max(elapsed, 1e-9)
                    if skip_nonfinite:
                        last_metrics["nonfinite_skipped"] = float(skipped)
                    if hasattr(data, "metrics"):  # e.g. unreadable files the input pipeline skipped
                        last_metrics.update(
                            {
                                k if k.startswith("data/") else f"data/{k}": float(v)
                                for k, v in data.metrics().items()
                            }
                        )
                    writer.write(step, last_metrics)
                    bar.set_postfix(
                        loss=f"{last_metrics['loss']:.4g}", steps_s=f"{last_metrics['steps_per_sec']:.2f}"
                    )
                    window_start, window_steps, data_wait = time.perf_counter(), 0, 0.0
                bar.update(1)

                if eval_every and setup.task.eval_fn and (step % eval_every == 0 or step == total_steps):
                    eval_metrics = setup.task.eval_fn(state, step, workdir)
                    writer.write(step, {f"eval/{k}": v for k, v in eval_metrics.items()})
                    log.info(
                        "step %d eval: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in eval_metrics.items())
                    )
                if (
                    sample_every
                    and setup.task.sample_fn
                    and (step % sample_every == 0 or step == total_steps)
                ):
                    samples = setup.task.sample_fn(state, step, workdir)
                    if samples:  # contact sheets / videos, in TensorBoard beside the metrics
                        writer.write_images(step, samples)

                if save_now and step != last_saved:
                    writer.flush()  # metrics up to this step are stored before the checkpoint that holds it
                    checkpointer.save(
                        step,
                        state,
                        data_state=data.get_state(),
                        meta=meta(),
                        wait=stop_requested or step == total_steps,
                    )
                    last_saved = step
                if stop_requested:
                    preempted, out_of_time = not over_time, over_time
                    reason = (
                        f"train.time_limit_min={tcfg.time_limit_min:g} reached"
                        if over_time
                        else "SIGTERM received"
                    )
                    msg = f"{reason}: saved checkpoint at step {step} in {checkpointer.directory}; exiting."
                    log.warning(msg)
                    print(msg, flush=True)
                    break
    except BaseException:
        # Already failing (a full disk, a non-finite step): closing must not replace that error with its own.
        bar.close()
        with contextlib.suppress(Exception):
            writer.close()
        with contextlib.suppress(Exception):
            checkpointer.close()
        raise
    else:
        bar.close()
        writer.close()
        checkpointer.close()
    finally:
        if profiling:
            _stop_profile(workdir, profile_folder)
    return TrainResult(
        state=state, step=step, last_metrics=last_metrics, preempted=preempted, out_of_time=out_of_time
    )


def restore_state(
    workdir: str | os.PathLike,
    *,
    mesh: Mesh | None = None,
    step: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[ml_collections.ConfigDict, Any, Setup]:
    """The config and the newest good train state of a run, on `mesh` (default: the config's mesh).

    `overrides` ({"data.source": "folder", ...}) adjust the saved config (e.g. to point evaluation at other data).
    """
    workdir = paths.as_path(workdir)
    config_path = workdir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(
            f"{config_path} not found: is {workdir} a training workdir (motionaura train --workdir=...)?"
        )
    config = config_lib.config_from_json(config_path)
    for key, value in (overrides or {}).items():
        config_lib.apply_override(config, key, str(value))
    if mesh is None:
        mesh_config = dict(config.mesh.to_dict())
        # The saved mesh may not fit this machine: fall back to pure data parallelism over what is here.
        try:
            mesh = mesh_lib.make_mesh(mesh_config)
        except mesh_lib.MeshError:
            mesh = mesh_lib.make_mesh({"data": -1})
    setup = build(config, mesh)
    with Checkpointer(workdir / "checkpoints") as checkpointer:
        restored = checkpointer.restore(setup.abstract_state, step=step)
    if restored is None:
        raise FileNotFoundError(f"no checkpoint in {workdir / 'checkpoints'}")
    return config, restored.state, setup
