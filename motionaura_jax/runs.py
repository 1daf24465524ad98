"""A trained run, loaded for inference: its config, its model and the variables the model applies with.

    from motionaura_jax.runs import load_run
    run = load_run("runs/quickstart/vae")              # or gs://bucket/run on a TPU VM
    out = run.model.apply(run.variables, video_bthwc)   # a tokenizer: {"recon", "ids", ...}

Only what inference needs is read: the parameters (and a tokenizer's EMA codebook), through a partial Orbax
restore of the checkpoint's train-state item. Optimizer state, discriminator and data-iterator state stay on
disk. No trainer is imported: a run is a folder with `config.json` and `checkpoints/<step>/state`.

An export folder (`motionaura export`, see `export.py`: `config.json` + safetensors) loads the same way, without
Orbax; its tensors are checked against the model its config builds, and a missing, misshapen or damaged one is
named in the error.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from etils import epath
from jax.sharding import Mesh

from motionaura_jax import config as config_lib
from motionaura_jax import export as export_lib
from motionaura_jax import paths
from motionaura_jax.parallel import mesh as mesh_lib
from motionaura_jax.parallel import sharding as sharding_lib

log = logging.getLogger(__name__)

# Where each task's defaults live (the keys a config.json saved by an older version may lack).
TASK_DEFAULTS = {
    "vae": "motionaura_jax.configs.vae",
    "t2v": "motionaura_jax.configs.t2v",
    "inpaint": "motionaura_jax.configs.inpaint",
    "tiny": "motionaura_jax.configs.tiny",
}


class RunError(ValueError):
    """A workdir that cannot be loaded as asked; the message names the folder and the fix.

    For example:

        try:
            run = load_run("runs/not_trained_yet")
        except RunError as error:
            print(error)   # "no checkpoint in runs/not_trained_yet/checkpoints: train the run first ..."
    """


@dataclasses.dataclass(frozen=True)
class InferenceSpec:
    """How to rebuild a task's model from its config and which train-state entries inference restores.

    collections: Flax collection name -> the train-state field that holds it (e.g. {"params": "params"}).
    """

    build_model: Callable[[ml_collections.ConfigDict], nn.Module]
    example_inputs: Callable[[ml_collections.ConfigDict], tuple[jax.ShapeDtypeStruct, ...]]
    collections: Mapping[str, str]


def _vae_spec() -> InferenceSpec:
    from motionaura_jax.models.vqvae import VQVAE

    def example(config):
        d = config.data
        return (jax.ShapeDtypeStruct((1, int(d.frames), int(d.size), int(d.size), 3), jnp.float32),)

    return InferenceSpec(lambda c: VQVAE(c.model), example, {"params": "params", "vq": "vq"})


def _t2v_spec() -> InferenceSpec:
    from motionaura_jax.models.denoiser import SpectralDenoiser

    def example(config):
        grid = tuple(int(g) for g in config.tokens.grid)
        text_len, text_dim = int(config.tokens.text_len), int(config.model.text_dim)
        return (
            jax.ShapeDtypeStruct((1, *grid), jnp.int32),
            jax.ShapeDtypeStruct((1,), jnp.int32),
            jax.ShapeDtypeStruct((1,), jnp.float32),
            jax.ShapeDtypeStruct((1, text_len, text_dim), jnp.float32),
            jax.ShapeDtypeStruct((1, text_len), jnp.bool_),
        )

    return InferenceSpec(lambda c: SpectralDenoiser(c.model), example, {"params": "params"})


def _tiny_spec() -> InferenceSpec:
    from motionaura_jax.models.tiny import TinyModel

    def example(config):
        return (jax.ShapeDtypeStruct((1, int(config.data.length), int(config.data.in_dim)), jnp.float32),)

    return InferenceSpec(lambda c: TinyModel(c.model), example, {"params": "params"})


def _inpaint_spec() -> InferenceSpec:
    # The trainable tree only (adapters, segment embeddings, sketch encoder); the frozen base t2v run is
    # named in config.inpaint.t2v_workdir and loaded on its own (pipelines/inpaint.py).
    from motionaura_jax.models.inpaint import build_trainables

    def build(config):
        return build_trainables(config.model, config.inpaint, tuple(config.tokens.grid))

    def example(config):
        size = int(config.data.size)
        return (jax.ShapeDtypeStruct((1, size, size, 1), jnp.uint8),)

    return InferenceSpec(build, example, {"params": "params"})


SPECS: dict[str, Callable[[], InferenceSpec]] = {
    "vae": _vae_spec,
    "t2v": _t2v_spec,
    "tiny": _tiny_spec,
    "inpaint": _inpaint_spec,
}


@dataclasses.dataclass
class Run:
    """A run's config, its model (a Linen module) and the variables `model.apply` takes.

    For example:

        run = load_run("runs/vae_tiny")                                # -> Run
        out = run.model.apply(run.variables, video_bthwc, train=False)
    """

    workdir: epath.Path
    config: ml_collections.ConfigDict
    model: nn.Module
    variables: dict[str, Any]
    step: int
    mesh: Mesh

    @property
    def task(self) -> str:
        return str(self.config.task)

    @property
    def params(self) -> Any:
        return self.variables["params"]


def read_config(
    workdir: str | os.PathLike, overrides: Mapping[str, Any] | None = None
) -> ml_collections.ConfigDict:
    """The resolved `config.json` of a run, with `overrides` ({"data.source": "folder", ...}) applied."""
    workdir = paths.as_path(workdir)
    path = workdir / "config.json"
    if not path.exists():
        raise RunError(f"{path} not found: is {workdir} a training workdir (motionaura train --workdir=...)?")
    try:
        config = config_lib.config_from_json(path)
    except (ValueError, UnicodeDecodeError) as error:  # json.JSONDecodeError is a ValueError
        raise RunError(
            f"{path} is not a readable config ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
            "restore it from the run's checkpoints/<step>/meta or re-run training"
        ) from None
    task = str(config.task) if "task" in config else ""
    if task in TASK_DEFAULTS:
        added = config_lib.fill_missing(config, importlib.import_module(TASK_DEFAULTS[task]).get_config())
        if added:
            log.info("%s predates %s: using their defaults", path, ", ".join(added))
    for key, value in (overrides or {}).items():
        config_lib.apply_override(config, key, str(value))
    return config


def _leaf_name(path: tuple) -> str:
    """ "params/encoder/conv/kernel" for a key path of a restored tree or of Orbax's tree metadata."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def shapes_by_name(tree: Any) -> dict[str, tuple[int, ...]]:
    """{"params/encoder/conv/kernel": shape} for every array-like leaf of `tree` (arrays, ShapeDtypeStructs,
    Orbax metadata)."""
    return {
        _leaf_name(p): tuple(leaf.shape)
        for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
        if hasattr(leaf, "shape")
    }


