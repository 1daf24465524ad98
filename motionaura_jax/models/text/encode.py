"""One API for frozen text encoders: `encode_text(prompts) -> (embeddings_bld, mask_bl)`, with a disk cache.

    emb_bld, mask_bl = encode_text(["a red circle moving left"])                      # MiniLM, shipped
    emb_bld, mask_bl = encode_text(prompts, encoder="t5", model_dir="/models/t5-v1_1-xxl", max_length=128)

Embeddings are float32 numpy arrays of shape (len(prompts), max_length, dim) and the mask says which tokens
are real; every prompt is padded to `max_length` so downstream shapes never change. The cache stores one small
file per (encoder identity, max length, prompt): the encoder identity hashes the model folder (config,
tokenizer, safetensors headers and sampled bytes), the tokenizer and the compute dtype, so a changed model
never serves stale embeddings. Loaded encoders are kept per process, so repeated calls do not reload.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from motionaura_jax import atomic
from motionaura_jax.models.text import bert, t5
from motionaura_jax.models.text.loading import ModelFolderError, fingerprint, read_config_json, weight_files
from motionaura_jax.models.text.tokenize import load_tokenizer

ENCODERS = ("minilm", "t5")
DEFAULT_MAX_LENGTH = {"minilm": 64, "t5": 128}


@dataclasses.dataclass
class TextEncoder:
    """A loaded, frozen encoder: tokenizer + module + params + one jitted forward."""

    name: str
    identity: str  # what the cache keys on (max length excluded: it is part of the key by itself)
    max_length: int
    dim: int
    tokenizer: Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]]
    module: Any
    variables: Any
    _forward: Callable | None = None

    def encode_ids(self, ids_bl: np.ndarray, mask_bl: np.ndarray) -> np.ndarray:
        if self._forward is None:
            self._forward = jax.jit(lambda v, i, m: self.module.apply(v, i, m).astype(jnp.float32))
        out = self._forward(self.variables, jnp.asarray(ids_bl, jnp.int32), jnp.asarray(mask_bl, bool))
        return np.asarray(out, np.float32)

    def encode(self, prompts: Sequence[str], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings_bld float32, mask_bl bool); batches are padded to `batch_size` rows (one compile)."""
        ids_bl, mask_bl = self.tokenizer(prompts)
        count = ids_bl.shape[0]
        # Every batch is padded to one row count (the batch size, or the next power of two for fewer prompts),
        # so the forward compiles once or a few times rather than once per prompt count.
        rows_per_call = batch_size if count > batch_size else 1 << max(0, count - 1).bit_length()
        out = np.zeros((count, self.max_length, self.dim), np.float32)
        for start in range(0, count, rows_per_call):
            ids, mask = ids_bl[start : start + rows_per_call], mask_bl[start : start + rows_per_call]
            rows, pad = ids.shape[0], rows_per_call - ids.shape[0]
            if pad:
                # Padded rows get one valid token so their softmax stays finite; they are dropped below.
                ids = np.concatenate([ids, np.zeros((pad, ids.shape[1]), ids.dtype)])
                mask = np.concatenate([mask, np.eye(1, mask.shape[1], dtype=bool).repeat(pad, 0)])
            out[start : start + rows] = self.encode_ids(ids, mask)[:rows]
        return out, mask_bl


_LOADED: dict[tuple, TextEncoder] = {}


def _resolve_dir(encoder: str, model_dir: str | os.PathLike | None) -> pathlib.Path:
    if encoder not in ENCODERS:
        raise ValueError(f"unknown text encoder {encoder!r}; choose one of {ENCODERS}")
    if model_dir is None:
        if encoder == "t5":
            raise ModelFolderError(
                "the t5 encoder needs a model folder (config.json + safetensors, e.g. a local "
                "copy of google/t5-v1_1-xxl converted to safetensors): pass model_dir / --model-dir"
            )
        return bert.minilm_dir()
    return pathlib.Path(model_dir)


def encoder_identity(
    encoder: str = "minilm",
    model_dir: str | os.PathLike | None = None,
    *,
    tokenizer: str = "auto",
    dtype: str = "float32",
) -> str:
    """The cache identity of an encoder without loading it (cheap: hashes headers and samples)."""
    folder = _resolve_dir(encoder, model_dir)
    read_config_json(folder)
    weight_files(folder)  # incomplete folders fail here, naming the missing file
    return f"{encoder}-{fingerprint(folder)}-tok_{tokenizer}-{dtype}"


