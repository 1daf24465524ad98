"""The suite's own set-up (tests/conftest.py): fake devices, and test files compile without most XLA
optimisations unless marked `optimized` (test_stages_learn.py is; this file is not)."""

import os

import jax

from tests.conftest import REPO


def test_eight_fake_cpu_devices():
    assert jax.device_count() == 8 and jax.devices()[0].platform == "cpu"


def test_unmarked_files_compile_without_most_optimisations_and_pass_it_on():
    assert jax.config.values["jax_disable_most_optimizations"] is True
    assert os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] == "1"  # what run_subprocess children inherit
    marked = (REPO / "tests" / "test_stages_learn.py").read_text(encoding="utf-8")
    assert "pytestmark = pytest.mark.optimized" in marked
