"""A trained run as a self-contained folder: inference variables as safetensors, the resolved config, a model card.

    motionaura export --ckpt=runs/quickstart/vae --out=exports/vae_quickstart

    exports/vae_quickstart/
      config.json                      the run's resolved config (what `runs.load_run` rebuilds the model from)
      model.safetensors                every inference variable, named "<collection>.<module path>.<name>"
      README.md                        model card: task, data, training steps, measured metrics
      export.json                      format version, source run and step, the tensors' names/shapes/dtypes

Above `max_shard_bytes` the tensors are split over model-00001-of-0000N.safetensors files with a
model.safetensors.index.json ({"metadata": {"total_size": ...}, "weight_map": {name: file}}), as Hugging Face
does. Each file's safetensors metadata holds a SHA-256 per tensor, so a damaged file is caught and the tensor
named when the export is read. Reading needs only the `safetensors` package (no Orbax, no trainer):

    from safetensors.numpy import load_file
    tensors = load_file("exports/vae_quickstart/model.safetensors")   # {name: np.ndarray}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath

from motionaura_jax import atomic, paths
from motionaura_jax import config as config_lib

FORMAT = "motionaura-export-1"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 2 * 1024**3  # Hugging Face's default shard size is in this range (2-5 GB)


class ExportError(ValueError):
    """An export folder that cannot be read as the model its config describes; the message names the tensor."""


def is_export(folder: str | os.PathLike) -> bool:
    """True for a folder written by `write_export` (it has safetensors weights next to its config)."""
    folder = paths.as_path(folder)
    return (folder / "config.json").exists() and (
        (folder / SINGLE_FILE).exists() or (folder / INDEX_FILE).exists()
    )


def named_leaves(tree: Mapping[str, Any]) -> dict[str, Any]:
    """{collection: nested dict} -> {"params.encoder.stem.proj.kernel": leaf}: the export's tensor names."""
    return {
        ".".join(str(getattr(k, "key", k)) for k in path): leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(dict(tree))[0]
    }