def load_text_encoder(
    encoder: str = "minilm",
    model_dir: str | os.PathLike | None = None,
    *,
    max_length: int | None = None,
    tokenizer: str = "auto",
    dtype: str = "float32",
    mesh: Mesh | None = None,
    progress: bool = True,
) -> TextEncoder:
    """Loads (or returns the already loaded) encoder. `tokenizer`: auto|file|bytes (see tokenize.py)."""
    folder = _resolve_dir(encoder, model_dir)
    max_length = int(max_length or DEFAULT_MAX_LENGTH[encoder])
    key = (
        encoder,
        str(folder.resolve()),
        max_length,
        tokenizer,
        dtype,
        id(mesh) if mesh is not None else None,
    )
    if key in _LOADED:
        return _LOADED[key]
    identity = encoder_identity(encoder, folder, tokenizer=tokenizer, dtype=dtype)
    tok = load_tokenizer(folder, max_length, tokenizer)
    if encoder == "minilm":
        module, variables = bert.load_bert_encoder(folder, mesh=mesh, dtype=dtype, progress=progress)
        dim = module.config.hidden_size
        if max_length > module.config.max_position_embeddings:
            raise ValueError(
                f"max_length {max_length} > {module.config.max_position_embeddings} positions of {folder}"
            )
    else:
        module, variables = t5.load_t5_encoder(folder, mesh=mesh, dtype=dtype, progress=progress)
        dim = module.config.d_model
        if tokenizer == "bytes" and module.config.vocab_size < 259:
            raise ValueError(
                f"the byte tokenizer needs a vocabulary of >= 259 ids; {folder} has "
                f"{module.config.vocab_size}"
            )
    loaded = TextEncoder(encoder, identity, max_length, dim, tok, module, variables)
    _LOADED[key] = loaded
    return loaded


def cache_key(identity: str, max_length: int, prompt: str) -> str:
    return hashlib.sha256(f"{identity}\x00{max_length}\x00{prompt}".encode()).hexdigest()


def _cache_path(cache_dir: pathlib.Path, key: str) -> pathlib.Path:
    return cache_dir / key[:2] / f"{key}.npz"


def encode_text(
    prompts: Sequence[str],
    *,
    encoder: str = "minilm",
    model_dir: str | os.PathLike | None = None,
    max_length: int | None = None,
    tokenizer: str = "auto",
    dtype: str = "float32",
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
    mesh: Mesh | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings_bld float32, mask_bl bool) for `prompts`. With `cache_dir`, prompts already encoded by the
    same encoder at the same max length are read from disk; the encoder is loaded only if one is missing.

    For example:

        embeddings, mask = encode_text(["a red circle moving left"], encoder="minilm", max_length=16)
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of strings, got a single string; wrap it in a list")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("encode_text got no prompts")
    max_length = int(max_length or DEFAULT_MAX_LENGTH.get(encoder, 0) or 0)
    if cache_dir is None:
        enc = load_text_encoder(
            encoder,
            model_dir,
            max_length=max_length,
            tokenizer=tokenizer,
            dtype=dtype,
            mesh=mesh,
            progress=progress,
        )
        return enc.encode(prompts, batch_size)
    cache = pathlib.Path(cache_dir)
    identity = encoder_identity(encoder, _resolve_dir(encoder, model_dir), tokenizer=tokenizer, dtype=dtype)
    keys = [cache_key(identity, max_length, p) for p in prompts]
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key in set(keys):
        path = _cache_path(cache, key)
        if path.is_file():
            with np.load(path, allow_pickle=False) as data:
                found[key] = (data["embedding_ld"], data["mask_l"])
    todo = sorted({p for p, k in zip(prompts, keys, strict=True) if k not in found})
    if todo:
        enc = load_text_encoder(
            encoder,
            model_dir,
            max_length=max_length,
            tokenizer=tokenizer,
            dtype=dtype,
            mesh=mesh,
            progress=progress,
        )
        emb_bld, mask_bl = enc.encode(todo, batch_size)
        for prompt, emb_ld, mask_l in zip(todo, emb_bld, mask_bl, strict=True):
            key = cache_key(identity, max_length, prompt)
            atomic.write_npz(_cache_path(cache, key), embedding_ld=emb_ld, mask_l=mask_l)
            found[key] = (emb_ld, mask_l)
    return (np.stack([found[k][0] for k in keys]).astype(np.float32), np.stack([found[k][1] for k in keys]))
