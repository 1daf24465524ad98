"""Video files: round trips per format (lossy within tolerance, lossless exact), clear errors on bad files."""

import numpy as np
import pytest

from motionaura_jax.data import video_io
from motionaura_jax.data.synthetic import MovingShapes
from motionaura_jax.data.video_folder import clip_frame_indices, resize_and_crop

# ffmpeg starts through fork+exec in C; JAX's fork warning does not apply (see data/video_io.py).
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")


@pytest.fixture(scope="module")
def clip():
    return MovingShapes(frames=9, size=32, num_clips=1)[0]["video"]


@pytest.fixture(params=["av", "ffmpeg"])
def backend(request):
    """Runs a test once per decoder (PyAV in-process, the ffmpeg binary) and restores the default."""
    default = video_io.read_backend()
    video_io.set_read_backend(request.param)
    yield request.param
    video_io.set_read_backend(default)


@pytest.mark.parametrize("suffix, tolerance", [(".mp4", 3.0), (".webm", 3.0), (".avi", 4.0), (".gif", 1.0)])
def test_lossy_round_trip(tmp_path, clip, suffix, tolerance, backend):
    path = video_io.write_video(tmp_path / f"a{suffix}", clip, fps=10.0)
    frames, fps = video_io.read_video(path)
    assert frames.shape == clip.shape and frames.dtype == np.uint8
    assert np.abs(frames.astype(np.int16) - clip).mean() < tolerance
    # GIF stores frame durations in 1/100 s, so 10 FPS is exact; containers keep the rate.
    assert fps == pytest.approx(10.0, rel=0.02)
    info = video_io.probe_video(path)
    assert (info.num_frames, info.height, info.width) == (9, 32, 32)


def test_lossless_and_partial_reads(tmp_path, clip, backend):
    path = video_io.write_video(tmp_path / "a.mkv", clip, fps=8.0, lossless=True)
    frames, _ = video_io.read_video(path)
    np.testing.assert_array_equal(frames, clip)
    part, _ = video_io.read_video(path, start_frame=3, num_frames=4)
    np.testing.assert_array_equal(part, clip[3:7])
    np.testing.assert_array_equal(video_io.read_video_bytes(video_io.encode_video_bytes(clip))[0], clip)


def test_bad_files_raise_naming_the_file(tmp_path, clip, backend):
    good = video_io.write_video(tmp_path / "good.mp4", clip)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video")
    empty = tmp_path / "empty.webm"
    empty.write_bytes(b"")
    for bad in (truncated, text, empty, tmp_path / "missing.mp4"):
        with pytest.raises(video_io.VideoReadError) as info:
            video_io.read_video(bad)
        assert str(bad) in str(info.value) and info.value.reason
        assert "configuration:" not in str(info.value)  # the ffmpeg banner is not the reason


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".avi"])
def test_backends_decode_the_same_frames(tmp_path, clip, suffix):
    path = video_io.write_video(tmp_path / f"a{suffix}", clip, fps=12.0)
    default = video_io.read_backend()
    assert default == "av"  # PyAV is a pinned requirement, so it is the default
    try:
        decoded = {}
        for name in ("av", "ffmpeg"):
            video_io.set_read_backend(name)
            decoded[name] = video_io.read_video(path, start_frame=2, num_frames=5)
            assert video_io.probe_video(path) == video_io.VideoInfo(str(path), 12.0, 9, 32, 32)
    finally:
        video_io.set_read_backend(default)
    np.testing.assert_array_equal(decoded["av"][0], decoded["ffmpeg"][0])
    assert decoded["av"][0].shape == (5, 32, 32, 3) and decoded["av"][1] == decoded["ffmpeg"][1]


def test_examples_and_contact_sheet(tmp_path, clip):
    paths = video_io.write_examples(tmp_path / "sample", clip.astype(np.float32) / 127.5 - 1.0, fps=8.0)
    assert {p.suffix for p in paths.values()} == {".mp4", ".gif", ".png"}
    assert all(p.stat().st_size > 0 for p in paths.values())
    sheet = video_io.contact_sheet(clip, columns=4, gap=2, min_tile=32)
    assert sheet.shape == (3 * 32 + 2 * 2, 4 * 32 + 3 * 2, 3)
    np.testing.assert_array_equal(sheet[:32, 34:66], clip[1])
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


def test_resample_indices_and_crop():
    # 30 -> 10 FPS takes every third frame; 8 -> 16 FPS repeats frames; a centred clip without rng.
    np.testing.assert_array_equal(
        clip_frame_indices(100, 30.0, 5, 10.0, None)[1:] - clip_frame_indices(100, 30.0, 5, 10.0, None)[:-1],
        [3, 3, 3, 3],
    )
    np.testing.assert_array_equal(clip_frame_indices(5, 8.0, 5, 16.0, None), [1, 1, 2, 2, 3])
    assert clip_frame_indices(9, 30.0, 9, None, None).tolist() == list(range(9))
    video = np.zeros((2, 48, 96, 3), np.uint8)
    video[:, :, 40:56] = 255  # a bright bar in the centre
    out = resize_and_crop(video, 32)
    assert out.shape == (2, 32, 32, 3)
    assert out[0, 16, 16, 0] == 255 and out[0, 16, 0, 0] == 0  # centred crop keeps the bar in the middle


def test_ffmpeg_is_spawned_without_python_in_the_child():
    # A preexec_fn runs Python (and at-fork hooks) in the forked child; under threaded decoding that child
    # can hang on a lock another thread held at fork time.
    from imageio_ffmpeg import _io

    kwargs = _io._popen_kwargs(prevent_sigint=True)
    assert kwargs.get("preexec_fn") is None and kwargs["process_group"] == 0
