"""The public API: every ```python example of docs/api.md runs (in order, one namespace, against tiny runs),
every public name carries a docstring example, and `import motionaura_jax` stays free of JAX."""

from __future__ import annotations

import re

import pytest

import motionaura_jax
from tests.conftest import REPO, run_subprocess
from tests.tiny_runs import make_tiny_runs

API_DOC = REPO / "docs" / "api.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_every_example_in_docs_api_runs(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(API_DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 6
    make_tiny_runs(tmp_path / "runs")  # what the page's `motionaura train` lines would make, untrained
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_api"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"docs/api.md block {i + 1}", "exec"), namespace)
        except Exception as error:  # noqa: BLE001 - re-raised with the block that failed
            raise AssertionError(f"docs/api.md block {i + 1} failed: {error!r}\n{block}") from error
    printed = capsys.readouterr().out
    assert "vae 1 ['params', 'vq']" in printed and "(1, 5, 16, 16, 3) uint8" in printed
    assert (tmp_path / "exports" / "vae_tiny" / "model.safetensors").exists()


def test_public_names_are_listed_and_resolve():
    assert sorted(motionaura_jax.__all__) == sorted(motionaura_jax._EXPORTS)
    for name in motionaura_jax.__all__:
        assert getattr(motionaura_jax, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        motionaura_jax.nope  # noqa: B018
    text = API_DOC.read_text(encoding="utf-8")
    missing = [n for n in motionaura_jax.__all__ if f"`{n}" not in text and f"{n}(" not in text]
    assert not missing, f"docs/api.md does not mention {missing}"


@pytest.mark.parametrize("name", motionaura_jax.__all__)
def test_public_name_has_a_docstring_example(name):
    obj = getattr(motionaura_jax, name)
    doc = obj.__doc__ or ""  # raw: the example is the code indented past the text
    called = {name, getattr(obj, "__name__", name)}
    example = [
        line for line in doc.splitlines() if any(re.search(rf"(^ {{8,}}.*|`)\b{n}\b", line) for n in called)
    ]
    assert example, f"motionaura_jax.{name}: its docstring has no example using it:\n{doc}"


def test_import_is_instant_and_cli_help_too():
    code = (
        "import sys, time; t = time.perf_counter(); import motionaura_jax; dt = time.perf_counter() - t\n"
        "assert 'jax' not in sys.modules and 'flax' not in sys.modules, 'import motionaura_jax pulled in JAX'\n"
        "print(f'import {dt:.3f}s')\n"
    )
    proc = run_subprocess(["-c", code], devices=1)
    assert "import" in proc.stdout
    proc = run_subprocess(["-c", "import sys; from motionaura_jax import cli; cli.main(['--help']); "
                           "assert 'jax' not in sys.modules"], devices=1)  # fmt: skip
    assert "export" in proc.stdout
