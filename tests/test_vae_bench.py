"""`motionaura bench vae` runs end to end at a tiny clip size against the diffusers peer, in one process."""

import json

from motionaura_jax.commands import bench


def test_bench_vae_reports_ratios_against_the_peer(tmp_path, capsys):
    out = tmp_path / "bench_vae.json"
    # One variant keeps the test to one set of compiles (the other differs only in its block config).
    args = ["vae", "--sizes", "16", "--repeats", "1", "--variants", "ours_fast", "--out", str(out)]
    assert bench.main(args) == 0
    results = json.loads(out.read_text())
    row = results["sizes"]["16"]
    assert set(row["ratios"]) == {"ours_fast"}
    for variant, ratio in row["ratios"].items():
        # Each ratio is the peer's time over ours, measured in this run.
        expected = row["encode_decode_s"]["peer"] / row["encode_decode_s"][variant]
        assert abs(ratio["encode_decode_speedup"] - expected) < 1e-9 and ratio["train_step_speedup"] > 0
        assert set(row["ours_limits_s"][variant]) == {"encode", "decode"}
    # The peer's parameters are counted from the torch module (about 32M at these widths), ours from
    # jax.eval_shape (3.7M for the lean block at matched width and depth).
    assert 25.0 < row["peer_params_M"] < 40.0 and 1.0 < row["ours_params_M"]["ours_fast"] < 10.0
    assert "ours_fast: encode+decode" in capsys.readouterr().out
