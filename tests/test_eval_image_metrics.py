"""PSNR/SSIM parity with scikit-image on random and shipped real images, per frame and over videos."""

import jax
import numpy as np
import pytest
import skimage.data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from motionaura_jax.eval import image_metrics

SKIMAGE_SSIM_KWARGS = {
    "gaussian": {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False},
    "uniform": {},
}


def _reference_ssim(a, b, data_range, window):
    return structural_similarity(a, b, data_range=data_range, channel_axis=-1, **SKIMAGE_SSIM_KWARGS[window])


@pytest.mark.parametrize("window", ["gaussian", "uniform"])
def test_video_metrics_match_skimage_on_random_videos(window):
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (2, 3, 24, 20, 3))
    b = np.clip(a + rng.normal(0, 0.3, a.shape), -1, 1)
    psnr = np.asarray(image_metrics.psnr_video(a, b))
    ssim = np.asarray(image_metrics.ssim_video(a, b, window=window))
    for i in range(2):
        ref_psnr = np.mean([peak_signal_noise_ratio(a[i, t], b[i, t], data_range=2.0) for t in range(3)])
        ref_ssim = np.mean([_reference_ssim(a[i, t], b[i, t], 2.0, window) for t in range(3)])
        assert abs(psnr[i] - ref_psnr) < 1e-3
        assert abs(ssim[i] - ref_ssim) < 1e-3
    # The metric must separate different degradations, not be a constant.
    assert ssim[0] < 0.95 and np.asarray(image_metrics.ssim_video(a, a, window=window)).min() > 0.9999


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "camera"])
@pytest.mark.parametrize("window", ["gaussian", "uniform"])
def test_frame_metrics_match_skimage_on_shipped_images(name, window):
    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    img = img[:160, :200]  # keep the test fast; still a real photograph
    rng = np.random.default_rng(1)
    noisy = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    blurred = ((img.astype(np.float64) + np.roll(img, 1, axis=1) + np.roll(img, 1, axis=0)) / 3).astype(
        np.uint8
    )
    for other in (noisy, blurred):
        ours_psnr = float(image_metrics.psnr_frames(img, other, data_range=255.0))
        ours_ssim = float(image_metrics.ssim_frames(img, other, data_range=255.0, window=window))
        assert abs(ours_psnr - peak_signal_noise_ratio(img, other, data_range=255)) < 1e-3
        assert abs(ours_ssim - _reference_ssim(img, other, 255, window)) < 1e-3


def test_jit_and_batching_agree_with_single_calls():
    rng = np.random.default_rng(2)
    a = rng.uniform(-1, 1, (3, 2, 16, 16, 3)).astype(np.float32)
    b = rng.uniform(-1, 1, (3, 2, 16, 16, 3)).astype(np.float32)
    batched = np.asarray(jax.jit(lambda x, y: image_metrics.ssim_video(x, y))(a, b))
    singles = np.array([float(image_metrics.ssim_video(a[i], b[i])) for i in range(3)])
    np.testing.assert_allclose(batched, singles, atol=1e-6)
    psnr_jit = np.asarray(jax.jit(image_metrics.psnr_video)(a, b))
    np.testing.assert_allclose(psnr_jit, np.asarray(image_metrics.psnr_video(a, b)), atol=1e-5)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        image_metrics.psnr_frames(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)))
    with pytest.raises(ValueError, match="smaller than"):
        image_metrics.ssim_frames(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="window"):
        image_metrics.ssim_protocol("box")
    assert image_metrics.ssim_protocol("gaussian")["window_size"] == 11
