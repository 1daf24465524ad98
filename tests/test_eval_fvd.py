"""Fréchet distance vs scipy sqrtm; I3D features offline and deterministic; protocol recorded."""

import numpy as np
import pytest
import scipy.linalg

from motionaura_jax.eval import fvd as fvd_lib


def _scipy_frechet(a, b):
    """The textbook formula with scipy.linalg.sqrtm, independent of our eigen-based route."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    d = 16
    mix = rng.normal(size=(d, d))
    a = rng.normal(size=(400, d)) @ mix
    b = rng.normal(size=(400, d)) @ (mix + 0.3 * rng.normal(size=(d, d))) + 0.5
    ours = fvd_lib.frechet_distance_from_features(a, b)
    ref = _scipy_frechet(a, b)
    assert ours > 1.0
    assert abs(ours - ref) <= 1e-8 * max(1.0, abs(ref))


def test_frechet_distance_self_zero_and_monotone_in_noise():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(300, 8))
    assert abs(fvd_lib.frechet_distance_from_features(feats, feats)) < 1e-9
    values = [
        fvd_lib.frechet_distance_from_features(feats, feats + rng.normal(0, s, feats.shape))
        for s in (0.1, 0.5, 2.0)
    ]
    assert values[0] < values[1] < values[2], values


def test_rank_deficient_covariances_are_handled():
    # Fewer samples than dimensions (the usual case with few clips and 400-d logits): no complex/NaN output.
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 50)), rng.normal(size=(5, 50)) + 1.0
    value = fvd_lib.frechet_distance_from_features(a, b)
    assert np.isfinite(value) and value > 0
    assert abs(value - _scipy_frechet(a, b)) < 1e-6 * value


@pytest.mark.timeout(300)
def test_i3d_fvd_offline_deterministic_monotone_with_protocol():
    # The minimum I3D length (9 frames) and 3 clips keep this under a minute on 2 CPU cores.
    protocol = fvd_lib.FVDProtocol(num_frames=9, batch_size=3)
    extractor = fvd_lib.I3DFeatures(protocol)
    rng = np.random.default_rng(3)
    # Smooth moving blobs, so the added noise is what changes the I3D statistics.
    t, h, w = np.meshgrid(np.arange(9), np.arange(32), np.arange(32), indexing="ij")
    clips = []
    for k in range(3):
        cx, cy = 8 + 2 * k + t, 16 + k
        blob = np.exp(-((w - cx) ** 2 + (h - cy) ** 2) / 20.0)
        clips.append(np.stack([blob, blob * (k / 3), 1 - blob], axis=-1) * 2 - 1)
    real = np.asarray(clips, np.float32)

    feats_a, feats_b = extractor(real), extractor(real)
    assert feats_a.shape == (3, 400) and feats_a.dtype == np.float64
    np.testing.assert_array_equal(feats_a, feats_b)  # deterministic
    assert np.abs(feats_a).max() > 0.1  # the weights are loaded (logits are not ~0)

    self_result = fvd_lib.fvd(real, real, extractor=extractor)  # both sets through I3D
    assert abs(self_result["fvd"]) < 1e-6
    values = []
    for sigma in (0.05, 0.3, 1.0):
        noisy = np.clip(real + rng.normal(0, sigma, real.shape), -1, 1).astype(np.float32)
        values.append(fvd_lib.fvd(real, noisy, extractor=extractor, real_features=feats_a)["fvd"])
    assert values[0] < values[1] < values[2], values

    record = self_result["protocol"]
    for key in (
        "value_range",
        "resize",
        "num_frames",
        "num_clips_real",
        "num_clips_fake",
        "feature_layer",
        "weights_sha256",
    ):
        assert key in record
    assert record["num_frames"] == 9 and record["num_clips_real"] == 3 and record["feature_layer"] == "Logits"


def test_fvd_input_errors():
    protocol = fvd_lib.FVDProtocol()
    with pytest.raises(ValueError, match="at least 9"):
        fvd_lib.FVDProtocol(num_frames=4)
    with pytest.raises(ValueError, match="\\[-1, 1\\]"):
        fvd_lib._to_unit_range(np.full((1, 2, 4, 4, 3), 3.0, np.float32))
    assert protocol.as_dict()["num_frames"] == 16
