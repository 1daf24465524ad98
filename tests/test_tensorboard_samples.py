"""TensorBoard shows the samples: the sample hooks' contact sheets (PNG) and videos (animated GIF) are written to
the run's TensorBoard events beside the scalars, for local and gs:// workdirs; read back here from the event
file itself (TFRecord framing + tensorboardX's Event protobuf), nothing on the network."""

from __future__ import annotations

import io
import pathlib
import struct

import numpy as np
import pytest
from etils.epath import backend as epath_backend
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.registry import _registry as fsspec_registry
from PIL import Image

from motionaura_jax import config as config_lib
from motionaura_jax.train.logging import MetricWriter


def read_events(data: bytes) -> list:
    """The Event protos of one TensorBoard event file (records: u64 length, u32 crc, payload, u32 crc)."""
    from tensorboardX.proto.event_pb2 import Event

    events, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        payload = data[offset + 12 : offset + 12 + length]
        events.append(Event.FromString(payload))
        offset += 12 + length + 4
    return events


def images_in(event_files: list[bytes]) -> dict[str, list[tuple[int, bytes]]]:
    """{tag: [(step, encoded image bytes)]} of every image summary in the files."""
    found: dict[str, list[tuple[int, bytes]]] = {}
    for data in event_files:
        for event in read_events(data):
            for value in event.summary.value:
                if value.HasField("image"):
                    found.setdefault(value.tag, []).append((event.step, value.image.encoded_image_string))
    return found


def scalars_in(event_files: list[bytes]) -> set[str]:
    return {
        v.tag
        for data in event_files
        for e in read_events(data)
        for v in e.summary.value
        if not v.HasField("image")
    }


def _local_events(workdir: pathlib.Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((workdir / "tensorboard").glob("events.out.tfevents*"))]


def _sheet_and_video():
    rng = np.random.default_rng(0)
    sheet = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    video = np.zeros((4, 8, 8, 3), np.uint8)
    for t in range(4):  # a white square moving right on black: exact in a GIF palette
        video[t, 2:5, t : t + 3] = 255
    return sheet, video


def _check_samples(found, sheet, video, step):
    ((got_step, png),) = found["samples/sheet"]
    assert got_step == step
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), sheet)
    ((got_step, gif),) = found["samples/video"]
    animation = Image.open(io.BytesIO(gif))
    assert animation.format == "GIF" and animation.n_frames == len(video) and got_step == step
    for t in range(len(video)):
        animation.seek(t)
        np.testing.assert_array_equal(np.asarray(animation.convert("RGB")), video[t])


def test_metric_writer_writes_sheets_and_gifs_beside_the_scalars(tmp_path):
    sheet, video = _sheet_and_video()
    writer = MetricWriter(tmp_path)
    writer.write(3, {"loss": 1.5})
    writer.write_images(3, {"samples/sheet": sheet, "samples/video": video})
    with pytest.raises(ValueError, match="want \\(H, W, 3\\) or \\(T, H, W, 3\\)"):
        writer.write_images(3, {"bad": np.zeros((2, 2))})
    writer.close()
    events = _local_events(tmp_path)
    assert "loss" in scalars_in(events)
    _check_samples(images_in(events), sheet, video, step=3)


@pytest.fixture
def memory_gcs(monkeypatch):
    """gs:// served by fsspec's in-memory filesystem (as in test_workdir_url.py): no network, no credentials."""
    monkeypatch.setenv("FSSPEC_GCS_TOKEN", "anon")
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    MemoryFileSystem.store.clear()
    MemoryFileSystem.pseudo_dirs[:] = [""]
    monkeypatch.setitem(fsspec_registry, "gcs", MemoryFileSystem)
    epath_backend.fsspec_backend._get_filesystem.cache_clear()
    yield MemoryFileSystem.store
    epath_backend.fsspec_backend._get_filesystem.cache_clear()
    MemoryFileSystem.store.clear()


def test_samples_reach_a_gs_workdir(memory_gcs):
    sheet, video = _sheet_and_video()
    writer = MetricWriter("gs://bucket/run")
    writer.write(2, {"loss": 0.5})
    writer.write_images(2, {"samples/sheet": sheet, "samples/video": video})
    writer.flush()  # the loop flushes before each checkpoint: the events are copied up then
    names = [k for k in memory_gcs if k.startswith("gs://bucket/run/tensorboard/events.out.tfevents")]
    assert len(names) == 1
    _check_samples(images_in([bytes(memory_gcs[names[0]].getvalue())]), sheet, video, step=2)
    writer.close()


def test_a_short_tokenizer_run_logs_its_contact_sheets(tmp_path):
    """A 2-step vae.py:tiny run (GAN off: not what is tested) sampling every step: the event file holds each step's contact sheet, the same
    image as the PNG the hook writes under samples/."""
    from motionaura_jax.train import loop

    config = config_lib.load_config(
        "experiments/vae.py:tiny",
        ["--config.train.steps=2", "--config.train.sample_every=1", "--config.train.eval_every=0",
         "--config.train.ckpt_every=0", "--config.mesh.num_devices=1", "--config.loss.gan_weight=0"],
    )  # fmt: skip
    loop.train(config, tmp_path)
    found = images_in(_local_events(tmp_path))
    assert [step for step, _ in found["samples/recon"]] == [1, 2]
    for step, png in found["samples/recon"]:
        logged = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        written = np.asarray(Image.open(tmp_path / "samples" / f"recon_{step:07d}.png").convert("RGB"))
        np.testing.assert_array_equal(logged, written)
    assert {"loss", "steps_per_sec"} <= scalars_in(_local_events(tmp_path))
