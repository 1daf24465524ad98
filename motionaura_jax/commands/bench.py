"""`motionaura bench NAME [ARGS ...]`: benchmarks reported as ratios against a peer measured in the same run."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import motionaura_jax.bench as _bench


def main(argv: list[str]) -> int:
    names = sorted(m.name for m in pkgutil.iter_modules(_bench.__path__) if not m.name.startswith("_"))
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: motionaura bench NAME [ARGS ...]\n\nbenchmarks: " + ", ".join(names))
        return 0
    if argv[0] not in names:
        print(f"motionaura bench: unknown benchmark {argv[0]!r}; known: {', '.join(names)}", file=sys.stderr)
        return 2
    return int(importlib.import_module(f"motionaura_jax.bench.{argv[0]}").main(argv[1:]) or 0)