def checkpoint_mismatch(state_dir: str | os.PathLike, target: Any) -> str | None:
    """None when the arrays saved in `state_dir` (a checkpoint's `state` item) have the shapes of the same
    leaves in `target` (arrays or ShapeDtypeStructs); else what differs, in a few words. Reads only Orbax's
    metadata, so a model of another size is named at once instead of failing (or being moved aside as damaged)
    in the middle of a restore. Leaves only one side has are not compared; unreadable metadata gives None (the
    restore then reports the damage)."""
    import orbax.checkpoint as ocp

    try:
        saved = ocp.PyTreeCheckpointHandler().metadata(paths.as_path(state_dir))
        saved = getattr(saved, "tree", saved)
        on_disk = shapes_by_name(saved)
    except Exception:  # noqa: BLE001 - damage is the restore's to report
        return None
    wanted = shapes_by_name(target)
    differ = [name for name in wanted if name in on_disk and on_disk[name] != wanted[name]]
    if not differ:
        return None
    first = differ[0]
    more = f" (and {len(differ) - 1} more)" if len(differ) > 1 else ""
    return f"{first} is {on_disk[first]} in the checkpoint but {wanted[first]} in the config{more}"


def checkpoint_steps(workdir: str | os.PathLike) -> list[int]:
    """Steps with a committed checkpoint, newest first (Orbax writes a step folder under its final name
    only once it is complete)."""
    directory = paths.as_path(workdir) / "checkpoints"
    if not directory.exists():
        return []
    steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit() and (p / "state").exists()]
    return sorted(steps, reverse=True)


def _inference_mesh(config: ml_collections.ConfigDict) -> Mesh:
    # The saved mesh may not fit this machine: fall back to pure data parallelism over what is here.
    try:
        return mesh_lib.make_mesh(dict(config.mesh.to_dict()))
    except mesh_lib.MeshError:
        return mesh_lib.make_mesh({"data": -1})


def abstract_variables(
    config: ml_collections.ConfigDict, mesh: Mesh, spec: InferenceSpec | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """(model, {collection: ShapeDtypeStructs with shardings}) from `jax.eval_shape`; allocates nothing."""
    spec = spec or SPECS[str(config.task)]()
    model = spec.build_model(config)
    rules = sharding_lib.rules_from_config(config)
    inputs = spec.example_inputs(config)
    with sharding_lib.use_mesh(mesh, rules):
        boxed = jax.eval_shape(lambda *x: model.init({"params": jax.random.PRNGKey(0)}, *x), *inputs)
    boxed = {name: boxed[name] for name in spec.collections if name in boxed}
    shardings = sharding_lib.tree_shardings(boxed, mesh, rules)
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), sharding_lib.unbox(boxed), shardings
    )
    return model, abstract


