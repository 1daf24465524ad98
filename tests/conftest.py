"""Tests run on CPU with 8 fake devices; this must happen before anything imports jax."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA cache for the whole run, shared by the xdist workers (started after this module is loaded in
# the controller, they inherit the variable) and the subprocesses tests start: the many tests that build the same
# tiny train or sample step load its executable instead of compiling it again. Removed when the run ends.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="motionaura-tests-xla-cache-")
# glibc's allocator as it comes, in test processes and the `motionaura` commands they start (which would
# otherwise restart themselves under the host allocator policy): tests/test_host_memory.py tests the policy.
os.environ.setdefault("MOTIONAURA_HOST_MALLOC", "system")
# Nothing downloads: hubs are off in tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pathlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_subprocess(
    args: list[str], *, devices: int = 8, timeout: float = 300, env: dict | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Runs `python args...` with its own fake device count; returns the finished process."""
    full_env = dict(os.environ)
    full_env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    full_env["JAX_PLATFORMS"] = "cpu"
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"subprocess {args} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\n"
            f"stderr:\n{proc.stderr[-4000:]}"
        )
    return proc


@pytest.fixture
def subprocess_runner():
    return run_subprocess


@pytest.fixture(autouse=True)
def _restore_motionaura_logging():
    """`motionaura train` and `quickstart` run in process set up motionaura's log handlers (bound to that test's
    captured stderr) and stop its loggers propagating; the next test must find logging as it was (caplog reads
    propagated records)."""
    import logging

    loggers = [logging.getLogger(name) for name in ("motionaura", "motionaura_jax")]
    saved = [(logger, list(logger.handlers), logger.propagate, logger.level) for logger in loggers]
    yield
    for logger, handlers, propagate, level in saved:
        logger.handlers[:] = handlers
        logger.propagate, logger.level = propagate, level


def pytest_unconfigure(config):
    if _OWN_CACHE and not os.environ.get("PYTEST_XDIST_WORKER"):  # the process that made the cache folder
        import shutil

        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "optimized: this file's programs are compiled with XLA's full CPU optimisations (they run long enough "
        "to pay for them, e.g. training for hundreds of steps); set as `pytestmark` of the file",
    )


@pytest.fixture(scope="module", autouse=True)
def _xla_optimisation_effort(request):
    """Most tests compile a program to run it a handful of times, and XLA's CPU optimisation passes then cost
    more than they save (a tiny tokenizer's train step compiles in about half the time without them), so by
    default a test file compiles with `jax_disable_most_optimizations`; files marked `optimized` do not. The
    environment variable carries the choice to the subprocesses a test starts. Module-scoped and autouse, so
    it is in force before the file's other module fixtures (trained runs) build anything."""
    import jax

    optimized = request.node.get_closest_marker("optimized") is not None
    previous_flag = jax.config.values["jax_disable_most_optimizations"]
    previous_env = os.environ.get(_NO_OPT_ENV)
    jax.config.update("jax_disable_most_optimizations", not optimized)
    os.environ[_NO_OPT_ENV] = "0" if optimized else "1"
    yield
    jax.config.update("jax_disable_most_optimizations", previous_flag)
    if previous_env is None:
        os.environ.pop(_NO_OPT_ENV, None)
    else:
        os.environ[_NO_OPT_ENV] = previous_env


_NO_OPT_ENV = "JAX_DISABLE_MOST_OPTIMIZATIONS"
