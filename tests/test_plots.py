"""Curves from metrics.jsonl."""

import pytest
from PIL import Image

from motionaura_jax.train.logging import MetricWriter
from motionaura_jax.train.plots import plot_runs


def _write(workdir, values):
    writer = MetricWriter(workdir, tensorboard=False)
    for step, value in enumerate(values, 1):
        writer.write(step, {"loss": value, "psnr": 10 + step})
    writer.close()


def test_plot_two_runs_writes_png(tmp_path):
    _write(tmp_path / "a", [3.0, 2.0, 1.0])
    _write(tmp_path / "b", [3.0, 2.5, 2.0])
    out = plot_runs({"a": tmp_path / "a", "b": tmp_path / "b"}, ["loss", "psnr"], tmp_path / "c.png")
    image = Image.open(out)
    assert image.size[0] > image.size[1] > 100


def test_missing_metric_names_the_available_ones(tmp_path):
    _write(tmp_path / "a", [1.0])
    with pytest.raises(KeyError, match="psnr"):
        plot_runs({"a": tmp_path / "a"}, ["ssim"], tmp_path / "c.png")
