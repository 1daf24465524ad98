"""Curves from metrics.jsonl."""

import json

import pytest
from PIL import Image

from motionaura_jax.train.logging import MetricWriter
from motionaura_jax.train.plots import curve, plot_runs


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


def test_curves_against_wall_minutes(tmp_path):
    lines = [
        {"step": 0, "time": 1000.0, "loss": 3.0},
        {"step": 100, "time": 1030.0, "eval/all_correct": 0.25},
        {"step": 200, "time": 1120.0, "loss": 1.0, "eval/all_correct": 0.5},
    ]
    assert curve(lines, "eval/all_correct") == ([100, 200], [0.25, 0.5])
    assert curve(lines, "eval/all_correct", x="minutes") == ([0.5, 2.0], [0.25, 0.5])
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "metrics.jsonl").write_text("".join(json.dumps(ln) + "\n" for ln in lines))
    out = plot_runs({"a": tmp_path / "a"}, ["eval/all_correct"], tmp_path / "c.png", x="minutes")
    assert Image.open(out).size[0] > 100
    with pytest.raises(ValueError, match="x='wall'"):
        plot_runs({"a": tmp_path / "a"}, ["loss"], tmp_path / "d.png", x="wall")
