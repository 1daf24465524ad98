"""The one `motionaura` command.

Each sub-command lives in `motionaura_jax/commands/<name>.py` (dashes become underscores) and
exposes `main(argv: list[str]) -> int | None`. This file only finds it, so that importing the
CLI stays cheap and a sub-command's heavy imports happen only when it runs.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import motionaura_jax.commands as _commands

_HELP = {
    "train": "train any stage: --config=experiments/NAME.py[:ARG] --workdir=DIR [--config.key=value ...]",
    "quickstart": "the embedded default end to end on Moving Shapes (what `make demo` runs)",
    "data": "build datasets (`data build --source synthetic|folder ...`)",
    "embed-text": "encode prompts with a text encoder into an .npz",
    "encode": "video -> token ids with a trained tokenizer",
    "decode": "token ids -> video with a trained tokenizer",
    "eval": "metrics: `eval recon|t2v|inpaint ...`",
    "bench": "benchmarks against peers measured in the same run: `bench data|text|vae|...`",
}


def available_commands() -> list[str]:
    names = [m.name for m in pkgutil.iter_modules(_commands.__path__) if not m.name.startswith("_")]
    return sorted(n.replace("_", "-") for n in names)


def _usage() -> str:
    lines = ["usage: motionaura COMMAND [ARGS ...]", "", "commands:"]
    for name in available_commands():
        lines.append(f"  {name:<12} {_HELP.get(name, '')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in available_commands():
        import difflib

        close = difflib.get_close_matches(name, available_commands(), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        print(f"motionaura: unknown command {name!r}.{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"motionaura_jax.commands.{name.replace('-', '_')}")
    rc = module.main(rest)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
