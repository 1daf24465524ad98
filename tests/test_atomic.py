"""Atomic writes: the old file survives a failed write, no temporaries are left, permissions are ordinary."""

import os
import stat

import numpy as np
import pytest

from motionaura_jax import atomic
from motionaura_jax.data.video_io import write_contact_sheet, write_video


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    atomic.write_text(path, "old\n")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic.atomic_path(path) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("disk full")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_files_get_the_permissions_of_an_ordinary_open(tmp_path):
    reference = tmp_path / "reference.txt"
    with open(reference, "w") as f:
        f.write("x")
    text = atomic.write_text(tmp_path / "sub" / "a.txt", "x")
    sheet = write_contact_sheet(tmp_path / "sheet.png", np.zeros((2, 8, 8, 3), np.uint8))
    assert _mode(text) == _mode(reference)
    assert _mode(sheet) == _mode(reference)


def test_npz_goes_to_exactly_the_named_path(tmp_path):
    # np.savez("x.tokens") would write x.tokens.npz
    path = atomic.write_npz(tmp_path / "x.tokens", ids=np.arange(3))
    assert path == tmp_path / "x.tokens"
    with np.load(path) as f:
        np.testing.assert_array_equal(f["ids"], np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tokens"]


def test_a_rejected_video_leaves_no_file(tmp_path):
    with pytest.raises(ValueError, match="unknown suffix"):
        write_video(tmp_path / "clip.xyz", np.zeros((2, 8, 8, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
