"""Hostile input, in process: a fuzzed video folder through VideoFolder and `motionaura data build`/`show`
(tools/fuzz_videos.py runs the full form), captions.jsonl entries that leave the folder or name nothing, and
no pickle anywhere a file from elsewhere is read."""

from __future__ import annotations

import ast
import json
import logging
import pathlib
import re

import numpy as np
import pytest

from motionaura_jax.data import video_io
from motionaura_jax.data.video_folder import VideoFolder
from tests.conftest import REPO
from tools import fuzz_videos


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory) -> tuple[pathlib.Path, list]:
    folder = tmp_path_factory.mktemp("fuzz") / "videos"
    made = fuzz_videos.make_folder(folder, bad=26, good=3, seed=1)
    return folder, made


def test_fuzzed_folder_names_every_bad_file_once_and_keeps_every_good_clip(fuzzed, caplog):
    folder, made = fuzzed
    assert len(made) - 3 >= 26 + 5  # bad or odd files, the five non-files included
    with caplog.at_level(logging.WARNING):
        videos = VideoFolder(folder, frames=5, size=16, random_crop=False, show_progress=False)
        # Decode every kept clip: failures found only at decode time are named too.
        for i in range(len(videos)):
            videos.get(i)
    named = fuzz_videos.named_in_log(caplog.text, folder)
    kept = {pathlib.Path(e.path).name for e in videos.entries} - set(videos.bad_files)
    result = fuzz_videos.check(made, {pathlib.Path(k).name: v for k, v in named.items()}, kept)
    assert result["good_lost"] == [] and result["good_kept"] == result["good_total"] >= 9
    assert result["silent"] == [] and result["named_twice"] == [] and result["bad_kept"] == []
    assert result["bad_named_once"] == result["bad_total"]
    reasons = {name: reasons[0] for name, reasons in named.items()}
    assert reasons["loop_a.mp4"] == "symlink loop" and reasons["fifo.mp4"].startswith("not a regular file")
    assert reasons["dangling.mp4"].startswith("dangling symlink")
    assert any("over the" in r and "pixel limit" in r for r in reasons.values())  # the huge declared size
    metrics = videos.metrics()
    assert metrics["data/bad_files"] + metrics["data/short_files"] == len(named)
    assert metrics["data/captions_refused"] == 2 and metrics["data/captions_missing"] == 2


def test_data_build_and_show_on_the_fuzzed_folder(fuzzed, tmp_path, capsys):
    from motionaura_jax.commands import data as data_command

    folder, made = fuzzed
    out = tmp_path / "built"
    args = [
        "build",
        "--source",
        "folder",
        "--path",
        str(folder),
        "--out",
        str(out),
        "--frames",
        "5",
        "--size",
        "16",
    ]
    assert data_command.main(args) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{") : printed.rindex("}") + 1])
    counted = summary["source_folder"]
    # Every file is either a built example or counted as skipped; every good clip is among the examples.
    assert summary["splits"]["train"] + counted["bad_files"] + counted["short_files"] == len(made)
    assert summary["splits"]["train"] >= sum(m.expect == "good" for m in made)
    assert counted["captions_refused"] == 2
    assert data_command.main(["show", str(out), "--count", "2"]) == 0
    assert len(re.findall(r"^\[\d+\]", capsys.readouterr().out, re.M)) == 2


