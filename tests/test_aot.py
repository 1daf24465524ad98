"""Ahead-of-time compile for a TPU topology on this CPU (train/aot.py, `motionaura compile`), through libtpu.

Every compile here targets v5e:2x2 (4 chips) with data=2 x fsdp=2. The reported numbers are checked against
counts made here, independently of the compiler:
- memory: the arguments of the compiled step are the train state (float32 parameters + AdamW's two moments =
  3 x parameter bytes, sharded over fsdp) plus the per-chip batch;
- FLOPs: a dense layer stack does 2*N*tokens FLOPs forward and 4*N*tokens backward, so 6*N*tokens per step;
  the text-to-video denoiser adds its attention terms, counted by hand below.
libtpu comes from requirements-test.txt (libtpu==0.0.42.1, the release jax[tpu]==0.10.2 pins).
"""

from __future__ import annotations

import math

import pytest

from motionaura_jax import cli
from motionaura_jax import config as config_lib
from motionaura_jax.train import aot

TOPOLOGY = "v5e:2x2"


def _mesh(config, data=2, fsdp=2):
    config.mesh.data, config.mesh.fsdp = data, fsdp
    return config


def test_topology_names():
    assert aot.parse_topology("v5p-64") == (aot.CHIPS["v5p"], "v5p:2x4x4")  # 64 TensorCores = 32 chips
    assert aot.parse_topology("v4-32")[1] == "v4:2x2x4"
    assert aot.parse_topology("v5e-256")[1] == "v5e:16x16"  # v5e/v6e names count chips
    assert aot.parse_topology("v5litepod-16")[1] == "v5e:4x4"
    assert aot.parse_topology("v6e-8")[1] == "v6e:2x4"
    assert aot.parse_topology("v5e:2x2")[1] == "v5e:2x2"
    for bad in ("v7-8", "v5p-63", "v5p:2x2", "v5e-48"):
        with pytest.raises(aot.TopologyError):
            aot.parse_topology(bad)
    chip, desc, devices = aot.topology_devices("v5p-64")
    assert len(devices) == 32 and devices[0].device_kind == "TPU v5"


