"""`motionaura data build` round trips: synthetic and folder datasets read back through tfds.data_source.

Tolerance: the stored clips come back bit-exact (raw uint8 and lossless RGB H.264 alike). Against the pixels
that went into a folder's MP4s the only loss is that MP4 (libx264 yuv420p, quality 8) plus the resize:
mean absolute error < 3 of 255 here.
"""

import json
import tempfile

import numpy as np
import pytest

from motionaura_jax.commands import data as data_command
from motionaura_jax.configs.data import get_config as data_config
from motionaura_jax.data import tfds_builder, video_io
from motionaura_jax.data.pipeline import make_host_iterator, to_model_range
from motionaura_jax.data.synthetic import MovingShapes
from motionaura_jax.data.video_folder import VideoFolder

# ffmpeg starts through fork+exec in C; JAX's fork warning does not apply (see data/video_io.py).
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")


@pytest.mark.parametrize("storage", ["raw", "video"])
def test_synthetic_build_round_trip_is_exact(tmp_path, storage, monkeypatch):
    sizes = {"train": 6, "validation": 2, "test": 0, "heldout": 2}
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    path = tfds_builder.build_dataset(
        tmp_path / "data", source="synthetic", frames=5, size=16, storage=storage, seed=4, split_sizes=sizes
    )
    assert list(scratch.iterdir()) == [], "the build left temporary files behind"
    for split in ("train", "validation", "heldout"):
        source = tfds_builder.open_split(tmp_path / "data", split)
        assert len(source) == sizes[split]
        reference = MovingShapes(frames=5, size=16, split=split, seed=4, num_clips=sizes[split])
        keys = set()
        for i in range(len(source)):
            record = tfds_builder.decode_record(source[i])
            name, index = record["key"].split("/")
            assert name == split
            want = reference[int(index)]
            np.testing.assert_array_equal(record["video"], want["video"])
            np.testing.assert_array_equal(record["masks"], want["masks"])
            np.testing.assert_array_equal(record["sketch"], want["sketch"])
            assert record["caption"] == want["caption"] and record["fps"] == want["fps"]
            keys.add(int(index))
        assert keys == set(range(sizes[split]))
    with pytest.raises(ValueError, match="no split 'test'"):
        tfds_builder.open_split(path, "test")


def test_folder_build_round_trip_via_cli(tmp_path, capsys):
    root = tmp_path / "videos"
    root.mkdir()
    originals = {}
    shapes = MovingShapes(frames=9, size=32, num_clips=2, fps=8.0)
    for i in range(2):
        originals[f"clip_{i}.mp4"] = shapes[i]["video"]
        video_io.write_video(root / f"clip_{i}.mp4", shapes[i]["video"], fps=8.0)
        (root / f"clip_{i}.txt").write_text(shapes[i]["caption"])
    (root / "broken.mp4").write_text("not a video")
    out = tmp_path / "built"
    rc = data_command.main(
        [
            "build",
            "--source",
            "folder",
            "--path",
            str(root),
            "--out",
            str(out),
            "--frames",
            "9",
            "--size",
            "32",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out  # tfds prints its own progress lines before the summary
    summary = json.loads(printed[printed.index("{\n") :].split("\ntrain on it")[0])
    assert summary["splits"] == {"train": 2}
    source = tfds_builder.open_split(out, "train")
    folder = VideoFolder(root, frames=9, size=32, random_crop=False)
    decoded = {pathlib_name(e.path): folder.get(i)["video"] for i, e in enumerate(folder.entries)}
    for i in range(len(source)):
        record = tfds_builder.decode_record(source[i])
        np.testing.assert_array_equal(record["video"], decoded[record["key"]])  # stored exactly
        error = np.abs(record["video"].astype(np.int16) - originals[record["key"]]).mean()
        assert error < 3.0, error  # MP4 codec tolerance against the source pixels
        assert record["caption"] == shapes[int(record["key"][5])]["caption"]
    # A second build into the same place is refused unless asked.
    assert data_command.main(["build", "--source", "folder", "--path", str(root), "--out", str(out)]) == 2


def pathlib_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def test_pipeline_reads_tfds(tmp_path):
    tfds_builder.build_dataset(
        tmp_path,
        source="synthetic",
        frames=9,
        size=16,
        seed=1,
        split_sizes={"train": 8, "validation": 0, "test": 0, "heldout": 0},
    )
    cfg = data_config(source="tfds", path=str(tmp_path), frames=5, size=16, read_threads=0, with_masks=True)
    it = make_host_iterator(cfg, batch_size=4, split="train", seed=0, shuffle=False, num_epochs=1)
    batches = list(it)
    assert len(batches) == 2
    source = tfds_builder.open_split(tmp_path, "train")
    for b, batch in enumerate(batches):
        assert batch["video"].shape == (4, 5, 16, 16, 3) and batch["masks"].shape == (4, 5, 16, 16)
        for j in range(4):
            record = tfds_builder.decode_record(source[4 * b + j])
            start = int(
                np.nonzero(
                    np.all(
                        record["video"] == ((batch["video"][j, 0] + 1) * 127.5).round().astype(np.uint8),
                        axis=(1, 2, 3),
                    )
                )[0][0]
            )
            np.testing.assert_allclose(
                batch["video"][j], to_model_range(record["video"][start : start + 5]), atol=1e-6
            )
            assert batch["caption"][j] == record["caption"]
