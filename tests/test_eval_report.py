"""metrics.json + markdown table: protocol required, standard JSON (inf as a string), atomic writes."""

import json

import pytest

from motionaura_jax.eval import report


def test_report_writes_json_and_markdown_with_protocol(tmp_path):
    out = tmp_path / "sub" / "metrics.json"
    metrics = {"psnr": float("inf"), "ssim": 0.91234567, "lpips": "unavailable", "num_videos": 3}
    protocol = {"ssim": {"window": "gaussian", "window_size": 11}, "fvd": {"num_frames": 16}}
    json_path, md_path = report.write_report(out, metrics, protocol, title="Reconstruction")
    data = json.loads(json_path.read_text())  # strict JSON: would fail on a bare Infinity
    assert data["psnr"] == "inf" and data["lpips"] == "unavailable" and data["protocol"] == protocol
    table = md_path.read_text()
    assert (
        "| ssim | 0.9123 |" in table
        and "| ssim.window | gaussian |" in table
        and "| fvd.num_frames | 16 |" in table
    )
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "metrics.json",
        "metrics.md",
    ]  # no temp files left


def test_report_refuses_numbers_without_protocol(tmp_path):
    with pytest.raises(ValueError, match="protocol"):
        report.write_report(tmp_path / "m.json", {"psnr": 30.0}, {}, title="x")
    with pytest.raises(ValueError, match=".json"):
        report.write_report(tmp_path / "m.txt", {"psnr": 30.0}, {"a": 1}, title="x")