def load_run(
    workdir: str | os.PathLike,
    *,
    task: str | None = None,
    step: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    mesh: Mesh | None = None,
) -> Run:
    """The config, model and inference variables of the run in `workdir` (newest readable checkpoint, or
    `step`), or of an export folder (`motionaura export`). `task` ("vae", "t2v", ...) checks that the run is
    of the expected kind.

        run = load_run("runs/vae_tiny")   # or an export folder, or gs://bucket/run
        out = run.model.apply(run.variables, video_bthwc, train=False)
    """
    workdir = paths.absolute(workdir)  # Orbax wants absolute local paths; URLs (gs://...) stay as they are
    config = read_config(workdir, overrides)
    name = str(config.task)
    if task is not None and name != task:
        raise RunError(f"{workdir} holds a {name!r} run, not a {task!r} one")
    if name not in SPECS:
        raise RunError(f"{workdir}: no inference model for task {name!r} (known: {sorted(SPECS)})")
    spec = SPECS[name]()
    mesh = mesh or _inference_mesh(config)
    model, abstract = abstract_variables(config, mesh, spec)
    if export_lib.is_export(workdir):
        variables, found_step = _read_export(workdir, abstract)
        if step is not None and step != found_step:
            raise RunError(f"{workdir} is an export of step {found_step}, not {step}")
        return Run(
            workdir=workdir, config=config, model=model, variables=variables, step=found_step, mesh=mesh
        )
    import orbax.checkpoint as ocp  # here: an export folder loads without Orbax

    target = {spec.collections[c]: tree for c, tree in abstract.items()}
    steps = [step] if step is not None else checkpoint_steps(workdir)
    if not steps:
        raise RunError(f"no checkpoint in {workdir / 'checkpoints'}: train the run first (or let it save)")
    mismatch = checkpoint_mismatch(workdir / "checkpoints" / str(steps[0]) / "state", target)
    if mismatch:
        raise RunError(
            f"{workdir}: its checkpoint {steps[0]} holds a different model than its config.json ({mismatch}); "
            f"put back the config.json it was trained with (saved in checkpoints/{steps[0]}/meta)"
        )
    checkpointer = ocp.PyTreeCheckpointer()
    errors = []
    for candidate in steps:
        path = workdir / "checkpoints" / str(candidate) / "state"
        try:
            restored = checkpointer.restore(
                path,
                args=ocp.args.PyTreeRestore(
                    item=target,
                    restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                    partial_restore=True,
                ),
            )
        except Exception as error:  # noqa: BLE001 - an unreadable checkpoint falls back to the previous one
            if step is not None:
                raise RunError(f"checkpoint {path} cannot be read: {error}") from error
            errors.append(f"{candidate}: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
            log.warning("checkpoint %s is unreadable (%s); trying the previous one", path, errors[-1])
            continue
        variables = {c: restored[spec.collections[c]] for c in abstract}
        return Run(
            workdir=workdir, config=config, model=model, variables=variables, step=candidate, mesh=mesh
        )
    raise RunError(f"no readable checkpoint in {workdir / 'checkpoints'} ({'; '.join(errors)})")


def _read_export(folder: epath.Path, abstract: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """(variables placed as `abstract` says, step) from an export folder; errors name the tensor."""
    expected = export_lib.named_leaves(abstract)
    try:
        tensors = export_lib.load_tensors(folder)
        export_lib.check_tensors(tensors, expected, str(folder))
    except export_lib.ExportError as error:
        raise RunError(str(error)) from error
    placed = {name: jax.device_put(tensors[name], spec.sharding) for name, spec in expected.items()}
    return export_lib.unflatten_variables(placed), export_lib.export_step(folder)


def export_run(
    workdir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    step: int | None = None,
    max_shard_bytes: int = export_lib.DEFAULT_MAX_SHARD_BYTES,
) -> epath.Path:
    """Writes the run in `workdir` (newest checkpoint, or `step`) as an export folder `out`: safetensors weights
    (sharded with an index above `max_shard_bytes`), config.json, a model card README.md (see `export.py`).

        export_run("runs/vae_tiny", "exports/vae_tiny")
        run = load_run("exports/vae_tiny")        # the same variables, read without Orbax
    """
    run = load_run(workdir, step=step)
    return export_lib.write_export(
        out,
        config=run.config,
        variables=run.variables,
        step=run.step,
        source=str(paths.as_path(workdir)),
        max_shard_bytes=max_shard_bytes,
    )
