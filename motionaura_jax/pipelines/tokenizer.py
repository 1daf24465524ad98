"""The trained tokenizer as an inference pipeline: video <-> code ids, whole clips or streamed in causal chunks.

    from motionaura_jax.pipelines import Tokenizer
    tokenizer = Tokenizer.load("runs/quickstart/vae")
    ids = tokenizer.encode(video_bthwc)        # float in [-1, 1], 1 + 4k frames -> (B, T', H', W') int32
    video = tokenizer.decode(ids)              # -> float (B, T, H, W, 3) in [-1, 1]

Long clips go through `encode_chunked` / `decode_chunked`: the causal layers carry their state between chunks
in the "cache" collection, so the ids equal whole-clip encoding with memory bounded by the chunk length.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from motionaura_jax import runs
from motionaura_jax.models.vqvae import VQVAE, check_frames, compression
from motionaura_jax.runs import Run


def _chunk_bounds(total: int, first: int, rest: int) -> list[tuple[int, int]]:
    bounds, start = [], 0
    while start < total:
        stop = min(total, start + (first if start == 0 else rest))
        bounds.append((start, stop))
        start = stop
    return bounds


def encode_chunked(model: VQVAE, variables: dict, x_bthwc: jax.Array, chunk_frames: int = 16) -> jax.Array:
    """Code ids of a 1 + 4k frame clip, encoded `chunk_frames` frames at a time (the first chunk: one more).

    Equals whole-clip encoding exactly (the causal layers carry their state in the "cache" collection), with
    memory bounded by the chunk length."""
    temporal, _ = compression(model.config)
    if chunk_frames <= 0 or chunk_frames % temporal:
        raise ValueError(
            f"chunk_frames={chunk_frames} must be a positive multiple of the temporal compression {temporal}"
        )
    check_frames(x_bthwc.shape[1], model.config)
    step = jax.jit(lambda v, x: model.apply(v, x, method="encode", mutable=["cache"]))
    cache, ids = {}, []
    for start, stop in _chunk_bounds(x_bthwc.shape[1], 1 + chunk_frames, chunk_frames):
        (_, q), updated = step({**variables, "cache": cache}, x_bthwc[:, start:stop])
        cache = updated["cache"]
        ids.append(q.ids)
    return jnp.concatenate(ids, axis=1)


def decode_chunked(model: VQVAE, variables: dict, ids_bthw: jax.Array, chunk_latents: int = 4) -> jax.Array:
    """Video (B, 1 + 4(T'-1), H, W, 3) from code ids, decoded `chunk_latents` latent frames at a time."""
    if chunk_latents <= 0:
        raise ValueError(f"chunk_latents={chunk_latents} must be positive")
    step = jax.jit(lambda v, ids: model.apply(v, ids, method="decode_ids", mutable=["cache"]))
    cache, frames = {}, []
    for start, stop in _chunk_bounds(ids_bthw.shape[1], chunk_latents, chunk_latents):
        y, updated = step({**variables, "cache": cache}, ids_bthw[:, start:stop])
        cache = updated["cache"]
        frames.append(y)
    return jnp.concatenate(frames, axis=1)


def pad_to_causal_length(video_thwc: np.ndarray, temporal: int) -> np.ndarray:
    """Repeats the last frame up to the next 1 + `temporal`·k length (the tokenizer's causal clip lengths)."""
    frames = len(video_thwc)
    padded = 1 + temporal * -(-(frames - 1) // temporal)
    if padded == frames:
        return video_thwc
    return np.concatenate([video_thwc, np.repeat(video_thwc[-1:], padded - frames, axis=0)])


class Tokenizer:
    """A trained 3D-MBQ-VAE: `encode` videos to code ids and `decode` ids to videos (jitted, whole clips),
    plus the chunked forms for long videos.

    For example:

        tokenizer = Tokenizer.load("runs/vae_tiny")
        ids = tokenizer.encode(video_bthwc)      # (B, T', H', W') int32
        video = tokenizer.decode(ids)            # (B, T, H, W, 3) float32 in [-1, 1]
    """

    def __init__(self, model: VQVAE, variables: dict[str, Any], config=None):
        self.model, self.variables, self.config = model, variables, config
        self._encode = jax.jit(lambda v, x: model.apply(v, x, method="encode")[1].ids)
        self._decode = jax.jit(lambda v, ids: model.apply(v, ids, method="decode_ids"))
        self._reconstruct = jax.jit(lambda v, x: model.apply(v, x, train=False))

    @classmethod
    def from_run(cls, run: Run) -> Tokenizer:
        return cls(run.model, run.variables, run.config)

    @classmethod
    def load(cls, workdir: str | os.PathLike, **kwargs) -> Tokenizer:
        """The tokenizer of a training workdir (a "vae" run); kwargs go to `runs.load_run`."""
        return cls.from_run(runs.load_run(workdir, task="vae", **kwargs))

    @property
    def num_codes(self) -> int:
        return int(self.model.config.quantizer.num_codes)

    @property
    def compression(self) -> tuple[int, int]:
        """(temporal, spatial) compression factors."""
        return compression(self.model.config)

    def encode(self, x_bthwc: jax.Array) -> np.ndarray:
        """Code ids (B, T', H', W') int32 of clips in [-1, 1] whose length is 1 + 4k."""
        return np.asarray(self._encode(self.variables, jnp.asarray(x_bthwc, jnp.float32)), np.int32)

    def decode(self, ids_bthw: jax.Array) -> np.ndarray:
        """Videos (B, T, H, W, 3) float32 in [-1, 1] (unclipped) from code ids."""
        return np.asarray(self._decode(self.variables, jnp.asarray(ids_bthw, jnp.int32)))

    def reconstruct(self, x_bthwc: jax.Array) -> tuple[np.ndarray, np.ndarray]:
        """(reconstruction clipped to [-1, 1], ids) of clips: encode -> quantize -> decode in one call."""
        out = self._reconstruct(self.variables, jnp.asarray(x_bthwc, jnp.float32))
        return np.clip(np.asarray(out["recon"]), -1.0, 1.0), np.asarray(out["ids"])

    def encode_chunked(self, x_bthwc: jax.Array, chunk_frames: int = 16) -> np.ndarray:
        return np.asarray(encode_chunked(self.model, self.variables, jnp.asarray(x_bthwc), chunk_frames))

    def decode_chunked(self, ids_bthw: jax.Array, chunk_latents: int = 4) -> np.ndarray:
        return np.asarray(decode_chunked(self.model, self.variables, jnp.asarray(ids_bthw), chunk_latents))
