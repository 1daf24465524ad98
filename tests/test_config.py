"""Experiment configs: typed overrides, clear errors for typos, the resolved config written to the workdir."""

import json
import subprocess
import sys

import pytest

from motionaura_jax import config as config_lib
from tests.conftest import REPO


def test_overrides_are_typed_like_the_value_they_replace():
    config = config_lib.load_config(
        "experiments/tiny.py", ["--config.train.steps=3", "train.lr=0.5", ("mesh.fsdp", "4")]
    )
    assert config.train.steps == 3 and isinstance(config.train.steps, int)
    assert config.train.lr == 0.5 and isinstance(config.train.lr, float)
    assert config.mesh.fsdp == 4


def test_wrong_type_names_key_and_type():
    with pytest.raises(config_lib.ConfigError, match=r"train\.steps.*int"):
        config_lib.load_config("experiments/tiny.py", ["--config.train.steps=three"])


def test_unknown_key_names_closest_valid_ones():
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.load_config("experiments/tiny.py", ["--config.train.stpes=3"])
    assert "train.steps" in str(info.value)


def test_unknown_experiment_suggests_known_ones():
    with pytest.raises(config_lib.ConfigError, match="tiny"):
        config_lib.load_config("experiments/tinny.py")


def test_config_json_round_trip(tmp_path):
    config = config_lib.load_config("experiments/tiny.py", ["--config.train.steps=7"])
    path = config_lib.save_config(config, tmp_path)
    assert json.loads(path.read_text())["train"]["steps"] == 7
    assert config_lib.config_from_json(path).to_json(sort_keys=True) == config.to_json(sort_keys=True)


def test_cli_typo_fails_before_any_compile(tmp_path):
    """`--config.trian.steps=3` exits non-zero with a message naming `train`, before jax starts."""
    proc = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",  # every import goes to stderr: "import time: self | cumulative | name"
            "-m",
            "motionaura_jax.cli",
            "train",
            "--config=experiments/tiny.py",
            f"--workdir={tmp_path / 'run'}",
            "--config.trian.steps=3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "trian" in proc.stderr and "train" in proc.stderr.replace("trian", "")
    assert not (tmp_path / "run").exists(), "nothing may be written for a bad config"
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "motionaura_jax.config" in imported  # the import log is there to read
    assert "jax" not in imported and "flax" not in imported, "a bad config must fail before jax is imported"
