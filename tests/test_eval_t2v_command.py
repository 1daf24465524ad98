"""`motionaura eval t2v` on a folder of ground-truth Moving Shapes MP4s, and the command's error paths."""

import json

import pytest

from motionaura_jax.commands import eval as eval_command
from motionaura_jax.data.synthetic import MovingShapes
from motionaura_jax.data.video_io import write_video

# ffmpeg runs as a fork+exec subprocess: JAX's fork warning does not apply to it.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")


def _write_folder(folder, clips, captions=None):
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, clip in enumerate(clips):
        name = f"clip_{i:03d}.mp4"
        write_video(folder / name, clip["video"], fps=clip["fps"])
        caption = clip["caption"] if captions is None else captions[i]
        lines.append(json.dumps({"video": name, "caption": caption}))
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def ground_truth_clips():
    # Fresh seed; both sizes; the held-out split so the compositional breakdown is exercised too.
    small = MovingShapes(size=32, split="heldout", seed=99, num_clips=20)
    large = MovingShapes(size=64, split="test", seed=99, num_clips=20)
    return [small[i] for i in range(len(small))] + [large[i] for i in range(len(large))]


def test_t2v_on_ground_truth_mp4s(tmp_path, ground_truth_clips, capsys):
    _write_folder(tmp_path / "videos", ground_truth_clips)
    out = tmp_path / "report" / "metrics.json"
    assert eval_command.main(["t2v", f"--videos={tmp_path / 'videos'}", f"--out={out}"]) == 0
    metrics = json.loads(out.read_text())
    shown = {k: metrics[k] for k in ("all_correct", "colour", "shape", "direction")}
    print(f"eval t2v on 40 ground-truth MP4s: {shown}")
    for key in ("num_videos", "all_correct", "colour", "shape", "direction", "protocol"):
        assert key in metrics
    assert metrics["num_videos"] == 40
    assert metrics["all_correct"] >= 0.95
    assert metrics["heldout_num_videos"] == 20
    assert "judge" in metrics["protocol"] and metrics["protocol"]["video_shapes_thw"] == [
        [17, 32, 32],
        [17, 64, 64],
    ]
    table = out.with_suffix(".md").read_text()
    assert "| all_correct |" in table and "## Protocol" in table


def test_t2v_with_shuffled_captions_scores_low(tmp_path, ground_truth_clips):
    clips = ground_truth_clips[20:]
    captions = [c["caption"] for c in clips[1:] + clips[:1]]  # every video gets another clip's caption
    _write_folder(tmp_path / "videos", clips, captions)
    out = tmp_path / "m.json"
    assert eval_command.main(["t2v", f"--videos={tmp_path / 'videos'}", f"--out={out}"]) == 0
    assert json.loads(out.read_text())["all_correct"] < 0.3


def test_t2v_input_errors_name_the_problem(tmp_path, capsys):
    folder = tmp_path / "v"
    folder.mkdir()
    assert eval_command.main(["t2v", f"--videos={folder}", f"--out={tmp_path / 'm.json'}"]) == 2
    assert "captions" in capsys.readouterr().err
    (folder / "captions.jsonl").write_text('{"video": "missing.mp4", "caption": "a red circle moving up"}\n')
    assert eval_command.main(["t2v", f"--videos={folder}", f"--out={tmp_path / 'm.json'}"]) == 2
    assert "missing.mp4" in capsys.readouterr().err
    (folder / "captions.jsonl").write_text("not json\n")
    assert eval_command.main(["t2v", f"--videos={folder}", f"--out={tmp_path / 'm.json'}"]) == 2
    assert "captions.jsonl:1" in capsys.readouterr().err


def test_other_subcommands():
    assert eval_command.main(["inpaint"]) == 2
    assert eval_command.main(["nonsense"]) == 2
    assert eval_command.main(["--help"]) == 0


def test_video_grid_tiles_clips_in_order():
    import numpy as np

    from motionaura_jax.eval.t2v import video_grid

    clips = np.stack([np.full((2, 3, 4, 3), 10 * (i + 1), np.uint8) for i in range(5)])
    grid = video_grid(clips, cols=2)
    assert grid.shape == (2, 3 * 5, 2 * 6, 3)
    assert (grid[:, 0:3, 0:4] == 10).all() and (grid[:, 0:3, 6:10] == 20).all()
    assert (grid[:, 10:13, 0:4] == 50).all() and (grid[:, 10:13, 6:10] == 128).all()  # empty cell: grey


def test_judge_captions_one_and_two_objects():
    """Held-out captions lead with the 8 never-trained combinations in order; a second object is a training
    combination of another colour; every caption parses back to its objects."""
    from motionaura_jax.data import synthetic
    from motionaura_jax.eval import t2v as t2v_eval

    one = t2v_eval.judge_captions(20, 9)
    assert [synthetic.parse_caption(c) for c in one["heldout"][:8]] == [
        [tuple(c)] for c in synthetic.HELD_OUT_COMBINATIONS
    ]
    assert len(one["seen"]) == 20 and all(" and " not in c for c in one["seen"] + one["heldout"])
    two = t2v_eval.judge_captions(20, 9, num_objects=2)
    for split, captions in two.items():
        for single, caption in zip(one[split], captions, strict=False):
            first, second = synthetic.parse_caption(caption)
            assert [first] == synthetic.parse_caption(single)  # the same first objects as one-object captions
            assert second in [tuple(c) for c in synthetic.TRAIN_COMBINATIONS] and second[0] != first[0]
    assert len({c.split(" and ")[1] for c in two["seen"]}) > 5  # the second objects vary
    with pytest.raises(ValueError, match="num_objects=3"):
        t2v_eval.judge_captions(1, 1, num_objects=3)


def test_fvd_against_the_test_split_equals_the_library():
    """`eval t2v --ckpt --fvd`'s figure: FVD of the generated clips against as many test-split clips drawn with
    the run's data config, the same number as eval/fvd.py gives on those clips; non-synthetic data is an
    error naming the way to bring a reference."""
    import numpy as np

    from motionaura_jax.configs import data as data_config
    from motionaura_jax.eval import fvd as fvd_lib
    from motionaura_jax.eval import t2v as t2v_eval

    data_cfg = data_config.get_config(size=16, frames=17, num_objects=2)
    reference = t2v_eval.reference_clips(data_cfg, 3)
    shapes = MovingShapes(size=16, frames=17, num_objects=2, split="test", num_clips=3)
    np.testing.assert_array_equal(reference, np.stack([shapes[i]["video"] for i in range(3)]))
    generated = t2v_eval.reference_clips(data_cfg, 3, split="heldout")
    value, protocol = t2v_eval.fvd_against_split(data_cfg, generated)
    assert value == pytest.approx(fvd_lib.fvd(reference, generated)["fvd"], rel=1e-6) and value > 0
    assert protocol["reference"] == "Moving Shapes split 'test', first 3 clips"
    with pytest.raises(t2v_eval.EvalInputError, match="--fvd_reference"):
        t2v_eval.fvd_against_split(data_config.get_config(source="folder"), generated)
    with pytest.raises(t2v_eval.EvalInputError, match="FVD: .*frames"):
        t2v_eval.fvd_against_split(data_config.get_config(size=16, frames=5), generated[:, :5])
