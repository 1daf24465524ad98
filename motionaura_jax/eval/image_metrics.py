"""PSNR and SSIM over videos in JAX: per frame, then averaged over frames; batched and jittable.

Both follow scikit-image's definitions exactly (`skimage.metrics.peak_signal_noise_ratio` and
`structural_similarity`, checked to 1e-3 in tests/test_eval_image_metrics.py), so numbers can be compared
with anything reported through scikit-image:

- PSNR of one frame is `10 log10(data_range^2 / mse)` with the MSE over all pixels and channels of the
  frame (identical frames give +inf, as in scikit-image). A video's PSNR is the mean of its frames' PSNR.
- SSIM of one frame is the mean over the valid region (the border of half a window is cropped, as
  scikit-image does) of the SSIM map, computed per channel and averaged over channels
  (`channel_axis=-1`). Two windows are available and the choice is always stated in reports:
    * `window="gaussian"` (the default; Wang et al. 2004): Gaussian weights, sigma 1.5, truncated at
      3.5 sigma (an 11x11 window), population covariance. Equals
      `structural_similarity(a, b, data_range=R, channel_axis=-1, gaussian_weights=True, sigma=1.5,
      use_sample_covariance=False)`.
    * `window="uniform"`: a 7x7 box with sample covariance, scikit-image's default
      (`structural_similarity(a, b, data_range=R, channel_axis=-1)`).
  K1 = 0.01 and K2 = 0.03 in both.

Videos are `(..., T, H, W, C)` arrays; the default `data_range=2.0` is for the project's [-1, 1] range
(use 255 for uint8 frames, 1 for [0, 1]).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

SSIM_K1 = 0.01
SSIM_K2 = 0.03
GAUSSIAN_SIGMA = 1.5
GAUSSIAN_TRUNCATE = 3.5
UNIFORM_WIN_SIZE = 7
WINDOWS = ("gaussian", "uniform")


def ssim_protocol(window: str = "gaussian", data_range: float = 2.0) -> dict:
    """The exact SSIM settings, for the report written beside every number."""
    _check_window(window)
    taps = _window_taps(window)
    return {
        "window": window,
        "window_size": len(taps),
        "sigma": GAUSSIAN_SIGMA if window == "gaussian" else None,
        "covariance": "population" if window == "gaussian" else "sample",
        "k1": SSIM_K1,
        "k2": SSIM_K2,
        "data_range": float(data_range),
        "border": "cropped by half a window (as scikit-image)",
        "channels": "per channel, averaged",
        "video": "per frame, averaged over frames",
        "skimage_equivalent": (
            "structural_similarity(a, b, data_range=R, channel_axis=-1, gaussian_weights=True, sigma=1.5, "
            "use_sample_covariance=False)"
            if window == "gaussian"
            else "structural_similarity(a, b, data_range=R, channel_axis=-1)"
        ),
    }


def _check_window(window: str) -> None:
    if window not in WINDOWS:
        raise ValueError(f"SSIM window {window!r} unknown; use one of {WINDOWS}")


def _window_taps(window: str) -> np.ndarray:
    """1-D separable window taps, normalised to sum 1 (as scipy.ndimage builds them)."""
    if window == "gaussian":
        radius = int(GAUSSIAN_TRUNCATE * GAUSSIAN_SIGMA + 0.5)
        x = np.arange(-radius, radius + 1, dtype=np.float64)
        taps = np.exp(-0.5 * (x / GAUSSIAN_SIGMA) ** 2)
    else:
        taps = np.ones(UNIFORM_WIN_SIZE, np.float64)
    return taps / taps.sum()


def _check_pair(x: jax.Array, y: jax.Array, name: str) -> None:
    if x.shape != y.shape:
        raise ValueError(f"{name}: the two videos differ in shape {x.shape} vs {y.shape}; pass equal shapes")
    if x.ndim < 3:
        raise ValueError(f"{name}: expected (..., H, W, C) frames, got shape {x.shape}")


@functools.partial(jax.jit, static_argnames=("data_range",))
def psnr_frames(x: jax.Array, y: jax.Array, data_range: float = 2.0) -> jax.Array:
    """PSNR of each frame: (..., H, W, C) -> (...), in dB."""
    _check_pair(x, y, "psnr")
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    mse = jnp.mean((x - y) ** 2, axis=(-3, -2, -1))
    return 10.0 * jnp.log10(jnp.float32(data_range) ** 2 / mse)


def psnr_video(x_bthwc: jax.Array, y_bthwc: jax.Array, data_range: float = 2.0) -> jax.Array:
    """PSNR of each video, the mean of its frames' PSNR: (..., T, H, W, C) -> (...)."""
    return jnp.mean(psnr_frames(x_bthwc, y_bthwc, data_range), axis=-1)


def _filter_valid(img_nhw: jax.Array, taps: np.ndarray) -> jax.Array:
    """Separable 'valid' filtering over the last two axes; the cropped border never needs padding."""
    kernel = jnp.asarray(taps, img_nhw.dtype)
    k = len(taps)
    out_h, out_w = img_nhw.shape[-2] - k + 1, img_nhw.shape[-1] - k + 1
    # Sum of shifted slices: exact, tiny kernels, and fast on every backend (no conv with 1 feature).
    rows = sum(kernel[i] * img_nhw[..., i : i + out_h, :] for i in range(k))
    return sum(kernel[j] * rows[..., :, j : j + out_w] for j in range(k))


@functools.partial(jax.jit, static_argnames=("data_range", "window"))
def ssim_frames(x: jax.Array, y: jax.Array, data_range: float = 2.0, window: str = "gaussian") -> jax.Array:
    """SSIM of each frame: (..., H, W, C) -> (...), mean over the valid region and over channels."""
    _check_pair(x, y, "ssim")
    _check_window(window)
    taps = _window_taps(window)
    k = len(taps)
    if x.shape[-3] < k or x.shape[-2] < k:
        raise ValueError(
            f"ssim: frames {x.shape[-3]}x{x.shape[-2]} are smaller than the {k}x{k} {window} window"
        )
    # Channels first so the filter runs over (H, W).
    x = jnp.moveaxis(jnp.asarray(x, jnp.float32), -1, -3)
    y = jnp.moveaxis(jnp.asarray(y, jnp.float32), -1, -3)
    num_taps = k * k
    cov_norm = 1.0 if window == "gaussian" else num_taps / (num_taps - 1)
    ux, uy = _filter_valid(x, taps), _filter_valid(y, taps)
    uxx, uyy, uxy = _filter_valid(x * x, taps), _filter_valid(y * y, taps), _filter_valid(x * y, taps)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return jnp.mean(ssim_map, axis=(-3, -2, -1))


def ssim_video(
    x_bthwc: jax.Array, y_bthwc: jax.Array, data_range: float = 2.0, window: str = "gaussian"
) -> jax.Array:
    """SSIM of each video, the mean of its frames' SSIM: (..., T, H, W, C) -> (...)."""
    return jnp.mean(ssim_frames(x_bthwc, y_bthwc, data_range=data_range, window=window), axis=-1)
