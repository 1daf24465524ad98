"""`motionaura bench spectral` runs end to end at a tiny size and prints one row per mode plus the peer."""

import pytest

from motionaura_jax.commands import bench


def test_bench_spectral_prints_a_row_per_mode(capsys):
    assert (
        bench.main(
            [
                "spectral",
                "--grids=1x2x4",
                "--width=16",
                "--heads=2",
                "--text-len=4",
                "--rounds=1",
                "--modes=global_filter",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 1x2x4 ")]
    assert [r.split("|")[3].strip() for r in rows] == ["global_filter", "none"]
    assert "| none | " in out and "1.00x" in out


def test_bench_spectral_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        bench.main(["spectral", "--modes=fourier"])
    with pytest.raises(SystemExit):
        bench.main(["spectral", "--grids=4by4"])
