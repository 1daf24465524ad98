"""`motionaura encode` / `decode` against the library: the command's ids are `Tokenizer.encode_chunked`'s,
which equal whole-clip `Tokenizer.encode` for any chunk length; a clip of the wrong length is padded by
repeating its last frame (and the count of real frames is kept); the decode command writes
`decode_chunked`'s frames, which equal whole-clip `decode`, cut back to the real frames.

The video file layer is replaced by the exact arrays (MP4 is lossy; its reader/writer has its own tests)."""

import json

import numpy as np
import pytest

from motionaura_jax import config as config_lib
from motionaura_jax.data import video_io


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """An untrained vae.py:tiny run (random weights give varied ids)."""
    from motionaura_jax.train import loop
    from motionaura_jax.train.checkpoint import Checkpointer

    workdir = tmp_path_factory.mktemp("vae")
    config = config_lib.load_config("experiments/vae.py:tiny", ["--config.mesh.num_devices=1"])
    state = loop.init_state(loop.build(config))
    config_lib.save_config(config, workdir)
    with Checkpointer(workdir / "checkpoints") as checkpointer:
        checkpointer.save(1, state, data_state={}, meta={"config": config.to_dict()}, wait=True)
    return workdir


def test_padding_repeats_the_last_frame():
    from motionaura_jax.pipelines.tokenizer import pad_to_causal_length

    frames = np.arange(11)[:, None, None, None] * np.ones((11, 2, 2, 3), np.uint8)
    padded = pad_to_causal_length(frames, 4)
    assert len(padded) == 13  # the next 1 + 4k
    np.testing.assert_array_equal(padded[:11], frames)
    np.testing.assert_array_equal(padded[11:], frames[[10, 10]])
    for n, expected in [(1, 1), (5, 5), (6, 9), (9, 9), (10, 13)]:
        assert len(pad_to_causal_length(frames[:n], 4)) == expected, n


def test_encode_decode_commands_equal_the_library(tokenizer_dir, tmp_path, monkeypatch):
    from motionaura_jax.commands import decode, encode
    from motionaura_jax.data.synthetic import MovingShapes
    from motionaura_jax.pipelines.tokenizer import Tokenizer

    clip = MovingShapes(frames=13, size=16, split="test")[0]["video"][:11]  # 11 frames: padded to 13
    monkeypatch.setattr(video_io, "read_video", lambda path, num_frames=None: (clip[:num_frames], 8.0))
    written = {}
    monkeypatch.setattr(video_io, "write_video", lambda path, video, fps: written.setdefault("video", video))

    tokens = tmp_path / "tokens.npz"
    args = ["in.mp4", "--ckpt", str(tokenizer_dir), "--out", str(tokens), "--chunk_frames", "4"]
    assert encode.main(args) == 0
    with np.load(tokens) as data:
        ids_cmd, num_frames = data["ids"], int(data["num_frames"])
    assert num_frames == 11

    tokenizer = Tokenizer.load(tokenizer_dir)
    padded = np.concatenate([clip, clip[-1:], clip[-1:]])  # the padding rule, written out
    x = padded[None].astype(np.float32) / 127.5 - 1.0
    whole = tokenizer.encode(x)
    assert len(np.unique(whole)) > 3  # a non-trivial comparison
    np.testing.assert_array_equal(ids_cmd, whole[0])
    for chunk in (4, 8):  # the command's, and one that splits the clip differently
        np.testing.assert_array_equal(tokenizer.encode_chunked(x, chunk), whole, err_msg=f"chunk {chunk}")

    assert decode.main([str(tokens), "--ckpt", str(tokenizer_dir), "--out", str(tmp_path / "o.mp4"),
                        "--chunk_latents", "2"]) == 0  # fmt: skip
    whole_video = tokenizer.decode(whole)
    for chunk in (2, 3):
        np.testing.assert_allclose(
            tokenizer.decode_chunked(whole, chunk), whole_video, atol=1e-5, err_msg=f"{chunk}"
        )
    expected = video_io.to_uint8(tokenizer.decode_chunked(whole, 2)[0])[:11]
    assert written["video"].shape == (11, 16, 16, 3)
    np.testing.assert_array_equal(written["video"], expected)


def test_eval_recon_values_equal_the_metric_functions(tmp_path):
    """`motionaura eval recon` with LPIPS weights and FVD switched on: every number equals the metric function
    applied to the same held-out clips and the tokenizer's reconstructions of them."""
    from motionaura_jax import runs
    from motionaura_jax.commands import eval as eval_command
    from motionaura_jax.eval import fvd as fvd_lib
    from motionaura_jax.eval import judge
    from motionaura_jax.eval.image_metrics import psnr_video, ssim_video
    from motionaura_jax.eval.recon import _iterate, temporal_l1
    from motionaura_jax.models.lpips import LPIPS
    from motionaura_jax.pipelines import Tokenizer
    from tests.test_runs import _save_untrained
    from tests.test_vae_losses import _write_random_alex

    # 17-frame 32x32 clips: FVD's I3D protocol takes 16 frames, LPIPS-alex needs >= 32 px.
    frames = ["--config.mesh.num_devices=1", "--config.data.frames=17", "--config.data.size=32"]
    _save_untrained(config_lib.load_config("experiments/vae.py:tiny", frames), tmp_path / "vae")
    weights = _write_random_alex(tmp_path / "lpips_alex.npz")
    overrides = [f"--config.eval.lpips_weights={weights}", "--config.eval.fvd=true"]
    out = tmp_path / "recon.json"
    args = ["recon", f"--ckpt={tmp_path / 'vae'}", f"--out={out}", "--num_clips=4", *overrides]
    assert eval_command.main([*args, "--config.eval.batch_size=3"]) == 0  # a full batch and a partial one
    record = json.loads(out.read_text())

    tokenizer = Tokenizer.load(tmp_path / "vae")
    run_config = runs.read_config(tmp_path / "vae")  # the run's own data config, as `eval recon` reads it
    # The same clips in the same batches (3 + 1).
    batches = list(_iterate(run_config, 4, 3))
    x = np.concatenate([np.asarray(b["video"], np.float32) for b in batches])
    recon, ids = (
        np.concatenate(r) for r in zip(*(tokenizer.reconstruct(b["video"]) for b in batches), strict=True)
    )
    batch = {"caption": np.concatenate([b["caption"] for b in batches])}
    np.testing.assert_allclose(record["psnr"], np.mean(psnr_video(recon, x)), rtol=1e-5)
    np.testing.assert_allclose(record["ssim"], np.mean(ssim_video(recon, x)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(record["temporal_l1"], np.mean(temporal_l1(recon, x)), rtol=1e-5)
    np.testing.assert_allclose(record["codebook_usage"], len(np.unique(ids)) / 32)  # K = 32
    np.testing.assert_allclose(record["lpips"], np.mean(LPIPS.from_file(weights).video(recon, x)), rtol=1e-5)
    np.testing.assert_allclose(record["fvd"], fvd_lib.fvd(x, recon)["fvd"], rtol=1e-4)
    kept = judge.aggregate(
        [judge.judge_and_score(v, str(c)) for v, c in zip(recon, batch["caption"], strict=True)]
    )
    assert record["shape_kept"] == kept["shape"] and record["fully_kept"] == kept["all_correct"]
    assert record["num_clips"] == 4 and record["protocol"]["fvd"]["num_frames"] == 16
    assert record["protocol"]["lpips"]["weights"]
