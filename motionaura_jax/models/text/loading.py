"""Reading HF-format model folders (config.json + safetensors, single file or sharded) into Flax params.

The reader parses the safetensors header itself and reads tensors through `np.memmap`, so any slice of a
tensor costs only the bytes of that slice, and bfloat16/float8 files work without torch (`ml_dtypes`).

Loading goes leaf by leaf: each parameter of our tree has a `TensorSource` naming the HF tensor(s) it comes
from and how they map (transpose, split of a dimension into (heads, kv), stacking over layers). With a mesh,
every leaf is created by `jax.make_array_from_callback` with its logical-axis sharding, and the callback reads
only the block that one device holds, so the whole model never exists in host memory at once (and on a
multi-host pod each host reads only its own shards).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax.sharding import Mesh, NamedSharding

from motionaura_jax.parallel.sharding import DEFAULT_RULES, Rules, logical_to_spec

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
CONFIG_FILE = "config.json"
READ_CHUNK_BYTES = 8 << 20  # rows mapped at once when reading a block (bounds the transient host memory)

_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}


class ModelFolderError(FileNotFoundError):
    """A model folder that is missing, incomplete, or holds a tensor of the wrong shape."""


# ------------------------------------------------------------------------------------------------------------
# Folder and file level.


def read_config_json(model_dir: str | os.PathLike) -> dict[str, Any]:
    """The folder's config.json as a dict; a missing folder or file is an error naming it."""
    folder = pathlib.Path(model_dir)
    if not folder.is_dir():
        raise ModelFolderError(
            f"model folder {str(folder)!r} does not exist (expected a folder holding "
            f"{CONFIG_FILE} and {SINGLE_FILE} or {INDEX_FILE} + its shards)"
        )
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ModelFolderError(
            f"model folder {str(folder)!r} has no {CONFIG_FILE}; save the model with "
            f"`save_pretrained(folder)` or copy {CONFIG_FILE} next to the weights"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def weight_files(model_dir: str | os.PathLike) -> dict[str, pathlib.Path]:
    """Tensor name -> the safetensors file holding it, from the index (sharded) or the single file."""
    folder = pathlib.Path(model_dir)
    index_path = folder / INDEX_FILE
    if index_path.is_file():
        index = json.loads(index_path.read_text(encoding="utf-8"))
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelFolderError(f"{index_path} has no 'weight_map'; re-save the model")
        files = {name: folder / file for name, file in weight_map.items()}
        for file in sorted(set(files.values())):
            if not file.is_file():
                raise ModelFolderError(
                    f"model folder {str(folder)!r} is incomplete: shard {file.name!r} listed in "
                    f"{INDEX_FILE} is missing"
                )
        return files
    single = folder / SINGLE_FILE
    if single.is_file():
        return {name: single for name in SafetensorsFile(single).tensors}
    hint = ""
    if (folder / "pytorch_model.bin").is_file() or list(folder.glob("pytorch_model-*.bin")):
        hint = (
            " It holds PyTorch .bin weights only: convert once with transformers "
            "(`Model.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)`)."
        )
    raise ModelFolderError(f"model folder {str(folder)!r} has neither {SINGLE_FILE} nor {INDEX_FILE}.{hint}")


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int  # absolute byte offset of the data in the file


class SafetensorsFile:
    """The header of one .safetensors file; tensors are read lazily through np.memmap."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        with open(self.path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ModelFolderError(f"{self.path} is not a safetensors file (too short)")
            (header_len,) = struct.unpack("<Q", raw)
            header = json.loads(f.read(header_len))
        header.pop("__metadata__", None)
        data_start = 8 + header_len
        self.tensors: dict[str, TensorInfo] = {}
        for name, entry in header.items():
            if entry["dtype"] not in _DTYPES:
                raise ModelFolderError(f"{self.path}: tensor {name!r} has unsupported dtype {entry['dtype']}")
            begin, _ = entry["data_offsets"]
            self.tensors[name] = TensorInfo(
                _DTYPES[entry["dtype"]], tuple(entry["shape"]), data_start + begin
            )

    def read(self, name: str, index: tuple[slice, ...] | None = None) -> np.ndarray:
        """A copy of `tensor[index]` that maps only the rows the slice touches, a chunk of rows at a time.

        A column block of a row-major tensor (an fsdp shard of an embedding or of a transposed kernel)
        touches every row, so the rows are mapped in chunks of about `READ_CHUNK_BYTES`, each unmapped before
        the next: host memory stays near the size of the block itself.
        """
        info = self.tensors[name]
        index = tuple(index or ())
        if math.prod(info.shape) == 0 or not info.shape:
            return np.array(np.zeros(info.shape, info.dtype)[index])
        full = [slice(None)] * len(info.shape)
        full[: len(index)] = index
        rows = range(*full[0].indices(info.shape[0]))
        if rows.step != 1:
            raise ValueError(f"strided row index {full[0]} is not supported")
        row_shape = info.shape[1:]
        row_bytes = math.prod(row_shape) * info.dtype.itemsize
        chunk = max(1, READ_CHUNK_BYTES // max(1, row_bytes))
        cols = tuple(full[1:])
        out_shape = (len(rows), *(len(range(*s.indices(d))) for s, d in zip(cols, row_shape, strict=True)))
        out = np.empty(out_shape, info.dtype)
        for lo in range(rows.start, rows.stop, chunk):
            hi = min(rows.stop, lo + chunk)
            mapped = np.memmap(
                self.path,
                dtype=info.dtype,
                mode="r",
                offset=info.offset + lo * row_bytes,
                shape=(hi - lo, *row_shape),
            )
            out[lo - rows.start : hi - rows.start] = mapped[(slice(None), *cols)]
            del mapped
        return out


class CheckpointReader:
    """All tensors of a model folder by name, across shards."""

    def __init__(self, model_dir: str | os.PathLike):
        self.model_dir = pathlib.Path(model_dir)
        self._file_of = weight_files(self.model_dir)
        self._files: dict[pathlib.Path, SafetensorsFile] = {}

    def names(self) -> list[str]:
        return sorted(self._file_of)

    def has(self, name: str) -> bool:
        return name in self._file_of

    def _file(self, name: str) -> SafetensorsFile:
        if name not in self._file_of:
            raise ModelFolderError(
                f"model folder {str(self.model_dir)!r} is incomplete: tensor {name!r} is missing "
                f"from its safetensors files"
            )
        path = self._file_of[name]
        if path not in self._files:
            self._files[path] = SafetensorsFile(path)
        file = self._files[path]
        if name not in file.tensors:
            raise ModelFolderError(
                f"{path.name} does not hold tensor {name!r} although {INDEX_FILE} says it does"
            )
        return file

    def shape(self, name: str) -> tuple[int, ...]:
        return self._file(name).tensors[name].shape

    def read(self, name: str, index: tuple[slice, ...] | None = None) -> np.ndarray:
        return self._file(name).read(name, index)

    def first_present(self, *names: str) -> str:
        for name in names:
            if self.has(name):
                return name
        raise ModelFolderError(
            f"model folder {str(self.model_dir)!r} is incomplete: none of {list(names)} is in "
            f"its safetensors files"
        )


# ------------------------------------------------------------------------------------------------------------
# Leaf level: how one of our parameters is made of HF tensors.


@dataclasses.dataclass(frozen=True)
class TensorSource:
    """Our leaf = stack_over_layers(reshape(transpose?(hf_tensor), our_shape_per_layer)).

    `names` has one HF tensor name, or one per layer when the leaf is stacked for `nn.scan` (leading axis).
    The reshape may only split dimensions (e.g. (embed, heads*kv) -> (embed, heads, kv)), never merge them;
    `groups` gives, per HF dimension (after the transpose), how many of our dimensions it becomes.
    """

    names: tuple[str, ...]
    transpose: bool = False
    groups: tuple[int, ...] | None = None  # None: one of ours per HF dimension
    stacked: bool = False

    @staticmethod
    def linear(name: str, groups: tuple[int, ...] | None = None) -> TensorSource:
        """A torch nn.Linear weight (out, in) -> our kernel (in, out), optionally split."""
        return TensorSource((name,), transpose=True, groups=groups)


def _normalise(index: tuple[slice, ...] | None, shape: Sequence[int]) -> list[tuple[int, int]]:
    index = tuple(index or ())
    index = index + (slice(None),) * (len(shape) - len(index))
    out = []
    for s, dim in zip(index, shape, strict=True):
        start, stop, step = s.indices(dim)
        if step != 1:
            raise ValueError(f"strided shard index {s} is not supported")
        out.append((start, stop))
    return out


def read_block(
    reader: CheckpointReader,
    source: TensorSource,
    shape: Sequence[int],
    index: tuple[slice, ...] | None = None,
) -> np.ndarray:
    """The block `ours[index]` of a leaf of global `shape`, reading only the HF rows it needs."""
    bounds = _normalise(index, shape)
    if source.stacked:
        (layer_lo, layer_hi), bounds, per_layer_shape = bounds[0], bounds[1:], tuple(shape[1:])
        names = source.names[layer_lo:layer_hi]
    else:
        per_layer_shape, names = tuple(shape), source.names
    blocks = [_read_one(reader, name, source, per_layer_shape, bounds) for name in names]
    return np.stack(blocks) if source.stacked else blocks[0]


def _read_one(
    reader: CheckpointReader,
    name: str,
    source: TensorSource,
    shape: tuple[int, ...],
    bounds: list[tuple[int, int]],
) -> np.ndarray:
    hf_shape = reader.shape(name)
    view_shape = tuple(reversed(hf_shape)) if source.transpose else hf_shape
    groups = source.groups or (1,) * len(view_shape)
    # Check the mapping before reading anything: a config that does not match the weights fails here by name.
    our_dims = list(shape)
    expected, dim = [], 0
    for size in groups:
        expected.append(math.prod(our_dims[dim : dim + size]))
        dim += size
    if tuple(expected) != view_shape or dim != len(shape):
        raise ModelFolderError(
            f"tensor {name!r} has shape {hf_shape} in {str(reader.model_dir)!r} but the config "
            f"expects {tuple(reversed(expected)) if source.transpose else tuple(expected)}; "
            f"does config.json belong to these weights?"
        )
    # Per HF (viewed) dimension: the covering row range (leading one of its group partial, the rest full).
    view_ranges, inner_index, dim = [], [], 0
    for size in groups:
        group_shape = our_dims[dim : dim + size]
        (lo, hi), rest = bounds[dim], bounds[dim + 1 : dim + size]
        inner = math.prod(group_shape[1:])
        view_ranges.append((lo * inner, hi * inner))
        inner_index.append((slice(None),) + tuple(slice(a, b) for a, b in rest))
        dim += size
    hf_ranges = list(reversed(view_ranges)) if source.transpose else view_ranges
    block = reader.read(name, tuple(slice(a, b) for a, b in hf_ranges))
    if source.transpose:
        block = block.T
    # Split each viewed dimension into its group and cut the inner dimensions of the group.
    split_shape = []
    dim = 0
    for size, (a, b) in zip(groups, view_ranges, strict=True):
        inner = our_dims[dim + 1 : dim + size]
        split_shape += [(b - a) // max(1, math.prod(inner))] + list(inner)
        dim += size
    block = block.reshape(split_shape)
    cut = tuple(s for group in inner_index for s in group)
    return np.ascontiguousarray(block[cut])


# ------------------------------------------------------------------------------------------------------------
# Tree level.


def _is_box(x: Any) -> bool:
    return isinstance(x, nn.meta.AxisMetadata)


def load_params(
    reader: CheckpointReader,
    abstract_params: Any,
    sources: Mapping[str, Any],
    *,
    mesh: Mesh | None = None,
    rules: Rules = DEFAULT_RULES,
    dtype: Any = None,
    progress: bool = True,
) -> Any:
    """Fills an abstract (boxed, from `jax.eval_shape(model.init, ...)`) params tree from HF tensors.

    `sources` has the same nesting as `abstract_params` with a `TensorSource` per leaf. Without a mesh each
    leaf is read whole and put on the default device; with a mesh each leaf is created with the sharding its
    logical names give and filled block by block. Returns plain (unboxed) arrays.
    """
    from tqdm.auto import tqdm

    flat_abstract = _flatten(abstract_params)
    flat_sources = _flatten(sources, is_leaf=lambda x: isinstance(x, TensorSource))
    missing = sorted(set(flat_abstract) - set(flat_sources))
    if missing:
        raise KeyError(f"no checkpoint mapping for parameters {['/'.join(p) for p in missing]}")
    loaded = {}
    bar = tqdm(
        flat_abstract.items(),
        desc=f"loading {reader.model_dir.name}",
        unit="tensor",
        disable=not progress,
        leave=False,
    )
    for path, leaf in bar:
        names = tuple(leaf.names) if _is_box(leaf) else (None,) * len(leaf.shape)
        abstract = leaf.value if _is_box(leaf) else leaf
        shape, target_dtype = tuple(abstract.shape), np.dtype(dtype or abstract.dtype)
        source = flat_sources[path]
        if mesh is None:
            loaded[path] = jnp.asarray(read_block(reader, source, shape).astype(target_dtype))
            continue
        sharding = NamedSharding(mesh, logical_to_spec(names, shape, mesh, rules))
        loaded[path] = make_sharded_array(shape, sharding, _callback(reader, source, shape, target_dtype))
    return _unflatten(loaded)


def _callback(
    reader: CheckpointReader, source: TensorSource, shape: tuple[int, ...], dtype: np.dtype
) -> Callable[[tuple[slice, ...]], np.ndarray]:
    return lambda index: read_block(reader, source, shape, index).astype(dtype, copy=False)


def make_sharded_array(
    shape: tuple[int, ...], sharding: NamedSharding, read: Callable[[tuple[slice, ...]], np.ndarray]
) -> jax.Array:
    """Like `jax.make_array_from_callback`, but each block is read, moved to its device and dropped before
    the next is read (make_array_from_callback first reads the blocks of every local device, which holds a
    whole replicated or fsdp-sharded leaf in host memory at once). Only this process's devices are read."""
    arrays, done = [], {}
    for device, index in sharding.addressable_devices_indices_map(shape).items():
        key = tuple(_normalise(index, shape))
        if key in done:  # a replica: copy from the device that already holds the block
            arrays.append(jax.device_put(done[key], device))
            continue
        block = read(index)
        arrays.append(jax.device_put(block, device))
        done[key] = arrays[-1]
        del block
    return jax.make_array_from_single_device_arrays(shape, sharding, arrays)


def shardings_for(abstract_params: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """NamedSharding per leaf of a boxed abstract tree (unboxed tree structure)."""

    def one(leaf):
        names = tuple(leaf.names) if _is_box(leaf) else None
        value = leaf.value if _is_box(leaf) else leaf
        names = names or (None,) * len(value.shape)
        return NamedSharding(mesh, logical_to_spec(names, value.shape, mesh, rules))

    return jax.tree.map(one, abstract_params, is_leaf=_is_box)


def _flatten(
    tree: Mapping[str, Any], is_leaf: Callable[[Any], bool] = _is_box, prefix: tuple[str, ...] = ()
) -> dict[tuple[str, ...], Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and not is_leaf(value):
            out.update(_flatten(value, is_leaf, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def fingerprint(model_dir: str | os.PathLike) -> str:
    """A cheap content identity of a model folder: config, tokenizer files, safetensors headers, sizes and a
    sample of each file's bytes (hashing whole multi-GB files would take minutes)."""
    import hashlib

    folder = pathlib.Path(model_dir)
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        digest.update(path.name.encode())
        size = path.stat().st_size
        digest.update(str(size).encode())
        with open(path, "rb") as f:
            if path.suffix == ".safetensors":
                (header_len,) = struct.unpack("<Q", f.read(8))
                digest.update(f.read(header_len))
                for offset in (
                    8 + header_len,
                    max(8 + header_len, size // 2),
                    max(8 + header_len, size - (1 << 20)),
                ):
                    f.seek(offset)
                    digest.update(f.read(1 << 20))
            elif size <= (16 << 20):
                digest.update(f.read())
    return digest.hexdigest()[:16]
