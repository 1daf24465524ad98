"""Tokenizer training on the generic loop: sharded == unsharded (params, EMA codebook, discriminator), every
loss term logged, and the inference commands on the trained run: eval recon, encode, decode."""

import json

import jax
import numpy as np
import pytest

from motionaura_jax import config as config_lib
from motionaura_jax.train import loop
from motionaura_jax.train.logging import read_metrics

MESHES = {"unsharded": {"num_devices": 1, "data": 1}, "data2_fsdp4": {"data": 2, "fsdp": 4}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    results = {}
    for name, mesh in MESHES.items():
        pairs = [("train.steps", "3")] + [(f"mesh.{k}", str(v)) for k, v in mesh.items()]
        config = config_lib.load_config("experiments/vae.py:tiny", pairs)
        workdir = tmp_path_factory.mktemp(name)
        results[name] = (loop.train(config, workdir), read_metrics(workdir), workdir)
    return results


def test_sharded_training_equals_unsharded(runs):
    ref, ref_metrics, _ = runs["unsharded"]
    result, metrics, _ = runs["data2_fsdp4"]
    ref_losses = [m["loss"] for m in ref_metrics]
    assert len(ref_losses) == 3 and all(np.isfinite(ref_losses))
    np.testing.assert_allclose([m["loss"] for m in metrics], ref_losses, rtol=1e-4)
    for field in ("params", "vq", "disc_params"):
        jax.tree.map(
            lambda a, b, f=field: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5, err_msg=f),
            jax.device_get(getattr(result.state, field)),
            jax.device_get(getattr(ref.state, field)),
        )
    # The discriminator trained (GAN on from step 1) and the EMA codebook moved.
    assert float(ref_metrics[-1]["gan_d"]) > 0
    start = config_lib.load_config("experiments/vae.py:tiny", [("mesh.num_devices", "1"), ("mesh.data", "1")])
    start_vq = jax.device_get(loop.init_state(loop.build(start)).vq)
    final_vq = jax.device_get(ref.state.vq)

    def leaf(tree, name):
        return next(v for path, v in jax.tree_util.tree_flatten_with_path(tree)[0] if name in str(path[-1]))

    assert np.abs(leaf(final_vq, "embedding") - leaf(start_vq, "embedding")).max() > 1e-3  # the codes moved
    # The EMA counts start at zero and accumulate.
    assert np.all(leaf(start_vq, "cluster_size") == 0) and leaf(final_vq, "cluster_size").sum() > 0


def test_every_loss_term_is_logged(runs):
    _, metrics, _ = runs["unsharded"]
    for key in (
        "loss",
        "l1",
        "l2",
        "psnr",
        "perceptual",
        "vq_loss",
        "vq_commit",
        "codebook_usage",
        "perplexity",
        "vq_restarted",
        "mfi_ce",
        "mfi_acc",
        "gan_g",
        "gan_d",
        "gan_adaptive_weight",
        "grad_norm",
    ):
        assert key in metrics[-1], key
    assert metrics[0]["gan_g"] == 0.0 and metrics[-1]["gan_adaptive_weight"] > 0  # GAN starts at step 1
    assert metrics[0]["vq_restarted"] > 0  # zero initial counts: the first step restarts codes from the batch


def test_eval_recon_command(runs, tmp_path):
    from motionaura_jax.commands import eval as eval_command

    _, _, workdir = runs["unsharded"]
    out = tmp_path / "recon.json"
    sheet = tmp_path / "sheet.png"
    assert (
        eval_command.main(["recon", f"--ckpt={workdir}", f"--out={out}", "--num_clips=4", f"--sheet={sheet}"])
        == 0
    )
    record = json.loads(out.read_text())
    for key in ("psnr", "ssim", "codebook_usage", "perplexity", "num_clips", "temporal_l1", "colour_kept"):
        assert key in record, key
    assert record["num_clips"] == 4 and 0 < record["codebook_usage"] <= 1
    assert sheet.stat().st_size > 0
    assert eval_command.main(["recon", "--ckpt", str(tmp_path / "nothing")]) == 2


def test_eval_recon_counts_every_clip_of_a_folder(runs, tmp_path):
    # 3 clips and an eval batch of 8: the partial batch is the whole folder, not dropped.
    from motionaura_jax.commands import eval as eval_command
    from motionaura_jax.data.synthetic import MovingShapes
    from motionaura_jax.data.video_io import write_video

    _, _, workdir = runs["unsharded"]
    data = config_lib.load_config("experiments/vae.py:tiny").data
    shapes = MovingShapes(frames=data.frames, size=data.size, split="test")
    for i in range(3):
        write_video(tmp_path / "clips" / f"{i}.mp4", shapes[i]["video"], fps=8.0)
    out = tmp_path / "recon.json"
    args = [f"--ckpt={workdir}", f"--out={out}", "--config.data.source=folder"]
    args += [f"--config.data.path={tmp_path / 'clips'}", "--config.eval.batch_size=8"]
    assert eval_command.main(["recon", *args]) == 0
    record = json.loads(out.read_text())
    assert record["num_clips"] == 3 and np.isfinite(record["psnr"])


def test_encode_decode_commands_round_trip(runs, tmp_path):
    from motionaura_jax.commands import decode, encode
    from motionaura_jax.data.synthetic import MovingShapes
    from motionaura_jax.data.video_io import read_video, write_video

    _, _, workdir = runs["unsharded"]
    clip = MovingShapes(frames=13, size=16, split="test")[0]["video"][
        :11
    ]  # 11 frames: padded to 13 = 1 + 4*3
    video_path = write_video(tmp_path / "in.mp4", clip, fps=8.0)
    tokens = tmp_path / "tokens.npz"
    assert (
        encode.main([str(video_path), "--ckpt", str(workdir), "--out", str(tokens), "--chunk_frames", "4"])
        == 0
    )
    with np.load(tokens) as data:
        assert data["ids"].shape == (4, 4, 4) and int(data["num_frames"]) == 11
    out = tmp_path / "out.mp4"
    assert decode.main([str(tokens), "--ckpt", str(workdir), "--out", str(out), "--chunk_latents", "2"]) == 0
    frames, _ = read_video(out)
    assert frames.shape == (11, 16, 16, 3)
    assert encode.main([str(tmp_path / "missing.mp4"), "--ckpt", str(workdir), "--out", str(tokens)]) == 2