def test_dense_stack_flops_and_state_bytes():
    """The tiny task is a dense stack (in_proj, mlp_in, mlp_out, out_proj, no biases) plus one LayerNorm."""
    config = _mesh(config_lib.load_config("experiments/tiny.py"))
    config.model.update(dict(embed=256, mlp=1024, out_dim=128))
    config.data.update(dict(in_dim=128, out_dim=128, length=64))
    config.train.batch_size = 32
    report = aot.compile_train(config, TOPOLOGY)
    e, m, i, o = 256, 1024, 128, 128
    n_dense = i * e + e * m + m * e + e * o
    assert report["params"] == n_dense + 2 * e  # + LayerNorm scale and bias
    tokens = 32 * 64
    # 6*N*tokens, less the input gradient of the first layer that nobody needs (2*i*e*tokens); elementwise ops
    # (GELU, LayerNorm, AdamW) add about 1.5% here.
    expected = (6 * n_dense - 2 * i * e) * tokens
    assert report["flops_total"] == pytest.approx(expected, rel=0.03)
    assert report["flops_total"] == pytest.approx(6 * n_dense * tokens, rel=0.03)
    # Every dense kernel is sharded over fsdp=2 on its `embed` dimension; the LayerNorm is replicated.
    state = 3 * 4 * (n_dense / 2 + 2 * e) + 4  # params + AdamW mu, nu (+ its step count)
    batch = (32 // 4) * 64 * (i + o) * 4 + (32 // 4) * 4  # x, y float32 and the int32 index, per chip
    args = report["memory_per_device"]["argument"]
    assert args == pytest.approx(state + batch, rel=0.01)
    assert report["state_bytes_per_device"] == pytest.approx(state, rel=1e-6)
    assert report["fits"] and report["step_time_s"] > 0
    assert report["memory_per_device"]["alias"] >= 0.99 * state  # the donated state is updated in place


def _t2v_config(depth=3, mode="none"):
    """A small denoiser without a token cache: grid, text length, vocabulary and text width set by hand.
    head_dim 128 and widths of multiples of 128 keep TPU tiling padding out of the byte count."""
    config = _mesh(config_lib.load_config("experiments/t2v.py:tiny"))
    config.tokens.update(dict(grid=(2, 8, 8), text_len=16))
    config.model.update(
        dict(vocab_size=256, text_dim=128, width=256, heads=2, depth=depth, mlp_ratio=4.0, spectral_mode=mode)
    )
    config.model.scan_layers = True
    config.train.batch_size = 8
    return config


def _t2v_train_flops(b, t, text, d, e, k, depth, mlp):
    """Matmul and attention FLOPs of one t2v train step, counted by hand (forward x 3)."""
    block = (
        2 * t * 4 * d * d  # self-attention q, k, v, out over the video tokens
        + 2 * 2 * t * t * d  # scores and weighted sum
        + 2 * t * 2 * d * d  # cross-attention q, out
        + 2 * text * 2 * d * d  # cross-attention k, v over the text tokens
        + 2 * 2 * t * text * d  # cross scores and weighted sum
        + 2 * t * 2 * d * mlp  # feed-forward
    )
    forward = 2 * text * e * d + depth * block + 2 * t * d * k  # text projection, blocks, logits head
    return b * (3 * forward - 2 * text * e * d)  # no input gradient for the text projection


def test_t2v_train_step_memory_and_flops():
    config = _t2v_config(depth=3)
    report = aot.compile_train(config, TOPOLOGY)
    assert "extrapolated to 3" in report["flops_method"]  # scanned layers: XLA counts a loop body once
    d, n = 256, report["params"]
    expected = _t2v_train_flops(b=8, t=128, text=16, d=d, e=128, k=256, depth=3, mlp=4 * d)
    # Within 10%: the loss (softmax over the vocabulary, the VLB's posteriors), norms, AdamW and the small
    # conditioning MLPs are not in the hand count (measured: +7%).
    assert report["flops_total"] == pytest.approx(expected, rel=0.10)
    # Arguments: parameters + AdamW moments, sharded over fsdp=2 except the small replicated ones, + the batch.
    state = 3 * 4 * n
    args = report["memory_per_device"]["argument"]
    assert state / 2 <= args <= 1.10 * state / 2, (args, state / 2)
    assert report["param_bytes"] == 4 * n
    assert report["fits"] and report["tokens_per_example"] == 128


def test_t2v_sampler_and_tokenizer_compile():
    config = _t2v_config(depth=2, mode="qkv_fft2")
    config.sample.num_steps = 4
    report = aot.compile_sample(config, TOPOLOGY)
    assert report["kind"] == "sample" and report["fits"] and report["global_batch"] == 4
    assert report["flops_total"] == pytest.approx(report["flops_per_denoising_step"] * 4 * 4, rel=1e-6)
    # Inference holds the parameters only: no optimizer state among the arguments.
    assert report["memory_per_device"]["argument"] < 1.5 * report["param_bytes_per_device"] + 2**20

    vae = _mesh(config_lib.load_config("experiments/vae.py:tiny"))
    report = aot.compile_train(vae, TOPOLOGY)
    assert report["fits"] and report["flops_per_device"] > 0
    # Tokenizer state: parameters + moments (+ codebook EMA, discriminator and its moments); TPU pads small
    # channel counts to its tiles, so the compiled arguments are at least the unpadded bytes.
    assert report["memory_per_device"]["argument"] >= report["state_bytes_per_device"]
    assert report["tokens_per_example"] == 2 * 4 * 4  # 5x16x16 clips at 4x4x4


def test_unshardable_config_fails_with_levers(capsys):
    """A stack whose widths no mesh axis divides is replicated on every chip and does not fit a 16 GB v5e."""
    argv = [
        "compile", "--config=experiments/tiny.py", f"--topology={TOPOLOGY}", "--config.mesh.data=1",
        "--config.mesh.fsdp=4", "--config.model.embed=24001", "--config.model.mlp=24001",
    ]  # fmt: skip
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "does not fit v5e:2x2" in err and "% of HBM, allowed 80%" in err
    assert "['mlp_in']['kernel'] (24001, 24001)" in err and "replicated on every chip" in err
    assert "levers:" in err and "--config.train.batch_size=8" in err  # 4 -> 2 examples per chip
    assert "--config.mesh.fsdp" not in err  # fsdp already spans the 4 chips: not a lever here
    # A mesh that does not match the topology is a usage error (exit 2) naming the sizes.
    assert (
        cli.main(
            ["compile", "--config=experiments/tiny.py", f"--topology={TOPOLOGY}", "--config.mesh.fsdp=3"]
        )
        == 2
    )
    assert "do not divide the 4 devices" in capsys.readouterr().err


def test_levers_name_the_overrides():
    report = {
        "mesh": {"data": 4, "fsdp": 8, "tensor": 1, "sequence": 1}, "num_chips": 32, "global_batch": 64,
        "batch_per_device": 2.0, "tokens_per_example": 5120, "state_bytes_per_device": 2**30,
        "memory_per_device": {"total": 2**36, "temp": 2**35}, "replicated_params": [],
    }  # fmt: skip
    config = _t2v_config()
    config.model.remat = False
    text = "\n".join(aot.levers(report, config))
    for lever in ("--config.mesh.fsdp=16", "--config.model.remat=True", "--config.train.batch_size=32"):
        assert lever in text
    assert "--config.mesh.sequence=2" in text and math.isfinite(report["batch_per_device"])
