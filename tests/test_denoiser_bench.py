"""`motionaura bench denoiser` at a tiny size: every number in its table follows from the timings it reports."""

import dataclasses
import math
import statistics

import numpy as np
import pytest

from motionaura_jax import host_memory
from motionaura_jax.bench import denoiser
from motionaura_jax.commands import bench as bench_command

TINY = denoiser.DenoiserBench(width=32, depth=1, heads=2, text_len=4, rounds=2, warmup=1, min_round_s=0.05)
GRIDS = ((1, 2, 4), (2, 2, 4))


def test_a_round_is_the_mean_of_the_steps_that_fill_it():
    clock = {"now": 0.0, "calls": 0}

    def step():  # a step of 10 ms on a fake clock
        clock["now"] += 0.01
        clock["calls"] += 1

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(denoiser.time, "perf_counter", lambda: clock["now"])
        seconds, steps = denoiser.time_round(step, 0.095)
        assert steps == clock["calls"] == 10 and seconds == pytest.approx(0.01)
        assert denoiser.time_round(step, 0.0) == (pytest.approx(0.01), 1)  # never fewer than one step
    with pytest.raises(ValueError, match="min_round_s"):
        denoiser.DenoiserBench(min_round_s=-1)


def test_table_values_follow_from_the_reported_timings():
    results = denoiser.run(grids=GRIDS, modes=("filter3d",), bench=TINY, isolate=False)
    rows = results["rows"]
    assert [(r["grid"], r["model"]) for r in rows] == [
        ("1x2x4", "filter3d"),
        ("1x2x4", denoiser.PEER),
        ("2x2x4", "filter3d"),
        ("2x2x4", denoiser.PEER),
    ]
    for r in rows:
        assert r["status"] == "ok" and len(r["times_s"]) == TINY.rounds
        assert len(r["steps_per_round"]) == TINY.rounds and min(r["steps_per_round"]) >= 1
        assert r["median_s"] == statistics.median(r["times_s"]) and r["min_s"] == min(r["times_s"])
        assert r["tokens"] == math.prod(int(v) for v in r["grid"].split("x"))
        assert r["flops"] > 0 and r["peak_flops_per_s"] > 0
        assert r["flops_per_s"] == pytest.approx(r["flops"] / r["median_s"])
        assert r["fraction_of_peak"] == pytest.approx(r["flops_per_s"] / r["peak_flops_per_s"])
        peer = next(p for p in rows if p["grid"] == r["grid"] and p["model"] == denoiser.PEER)
        assert r["speedup_vs_peer"] == pytest.approx(peer["median_s"] / r["median_s"])
        assert math.isnan(r["peak_rss_mb"])  # in-process: no memory figure of its own
    # More tokens, more work: XLA's and PyTorch's FLOP counts both grow with the grid.
    for model in ("filter3d", denoiser.PEER):
        small, large = (r["flops"] for r in rows if r["model"] == model)
        assert large > small
    for model, fits in results["exponents"].items():
        ok = [(r["tokens"], r["median_s"]) for r in rows if r["model"] == model]
        want = np.polyfit(np.log([n for n, _ in ok]), np.log([s for _, s in ok]), 1)[0]
        assert fits["all"] == pytest.approx(want) and fits["8->16"] == pytest.approx(want)
    table = denoiser.format_table(results)
    lines = [line for line in table.splitlines() if line.startswith("| 2x2x4 | 16 | filter3d |")]
    assert len(lines) == 1
    cells = [c.strip() for c in lines[0].split("|")[1:-1]]
    r = rows[2]
    assert cells[3] == f"{r['median_s']:.3f}" and cells[5] == f"{r['speedup_vs_peer']:.2f}x"
    assert cells[-1] == "ok" and cells[-2] == "-"
    assert f"| filter3d | {results['exponents']['filter3d']['all']:.2f} |" in table
    assert "host malloc system," in table  # in process, and tests keep glibc's defaults (conftest)


@pytest.mark.parametrize("scan_layers", [False, True])
def test_our_flop_count_grows_by_one_block_per_block(scan_layers):
    """One more block adds its matmul FLOPs (an independent count: per video token, self-attention 4 D^2, the
    cross-attention's query and output 2 D^2, the MLP 8 D^2 multiply-adds, x2 FLOPs, x3 forward + backward),
    scanned or not (XLA's cost analysis counts a while loop's body once: a scanned step is counted on its unrolled
    twin)."""
    width, grid = 32, (2, 4, 4)
    flops = [
        denoiser._ours("none", grid, dataclasses.replace(TINY, depth=d, scan_layers=scan_layers))[1]
        for d in (1, 2)
    ]
    per_block = 6 * 14 * width**2 * math.prod(grid)
    # The rest of a block (attention maps over 32 tokens, text keys and values, norms, adaLN) adds < 50%.
    assert per_block <= flops[1] - flops[0] <= 1.5 * per_block
    if not scan_layers:  # the attention's chunk loop is a while loop too: counted as the unchunked step
        chunked = dataclasses.replace(TINY, depth=2, attention_chunk=8)
        assert denoiser._ours("none", grid, chunked)[1] == pytest.approx(flops[1])


def test_the_peers_cpu_attention_is_counted():
    """PyTorch's FLOP counter has no formula for the CPU flash-attention kernel the peer's attention runs; with
    ours registered, forward + backward count 2 matmuls forward and 5 backward (the scores recomputed)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    denoiser.count_cpu_attention_flops()
    batch, heads, seq, head_dim = 1, 2, 24, 16
    q, k, v = (torch.randn(batch, heads, seq, head_dim, requires_grad=True) for _ in range(3))
    counter = FlopCounterMode(display=False)
    with counter:
        torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()
    assert counter.get_total_flops() == (2 + 5) * 2 * batch * heads * seq**2 * head_dim


def test_a_worker_process_reports_its_own_peak_memory(monkeypatch):
    monkeypatch.setenv("MOTIONAURA_HOST_MALLOC", "reuse")  # workers start under `motionaura`'s policy
    worker = denoiser._Worker(denoiser.PEAK, (1, 2, 4), TINY)
    assert worker.ready() and worker.step()
    worker.close()
    assert worker.info["host_malloc"] == host_memory.choose({"MOTIONAURA_HOST_MALLOC": "reuse"}) == "reuse"
    # Its own peak (the 2048^2 matmul's 3 x 16 MiB and the runtime), not the test process's.
    assert 50 < worker.info["peak_rss_mb"] < 1500 and worker.info["peak_rss_mb"] >= worker.info["base_rss_mb"]
    assert worker.info["flops"] == 2 * denoiser.PEAK_N**3 and len(worker.times) == 1


def test_bad_arguments_are_usage_errors():
    with pytest.raises(SystemExit):
        bench_command.main(["denoiser", "--modes=fourier"])
    with pytest.raises(SystemExit):
        bench_command.main(["denoiser", "--heads=3"])
    with pytest.raises(SystemExit):
        bench_command.main(["denoiser", "--grids=4by4"])
