"""The `motionaura` command: every sub-command is listed and reachable."""

import subprocess
import sys

from motionaura_jax import cli
from tests.conftest import REPO


def test_every_command_has_a_summary_and_unknown_suggests():
    names = cli.available_commands()
    assert {"train", "quickstart", "bench", "data", "eval", "embed-text"} <= set(names)
    proc = subprocess.run(
        [sys.executable, "-m", "motionaura_jax.cli", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    for name in names:
        line = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith(name + " "))
        assert len(line.split(maxsplit=1)[1]) > 10, f"{name} has no summary"
    assert cli.main(["trian"]) == 2
