"""Imports point one way (DESIGN.md §3): commands -> train / eval / pipelines -> runs -> export -> models /
diffusion / data -> parallel, with config, configs, atomic, paths and host_memory as leaves every layer may
use.

The package's imports are read with `ast` (imports inside functions included), not by importing it, so a
lazy import that runs back up is caught too.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "motionaura_jax"

# Layer of each top-level module or sub-package, and what it may not import.
FORBIDDEN: dict[str, set[str]] = {
    "configs": {
        "parallel", "models", "diffusion", "data", "runs", "export", "pipelines", "eval", "train", "bench",
        "commands", "cli", "atomic", "config",
    },
    "parallel": {
        "models", "diffusion", "data", "runs", "export", "pipelines", "eval", "train", "bench", "commands",
        "cli",
    },
    "models": {"diffusion", "data", "runs", "export", "pipelines", "eval", "train", "bench", "commands", "cli"},
    "diffusion": {"data", "runs", "export", "pipelines", "eval", "train", "bench", "commands", "cli"},
    "data": {"models", "diffusion", "runs", "export", "pipelines", "eval", "train", "bench", "commands", "cli"},
    "export": {"models", "diffusion", "data", "runs", "pipelines", "eval", "train", "bench", "commands", "cli"},
    "runs": {"data", "pipelines", "eval", "train", "bench", "commands", "cli"},
    "pipelines": {"eval", "train", "bench", "commands", "cli"},
    "eval": {"train", "bench", "commands", "cli"},
    "train": {"bench", "commands", "cli"},
    "bench": {"commands", "cli"},
    "paths": {
        "atomic", "configs", "config", "parallel", "models", "diffusion", "data", "runs", "export", "pipelines",
        "eval", "train", "bench", "commands", "cli",
    },
    "atomic": {
        "configs", "config", "parallel", "models", "diffusion", "data", "runs", "export", "pipelines", "eval",
        "train", "bench", "commands", "cli",
    },
    "config": {
        "configs", "parallel", "models", "diffusion", "data", "runs", "export", "pipelines", "eval", "train",
        "bench", "commands", "cli",
    },
    "host_memory": {
        "atomic", "configs", "config", "paths", "parallel", "models", "diffusion", "data", "runs", "export",
        "pipelines", "eval", "train", "bench", "commands", "cli",
    },
}  # fmt: skip

# Command-line parsing lives in commands/ (and the cli entry point) only.
ARGPARSE_ALLOWED = {"commands", "cli"}


def _layer(module_path: pathlib.Path) -> str:
    relative = module_path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def _imported_layers(tree: ast.AST) -> list[tuple[int, str, str]]:
    """(line, imported module, its layer) for every import of motionaura_jax in a parsed file."""
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "motionaura_jax":  # `from motionaura_jax import config`
                names = [f"motionaura_jax.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "motionaura_jax" and len(parts) > 1:
                found.append((node.lineno, name, parts[1]))
    return found


def _violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = _layer(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, name, target in _imported_layers(tree):
            if target in FORBIDDEN.get(layer, set()):
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {layer}/ imports {name}")
        if layer not in ARGPARSE_ALLOWED:
            for node in ast.walk(tree):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                    if module == "argparse":
                        problems.append(
                            f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: argparse outside commands/"
                        )
    return problems


def test_imports_point_one_way():
    problems = _violations()
    assert not problems, "imports against the layering:\n" + "\n".join(problems)


def test_every_layer_is_known():
    layers = {_layer(p) for p in PACKAGE.rglob("*.py")} - {"__init__"}
    unknown = layers - set(FORBIDDEN) - ARGPARSE_ALLOWED
    assert not unknown, f"modules without a place in the layering: {sorted(unknown)}; add them to FORBIDDEN"


@pytest.mark.parametrize(
    ("layer", "source"),
    [
        ("data", "from motionaura_jax.models.vqvae import VQVAE"),
        ("models", "def f():\n    from motionaura_jax.train import loop\n"),
        ("eval", "import motionaura_jax.train.loop"),
        ("runs", "from motionaura_jax import pipelines"),
    ],
)
def test_a_backwards_import_is_caught(layer, source):
    imported = [target for _, _, target in _imported_layers(ast.parse(source))]
    assert imported and imported[0] in FORBIDDEN[layer]