def flatten_variables(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """{collection: nested dict of arrays} -> {tensor name: host numpy array}."""
    return {name: np.asarray(jax.device_get(leaf)) for name, leaf in named_leaves(variables).items()}


def unflatten_variables(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Inverse of `flatten_variables`."""
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _save_file(path: epath.Path, tensors: Mapping[str, np.ndarray]) -> None:
    from safetensors.numpy import save

    metadata = {"format": "np", **{f"sha256:{n}": _sha256(a) for n, a in tensors.items()}}
    atomic.write_bytes(path, save({n: np.ascontiguousarray(a) for n, a in tensors.items()}, metadata))


def save_tensors(
    folder: str | os.PathLike,
    tensors: Mapping[str, np.ndarray],
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> list[str]:
    """Writes `tensors` as model.safetensors, or as numbered shards + index when they exceed `max_shard_bytes`
    (a tensor larger than a shard gets a shard of its own). Returns the file names written."""
    folder = paths.mkdir(folder)
    names = sorted(tensors)
    total = sum(tensors[n].nbytes for n in names)
    if total <= max_shard_bytes:
        _save_file(folder / SINGLE_FILE, tensors)
        return [SINGLE_FILE]
    shards: list[list[str]] = [[]]
    size = 0
    for name in names:
        nbytes = tensors[name].nbytes
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    files, weight_map = [], {}
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        _save_file(folder / file, {n: tensors[n] for n in shard})
        files.append(file)
        weight_map.update({n: file for n in shard})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    atomic.write_text(folder / INDEX_FILE, json.dumps(index, indent=2) + "\n")
    return [*files, INDEX_FILE]


def _weight_map(folder: epath.Path) -> dict[str, list[str] | None]:
    """{file: the tensor names the index gives it (None: a single file, names unknown until it is opened)}."""
    if (folder / INDEX_FILE).exists():
        try:
            weight_map = json.loads((folder / INDEX_FILE).read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError) as error:
            raise ExportError(f"{folder / INDEX_FILE} is not a safetensors index: {error}") from error
        files: dict[str, list[str] | None] = {}
        for name, file in weight_map.items():
            files.setdefault(file, []).append(name)  # type: ignore[union-attr]
        return files
    return {SINGLE_FILE: None}


@contextlib.contextmanager
def _local(path: epath.Path) -> Iterator[pathlib.Path]:
    """A local file with `path`'s bytes (safetensors opens local files only; gs:// objects are copied)."""
    if paths.is_local(path):
        yield pathlib.Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="motionaura-export-") as tmp:
        local = pathlib.Path(tmp) / path.name
        local.write_bytes(path.read_bytes())
        yield local


def load_tensors(folder: str | os.PathLike, verify: bool = True) -> dict[str, np.ndarray]:
    """{name: array} of an export folder (single file or sharded), each checked against its stored SHA-256."""
    from safetensors import SafetensorError, safe_open

    folder = paths.as_path(folder)
    tensors: dict[str, np.ndarray] = {}
    for file, expected in _weight_map(folder).items():
        path = folder / file
        if not path.exists():
            raise ExportError(f"{path} is missing; it holds the tensors {sorted(expected or [])[:5]} ...")
        try:
            with _local(path) as local, safe_open(str(local), framework="numpy") as f:
                metadata = f.metadata() or {}
                names = list(f.keys())
                for name in names:
                    tensors[name] = f.get_tensor(name)
        except SafetensorError as error:
            held = f" (it holds {', '.join(sorted(expected)[:5])}, ...)" if expected else ""
            raise ExportError(
                f"{path} is damaged and cannot be read{held}: {error}; export the run again"
            ) from error
        if expected is not None:
            absent = sorted(set(expected) - set(names))
            if absent:
                raise ExportError(f"tensor {absent[0]!r} is listed in {INDEX_FILE} but missing from {path}")
        if verify:
            for name in names:
                digest = metadata.get(f"sha256:{name}")
                if digest is not None and digest != _sha256(tensors[name]):
                    raise ExportError(
                        f"tensor {name!r} in {path} does not match its checksum: the file is damaged; "
                        "export the run again"
                    )
    return tensors


def check_tensors(tensors: Mapping[str, np.ndarray], expected: Mapping[str, Any], where: str) -> None:
    """Every expected tensor present with its shape and dtype, and nothing else; the error names the tensor."""
    for name, spec in expected.items():
        if name not in tensors:
            raise ExportError(f"tensor {name!r} (shape {tuple(spec.shape)}) is missing from {where}")
        got = tensors[name]
        if tuple(got.shape) != tuple(spec.shape) or np.dtype(got.dtype) != np.dtype(spec.dtype):
            raise ExportError(
                f"tensor {name!r} in {where} is {got.dtype}{list(got.shape)} but the model of its config.json "
                f"needs {np.dtype(spec.dtype)}{list(spec.shape)}; was config.json changed or the wrong run "
                "exported?"
            )
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise ExportError(
            f"tensor {extra[0]!r} in {where} is not a variable of the model its config.json builds"
        )


# ---------------------------------------------------------------------------------------------------------------
# The model card


def _run_metrics(workdir: epath.Path) -> dict[str, Any]:
    """Measured metrics of a run: `eval_recon.json` (tokenizer evaluation) and the last eval/ line of metrics."""
    found: dict[str, Any] = {}
    recon = workdir / "eval_recon.json"
    if recon.exists():
        try:
            data = json.loads(recon.read_text(encoding="utf-8"))
            values = data.get("metrics", data)
            found["eval_recon.json"] = {k: v for k, v in values.items() if isinstance(v, (int, float))}
        except ValueError:
            pass
    lines = workdir / "metrics.jsonl"
    if lines.exists():
        evals = []
        for line in lines.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            picked = {k: v for k, v in entry.items() if k.startswith("eval/")}
            if picked:
                evals.append((entry.get("step"), picked))
        if evals:
            step, values = evals[-1]
            found[f"metrics.jsonl (step {step})"] = values
    return found


def model_card(config: ml_collections.ConfigDict, step: int, source: str, metrics: Mapping[str, Any]) -> str:
    """README.md of an export: what was trained, on what, for how long, and what was measured."""
    task = str(config.task)
    what = {
        "vae": "3D-MBQ-VAE video tokenizer (VQVAE)",
        "t2v": "text-to-video spectral denoiser (SpectralDenoiser)",
    }
    data = config.data  # every stage config has a data group (configs/)
    data_keys = ("source", "path", "frames", "size", "num_clips")
    lines = [
        f"# motionaura_jax {task} model",
        "",
        f"- model: {what.get(task, task)}",
        f"- trained: {step} steps (run `{source}`)",
        "- data: "
        + ", ".join(f"{k}={data[k]}" for k in data_keys if k in data and data[k] not in ("", None)),
    ]
    if task == "t2v":
        lines.append(
            f"- tokenizer: `{config.tokens.tokenizer_workdir}`; text encoder: {config.tokens.text_encoder}"
        )
    lines += ["", "## Measured metrics", ""]
    if not metrics:
        lines.append("None recorded in the run (run `motionaura eval` on it for numbers).")
    for origin, values in metrics.items():
        lines.append(f"From {origin}:")
        lines.append("")
        lines += [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in values.items()]
        lines.append("")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from motionaura_jax import load_run",
        "run = load_run('THIS_FOLDER')          # no Orbax, no trainer",
        "out = run.model.apply(run.variables, *inputs)",
        "```",
        "",
        "The weights open with the `safetensors` library alone (`safetensors.numpy.load_file`).",
    ]
    return "\n".join(lines) + "\n"


def write_export(
    out: str | os.PathLike,
    *,
    config: ml_collections.ConfigDict,
    variables: Mapping[str, Any],
    step: int,
    source: str | os.PathLike = "",
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> epath.Path:
    """Writes an export folder (see the module doc) for a run's `config` and inference `variables`."""
    out = paths.mkdir(out)
    tensors = flatten_variables(variables)
    files = save_tensors(out, tensors, max_shard_bytes)
    atomic.write_text(out / "config.json", config_lib.to_json(config))
    source_path = paths.as_path(source) if source else None
    metrics = _run_metrics(source_path) if source_path is not None else {}
    atomic.write_text(out / "README.md", model_card(config, step, str(source), metrics))
    manifest = {
        "format": FORMAT,
        "task": str(config.task),
        "step": int(step),
        "source": str(source),
        "files": files,
        "tensors": {n: {"shape": list(a.shape), "dtype": str(a.dtype)} for n, a in sorted(tensors.items())},
        "metrics": metrics,
    }
    atomic.write_text(out / "export.json", json.dumps(manifest, indent=2) + "\n")
    return out


def export_step(folder: str | os.PathLike) -> int:
    """The training step an export was taken at (0 when its export.json is missing)."""
    manifest = paths.as_path(folder) / "export.json"
    if not manifest.exists():
        return 0
    return int(json.loads(manifest.read_text(encoding="utf-8")).get("step", 0))
