"""The grain pipeline: a folder with bad files trains; disjoint per-process shards; exact resume."""

import json
import logging
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from motionaura_jax.configs.data import get_config as data_config
from motionaura_jax.data import video_io
from motionaura_jax.data.pipeline import make_host_iterator
from motionaura_jax.data.synthetic import MovingShapes

# ffmpeg starts through fork+exec in C; JAX's fork warning does not apply (see data/video_io.py).
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")

CAPTIONS = ["a red circle moving left", "a blue square moving up", "a green triangle moving down"]


def make_folder(root: pathlib.Path) -> pathlib.Path:
    """3 good MP4s (non-square, 24 FPS), a truncated MP4, a text file renamed .mp4; captions both ways."""
    root.mkdir(parents=True, exist_ok=True)
    shapes = MovingShapes(frames=25, size=48, num_clips=3, fps=24.0)
    for i in range(3):
        video = shapes[i]["video"][:, :, :40]  # (T, 48, 40, 3): not square, exercises resize + crop
        video_io.write_video(root / f"good_{i}.mp4", video, fps=24.0)
    (root / "captions.jsonl").write_text(
        "".join(json.dumps({"video": f"good_{i}.mp4", "caption": CAPTIONS[i]}) + "\n" for i in range(2))
    )
    (root / "good_2.txt").write_text(CAPTIONS[2] + "\n")
    data = (root / "good_0.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "readme.mp4").write_text("not a video, just text with the wrong name")
    return root


def folder_cfg(path, **extra) -> ml_collections.ConfigDict:
    return data_config(source="folder", path=str(path), frames=9, size=32, fps=12.0, **extra)


def test_folder_with_bad_files_goes_through_the_pipeline(tmp_path, caplog):
    root = make_folder(tmp_path / "videos")
    with caplog.at_level(logging.WARNING):
        it = make_host_iterator(folder_cfg(root), batch_size=4, split="train", seed=0)
        batches = [next(it) for _ in range(3)]
    warned = caplog.text
    assert str(root / "truncated.mp4") in warned and str(root / "readme.mp4") in warned
    assert "good_" not in warned  # only the bad files are named
    assert it.metrics()["data/bad_files"] == 2 and it.metrics()["data/videos"] == 3
    for batch in batches:
        assert batch["video"].shape == (4, 9, 32, 32, 3) and batch["video"].dtype == np.float32
        assert -1.0 <= batch["video"].min() and batch["video"].max() <= 1.0 and batch["video"].max() > 0.5
        np.testing.assert_array_equal(batch["fps"], 12.0)
        assert set(batch["caption"]) <= set(CAPTIONS)
    assert {str(c) for b in batches for c in b["caption"]} == set(CAPTIONS)


def test_folder_without_readable_video_is_a_clear_error(tmp_path):
    (tmp_path / "a.mp4").write_text("text")
    (tmp_path / "b.webm").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="none of its 2 video files is usable"):
        make_host_iterator(folder_cfg(tmp_path), batch_size=2, split="train", seed=0)
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no video files"):
        make_host_iterator(folder_cfg(empty), batch_size=2, split="train", seed=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_host_iterator(folder_cfg(tmp_path / "nowhere"), batch_size=2, split="train", seed=0)


def _tiny_task(config, mesh):
    """A task whose model predicts each clip's mean colour from its first frame: enough to train on video."""
    from motionaura_jax.train.task import Task

    def init_state(rng):
        return {"params": {"w": jnp.zeros((3, 3)), "b": jnp.zeros((3,))}, "step": jnp.zeros((), jnp.int32)}

    def train_step(state, batch, rng, step):
        video = batch["video"]

        def loss_fn(params):
            pred = video[:, 0].mean(axis=(1, 2)) @ params["w"] + params["b"]
            return jnp.mean((pred - video.mean(axis=(1, 2, 3))) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        params = jax.tree.map(lambda p, g: p - 0.5 * g, state["params"], grads)
        return {"params": params, "step": state["step"] + 1}, {"loss": loss}

    def make_data(process_index, process_count):
        return make_host_iterator(
            config.data,
            batch_size=config.train.batch_size // process_count,
            split="train",
            seed=config.train.seed,
            process_index=process_index,
            process_count=process_count,
        )

    return Task(
        init_state=init_state, train_step=train_step, make_data=make_data, params_of=lambda s: s["params"]
    )


def test_folder_trains_through_the_loop(tmp_path, monkeypatch):
    from motionaura_jax.configs import base
    from motionaura_jax.train import loop, tasks

    monkeypatch.setitem(tasks.TASKS, "data_probe", f"{__name__}:_tiny_task")
    root = make_folder(tmp_path / "videos")
    config = base.get_config("data_probe")
    config.data = folder_cfg(root)
    config.train.update(steps=4, batch_size=8, log_every=2, ckpt_every=2)
    result = loop.train(config, tmp_path / "run")
    assert result.step == 4 and np.isfinite(result.last_metrics["loss"])
    # Resuming restores the data iterator's state from the checkpoint and carries on.
    config.train.steps = 6
    result = loop.train(config, tmp_path / "run")
    assert result.step == 6 and np.isfinite(result.last_metrics["loss"])


def test_two_processes_get_disjoint_shards_covering_each_epoch():
    cfg = data_config(source="synthetic", frames=5, size=16, num_clips=24)
    per_process = []
    for p in range(2):
        it = make_host_iterator(cfg, batch_size=3, split="train", seed=5, process_index=p, process_count=2)
        per_process.append([next(it)["index"] for _ in range(8)])  # 8 x 3 = two epochs' halves
    for epoch in range(2):
        shards = [np.concatenate(batches[4 * epoch : 4 * epoch + 4]) for batches in per_process]
        assert not set(shards[0]) & set(shards[1]), "processes share clips within an epoch"
        assert sorted(np.concatenate(shards)) == list(range(24)), "the shards do not cover the epoch"
    epoch0 = np.concatenate([np.concatenate(b[:4]) for b in per_process])
    epoch1 = np.concatenate([np.concatenate(b[4:]) for b in per_process])
    assert not np.array_equal(epoch0, epoch1), "each epoch should be reshuffled"


@pytest.mark.parametrize("source", ["synthetic", "folder"])
def test_resume_from_state_gives_the_exact_next_batch(tmp_path, source):
    if source == "folder":
        cfg = folder_cfg(make_folder(tmp_path / "videos"), flip=True, read_threads=2, prefetch=8)
    else:
        cfg = data_config(source="synthetic", frames=5, size=16, num_clips=10, read_threads=2)
    it = make_host_iterator(cfg, batch_size=2, split="train", seed=3, process_index=1, process_count=2)
    for _ in range(3):
        next(it)  # background threads have decoded further ahead than this
    state = json.loads(json.dumps(it.get_state()))  # as stored in a checkpoint
    expected = [next(it) for _ in range(2)]
    resumed = make_host_iterator(cfg, batch_size=2, split="train", seed=3, process_index=1, process_count=2)
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        assert set(got) == set(want)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    fresh = make_host_iterator(cfg, batch_size=2, split="train", seed=3, process_index=1, process_count=2)
    assert not np.array_equal(next(fresh)["video"], expected[0]["video"])  # the state did matter


def test_every_stage_config_carries_every_data_key():
    """Any `--config.data.KEY=...` the pipeline understands is accepted by the stages that read data."""
    from motionaura_jax import config as config_lib
    from motionaura_jax.configs.data import DEFAULTS

    for experiment in ("experiments/vae.py:quickstart", "experiments/t2v.py:quickstart"):
        config = config_lib.load_config(experiment, [("data.flip", "true"), ("data.read_threads", "3")])
        assert set(DEFAULTS) <= set(config.data.keys()), experiment
        assert config.data.flip is True and config.data.read_threads == 3
    with pytest.raises(KeyError, match="nonsense"):
        data_config(nonsense=1)


def test_export_writes_a_folder_the_reader_agrees_with(tmp_path, capsys):
    from motionaura_jax.commands import data as data_cmd
    from motionaura_jax.data.video_folder import VideoFolder

    out = tmp_path / "shapes_mp4"
    args = [
        "export",
        "--out",
        str(out),
        "--num",
        "3",
        "--frames",
        "9",
        "--size",
        "32",
        "--split",
        "validation",
    ]
    assert data_cmd.main(args) == 0
    assert data_cmd.main(args) == 2 and "not empty" in capsys.readouterr().err  # never overwrites by default
    shapes = MovingShapes(frames=9, size=32, split="validation", num_clips=3)
    folder = VideoFolder(out, frames=9, size=32)
    assert len(folder.entries) == 3
    for i in range(3):
        clip = folder.get(i)
        assert clip["caption"] == shapes[i]["caption"] and clip["fps"] == shapes[i]["fps"]
        assert np.abs(clip["video"].astype(np.int16) - shapes[i]["video"]).mean() < 3.0  # libx264 tolerance


def test_folder_gives_inpainting_masks_and_sketches_from_sidecars(tmp_path, caplog):
    """with_masks: clip.mask.mp4 / clip.mask.png and clip.sketch.png come cut, resized, cropped and flipped with
    their clip (the object's pixels lie in the mask, the sketch on its outline, dark-on-light sketches read the
    same); a video without sidecars is skipped and counted; mask videos are never clips."""
    from PIL import Image

    from motionaura_jax.data.video_folder import VideoFolder

    root = tmp_path / "videos"
    root.mkdir()
    shapes = MovingShapes(frames=25, size=48, num_clips=3, fps=24.0)
    for i in range(3):
        clip = shapes[i]
        video_io.write_video(root / f"c{i}.mp4", clip["video"][:, :, :40], fps=24.0, lossless=True)
        masks = clip["masks"][:, :, :40]
        sketch = clip["sketch"][:, :40]
        if i == 0:  # a mask video and a white-on-black sketch
            rgb = np.repeat(masks[..., None].astype(np.uint8) * 255, 3, axis=-1)
            video_io.write_video(root / "c0.mask.mp4", rgb, fps=24.0, lossless=True)
            Image.fromarray(sketch).save(root / "c0.sketch.png")
        elif i == 1:  # one mask PNG for every frame (the union), a dark-on-light sketch
            Image.fromarray(masks.any(axis=0).astype(np.uint8) * 255).save(root / "c1.mask.png")
            Image.fromarray(255 - sketch).save(root / "c1.sketch.png")
    with caplog.at_level(logging.WARNING):
        # Every frame of the clip, so that the frame the sketch was drawn on is in it.
        folder = VideoFolder(root, frames=25, size=32, flip=True, with_masks=True, show_progress=False)
    assert len(folder) == 2 and folder.metrics()["data/no_masks"] == 1
    assert "c2.mp4" in caplog.text and "c2.mask" in caplog.text and "mask.mp4:" not in caplog.text
    for index in range(2):
        for key in range(6):
            clip = folder.get(index, key)
            masks, sketch, video = clip["masks"], clip["sketch"], clip["video"]
            assert masks.shape == (25, 32, 32) and masks.dtype == bool and sketch.shape == (32, 32)
            assert set(np.unique(sketch)) <= {0, 255} and (sketch > 0).sum() >= 8
            bright = video.max(axis=-1) > 100  # the object (the background is black)
            assert bright.sum() > 0 and (bright & masks).sum() >= 0.8 * bright.sum(), (
                index,
                key,
            )  # source: 0.94
            near = masks.any(axis=0)
            near = (
                near | np.roll(near, 2, 0) | np.roll(near, -2, 0) | np.roll(near, 2, 1) | np.roll(near, -2, 1)
            )
            assert (near & (sketch > 0)).sum() >= 0.9 * (sketch > 0).sum(), (index, key)
    batch = next(make_host_iterator(folder_cfg(root, with_masks=True), batch_size=2, split="train", seed=0))
    assert batch["masks"].shape == (2, 9, 32, 32) and batch["sketch"].shape == (
        2,
        32,
        32,
    )  # the stage's input
    plain = VideoFolder(root, frames=9, size=32, fps=12.0, show_progress=False)
    assert len(plain) == 3 and "masks" not in plain.get(
        0
    )  # without with_masks: every video, no sidecars read
