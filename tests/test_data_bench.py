"""`motionaura bench data` runs end to end at a tiny size and reports positive clip rates."""

import pytest

from motionaura_jax.bench import data as bench_data

# ffmpeg starts through fork+exec in C; JAX's fork warning does not apply (see data/video_io.py).
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")


def test_bench_data_reports_clip_rates(tmp_path):
    results = bench_data.run(clips=4, frames=5, size=16, batch=2, threads=(1,), workdir=str(tmp_path))
    assert results["peer_imageio_serial_clips_per_s"] > 0 and results["ours_serial_clips_per_s"] > 0
    for key in ("pipeline_folder_threads1", "pipeline_synthetic_threads2", "pipeline_tfds_raw_threads2"):
        assert results[key]["clips_per_s"] > 0 and results[key]["batch_size"] == 2
    # Both decoders are timed on the same clips; PyAV is the default backend when installed.
    assert results["read_backend"] == "av" and results["ours_serial_ffmpeg_clips_per_s"] > 0
    assert results["pipeline_folder_ffmpeg_threads1"]["clips_per_s"] > 0
    assert not list(tmp_path.iterdir())  # the clips it wrote are cleaned up
