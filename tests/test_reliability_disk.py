"""A full disk (ENOSPC, from a filesystem stub) during a checkpoint save, a token-cache shard and a sample write:
the files and checkpoints already there stay intact and readable, and the error is one line naming the path
and the space needed."""

from __future__ import annotations

import errno

import numpy as np
import orbax.checkpoint as ocp
import pytest

from motionaura_jax import atomic
from motionaura_jax import config as config_lib
from motionaura_jax.data import video_io
from motionaura_jax.train import loop


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_npz_shard_write_on_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    shard = tmp_path / "cache" / "shard_00000.npz"
    atomic.write_npz(shard, ids=np.arange(6, dtype=np.int32))

    def half_then_full(file, **arrays):  # a real full disk fails part-way through the write
        file.write(b"PK\x03\x04 partial")
        _no_space()

    monkeypatch.setattr(np, "savez", half_then_full)
    with pytest.raises(atomic.DiskFullError) as info:
        atomic.write_npz(shard, ids=np.zeros(1000, np.int32))
    message = info.value.strerror
    assert (
        "\n" not in message
        and str(shard) in message
        and "needs about 0.0 MiB" in message
        and "free there" in message
    )
    monkeypatch.undo()
    with np.load(shard, allow_pickle=False) as data:
        np.testing.assert_array_equal(data["ids"], np.arange(6))
    assert [p.name for p in shard.parent.iterdir()] == ["shard_00000.npz"]  # no temporary file left


def test_sample_write_on_a_full_disk_keeps_the_previous_video(tmp_path, monkeypatch):
    path = tmp_path / "samples" / "red.mp4"
    video = np.zeros((5, 16, 16, 3), np.uint8)
    video_io.write_video(path, video)
    before = path.read_bytes()
    monkeypatch.setattr(video_io, "_write_ffmpeg", _no_space)
    with pytest.raises(atomic.DiskFullError, match=r"no space left on device writing .*red\.mp4"):
        video_io.write_video(path, video + 255)
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["red.mp4"]


def test_checkpoint_save_on_a_full_disk_stops_the_run_and_keeps_the_previous_one(
    tmp_path, monkeypatch, capsys
):
    config = config_lib.load_config(
        "experiments/tiny.py",
        [
            ("train.steps", "4"),
            ("train.ckpt_every", "2"),
            ("train.log_every", "1"),
            ("mesh.num_devices", "1"),
        ],
    )
    original = ocp.CheckpointManager.save

    def full_after_first(self, step, *args, **kwargs):
        if step > 2:
            _no_space()
        return original(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_after_first)
    with pytest.raises(atomic.DiskFullError) as info:
        loop.train(config, tmp_path)
    message = info.value.strerror
    assert (
        "\n" not in message
        and "saving checkpoint" in message
        and str(tmp_path / "checkpoints" / "4") in message
    )
    assert "needs about" in message
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2"]
    _, state, _ = loop.restore_state(tmp_path)
    assert all(np.isfinite(np.asarray(x)).all() for x in __import__("jax").tree.leaves(state.params))
    # Through the command: one line on stderr, exit 1, no traceback.
    from motionaura_jax import cli

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_after_first)
    rc = cli.main(["train", "--config=experiments/tiny.py", f"--workdir={tmp_path / 'cli'}",
                   "--config.train.steps=4", "--config.train.ckpt_every=2", "--config.mesh.num_devices=1"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err[-1].startswith("motionaura train: no space left on device saving checkpoint")
    assert "Traceback" not in "\n".join(err)
