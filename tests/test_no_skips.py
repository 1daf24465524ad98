"""No test file skips on a missing package our requirements install: such a package is imported, so a broken
environment fails instead of silently dropping tests."""

import ast
import pathlib

TESTS = pathlib.Path(__file__).resolve().parent


def test_no_importorskip():
    found = []
    for path in sorted(TESTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "importorskip":
                found.append(f"{path.name}:{node.lineno}")
    assert not found, f"importorskip of an installed requirement: {found}; import it directly"