def test_caption_entries_outside_or_missing_are_named(tmp_path, caplog):
    folder_path = tmp_path / "videos"
    video_io.write_video(folder_path / "sub" / "a.mp4", np.zeros((6, 8, 8, 3), np.uint8))
    (folder_path / "link.mp4").symlink_to("nothere.mp4")  # dangling, inside the folder
    outside = video_io.write_video(tmp_path / "secret.mp4", np.zeros((6, 8, 8, 3), np.uint8))
    (folder_path / "escape.mp4").symlink_to(outside)  # an existing file, but outside the folder
    lines = [
        {"video": "sub/a.mp4", "caption": "kept"},
        {"video": "../../etc/passwd", "caption": "up"},
        {"video": "/etc/passwd", "caption": "absolute"},
        {"video": "gone.mp4", "caption": "missing"},
        {"video": "link.mp4", "caption": "dangling"},
        {"video": "escape.mp4", "caption": "symlink out"},
    ]
    (folder_path / "captions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    with caplog.at_level(logging.WARNING):
        folder = VideoFolder(folder_path, frames=2, size=8, show_progress=False)
    assert {e.caption for e in folder.entries if e.path.endswith("a.mp4")} == {"kept"}
    assert set(folder.captions_refused) == {"../../etc/passwd", "/etc/passwd", "escape.mp4"}
    assert set(folder.captions_missing) == {"gone.mp4", "link.mp4"}
    for name in ("../../etc/passwd", "/etc/passwd", "gone.mp4", "link.mp4"):
        assert caplog.text.count(repr(name)) == 1, name
    assert "'link.mp4': dangling symlink to nothere.mp4" in caplog.text
    assert "'escape.mp4' is a symlink out of the folder" in caplog.text


def _calls(tree: ast.AST, dotted: str) -> list[ast.Call]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == dotted:
            out.append(node)
    return out


def test_no_pickle_when_reading_files():
    """Checkpoints, token caches, tokens, text caches and weights may come from elsewhere: every np.load says
    allow_pickle=False, torch.load says weights_only=True, and nothing else unpickles."""
    offenders = []
    for path in sorted([*(REPO / "motionaura_jax").rglob("*.py"), *(REPO / "tools").rglob("*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in _calls(tree, "np.load") + _calls(tree, "numpy.load"):
            flags = {k.arg: ast.unparse(k.value) for k in call.keywords}
            if flags.get("allow_pickle") != "False":
                offenders.append(f"{path.relative_to(REPO)}:{call.lineno} np.load without allow_pickle=False")
        for call in _calls(tree, "torch.load"):  # a .pth is a pickle: tensors only
            if {k.arg: ast.unparse(k.value) for k in call.keywords}.get("weights_only") != "True":
                offenders.append(
                    f"{path.relative_to(REPO)}:{call.lineno} torch.load without weights_only=True"
                )
        for name in ("pickle.load", "pickle.loads", "dill.load", "joblib.load"):
            offenders += [f"{path.relative_to(REPO)}:{c.lineno} {name}" for c in _calls(tree, name)]
    assert offenders == []
    # The scan does see the loads there are (a scan that finds nothing would pass vacuously).
    token_cache = (REPO / "motionaura_jax" / "data" / "token_cache.py").read_text()
    assert len(_calls(ast.parse(token_cache), "np.load")) >= 1


def test_a_warning_logged_once_is_printed_once(monkeypatch):
    """`motionaura train` prints each skipped file once, although another library has put a handler on the root
    logger (logging.basicConfig) that would print every propagated record a second time."""
    import io
    import sys

    from motionaura_jax.train.logging import setup_logging

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    loggers = [logging.getLogger(n) for n in ("", "motionaura", "motionaura_jax")]
    saved = [(lg, list(lg.handlers), lg.propagate, lg.level) for lg in loggers]
    try:
        for logger in loggers:
            logger.handlers.clear()
        logging.getLogger().addHandler(logging.StreamHandler(stream))  # what the other library installs
        setup_logging()
        logging.getLogger("motionaura_jax.data.video_folder").warning("skipping 'bad.mp4': truncated")
        logging.getLogger("motionaura").warning("step 3 skipped")
    finally:
        for logger, handlers, propagate, level in saved:
            logger.handlers[:] = handlers
            logger.propagate, logger.level = propagate, level
    assert stream.getvalue().count("skipping 'bad.mp4': truncated") == 1, stream.getvalue()
    assert stream.getvalue().count("step 3 skipped") == 1, stream.getvalue()
